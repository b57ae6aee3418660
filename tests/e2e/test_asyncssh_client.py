"""A client without OpenSSH's 1023-byte cap (asyncssh) sends the whole token in one answer,
and reaches the target through the bastion the same way."""

from __future__ import annotations

import asyncio

import asyncssh


class _TokenClient(asyncssh.SSHClient):
    def __init__(self, token: str) -> None:
        self.token = token
        self.prompts: list[str] = []

    def kbdint_auth_requested(self):
        return ""

    def kbdint_challenge_received(self, name, instructions, lang, prompts):
        self.prompts += [p for p, _echo in prompts]
        return [self.token] if prompts else []


async def _run(rig, token: str, command: str):
    trusted = asyncssh.import_known_hosts(rig.known_hosts.read_text())
    client = _TokenClient(token)
    async with asyncssh.connect("127.0.0.1", rig.port, username="agent",
                                client_factory=lambda: client, known_hosts=trusted,
                                preferred_auth="keyboard-interactive", client_keys=None,
                                agent_path=None, config=None) as outer:
        async with asyncssh.connect("web1", 22, tunnel=outer, username=rig.sshd.user,
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
