"""Issue 16 item 4: approvals are not trusted from the database.

A real agent (OpenSSH ``ssh``) runs a command that policy holds for review, through a real
``bastion serve`` to a real sshd; while it waits, the test writes a forged answer straight
into ``index.sqlite`` (no approver CLI, no token) -- by the wrong approver, by the requester
itself, with an oversized grant window, without proof, dated after the deadline.  The
held command would create a canary file in the test's own directory: it never does.  The
agent gets the normal refusal (exit 125), the bastion log an ERROR line and the index row
``refused`` with the reason; the recording a marker.  A genuine answer through the CLI on
the same rig still runs, and no token is in the index, the log or the recordings.
"""

from __future__ import annotations

import re
import select
import sqlite3
import time

import pytest

from bastion.approvals.model import Approver
from tests.approvalkit import forge
from tests.e2e.harness import POLICY_RULES, BastionRig

RULES = POLICY_RULES.replace(
    'env_allow = ["BASTION_TEST_OK"]',
    'env_allow = ["BASTION_TEST_OK"]\napprovers = ["role:sre-leads"]\napproval_timeout = 120\n'
    'approval_window_max = "15m"',
) + '''
[[rules]]
name = "touch-needs-review"
action = "review"
commands = ["touch"]
'''


@pytest.fixture(scope="module")
def rig(tmp_path_factory, issuer):
    r = BastionRig(tmp_path_factory.mktemp("forged"), issuer).setup()
    r.write_policy(r.policy_text(RULES))
    r.start()
    yield r
    r.close()


@pytest.fixture(scope="module")
def approver_token(issuer):
    return issuer.mint(client=issuer.add_client("forged-sre-lead", roles=["sre-leads"]))


def _wait_for_request(proc, timeout: float = 30.0) -> int:
    buf = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stderr], [], [], 0.2)
        if ready:
            chunk = proc.stderr.read1(4096)
            if not chunk:
                break
            buf += chunk
            m = re.search(rb"waiting for approval, request (\d+)", buf)
            if m:
                return int(m.group(1))
    raise AssertionError(f"no approval request announced; stderr: {buf!r}")


def _row(rig, request_id: int) -> sqlite3.Row:
    conn = rig.index()
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute("SELECT * FROM approvals WHERE id = ?", (request_id,)).fetchone()
    finally:
        conn.close()


def _recordings(rig) -> str:
    return "\n".join(p.read_text(errors="replace")
                     for p in (rig.data_dir / "recordings").rglob("*.cast"))


def _eventually(probe, what: str, timeout: float = 20.0):
    """The recorder and the log are written asynchronously: poll (nothing timed is asserted)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"never saw {what}")
        time.sleep(0.05)


def _requester(rig, request_id: int) -> Approver:
    row = _row(rig, request_id)
    return Approver(subject=row["requester_subject"], tenant=row["requester_tenant"],
                    app_id="forged-app", name="me, approving", roles=("sre-leads",))


def _lead(issuer) -> Approver:
    return Approver(subject="11111111-2222-3333-4444-555555555555", tenant=issuer.tenant_id,
                    name="A Real-Looking Lead", roles=("sre-leads",))


FORGERIES = {
    # name: (forge(...) arguments from (rig, request id), the refusal code)
    "wrong approver": (lambda rig, rid: dict(who=Approver(
        subject="mallory-oid", tenant=rig.issuer.tenant_id, name="Mallory",
        roles=("agents",))), "not-an-approver"),
    "requester as approver": (lambda rig, rid: dict(who=_requester(rig, rid)), "four-eyes"),
    "oversized window": (lambda rig, rid: dict(who=_lead(rig.issuer), window=7 * 86400),
                         "window-too-long"),
    "no proof": (lambda rig, rid: dict(who=_lead(rig.issuer), prove=False), "unproven"),
    "answered after the deadline": (lambda rig, rid: dict(
        who=_lead(rig.issuer), answered=_row(rig, rid)["expires"] + 1,
        expires=_row(rig, rid)["expires"] + 3600), "altered"),
}


@pytest.mark.parametrize("forgery", list(FORGERIES))
def test_forged_approval_row_does_not_run_the_command(rig, token, forgery):
    make, code = FORGERIES[forgery]
    canary = rig.canary_dir / f"forged-{forgery.replace(' ', '-')}"
    proc = rig.ssh_popen(token, f"touch {canary}")
    try:
        rid = _wait_for_request(proc)
        assert not canary.exists()
        forge(rig.data_dir, rid, issuer=rig.issuer.issuer, connect=rig.index, **make(rig, rid))
        assert proc.wait(60) == 125                     # the normal "not approved"
        err = proc.stderr.read().decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert f"not approved (request {rid}): the answer could not be verified" in err
    assert "it was not run" in err
    assert not canary.exists()
    row = _row(rig, rid)
    assert (row["status"], row["via"]) == ("denied", "refused")
    assert f"({code})" in row["refused_reason"]
    log = rig.wait_log(f"approval request {rid} REFUSED")
    line = next(ln for ln in log.splitlines() if f"approval request {rid} REFUSED" in ln)
    assert "ERROR" in line and f"({code})" in line
    _eventually(lambda: f"approval request {rid}: not approved via refused" in _recordings(rig),
                "the refusal marker in the recording")
    # nothing ran on the target: the command row carries no approver and no exit status 0
    conn = rig.index()
    try:
        approver, = conn.execute("SELECT approver FROM commands WHERE line LIKE ? ",
                                 (f"%{canary.name}%",)).fetchone()
    finally:
        conn.close()
    assert approver is None


def test_a_genuine_answer_still_runs_and_no_token_is_stored(rig, token, approver_token):
    canary = rig.canary_dir / "genuine"
    proc = rig.ssh_popen(token, f"touch {canary}")
    try:
        rid = _wait_for_request(proc)
        answer = rig.cli("approvals", "approve", str(rid), "--reason", "checked",
                         check=False, env={"BASTION_TOKEN": approver_token})
        assert answer.returncode == 0, answer.err
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert canary.exists()
    row = _row(rig, rid)
    assert (row["status"], row["via"], row["refused"]) == ("approved", "approver", None)
    assert row["approver_proof"] and rig.issuer.issuer in row["approver_proof"]
    rig.stop()                                          # flush everything to disk
    try:
        stores = [p for p in rig.data_dir.rglob("*") if p.is_file()] + [rig.log_path]
        for secret in (token, approver_token):
            for part in (secret, secret.split(".")[2]):
                hits = [str(p) for p in stores if part.encode() in p.read_bytes()]
                assert not hits, f"a token was stored in {hits}"
    finally:
        rig.start()
