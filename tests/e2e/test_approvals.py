"""Just-in-time approval end to end: the real ssh client waits, an approver answers from the
CLI in another process, and only an approved command runs.  The held commands touch files in
the test's own canary directory, so nothing else is at stake."""

from __future__ import annotations

import json
import re
import select
import signal
import threading
import time

import pytest

from tests.e2e.harness import POLICY_RULES, BastionRig

APPROVAL_RULES = POLICY_RULES.replace(
    'env_allow = ["BASTION_TEST_OK"]',
    'env_allow = ["BASTION_TEST_OK"]\napprovers = ["role:sre-leads"]\napproval_timeout = TIMEOUT',
) + '''
[[rules]]
name = "touch-needs-review"
action = "review"
commands = ["touch"]
'''


def _rig(tmp_path_factory, issuer, timeout: int) -> BastionRig:
    r = BastionRig(tmp_path_factory.mktemp("appr"), issuer).setup()
    r.write_policy(r.policy_text(APPROVAL_RULES.replace("TIMEOUT", str(timeout))))
    return r.start()


@pytest.fixture(scope="module")
def arig(tmp_path_factory, issuer):
    r = _rig(tmp_path_factory, issuer, 60)
    yield r
    r.close()


@pytest.fixture(scope="module")
def approver_token(issuer):
    lead = issuer.add_client("e2e-sre-lead", roles=["sre-leads"])
    return issuer.mint(client=lead)


def _wait_for_request(proc, timeout: float = 20.0) -> int:
    buf = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stderr], [], [], 0.2)
        if ready:
            chunk = proc.stderr.read1(4096)
            if not chunk:
                break
            buf += chunk
            m = re.search(rb"waiting for approval, request (\d+), up to (\d+) s", buf)
            if m:
                return int(m.group(1))
    raise AssertionError(f"no approval request announced; stderr: {buf!r}")


def _answer(rig, verb: str, rid: int, token: str, reason: str = "e2e"):
    return rig.cli("approvals", verb, str(rid), "--reason", reason, check=False,
                   env={"BASTION_TOKEN": token})


def test_held_exec_runs_once_approved_from_the_cli(arig, token, approver_token):
    marker = arig.canary_dir / "approved-marker"
    proc = arig.ssh_popen(token, f"touch {marker}")
    try:
        rid = _wait_for_request(proc)
        assert not marker.exists()                      # held, not run yet
        answer = _answer(arig, "approve", rid, approver_token, "change ticket 123")
        assert answer.returncode == 0, answer.err
        assert proc.wait(20) == 0
        assert marker.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
    rows = json.loads(arig.cli("approvals", "list", "--all", "--json").out)
    row = next(r for r in rows if r["id"] == rid)
    assert row["status"] == "approved" and row["answer_reason"] == "change ticket 123"
    assert row["approver_name"] == "e2e-sre-lead"


def test_denied_request_never_runs(arig, token, approver_token):
    marker = arig.canary_dir / "denied-marker"
    proc = arig.ssh_popen(token, f"touch {marker}")
    try:
        rid = _wait_for_request(proc)
        assert _answer(arig, "deny", rid, approver_token, "not now").returncode == 0
        assert proc.wait(20) == 125
        err = proc.stderr.read().decode()
        assert "denied by" in err and "not now" in err
        assert not marker.exists()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_requester_cannot_approve_their_own_request(arig, token, issuer, agent_client):
    marker = arig.canary_dir / "self-approved-marker"
    proc = arig.ssh_popen(token, f"touch {marker}")
    try:
        rid = _wait_for_request(proc)
        # the same subject, even through another app id, and even if it holds the role
        same_subject = issuer.mint({"roles": ["sre-leads", "agents"], "azp": "other-app",
                                    "appid": "other-app"}, client=agent_client)
        answer = _answer(arig, "approve", rid, same_subject)
        assert answer.returncode != 0
        assert "own request" in (answer.err + answer.out).lower()
        assert proc.poll() is None and not marker.exists()
    finally:
        proc.kill()
        proc.wait()


def test_an_approver_outside_the_approvers_list_is_refused(arig, token, issuer):
    marker = arig.canary_dir / "outsider-marker"
    proc = arig.ssh_popen(token, f"touch {marker}")
    try:
        rid = _wait_for_request(proc)
        outsider = issuer.mint(client=issuer.add_client("e2e-not-a-lead", roles=["agents"]))
        answer = _answer(arig, "approve", rid, outsider)
        assert answer.returncode != 0
        assert "approver" in (answer.err + answer.out).lower()
        assert proc.poll() is None and not marker.exists()
    finally:
        proc.kill()
        proc.wait()


def test_escape_sequences_in_a_held_command_are_shown_in_full_and_inert(arig, token,
                                                                        approver_token):
    # the agent tries to make the approver see "touch harmless" instead of the real target
    evil = f"touch {arig.canary_dir}/esc-marker \x1b[2K\r\x1b[1Atouch harmless"
    proc = arig.ssh_popen(token, evil)
    try:
        rid = _wait_for_request(proc)
        shown = arig.cli("approvals", "list").out
        assert "\x1b" not in shown and "\r" not in shown.replace("\r\n", "\n")
        assert "esc-marker" in shown                  # the hidden part is visible
        assert str(rid) in shown
        watch = arig.cli("approvals", "watch", "--once", env={"BASTION_TOKEN": approver_token}).out
        assert "\x1b[2K" not in watch and "esc-marker" in watch
    finally:
        proc.kill()
        proc.wait()


def test_timeout_denies(tmp_path_factory, issuer, token):
    rig = _rig(tmp_path_factory, issuer, 2)
    try:
        marker = rig.canary_dir / "timeout-marker"
        r = rig.ssh(token, f"touch {marker}")
        assert r.returncode == 125
        assert "nobody answered in time" in r.err
        assert not marker.exists()
    finally:
        rig.close()


def test_a_restart_with_a_pending_request_runs_nothing(tmp_path_factory, issuer, token,
                                                       approver_token):
    rig = _rig(tmp_path_factory, issuer, 60)
    try:
        marker = rig.canary_dir / "restart-marker"
        proc = rig.ssh_popen(token, f"touch {marker}")
        rid = _wait_for_request(proc)
        rig.stop(signal.SIGKILL)
        proc.kill()
        proc.wait()
        rig.start()
        answer = _answer(rig, "approve", rid, approver_token)
        assert answer.returncode != 0                   # expired by the restart, not pending
        time.sleep(1)
        assert not marker.exists()
        rows = json.loads(rig.cli("approvals", "list", "--all", "--json").out)
        assert next(r for r in rows if r["id"] == rid)["status"] != "approved"
    finally:
        rig.close()


def test_held_shell_line_waits_at_enter_and_runs_once_approved(arig, token, approver_token):
    from tests.e2e.harness import PtyAgent
    marker = arig.canary_dir / "shell-approved-marker"
    agent = PtyAgent(arig, token)
    try:
        agent.wait_ready()
        agent.send(f"touch {marker}\r".encode())
        out = agent.read_until(b" s\r\n", timeout=20)
        rid = int(re.search(rb"request (\d+)", out).group(1))
        assert not marker.exists()
        assert _answer(arig, "approve", rid, approver_token).returncode == 0
        deadline = time.monotonic() + 20
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert marker.exists()
        agent.send(b"exit\r")
        agent.wait()
    finally:
        agent.close()


def test_stdin_sent_while_held_waits_in_the_agents_window(arig, token, approver_token):
    """An agent that streams stdin while its command waits for a human is held back by its
    SSH window: the bastion reads a few MiB of it, not all (no memory to fill)."""
    size = 64 * 1024 * 1024
    chunk = b"stdin-while-held" * 65536
    marker = arig.canary_dir / "held-stdin-marker"
    proc = arig.ssh_popen(token, f"touch {marker}")

    def feed():
        try:
            for _ in range(size // len(chunk)):
                proc.stdin.write(chunk)
            proc.stdin.close()
        except (BrokenPipeError, ValueError):
            pass
    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    try:
        rid = _wait_for_request(proc)
        index = arig.index()
        try:
            seen = []
            deadline = time.monotonic() + 4          # the index is updated every 0.5 s
            while time.monotonic() < deadline:
                row = index.execute("SELECT bytes_in FROM channels WHERE command LIKE ? "
                                    "ORDER BY id DESC LIMIT 1", (f"%{marker.name}%",)).fetchone()
                seen.append(row[0] if row and row[0] else 0)
                time.sleep(0.25)
        finally:
            index.close()
        assert max(seen) > 0                         # the agent did send, and it was counted
        assert max(seen) <= 16 * 1024 * 1024, f"read {max(seen)} bytes of stdin while held"
        answer = _answer(arig, "deny", rid, approver_token, "not now")
        assert answer.returncode == 0, answer.err
        assert proc.wait(30) == 125
        assert not marker.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
        feeder.join(10)
