"""Secrets in output and command lines: never in recordings, the index or the log; masked for
the agent too where policy says so."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.harness import POLICY_RULES, BastionRig

GH = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"          # fake, shaped like a GitHub token
AWS_ID = "AKIA" + "Z7QW3RTY5UIO9PLK"                          # fake access key id


@pytest.fixture(scope="module")
def mask_rig(tmp_path_factory, issuer):
    r = BastionRig(tmp_path_factory.mktemp("mask"), issuer)
    r.extra_policy = '''
[[targets]]
name = "web-masked"
host = "127.0.0.1"
port = PORT
user = "USER"
key = "web1"
host_key = "HOSTKEY"

[[grants]]
who = ["role:agents"]
targets = ["web-masked"]
channels = ["exec", "shell"]
mask_live = true

[[masks]]
name = "employee-id"
regex = 'EMP-[0-9]{6}'
'''
    r.setup()
    r.extra_policy = (r.extra_policy.replace("PORT", str(r.sshd.port))
                      .replace("USER", r.sshd.user).replace("HOSTKEY", r.sshd.host_key_line))
    # the web* grant covers web-masked too: the strictest (mask_live) wins
    text = r.policy_text(POLICY_RULES)
    r.write_policy(text)
    r.start()
    yield r
    r.close()


def _all_recorded_bytes(rig) -> bytes:
    blobs = [p.read_bytes() for p in (rig.data_dir / "recordings").rglob("*.cast")]
    blobs.append(rig.index_bytes())
    blobs.append(rig.log().encode())
    return b"\n".join(blobs)


def _flushed(rig) -> None:
    # the writer flushes at least every second; closed channels are complete
    import time
    time.sleep(1.5)


def test_output_secrets_reach_the_agent_but_never_the_recording(mask_rig, token):
    r = mask_rig.ssh(token, f"printf 'token {GH}\\nkey {AWS_ID}\\nid EMP-123456\\n'")
    assert r.returncode == 0, r.err
    assert GH in r.out and AWS_ID in r.out                     # not live-masked by default
    _flushed(mask_rig)
    blob = _all_recorded_bytes(mask_rig)
    assert GH.encode() not in blob and AWS_ID.encode() not in blob
    assert b"EMP-123456" not in blob                          # the custom [[masks]] rule
    assert b"[MASKED:github-token]" in blob


def test_a_secret_split_across_writes_is_still_masked(mask_rig, token):
    r = mask_rig.ssh(token, f"printf 'key {AWS_ID[:9]}'; sleep 0.3; printf '{AWS_ID[9:]} end\\n'")
    assert r.returncode == 0, r.err
    assert AWS_ID in r.out
    _flushed(mask_rig)
    assert AWS_ID.encode() not in _all_recorded_bytes(mask_rig)


def test_secrets_in_command_lines_are_stored_masked(mask_rig, token):
    r = mask_rig.ssh(token, "echo password=hunter2-secret-xyz")
    assert r.returncode == 0
    _flushed(mask_rig)
    assert b"hunter2-secret-xyz" not in _all_recorded_bytes(mask_rig)
    hits = json.loads(mask_rig.cli("commands", "search", "password", "--json").out)
    assert any("[MASKED:password]" in h["line"] for h in hits)


def test_mask_live_grant_masks_what_the_agent_sees(mask_rig, token):
    r = mask_rig.ssh(token, f"printf 'token {GH} done\\n'", target="web-masked")
    assert r.returncode == 0, r.err
    assert GH not in r.out
    assert "[MASKED:github-token] done" in r.out


def test_bastion_mask_filters_exported_files(mask_rig, tmp_path):
    bastion = Path(sys.executable).parent / "bastion"
    p = subprocess.run([str(bastion), "mask", "--policy", str(mask_rig.policy_path)],
                       input=f"a {GH} b EMP-654321 c\n".encode(), capture_output=True, timeout=30)
    assert p.returncode == 0, p.stderr
    assert GH.encode() not in p.stdout and b"EMP-654321" not in p.stdout
