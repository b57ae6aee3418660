"""Issue 16 item 9: "exit status arrived after the row was sealed" (NULL exit statuses).

Cause, reproduced here with the real ssh client and sshd: the agent goes away while its
command still runs on the target.  The channel ends at once -- ``ChannelCore.agent_closed``
(bastion/proto/channel.py) returns ``End(None)``, which closes the channel's recording and
seals the command's row with no exit status -- and the bastion closes the upstream channel.
The command then ends and sshd sends its exit status, but the core had ended: the status was
dropped (before the sans-IO core, ``command_result`` was sent for the sealed row and the log
said ``exit status 3 ... arrived after the row was sealed``; ``sleep 1`` below makes the
status come about a second after the agent left).

The fix: ``SessionHandle.close(wait_for_channels=True)`` keeps the session row open while a
channel is, and when the agent leaves while its command runs, ``ChannelCore.agent_closed``
gives the command end of input and a grace time (``AGENT_GONE_GRACE``) instead of closing
it; ``host_closed`` then records its status.
"""

from __future__ import annotations

import sqlite3
import time

import pytest

from tests.e2e.harness import BastionRig


@pytest.fixture(scope="module")
def rig(tmp_path_factory, issuer):
    r = BastionRig(tmp_path_factory.mktemp("late"), issuer).setup().start()
    yield r
    r.close()


def _row(rig, sql):
    conn = rig.index()
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute(sql).fetchone()
    finally:
        conn.close()


def test_the_exit_status_of_a_command_whose_agent_left_is_recorded(rig, token):
    agent = rig.ssh_popen(token, "echo started; sleep 1; exit 3")
    try:
        assert agent.stdout.readline() == b"started\n"
    finally:
        agent.kill()                       # the agent vanishes mid-command
        agent.wait()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        session = _row(rig, "SELECT * FROM sessions WHERE status != 'refused' ORDER BY id DESC")
        if session is not None and session["status"] != "active":
            break
        time.sleep(0.05)
    assert session["status"] == "closed"
    command = _row(rig, "SELECT * FROM commands ORDER BY id DESC")
    assert command["line"] == "echo started; sleep 1; exit 3"
    assert command["exit_status"] == 3      # today: NULL
    assert "arrived after the row was sealed" not in rig.log()
