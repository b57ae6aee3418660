"""Stored copies of transferred files across nodes: the real ``sftp`` puts a file holding a
fake AWS key through `bastion serve` node A, to a real sshd; node B, a second `bastion serve`
with its own data dir on the same private PostgreSQL store (tests/pgcluster.py), shows the
masked copy with ``transfers show --content`` -- and so does node A after its file is gone,
from the store's copy (bastion.store.transfercopies).  ``verify`` on B checks the copy."""

from __future__ import annotations

import hashlib
import json

import pytest

from tests.e2e.harness import BastionRig
from tests.e2e.test_sftp import sftp, transfers
from tests.e2e.test_transfer_content import SECRET, content_rig

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def store_env(pg_cluster):
    pg_cluster.create_db("e2e_copies")
    return pg_cluster.store_env("e2e_copies")


def _node(tmp_path_factory, issuer, store_env, name: str) -> BastionRig:
    return content_rig(tmp_path_factory, issuer, name, {**store_env, "BASTION_NODE": name})


@pytest.fixture(scope="module")
def node_a(tmp_path_factory, issuer, store_env):
    r = _node(tmp_path_factory, issuer, store_env, "copies-a")
    yield r
    r.close()


@pytest.fixture(scope="module")
def node_b(tmp_path_factory, issuer, store_env):
    r = _node(tmp_path_factory, issuer, store_env, "copies-b")
    yield r
    r.close()


def test_a_copy_made_on_node_a_is_shown_by_node_b_and_after_a_lost_its_file(
        node_a, node_b, token, tmp_path):
    body = b"[default]\naws_access_key_id = " + SECRET + b"\nregion = eu-west-1\n"
    local = tmp_path / "credentials"
    local.write_bytes(body)
    dest = node_a.files / "up" / "credentials"
    r = sftp(node_a, token, f"put {local} {dest}\n")
    assert r.returncode == 0, r.err
    assert dest.read_bytes() == body
    [row] = transfers(node_a, "op = 'put' AND path = ?", str(dest))
    assert row["sha256"] == hashlib.sha256(body).hexdigest()
    info = json.loads(row["content"])
    copy_a = node_a.data_dir / info["path"]
    masked = copy_a.read_bytes()
    assert SECRET not in masked and b"[MASKED:aws-access-key-id]" in masked
    assert not (node_b.data_dir / info["path"]).exists()       # only node A has the file

    shown = node_b.cli("transfers", "show", str(row["id"]), "--content")
    assert shown.stdout == masked

    copy_a.unlink()
    for node in (node_b, node_a):
        shown = node.cli("transfers", "show", str(row["id"]), "--content")
        assert shown.stdout == masked
    out = tmp_path / "copy.out"
    node_b.cli("transfers", "show", str(row["id"]), "-o", str(out))
    assert out.read_bytes() == masked

    verify = node_b.cli("verify", "--json", check=False)
    assert verify.returncode == 0, verify.out + verify.err
    assert json.loads(verify.out)["copies_checked"] >= 1
