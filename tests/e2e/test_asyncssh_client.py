"""A client without OpenSSH's 1023-byte cap (asyncssh) sends the whole token in one answer,
and reaches the target through the bastion the same way; and, as an attacker's client, sends
what OpenSSH cannot: a NUL in a target name or a command."""

from __future__ import annotations

import asyncio
import time

import asyncssh
import pytest

from tests.e2e.harness import wait_rows


class _TokenClient(asyncssh.SSHClient):
    def __init__(self, token: str) -> None:
        self.token = token
        self.prompts: list[str] = []

    def kbdint_auth_requested(self):
        return ""

    def kbdint_challenge_received(self, name, instructions, lang, prompts):
        self.prompts += [p for p, _echo in prompts]
        return [self.token] if prompts else []


async def _run(rig, token: str, command: str, *, target: str = "web1"):
    trusted = asyncssh.import_known_hosts(rig.known_hosts.read_text())
    client = _TokenClient(token)
    async with asyncssh.connect("127.0.0.1", rig.port, username="agent",
                                client_factory=lambda: client, known_hosts=trusted,
                                preferred_auth="keyboard-interactive", client_keys=None,
                                agent_path=None, config=None) as outer:
        async with asyncssh.connect(target, 22, tunnel=outer, username=rig.sshd.user,
                                    known_hosts=trusted, client_keys=None, agent_path=None,
                                    config=None) as inner:
            result = await inner.run(command, check=False)
    return client.prompts, result


def test_whole_token_in_one_answer(rig, token):
    prompts, result = asyncio.run(_run(rig, token, "echo via-asyncssh"))
    assert prompts == ["OIDC token: "]           # one round: the answer is not 1000 bytes long
    assert result.exit_status == 0
    assert result.stdout == "via-asyncssh\n"


def test_denial_reaches_an_asyncssh_client_too(rig, token):
    _, result = asyncio.run(_run(rig, token, f"rm -rf {rig.canary_dir}"))
    assert result.exit_status == 126
    assert "no-recursive-delete" in result.stderr
    assert (rig.canary_dir / "canary.txt").exists()


def test_a_nul_in_a_target_name_or_a_command_is_recorded_and_recording_goes_on(rig, token):
    # NUL is valid UTF-8, so asyncssh passes it on in a channel's host name or an exec
    # command (user names it refuses: SASLprep); PostgreSQL's text refuses it.  It used to
    # fail the recording worker's batch, and the replay after it, so one agent stopped
    # recording for every session on the node.
    with pytest.raises(asyncssh.ChannelOpenError):         # no such target: a refused attempt
        asyncio.run(_run(rig, token, "true", target="nul\0target"))
    _, result = asyncio.run(_run(rig, token, "echo nul\0command"))
    assert result.exit_status is not None
    after = rig.ssh(token, "echo still-recorded")          # the real client, right after
    assert after.returncode == 0, after.err + rig.log()[-3000:]
    assert after.out == "still-recorded\n"
    assert "recording failed" not in rig.log()
    assert wait_rows(rig, "SELECT line FROM commands WHERE line LIKE 'echo nul%command'") == \
        [{"line": "echo nul\u2400command"}]
    assert {"target": "nul\u2400target"} in wait_rows(
        rig, "SELECT target FROM sessions WHERE status = 'refused' AND target LIKE 'nul%'")
    assert wait_rows(rig, "SELECT line FROM commands WHERE line = 'echo still-recorded'")
    status = rig.cli("status")
    assert "recording" in status.out.lower(), status.out
