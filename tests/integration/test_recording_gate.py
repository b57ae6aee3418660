"""The agent's channel behind the gate, with a real Recorder, worker, files and SQLite index.

The agent's channel is the one fake here (the seam bastion.recording.gate owns: an object with
asyncssh's channel methods); it records what reached it and in which order.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3

import pytest

from bastion.errors import RecordingError
from bastion.identity.principal import Principal
from bastion.recording import Recorder, player
from bastion.recording.channelfiles import failure_label

AGENT = Principal(subject="oid-agent", name="deploy-bot", roles=("agents",))


class AgentChannel:
    """What the agent received, in order."""

    def __init__(self, pty: bool = False) -> None:
        self.got: list[tuple] = []
        self.pty = pty

    def write(self, data, datatype=None):
        self.got.append(("stderr" if datatype else "stdout", bytes(data)))

    def write_stderr(self, data):
        self.got.append(("stderr", bytes(data)))

    def write_eof(self):
        self.got.append(("eof",))

    def exit(self, status):
        self.got.append(("exit", status))

    def exit_with_signal(self, signal, core_dumped=False, msg="", lang=""):
        self.got.append(("signal", signal))

    def close(self):
        self.got.append(("close",))

    def get_terminal_type(self):
        return "xterm" if self.pty else None

    def get_environment(self):
        return {"LANG": "C"}


class Decision:
    action, rule, reason, commands = "allow", "r", "ok", ()


async def _until(predicate, within: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not predicate():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.01)


@pytest.fixture
def recorder(tmp_path):
    rec = Recorder.open(tmp_path, backoff=(3600, 3600))    # after a failure: retry when told
    yield rec
    rec.close()


def _blocked_index(tmp_path) -> sqlite3.Connection:
    blocker = sqlite3.connect(tmp_path / "index.sqlite", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")          # the worker's next transaction waits on this
    return blocker


async def test_output_reaches_the_agent_only_once_recorded(tmp_path, recorder):
    s = recorder.start_session(principal=AGENT, client="c", target="t", login="l")
    ch = s.open_channel("exec", command="x")
    await ch.opened()
    sup = recorder._writer
    await _until(lambda: sup.last_seq < sup.frontier())    # (opened: the file exists; the
    agent = AgentChannel()                                  # acknowledgement may come later)
    failures = []
    gate = ch.gate(agent, failures.append)
    gate.write(b"recorded before\n")              # nothing pending: through at once
    assert agent.got == [("stdout", b"recorded before\n")]
    blocker = _blocked_index(tmp_path)
    try:
        ch.command("x", Decision())               # a row: the worker waits for the index
        ch.output(b"held\n")
        gate.write(b"held\n")
        gate.exit(0)
        assert gate.withheld == len(b"held\n")
        await asyncio.sleep(0.3)
        assert agent.got == [("stdout", b"recorded before\n")]    # not recorded yet: not shown
        assert gate.get_environment() == {"LANG": "C"}             # the rest is the channel's
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    await _until(lambda: len(agent.got) == 3)
    assert agent.got[1:] == [("stdout", b"held\n"), ("exit", 0)]
    assert failures == [] and gate.withheld == 0
    ch.close(exit_status=0)
    s.close()


async def test_the_exit_status_follows_the_sealed_row(tmp_path, recorder):
    s = recorder.start_session(principal=AGENT, client="c", target="t", login="l")
    ch = s.open_channel("exec", command="x")
    await ch.opened()
    agent = AgentChannel()
    gate = ch.gate(agent, lambda exc: None)
    ch.output(b"out\n")
    gate.write(b"out\n")
    ch.close(exit_status=3)
    gate.exit(3)
    await _until(lambda: ("exit", 3) in agent.got)
    conn = sqlite3.connect(tmp_path / "index.sqlite")
    try:
        status, seq = conn.execute("SELECT status, seq FROM channels WHERE id = ?",
                                   (ch.id,)).fetchone()
    finally:
        conn.close()
    assert status == "closed" and seq is not None      # sealed before the agent had its status
    s.close()


async def test_a_worker_crash_drops_held_output_and_ends_the_channel_at_once(tmp_path, recorder):
    s = recorder.start_session(principal=AGENT, client="c", target="t", login="l")
    ch = s.open_channel("exec", command="x")
    await ch.opened()
    agent = AgentChannel()
    failures = []
    gate = ch.gate(agent, failures.append)
    ch.output(b"shown\n")
    gate.write(b"shown\n")
    await _until(lambda: agent.got)
    blocker = _blocked_index(tmp_path)
    try:
        ch.command("x", Decision())
        ch.output(b"never recorded\n")
        gate.write(b"never recorded\n")
        await asyncio.sleep(0.2)
        os.kill(recorder._writer.proc.pid, signal.SIGKILL)
        await _until(lambda: failures)            # proactively: no call on the channel needed
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert isinstance(failures[0], RecordingError)
    assert "killed by signal 9" in str(failures[0])
    assert agent.got == [("stdout", b"shown\n")]            # the unrecorded write is dropped
    with pytest.raises(RecordingError, match="not possible"):
        ch.output(b"more")
    # the SSH layer then ends the channel through the gate: that passes at once
    ch.close(exit_status=255)
    gate.write_stderr(b"bastion: session ended\n")
    gate.exit(255)
    assert agent.got[1:] == [("stderr", b"bastion: session ended\n"), ("exit", 255)]
    recorder.retry_now()
    assert recorder.wait_state("ok") == "ok"
    s.close()
    recorder.flush()
    _, events = player.load(ch.path)
    assert player.stream_bytes(events, "stdout").startswith(b"shown\n")
    assert events[-2].data == failure_label(
        "the recording worker process crashed (killed by signal 9)")
    assert events[-1].data == "exit status 255"


async def test_an_end_held_when_recording_fails_is_told_to_the_agent(tmp_path, recorder):
    """The SSH layer had ended the channel (exit 0 held); recording then fails: the agent gets
    255 and the message from the gate, and the row says what happened."""
    s = recorder.start_session(principal=AGENT, client="c", target="t", login="l")
    ch = s.open_channel("exec", command="x")
    await ch.opened()
    agent = AgentChannel()
    failures = []
    gate = ch.gate(agent, failures.append)
    blocker = _blocked_index(tmp_path)
    try:
        ch.output(b"last words\n")
        gate.write(b"last words\n")
        ch.close(exit_status=0)                   # needs the index: held
        gate.exit(0)
        await asyncio.sleep(0.2)
        os.kill(recorder._writer.proc.pid, signal.SIGKILL)
        await _until(lambda: any(item[0] == "exit" for item in agent.got))
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert agent.got[-1] == ("exit", 255)
    kind, message = agent.got[-2]
    assert kind == "stderr" and b"it can no longer be recorded" in message
    assert ("exit", 0) not in agent.got
    recorder.retry_now()
    assert recorder.wait_state("ok") == "ok"
    s.close()
    recorder.flush()
    conn = sqlite3.connect(tmp_path / "index.sqlite")
    try:
        status, exit_status = conn.execute("SELECT status, exit_status FROM channels WHERE id = ?",
                                           (ch.id,)).fetchone()
    finally:
        conn.close()
    assert status == "failed" and exit_status == 255
    _, events = player.load(ch.path)
    assert "the agent was not given exit status 0" in events[-2].data


async def test_sessions_during_a_fault_are_refused_and_accepted_after(tmp_path, recorder):
    s = recorder.start_session(principal=AGENT, client="c", target="t", login="l")
    ch = s.open_channel("exec", command="x")
    await ch.opened()
    os.kill(recorder._writer.proc.pid, signal.SIGKILL)
    assert recorder.wait_state("failed") == "failed"
    with pytest.raises(RecordingError, match="crashed"):
        recorder.start_session(principal=AGENT, client="c", target="t", login="l")
    with pytest.raises(RecordingError, match="crashed"):
        s.open_channel("exec", command="y")        # nor a new channel on a live session
    status = recorder.status()
    assert status["state"] == "failed" and status["sessions_open"] == 1
    assert "crashed" in status["error"]
    await _until(lambda: recorder.status()["next_attempt_in"] is not None)
    assert recorder.status()["next_attempt_in"] > 0           # the backoff (here: an hour)
    ch.close(exit_status=255)
    recorder.retry_now()
    assert recorder.wait_state("ok") == "ok"
    ch2 = s.open_channel("exec", command="y")          # the same session goes on
    await ch2.opened()
    ch2.output(b"again\n")
    ch2.close(exit_status=0)
    s.close()
    recorder.flush()
    status = recorder.status()
    assert status["failures"] == 1 and status["recoveries"] == 1
    assert status["last_recovery"]["attempts"] == 1
    _, events = player.load(ch2.path)
    assert player.stream_bytes(events, "stdout") == b"again\n"
