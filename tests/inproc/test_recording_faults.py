"""Recording failures on the exec path of bastion/ssh/: a session never runs unrecorded.

The faults are real: the recording worker process is killed (SIGKILL), at the moment a
channel opens or while a command streams; the bastion must end the channel with 255 and
say why, show the agent nothing the recording does not hold, mark the recording, and
record again once a new worker has passed its probe.  An unexpected error in one of the
channel's own steps (a broken gate) ends the channel too, never leaves it hanging.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal


from bastion.recording.channelfiles import failure_label
from tests.inproc.rig import agent, run, wait_for


def _wrap_open_recording(bastion, monkeypatch, before=None, after=None):
    """``services.open_recording`` with ``before()`` called first, ``after(rec)`` on its result."""
    services = bastion.services
    real = services.open_recording

    def open_recording(*args, **kwargs):
        if before is not None:
            before()
        rec = real(*args, **kwargs)
        if after is not None:
            after(rec)
        return rec
    monkeypatch.setattr(services, "open_recording", open_recording)


def test_a_failure_at_open_refuses_the_channel(bastion, rig, token, tmp_path, monkeypatch):
    command = f"echo ran-$((1+1)) {tmp_path.name}"

    def kill_worker():
        os.kill(bastion.worker_pid(), signal.SIGKILL)
        assert bastion.services.recorder.wait_state("failed", timeout=30) == "failed"
    _wrap_open_recording(bastion, monkeypatch, before=kill_worker)
    try:
        result = asyncio.run(run(bastion, token, rig.sshd.user, command))
    finally:
        monkeypatch.undo()
        bastion.recovered()
    assert result.exit_status == 255
    assert result.stderr.startswith("bastion: sessions are refused: they cannot be recorded")
    # the command never ran, nor was it decided: no output, no channel or command row
    assert result.stdout == ""
    assert bastion.rows("SELECT id FROM channels WHERE command = ?", command) == []
    assert bastion.rows("SELECT id FROM commands WHERE line = ?", command) == []
    # recording works again for the next session
    again = asyncio.run(run(bastion, token, rig.sshd.user, f"echo again {tmp_path.name}"))
    assert (again.exit_status, again.stdout) == (0, f"again {tmp_path.name}\n")


def _crash_mid_stream(bastion, rig, token, name):
    """Run a command that prints a line, sleeps and prints another; kill the recording worker
    once the agent has the first line.  (command, all the agent was shown, the result)."""
    command = f"echo first {name}; sleep 20; echo second {name}"

    async def stream():
        async with agent(bastion, token, rig.sshd.user) as (_outer, inner):
            proc = await inner.create_process(command)
            seen = (await wait_for(proc.stdout, re.compile(f"first {name}\n"))).string
            os.kill(bastion.worker_pid(), signal.SIGKILL)     # the worker dies mid-command
            result = await asyncio.wait_for(proc.wait(check=False), 15)
            return seen + result.stdout, result
    try:
        shown, result = asyncio.run(stream())
    finally:
        bastion.recovered()
    return command, shown, result


def test_a_failure_mid_stream_ends_the_channel_at_once(bastion, rig, token, tmp_path):
    command, shown, result = _crash_mid_stream(bastion, rig, token, tmp_path.name)
    assert result.exit_status == 255
    assert "bastion: session ended: it can no longer be recorded" in result.stderr
    assert shown == f"first {tmp_path.name}\n"            # "second" never came
    channel = bastion.channel(command)
    assert (channel["status"], channel["exit_status"]) == ("failed", 255)
    assert f"second {tmp_path.name}" not in bastion.recorded(channel)
    cause = "the recording worker process crashed (killed by signal 9)"
    assert bastion.markers(channel)[-2:] == [failure_label(cause), "exit status 255"]


def test_what_the_agent_saw_before_a_crash_is_in_the_recording(bastion, rig, token, tmp_path):
    # the worker had acknowledged "first ..." while its masker still held it back undecided;
    # the next worker gets it back (replay, OP_RESUME) and writes it once decided (the close)
    command, shown, result = _crash_mid_stream(bastion, rig, token, tmp_path.name)
    assert result.exit_status == 255
    assert bastion.recorded(bastion.channel(command)) == shown


def test_a_failing_channel_step_ends_the_channel_with_an_error(bastion, rig, token, tmp_path,
                                                              monkeypatch):
    def break_gate(rec):
        def broken_gate(chan, on_failure):
            raise RuntimeError("injected: the gate is broken")
        rec.gate = broken_gate
    _wrap_open_recording(bastion, monkeypatch, after=break_gate)
    result = asyncio.run(run(bastion, token, rig.sshd.user, f"echo ran-$((1+1)) {tmp_path.name}"))
    assert result.exit_status == 255
    assert "internal error" in result.stderr
    assert "ran-2" not in result.stdout              # the command never reached the host
