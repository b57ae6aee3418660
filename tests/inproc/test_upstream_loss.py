"""The upstream side of bastion/ssh/ failing: the target unreachable, and the sshd serving a
running command killed under it.  The agent gets 255 and the reason; the index and the
recording say what happened."""

from __future__ import annotations

import asyncio
import os
import re
import signal
from pathlib import Path

from tests.inproc.rig import agent, run, wait_for


def test_an_unreachable_target_ends_the_channel_with_255(bastion, rig, token, tmp_path):
    command = f"echo ran {tmp_path.name}"

    result = asyncio.run(run(bastion, token, rig.sshd.user, command, target="down1"))
    assert result.exit_status == 255
    assert result.stderr.startswith("bastion: ")
    assert "down1" in result.stderr
    assert result.stdout == ""
    channel = bastion.channel(command)
    assert channel["exit_status"] == 255
    errors = [m for m in bastion.markers(channel) if m.startswith("error: ")]
    assert errors and "down1" in errors[0]
    assert bastion.command(command)["action"] == "allow"     # decided, then could not connect


def _parent(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def _chain(listener: int, argv: list[str]) -> list[int] | None:
    """The processes under the sshd listener down to the one running ``argv``: first the
    sshd serving the connection, last that process (None: nothing runs ``argv``)."""
    for entry in Path("/proc").iterdir():
        try:
            found = (entry / "cmdline").read_bytes().split(b"\0")[:-1] == [
                a.encode() for a in argv]
        except OSError:
            continue
        if found:
            chain = [int(entry.name)]
            while chain[-1] not in (listener, 0, 1):
                chain.append(_parent(chain[-1]))
            assert chain[-1] == listener, f"{argv} does not run under sshd {listener}"
            return chain[-2::-1]
    return None


async def _serving(listener: int, argv: list[str]) -> list[int]:
    """``_chain`` once ``argv`` runs (the shell may not have started it yet)."""
    for _ in range(500):
        chain = _chain(listener, argv)
        if chain:
            return chain
        await asyncio.sleep(0.02)
    raise AssertionError(f"no process runs {argv}")


def test_losing_the_sshd_mid_command_ends_the_channel_with_255(bastion, rig, token, tmp_path):
    pause = f"20.{os.getpid()}{len(tmp_path.name)}"       # this test's own sleep, to find it
    command = f"echo started {tmp_path.name}; sleep {pause}; echo finished {tmp_path.name}"

    async def lose():
        async with agent(bastion, token, rig.sshd.user) as (_outer, inner):
            proc = await inner.create_process(command)
            shown = (await wait_for(proc.stdout, re.compile("started"))).string
            for pid in await _serving(rig.sshd.proc.pid, ["sleep", pause]):
                os.kill(pid, signal.SIGKILL)              # sshd first: the connection drops
            result = await asyncio.wait_for(proc.wait(check=False), 15)
            return shown + result.stdout, result
    shown, result = asyncio.run(lose())
    assert result.exit_status == 255
    assert result.stderr.startswith("bastion: upstream connection lost")
    assert shown == f"started {tmp_path.name}\n"
    channel = bastion.channel(command)
    assert channel["exit_status"] == 255
    assert bastion.recorded(channel) == shown
    # the pool dropped the dead connection: the next command gets a fresh one
    again = asyncio.run(run(bastion, token, rig.sshd.user, f"echo again {tmp_path.name}"))
    assert (again.exit_status, again.stdout) == (0, f"again {tmp_path.name}\n")
