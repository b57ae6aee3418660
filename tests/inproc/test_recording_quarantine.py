"""A recording operation the index refuses for its own values, on the exec path of
bastion/ssh/: that session's channel ends with 255, and a command streaming in another
session at that moment is not stopped -- it is recorded to its end (bastion.recording.
quarantine: the operation is kept aside in its batch, the worker does not fail).

The refused operation is made by wrapping the real ``services.open_recording`` for one
command: its terminal width becomes 2^64, which neither backend can store (no SSH peer can
send it: the pty request's width is a uint32)."""

from __future__ import annotations

import asyncio
import re

from tests.inproc.rig import agent, run, wait_for


def test_a_refused_operation_stops_its_channel_and_no_other(bastion, rig, token, tmp_path,
                                                             monkeypatch):
    name = tmp_path.name
    poison = f"echo refused-{name}"
    streaming = f"echo first {name}; head -n 1 >/dev/null; echo second {name}"
    services = bastion.services
    real = services.open_recording

    def open_recording(ctx, kind, *, command, term, size, env, masks=None):
        if command == poison:
            size = (2**64, 24)
        return real(ctx, kind, command=command, term=term, size=size, env=env, masks=masks)
    monkeypatch.setattr(services, "open_recording", open_recording)
    before = services.recorder.status()

    async def both():
        async with agent(bastion, token, rig.sshd.user) as (_outer, inner):
            proc = await inner.create_process(streaming)
            first = (await wait_for(proc.stdout, re.compile(f"first {name}\n"))).string
            refused = await run(bastion, token, rig.sshd.user, poison)
            proc.stdin.write("go\n")                 # the other command goes on after it
            proc.stdin.write_eof()
            rest = await asyncio.wait_for(proc.wait(check=False), 30)
            return refused, first + rest.stdout, rest
    try:
        refused, shown, streamed = asyncio.run(both())
    finally:
        monkeypatch.undo()
    after = services.recorder.status()

    assert refused.exit_status == 255
    assert "recording" in refused.stderr and f"refused-{name}" not in refused.stdout
    assert streamed.exit_status == 0, streamed.stderr
    assert shown == f"first {name}\nsecond {name}\n"
    channel = bastion.channel(streaming)
    assert (channel["status"], channel["exit_status"]) == ("closed", 0)
    assert bastion.recorded(channel) == shown
    assert bastion.rows("SELECT id FROM channels WHERE command = ?", poison) == []
    # its command row, queued before the bastion heard, joined it aside (not a dangling row)
    assert bastion.rows("SELECT id FROM commands WHERE line = ?", poison) == []
    assert after["failures"] == before["failures"]          # the worker never failed
    assert after["quarantined"] == before["quarantined"] + 1
