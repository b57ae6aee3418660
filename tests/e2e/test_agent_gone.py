"""The agent vanishes while its command runs upstream: the bastion ends it.

The agent's ``ssh -J`` (the client and its ProxyJump process) is killed with ``killpg``
while its remote command, a harmless ``sleep``, runs on the target.  The command gets end of
input and ``AGENT_GONE_GRACE`` seconds to end by itself (bastion/ssh/ending.py); then the
bastion sends it SIGTERM, then SIGKILL and closes the upstream channel, then ends the channel
itself if the host still has not closed it.

Why the last step exists (the bug this file reproduced): closing the upstream channel does
not end a command that never writes.  OpenSSH's sshd keeps a session channel without a pty,
and its command, while the command's stdout/stderr are open, and does not answer the close
meanwhile; the bastion waited for that answer, so the session's row stayed ``active`` until
the ``sleep`` ended by itself.  sshd delivers ``signal`` requests only with privilege
separation, i.e. to a non-root login of an sshd started as root: ``web2`` below is such a
target (when the tests run as root and a non-root account with a shell exists); ``web1``
(root logs in root) refuses signals, so there the bastion's own end of the channel is what
closes the row.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from bastion.demo.sshd import LocalSshd
from tests.e2e.harness import BastionRig


def _plain_user() -> str | None:
    """A non-root account with a real shell and home, for a target with privilege separation."""
    if os.geteuid() != 0:
        return None
    for entry in pwd.getpwall():
        if (entry.pw_uid >= 1000 and entry.pw_shell in ("/bin/bash", "/bin/sh", "/usr/bin/bash")
                and os.path.isdir(entry.pw_dir)):
            return entry.pw_name
    return None


PLAIN_USER = _plain_user()


@pytest.fixture(scope="module")
def rig(tmp_path_factory, issuer):
    r = BastionRig(tmp_path_factory.mktemp("gone"), issuer).setup()
    plain = None
    if PLAIN_USER:
        # sshd reads authorized_keys as the user logging in: a directory it can traverse
        workdir = Path(tempfile.mkdtemp(prefix="bastion-gone-"))
        pub = (r.sshd.workdir / "authorized_keys").read_text().split("\n")
        plain = LocalSshd(workdir / "sshd", [pub[0]], user=PLAIN_USER,
                          use_pam=True).start()   # the account may be locked (no password)
        os.chmod(workdir, 0o711)
        os.chmod(workdir / "sshd", 0o711)
        os.chmod(workdir / "sshd" / "authorized_keys", 0o644)
        r.extra_targets = f"""
[[targets]]
name = "web2"
host = "127.0.0.1"
port = {plain.port}
user = "{PLAIN_USER}"
key = "web1"
host_key = "{plain.host_key_line}"
labels = ["prod"]
"""
        r.write_policy()
    r.start()
    yield r
    r.close()
    if plain is not None:
        plain.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def _sleepers(arg: bytes) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv[:2] == [b"sleep", arg]:
            found.append(int(entry.name))
    return found


def _session(rig, sid=None):
    conn = rig.index()
    try:
        if sid is not None:
            return conn.execute("SELECT id, status FROM sessions WHERE id = ?",
                                (sid,)).fetchone()
        return conn.execute("SELECT id, status FROM sessions WHERE status != 'refused' "
                            "ORDER BY started DESC").fetchone()
    finally:
        conn.close()


def _recording(rig, sid) -> str:
    return "".join(p.read_text() for p in (rig.data_dir / "recordings").rglob(f"s{sid}-c*.cast"))


def _kill_agent_mid_command(rig, token, target: str, arg: str) -> tuple[int, float]:
    """Run ``sleep ARG`` through the bastion, kill the agent's ssh -J once it runs; the
    session's id and when the agent was killed."""
    assert not _sleepers(arg.encode())
    login = PLAIN_USER if target == "web2" else rig.sshd.user
    argv = ["ssh", "-F", str(rig.ssh_config), f"{login}@{target}", f"echo started; sleep {arg}"]
    agent = subprocess.Popen(argv, env=rig.agent_env(token), stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             start_new_session=True)
    try:
        assert agent.stdout.readline() == b"started\n", agent.stderr.read1(4096)
        deadline = time.monotonic() + 10
        while not _sleepers(arg.encode()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _sleepers(arg.encode()), "the upstream sleep did not start"
        sid, status = _session(rig)
        assert status == "active"
    finally:
        os.killpg(agent.pid, signal.SIGKILL)       # ssh and its ProxyJump process
        agent.wait()
    return sid, time.monotonic()


def _wait_ended(rig, sid, arg: str, *, process_too: bool) -> None:
    deadline = time.monotonic() + 50               # well before the sleep would end by itself
    while time.monotonic() < deadline:
        if _session(rig, sid)[1] != "active" and not (process_too and _sleepers(arg.encode())):
            return
        time.sleep(0.1)


@pytest.mark.skipif(PLAIN_USER is None, reason="needs root and a non-root account with a shell "
                                              "(sshd delivers signals only with privsep)")
def test_a_command_whose_agent_was_killed_is_ended_upstream(rig, token):
    arg = "59.731"
    sid, killed = _kill_agent_mid_command(rig, token, "web2", arg)
    _wait_ended(rig, sid, arg, process_too=True)
    print(f"ended {time.monotonic() - killed:.1f} s after the agent was killed")
    assert _session(rig, sid)[1] == "closed"
    assert not _sleepers(arg.encode()), "the upstream sleep still runs"
    conn = rig.index()
    try:
        [(sig,)] = conn.execute("SELECT exit_signal FROM channels WHERE session_id = ?",
                                (sid,)).fetchall()
    finally:
        conn.close()
    assert sig == "TERM"                   # the host ended it and said so
    assert "the command is sent SIGTERM" in _recording(rig, sid)


def test_a_session_whose_host_ignores_the_close_is_closed_anyway(rig, token):
    """web1 (root logs in root: no privsep) refuses signal requests and never answers the
    close while the command runs: the bastion ends the channel itself."""
    arg = "58.913"
    sid, killed = _kill_agent_mid_command(rig, token, "web1", arg)
    try:
        _wait_ended(rig, sid, arg, process_too=False)
        print(f"row closed {time.monotonic() - killed:.1f} s after the agent was killed")
        assert _session(rig, sid)[1] == "closed"
        assert "the host did not end the command" in _recording(rig, sid)
    finally:
        for pid in _sleepers(arg.encode()):    # the sshd could not be made to end it
            os.kill(pid, signal.SIGTERM)
