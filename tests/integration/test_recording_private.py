"""Issue 16 items 8 and 9 in the recording layer, on real files and a real SQLite index.

* what the recorder creates is private (dirs 0700, files 0600: index, -wal, -shm, lock,
  recordings) even under a permissive umask;
* a recording failure's report -- which agents are shown -- names no path on the server;
* a session closed while a channel still waits for its command's exit status keeps its
  row open until that channel closes, so a late exit status is recorded, not dropped.
"""

from __future__ import annotations

import os
import sqlite3
import stat

import pytest

from bastion.errors import RecordingError
from bastion.identity.principal import Principal
from bastion.recording import Recorder
from bastion.recording.verify import verify_index

AGENT = Principal(subject="oid-agent", app_id="app-1", name="deploy-bot", roles=("agents",))


class Allow:
    action, rule, reason, commands = "allow", "r", "ok", None


def rows(data_dir, sql, params=()):
    conn = sqlite3.connect(data_dir / "index.sqlite")
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(sql, params)]
    finally:
        conn.close()


@pytest.fixture
def open_umask():
    old = os.umask(0o022)            # what a service manager or a shell usually gives
    yield
    os.umask(old)


def _modes(root):
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            found[os.path.relpath(path, root)] = stat.S_IMODE(os.lstat(path).st_mode)
    return found


def test_everything_the_recorder_creates_is_private_whatever_the_umask(tmp_path, open_umask):
    data = tmp_path / "new" / "data"                 # neither exists yet
    rec = Recorder.open(data)
    try:
        s = rec.start_session(principal=AGENT, client="c", target="web1", login="deploy")
        ch = s.open_channel("exec", command="uptime")
        ch.output(b"up 3 days\n")
        rec.flush()
        modes = _modes(data)
        assert {"index.sqlite", "index.sqlite-wal", "index.sqlite-shm", "recorder.lock"} <= set(modes)
        assert any(name.endswith(".cast") for name in modes)
        ch.close(exit_status=0)
        s.close()
    finally:
        rec.close()
    for path in (tmp_path / "new", data):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700, path
    for name, mode in modes.items():
        want = 0o700 if (data / name).is_dir() else 0o600
        assert mode == want, f"{name} is {mode:o}"


def test_a_failure_report_names_no_path_on_the_server(tmp_path):
    rec = Recorder.open(tmp_path, backoff=(3600, 3600))
    try:
        s = rec.start_session(principal=AGENT, client="c", target="t", login="l")
        ch = s.open_channel("exec", command="x")
        rec.flush()
        # the next recording cannot be created: a directory where its file should go
        (ch.path.parent / f"s{s.id}-c{ch.id + 1}.cast").mkdir()
        s.open_channel("exec", command="y")
        with pytest.raises(RecordingError):
            rec.flush()
        assert rec.wait_state("failed") == "failed"
        assert not rec.healthy()
        with pytest.raises(RecordingError) as refused:
            rec.start_session(principal=AGENT, client="c", target="t", login="l")
        shown = str(refused.value)                   # what the SSH layer tells the agent
        assert "creating recording" in shown
        assert str(tmp_path) not in shown and "recordings/" not in shown
        assert str(tmp_path) not in rec.error
    finally:
        rec.close()


async def test_the_channel_open_error_names_no_path(tmp_path):
    rec = Recorder.open(tmp_path)
    try:
        s = rec.start_session(principal=AGENT, client="c", target="t", login="l")
        ch = s.open_channel("exec", command="x")
        await ch.opened()
        (ch.path.parent / f"s{s.id}-c{ch.id + 1}.cast").mkdir()
        ch2 = s.open_channel("exec", command="y")
        with pytest.raises(RecordingError) as refused:
            await ch2.opened()
        assert "creating recording" in str(refused.value)
        assert str(tmp_path) not in str(refused.value)
    finally:
        rec.close()


def test_a_session_closed_before_its_channel_waits_for_the_late_exit_status(tmp_path, capfd):
    """The agent left while its command still ran upstream: the session is closed at once,
    the command's exit status arrives afterwards and is recorded on its row."""
    rec = Recorder.open(tmp_path)
    try:
        s = rec.start_session(principal=AGENT, client="c", target="t", login="l")
        ch = s.open_channel("exec", command="make build")
        cmd = ch.command("make build", Allow())
        ch.output(b"building\n")
        s.close(wait_for_channels=True)         # the agent's connection ended
        with pytest.raises(RecordingError, match="closed"):
            s.open_channel("exec", command="another")
        rec.flush()
        [session] = rows(tmp_path, "SELECT * FROM sessions")
        [channel] = rows(tmp_path, "SELECT * FROM channels")
        assert session["status"] == "active" and channel["status"] == "open"
        ch.command_result(cmd, 3)               # the upstream reports, then the channel closes
        ch.close(exit_status=3)
        rec.flush()
    finally:
        rec.close()
    [session] = rows(tmp_path, "SELECT * FROM sessions")
    [channel] = rows(tmp_path, "SELECT * FROM channels")
    [command] = rows(tmp_path, "SELECT * FROM commands")
    assert (session["status"], session["exit_status"]) == ("closed", 3)
    assert (channel["status"], channel["exit_status"]) == ("closed", 3)
    assert command["exit_status"] == 3
    assert all(r["seq"] is not None for r in (session, channel, command))
    assert channel["seq"] > command["seq"] and session["seq"] > channel["seq"]
    assert verify_index(tmp_path).ok
    assert "not recorded" not in capfd.readouterr().err


def test_shutdown_closes_a_session_that_waits_for_its_channels(tmp_path):
    rec = Recorder.open(tmp_path)
    s = rec.start_session(principal=AGENT, client="c", target="t", login="l")
    ch = s.open_channel("exec", command="sleep 1000")
    ch.command("sleep 1000", Allow())
    s.close(status="interrupted", wait_for_channels=True)
    rec.close()
    [session] = rows(tmp_path, "SELECT * FROM sessions")
    [channel] = rows(tmp_path, "SELECT * FROM channels")
    assert session["status"] == "interrupted" and channel["status"] == "closed"
    assert channel["exit_status"] is None
    assert verify_index(tmp_path).ok


def test_a_result_after_the_seal_is_logged_with_its_cause(tmp_path, capfd):
    rec = Recorder.open(tmp_path)
    try:
        s = rec.start_session(principal=AGENT, client="c", target="t", login="l")
        ch = s.open_channel("exec", command="x")
        cmd = ch.command("x", Allow())
        ch.close()                               # closed without waiting: the row is sealed
        ch.command_result(cmd, 3)
        ch.command_result(cmd + 100, 0)          # a command that was never recorded
        rec.flush()
    finally:
        rec.close()
    err = capfd.readouterr().err
    assert f"command {cmd}: exit status 3 not recorded: it arrived after the row was sealed" in err
    assert f"command {cmd + 100}: exit status 0 not recorded: no such command row" in err
    [command] = rows(tmp_path, "SELECT * FROM commands")
    assert command["exit_status"] is None
