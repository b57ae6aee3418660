"""Policy on the exec path of bastion/ssh/: what runs, what is denied, and what the index says."""

from __future__ import annotations

import asyncio

from tests.inproc.rig import run


def test_an_allowed_command_runs_and_is_recorded(bastion, rig, token, tmp_path):
    command = f"echo allowed-$((6*7)) {tmp_path.name}"
    result = asyncio.run(run(bastion, token, rig.sshd.user, command))
    assert (result.exit_status, result.stdout) == (0, f"allowed-42 {tmp_path.name}\n")
    channel = bastion.channel(command)
    assert (channel["status"], channel["exit_status"]) == ("closed", 0)
    assert bastion.recorded(channel) == result.stdout
    row = bastion.command(command)
    assert (row["action"], row["rule"], row["exit_status"]) == ("allow", "read-only-tools", 0)


def test_a_denied_command_never_reaches_the_host(bastion, rig, token, tmp_path):
    canary = tmp_path / "canary"
    canary.mkdir()
    (canary / "keep.txt").write_text("still here\n")
    command = f"rm -rf {canary}"
    result = asyncio.run(run(bastion, token, rig.sshd.user, command))
    assert result.exit_status == 126
    assert result.stderr.startswith("bastion: denied by rule no-recursive-delete")
    assert result.stdout == ""
    assert (canary / "keep.txt").read_text() == "still here\n"
    row = bastion.command(command)
    assert (row["action"], row["rule"]) == ("deny", "no-recursive-delete")
    assert bastion.channel(command)["exit_status"] == 126
