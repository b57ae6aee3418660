"""An unexpected error inside a channel's own steps ends that channel, never leaves it hanging.

The bastion runs in this process (its listener on 127.0.0.1, built from the e2e rig's policy,
vault and sshd, with its own data dir), so that one step can be made to raise what it never
should: the recording's ``gate`` (the step that hung the bare benchmark variant for 300 s when
it was missing).  The client is asyncssh; the target the rig's real sshd.
"""

from __future__ import annotations

import asyncio

import asyncssh
import pytest

from tests.e2e.test_asyncssh_client import _TokenClient


@pytest.fixture
def services(rig, tmp_path, monkeypatch):
    from bastion.services import Services
    for key, value in rig.env.items():
        if key.startswith("BASTION_"):
            monkeypatch.setenv(key, value)
    return Services.build(rig.policy_path, tmp_path / "data", rig.keys_dir)


async def _exec(services, user: str, token: str, command: str):
    from bastion.ssh.server import start_listener
    acceptor = await start_listener(services, "127.0.0.1", 0)
    try:
        trusted = asyncssh.import_known_hosts("".join(services.hostkeys.known_hosts_lines()))
        async with asyncssh.connect("127.0.0.1", acceptor.get_port(), username="agent",
                                    client_factory=lambda: _TokenClient(token), known_hosts=trusted,
                                    preferred_auth="keyboard-interactive", client_keys=None,
                                    agent_path=None, config=None) as outer:
            async with asyncssh.connect("web1", 22, tunnel=outer, username=user,
                                        known_hosts=trusted, client_keys=None, agent_path=None,
                                        config=None) as inner:
                return await asyncio.wait_for(inner.run(command, check=False), 30)
    finally:
        acceptor.close()


def test_a_failing_channel_step_ends_the_channel_with_an_error(rig, token, services):
    real_open = services.open_recording

    def open_recording(*args, **kwargs):
        rec = real_open(*args, **kwargs)

        def broken_gate(chan, on_failure):
            raise RuntimeError("injected: the gate is broken")
        rec.gate = broken_gate
        return rec

    services.open_recording = open_recording

    async def run():
        try:
            return await _exec(services, rig.sshd.user, token, "echo ran-$((1+1))")
        finally:
            await services.close()

    result = asyncio.run(run())
    assert result.exit_status == 255
    assert "internal error" in result.stderr
    assert "ran-2" not in result.stdout              # the command never reached the host
