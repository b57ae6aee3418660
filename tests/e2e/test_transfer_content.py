"""Content capture end to end (``[settings] store_transfers = true``): the real ``sftp`` puts and
gets files through the bastion; the stored copy is masked like output, capped with a marker,
linked from the transfer row, and the row's hash is of the real bytes."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from tests.e2e.harness import POLICY_RULES, BastionRig
from tests.e2e.test_sftp import sftp, sha, transfers

SECRET = b"AKIAQ3EGXMPL4KZ7RT2W"
CAP = 64 * 1024

RULES = POLICY_RULES.replace(
    'env_allow = ["BASTION_TEST_OK"]',
    f'env_allow = ["BASTION_TEST_OK"]\nstore_transfers = true\nstore_transfers_max = {CAP}',
)


def content_rig(tmp_path_factory, issuer, name: str, store_env: dict | None = None) -> BastionRig:
    """A started rig keeping copies (``RULES``), sftp on web1 into ``files/up``."""
    root = Path(os.path.realpath(tmp_path_factory.mktemp(name)))
    r = BastionRig(root, issuer, **({"store_env": store_env} if store_env else {})).setup()
    files = root / "files"
    (files / "up").mkdir(parents=True)
    r.files = files
    r.write_policy(r.policy_text(RULES + f"""
[[grants]]
who = ["role:agents"]
targets = ["web1"]
channels = ["sftp"]

[[rules]]
name = "up"
action = "allow"
reads = ["{files}/up/**"]
writes = ["{files}/up/**"]
"""))
    return r.start()


@pytest.fixture(scope="module")
def crig(tmp_path_factory, issuer):
    r = content_rig(tmp_path_factory, issuer, "contentrig")
    yield r
    r.close()


def stored(rig: BastionRig, row: dict) -> tuple[bytes, dict]:
    info = json.loads(row["content"])
    return (rig.data_dir / info["path"]).read_bytes(), info


def test_an_uploaded_secret_is_masked_in_the_stored_copy(crig, token, tmp_path):
    body = b"[default]\naws_access_key_id = " + SECRET + b"\nregion = eu-west-1\n"
    local = tmp_path / "credentials"
    local.write_bytes(body)
    dest = crig.files / "up" / "credentials"
    r = sftp(crig, token, f"put {local} {dest}\n")
    assert r.returncode == 0, r.err
    assert dest.read_bytes() == body                      # the target got the real bytes
    row = transfers(crig, "op = 'put' AND path = ?", str(dest))[-1]
    assert row["sha256"] == hashlib.sha256(body).hexdigest()   # of the real bytes
    data, info = stored(crig, row)
    assert SECRET not in data and b"[MASKED:aws-access-key-id]" in data
    assert data.startswith(b"[default]\naws_access_key_id = ") and b"region = eu-west-1" in data
    assert info["truncated"] is False and info["sha256"] == hashlib.sha256(data).hexdigest()
    shown = crig.cli("transfers", "show", str(row["id"]), "--content")
    assert shown.returncode == 0 and shown.stdout == data
    assert SECRET not in crig.cli("transfers", "show", str(row["id"]), "--json").stdout
    assert crig.cli("verify").returncode == 0            # the content link is in the chain


def test_a_download_beyond_the_cap_is_cut_but_hashed_whole(crig, token, tmp_path):
    src = crig.files / "up" / "big.log"
    body = os.urandom(CAP) + b"\ntoken " + SECRET + b"\n" + os.urandom(CAP)
    src.write_bytes(body)
    r = sftp(crig, token, f"get {src} {tmp_path}/big.log\n")
    assert r.returncode == 0, r.err
    assert sha(tmp_path / "big.log") == sha(src)
    row = transfers(crig, "op = 'get' AND path = ?", str(src))[-1]
    assert row["sha256"] == hashlib.sha256(body).hexdigest() and row["bytes"] == len(body)
    data, info = stored(crig, row)
    assert info["truncated"] is True
    assert SECRET not in data
    assert f"stored content ends here after {CAP} bytes".encode() in data
    assert len(data) < CAP + 1024


def test_a_changed_stored_copy_is_refused_by_show(crig, token, tmp_path):
    local = tmp_path / "note"
    local.write_bytes(b"hello\n")
    dest = crig.files / "up" / "note"
    assert sftp(crig, token, f"put {local} {dest}\n").returncode == 0
    row = transfers(crig, "op = 'put' AND path = ?", str(dest))[-1]
    info = json.loads(row["content"])
    (crig.data_dir / info["path"]).write_bytes(b"forged\n")
    if crig.store_env:
        # a PostgreSQL store has the copy too (bastion.store.transfercopies): the forged file
        # is passed over for it; once the store's copy is changed as well, show refuses
        shown = crig.cli("transfers", "show", str(row["id"]), "--content")
        assert shown.stdout == b"hello\n"
        conn = crig.index()
        try:
            conn.execute("UPDATE transfer_copies SET data = CAST(? AS bytea) "
                         "WHERE transfer_id = ?", (b"forged\n", row["id"]))
        finally:
            conn.close()
    shown = crig.cli("transfers", "show", str(row["id"]), "--content", check=False)
    assert shown.returncode != 0 and b"was modified" in shown.stderr
