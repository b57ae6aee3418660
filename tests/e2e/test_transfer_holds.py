"""Review holds for file transfers end to end: the real ``sftp`` and ``rsync`` clients wait, an
approver answers from the CLI in another process, and the path is resolved and decided again
before anything runs (a symlink swapped in during the hold is refused).

Everything written lands in this module's temp dir; the canary is ``fakessh/authorized_keys``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.e2e.harness import POLICY_RULES, BastionRig
from tests.e2e.test_approvals import _answer, _wait_for_request
from tests.e2e.test_sftp import sha, transfers

RULES = POLICY_RULES.replace(
    'env_allow = ["BASTION_TEST_OK"]',
    'env_allow = ["BASTION_TEST_OK"]\napprovers = ["role:sre-leads"]\napproval_timeout = 60',
)


def _policy(files: Path) -> str:
    return f"""
[[grants]]
who = ["role:agents"]
targets = ["web1"]
channels = ["sftp"]

[[rules]]
name = "held-writes"
action = "review"
writes = ["{files}/held/**"]

[[rules]]
name = "held-allow"
action = "allow"
reads = ["{files}/held/**"]
writes = ["{files}/held/**"]

[[rules]]
name = "no-ssh-writes"
action = "deny"
writes = ["{files}/fakessh/**"]
"""


@pytest.fixture(scope="module")
def hrig(tmp_path_factory, issuer):
    root = Path(os.path.realpath(tmp_path_factory.mktemp("holdrig")))
    r = BastionRig(root, issuer).setup()
    files = root / "files"
    for d in ("held", "fakessh"):
        (files / d).mkdir(parents=True)
    (files / "fakessh" / "authorized_keys").write_text("ssh-ed25519 AAAA canary\n")
    r.files = files
    r.write_policy(r.policy_text(RULES + _policy(files)))
    r.start()
    yield r
    r.close()


@pytest.fixture(scope="module")
def approver_token(issuer):
    lead = issuer.add_client("e2e-transfer-lead", roles=["sre-leads"])
    return issuer.mint(client=lead)


def _sftp(rig: BastionRig, token: str, batch: str) -> subprocess.Popen:
    path = rig.root / f"hold-batch-{abs(hash(batch))}"
    path.write_text(batch)
    argv = ["sftp", "-F", str(rig.ssh_config), "-b", str(path), f"{rig.sshd.user}@web1"]
    return subprocess.Popen(argv, env=rig.agent_env(token), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)


def _rsync(rig: BastionRig, token: str, *args: str) -> subprocess.Popen:
    argv = ["rsync", "-e", f"ssh -F {rig.ssh_config}", *args]
    return subprocess.Popen(argv, env=rig.agent_env(token), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)


def _finish(proc: subprocess.Popen) -> tuple[int, str]:
    try:
        status = proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return status, proc.stderr.read().decode(errors="replace")


CANARY_BEFORE = b"ssh-ed25519 AAAA canary\n"


def test_sftp_put_held_then_approved_lands(hrig, token, approver_token, tmp_path):
    local = tmp_path / "release.tgz"
    local.write_bytes(os.urandom(100_000))
    dest = hrig.files / "held" / "release.tgz"
    proc = _sftp(hrig, token, f"put {local} {dest}\n")
    rid = _wait_for_request(proc)
    assert not dest.exists()                              # held: nothing written yet
    assert _answer(hrig, "approve", rid, approver_token, "ticket 7").returncode == 0
    status, err = _finish(proc)
    assert status == 0, err
    assert sha(dest) == sha(local)
    row = transfers(hrig, "op = 'put' AND result = 'ok' AND path = ?", str(dest))[-1]
    assert (row["action"], row["rule"]) == ("review", "held-writes")
    assert "approved by e2e-transfer-lead" in row["reason"] and row["sha256"] == sha(local)


def test_sftp_put_held_then_denied_writes_nothing(hrig, token, approver_token, tmp_path):
    dest = hrig.files / "held" / "existing.txt"
    dest.write_text("before\n")
    local = tmp_path / "existing.txt"
    local.write_text("after\n")
    proc = _sftp(hrig, token, f"put {local} {dest}\n")
    rid = _wait_for_request(proc)
    assert _answer(hrig, "deny", rid, approver_token, "not today").returncode == 0
    status, err = _finish(proc)
    assert status != 0 and "not today" in err, err
    assert dest.read_text() == "before\n"
    row = transfers(hrig, "op = 'put' AND result = 'denied' AND path = ?", str(dest))[-1]
    assert row["rule"] == "held-writes"


def test_sftp_symlink_swapped_during_the_hold_is_refused(hrig, token, approver_token,
                                                         tmp_path):
    real = hrig.files / "held" / "slot-real.txt"
    real.write_text("slot\n")
    link = hrig.files / "held" / "slot"
    os.symlink(real, link)
    canary = hrig.files / "fakessh" / "authorized_keys"
    local = tmp_path / "evil"
    local.write_text("ssh-ed25519 AAAA attacker\n")
    proc = _sftp(hrig, token, f"put {local} {link}\n")
    rid = _wait_for_request(proc)
    link.unlink()
    os.symlink(canary, link)                              # swapped while the human reads
    assert _answer(hrig, "approve", rid, approver_token).returncode == 0
    status, err = _finish(proc)
    assert status != 0 and "after the approval" in err, err
    assert canary.read_bytes() == CANARY_BEFORE
    assert real.read_text() == "slot\n"                   # nor what was approved


rsync_needed = pytest.mark.skipif(shutil.which("rsync") is None, reason="rsync not installed")


@rsync_needed
def test_rsync_push_held_then_approved_lands(hrig, token, approver_token, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a.bin").write_bytes(os.urandom(50_000))
    dest = hrig.files / "held" / "rs"
    proc = _rsync(hrig, token, "-a", f"{tmp_path}/out/", f"{hrig.sshd.user}@web1:{dest}/")
    rid = _wait_for_request(proc)
    assert not dest.exists()
    assert _answer(hrig, "approve", rid, approver_token).returncode == 0
    status, err = _finish(proc)
    assert status == 0, err
    assert sha(dest / "a.bin") == sha(tmp_path / "out" / "a.bin")
    row = transfers(hrig, "op = 'rsync-put' AND path = ?", str(dest))[-1]
    assert (row["result"], row["action"], row["rule"]) == ("ok", "review", "held-writes")


@rsync_needed
def test_rsync_push_held_then_denied_writes_nothing(hrig, token, approver_token, tmp_path):
    (tmp_path / "x").write_text("x\n")
    dest = hrig.files / "held" / "rs-denied"
    proc = _rsync(hrig, token, str(tmp_path / "x"), f"{hrig.sshd.user}@web1:{dest}")
    rid = _wait_for_request(proc)
    assert _answer(hrig, "deny", rid, approver_token, "no").returncode == 0
    status, err = _finish(proc)
    assert status != 0 and not dest.exists(), err
    row = transfers(hrig, "op = 'rsync-put' AND path = ?", str(dest))[-1]
    assert row["result"] == "denied"


@rsync_needed
def test_rsync_symlink_swapped_during_the_hold_is_refused(hrig, token, approver_token,
                                                          tmp_path):
    realdir = hrig.files / "held" / "rs-real"
    realdir.mkdir()
    link = hrig.files / "held" / "rs-link"
    os.symlink(realdir, link)
    evil = tmp_path / "authorized_keys"
    evil.write_text("ssh-ed25519 AAAA attacker\n")
    proc = _rsync(hrig, token, str(evil), f"{hrig.sshd.user}@web1:{link}/")
    rid = _wait_for_request(proc)
    link.unlink()
    os.symlink(hrig.files / "fakessh", link)
    assert _answer(hrig, "approve", rid, approver_token).returncode == 0
    status, err = _finish(proc)
    assert status != 0 and "after the approval" in err, err
    assert (hrig.files / "fakessh" / "authorized_keys").read_bytes() == CANARY_BEFORE
    assert list(realdir.iterdir()) == []


def test_sftp_hold_is_withdrawn_when_the_agent_leaves(hrig, token, approver_token, tmp_path):
    import json
    import signal
    import time
    local = tmp_path / "left.txt"
    local.write_text("left\n")
    dest = hrig.files / "held" / "left.txt"
    proc = _sftp(hrig, token, f"put {local} {dest}\n")
    rid = _wait_for_request(proc)
    os.killpg(proc.pid, signal.SIGKILL)                   # sftp and its ssh go away
    proc.wait(10)
    status = None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        rows = json.loads(hrig.cli("approvals", "list", "--all", "--json").out)
        status = next(r["status"] for r in rows if r["id"] == rid)
        if status != "pending":
            break
        time.sleep(0.2)
    assert status == "cancelled"
    assert _answer(hrig, "approve", rid, approver_token).returncode != 0
    time.sleep(0.5)
    assert not dest.exists()
