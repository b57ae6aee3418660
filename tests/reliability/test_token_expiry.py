"""Issue 16 item 3: a token's expiry is enforced after login (bastion.identity.expiry).

One real OpenSSH client keeps its connections open (ControlMaster on the bastion hop and on
the target), so that work after the token's ``exp`` travels over connections that were
authenticated before it: a new exec channel on the open inner connection is denied (rule
``<expired>``, in the index), a new inner connection on the open outer one is refused, and a
command that was running is ended ``session_max_after_expiry`` seconds after ``exp``, with a
marker in the recording.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.e2e.harness import BastionRig

LIFETIME = 8          # seconds of token life left at login
GRACE = 3             # [settings] session_max_after_expiry


@pytest.fixture(scope="module")
def rig(tmp_path_factory, issuer):
    r = BastionRig(tmp_path_factory.mktemp("expiry"), issuer)
    r.setup()
    r.write_policy(r.policy_text()
                   .replace('audience = "api://bastion"', 'audience = "api://bastion"\nleeway = 0')
                   .replace("[settings]\n", f"[settings]\nsession_max_after_expiry = {GRACE}\n"))
    r.start()
    # the control sockets live in a short dir of their own: a unix socket path holds 107 bytes,
    # OpenSSH adds 17 to ControlPath for its temporary name, and pytest-xdist's temp paths
    # (.../popen-gw2/expiry0/cm/b-<40 hex>) leave no room for that: the master fails to bind
    cm = Path(tempfile.mkdtemp(prefix="cm-"))
    r.ssh_config.write_text(
        f"Host bastion\n    ControlMaster auto\n    ControlPath {cm}/b-%C\n"
        f"    ControlPersist 120\n"
        f"Host web1\n    ControlMaster auto\n    ControlPath {cm}/w-%C\n    ControlPersist 120\n"
        + r.ssh_config.read_text())
    yield r
    for host in ("bastion", "web1"):
        subprocess.run(["ssh", "-F", str(r.ssh_config), "-O", "exit", host],
                       capture_output=True, timeout=10)
    r.close()
    shutil.rmtree(cm, ignore_errors=True)


def _rows(rig, sql):
    conn = rig.index()
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def test_after_expiry_new_work_is_refused_and_open_channels_end(rig, issuer, agent_client):
    token = issuer.mint(client=agent_client, lifetime=LIFETIME)
    exp = time.time() + LIFETIME - 1        # (exp is whole seconds: at least this late)
    first = rig.ssh(token, "echo one")
    assert first.returncode == 0 and first.stdout == b"one\n", first.stderr

    running = rig.ssh_popen(token, "echo started; sleep 60; echo never")
    assert running.stdout.readline() == b"started\n"
    assert time.time() < exp, "the set-up took longer than the token's life"

    while time.time() < exp + 2:            # the token has expired (leeway 0)
        time.sleep(0.2)
    # a new channel on the inner connection opened before exp: denied, recorded as such
    second = rig.ssh(token, "echo two")
    assert second.returncode == 126 and b"two" not in second.stdout
    assert b"<expired>" in second.stderr and b"reconnect" in second.stderr
    assert _eventually(rig, "SELECT 1 FROM commands WHERE line = 'echo two' AND action = 'deny' "
                            "AND rule = '<expired>'")

    # a new inner connection on the outer connection opened before exp: refused
    third = rig.ssh(token, "echo three", args=("-o", "ControlPath=none"))
    assert third.returncode == 255 and b"three" not in third.stdout
    # (through a multiplexed hop OpenSSH shows only "open refused"; the index has the reason)
    assert _eventually(rig, "SELECT 1 FROM sessions WHERE status = 'refused' "
                            "AND reason LIKE '%expired%reconnect%'")

    # the command that was running is ended once the grace time after exp is over
    out, err = running.communicate(timeout=60)
    ended = time.time()
    assert running.returncode == 255, err
    assert b"never" not in out and b"token" in err and b"expired" in err
    assert ended >= exp + GRACE - 1         # not before the grace time was over
    deadline = time.monotonic() + 20                        # (the worker writes it out)
    while b"token expired" not in _recordings(rig) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert b"token expired" in _recordings(rig)            # the marker


def _eventually(rig, sql: str, wait: float = 20.0) -> bool:
    """The index is written by the recording worker: poll until ``sql`` finds a row."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if _rows(rig, sql):
            return True
        time.sleep(0.2)
    return False


def _recordings(rig) -> bytes:
    return b"".join(p.read_bytes() for p in (rig.data_dir).rglob("*.cast"))
