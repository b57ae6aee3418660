"""bastion.ssh.sftppipe with real asyncssh peers on 127.0.0.1: reads are in flight together,
and a request that is not a read or write (here: close) waits until none is."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import asyncssh
from asyncssh.stream import SSHServerStreamSession

from bastion.ssh.sftppipe import start_server

GUARD = 10.0       # only against a hang: a server that answers one read at a time never lets go


class GatedServer(asyncssh.SFTPServer):
    """Local files, but a read waits until ``expected`` reads have started."""

    events: list[str]
    gate: asyncio.Event
    started = 0

    def read(self, file_obj: object, offset: int, size: int) -> Any:
        async def gated() -> bytes:
            type(self).started += 1
            self.events.append(f"read {offset}")
            await self.gate.wait()
            data: bytes = super(GatedServer, self).read(file_obj, offset, size)  # type: ignore[assignment]
            return data
        return gated()

    def close(self, file_obj: object) -> None:
        self.events.append("close")
        super().close(file_obj)


class _Session(SSHServerStreamSession):  # type: ignore[type-arg]
    def __init__(self) -> None:
        super().__init__(None)

    def subsystem_requested(self, subsystem: str) -> bool:
        return subsystem == "sftp"

    def session_started(self) -> None:
        chan: Any = self._chan
        start_server(GatedServer(chan), self, chan, 3)


class _Server(asyncssh.SSHServer):
    def begin_auth(self, username: str) -> bool:
        return False

    def session_requested(self) -> Any:
        return _Session()


def test_reads_are_in_flight_together_and_close_waits_for_them(tmp_path: Path) -> None:
    data = bytes(range(256)) * 40
    (tmp_path / "f").write_bytes(data)
    GatedServer.events = []
    GatedServer.started = 0

    got: list[Any] = []

    async def main() -> None:
        GatedServer.gate = asyncio.Event()
        key = asyncssh.generate_private_key("ssh-ed25519")
        server = await asyncssh.create_server(_Server, "127.0.0.1", 0, server_host_keys=[key],
                                              encoding=None)
        port = server.sockets[0].getsockname()[1]
        try:
            async with asyncssh.connect("127.0.0.1", port, known_hosts=None, username="u",
                                        client_keys=None, agent_path=None, config=None) as conn:
                async with conn.start_sftp_client() as sftp:
                    f = await sftp.open(str(tmp_path / "f"), "rb", block_size=0)
                    # read, read, close sent back to back; the reads wait at the gate
                    both = asyncio.gather(f.read(1000, 0), f.read(1000, 5000), f.close())
                    try:
                        for _ in range(int(GUARD / 0.01)):
                            if GatedServer.started == 2:
                                break
                            await asyncio.sleep(0.01)
                        assert GatedServer.started == 2, "the second read never reached the " \
                                                         "server: not pipelined"
                        await asyncio.sleep(0.2)     # time for the close to arrive meanwhile
                        assert "close" not in GatedServer.events, "close ran beside reads"
                    finally:
                        GatedServer.gate.set()       # never leave the server stuck
                    got.extend((await both)[:2])
        finally:
            server.close()

    asyncio.run(main())
    assert got == [data[:1000], data[5000:6000]]
    assert sorted(GatedServer.events[:2]) == ["read 0", "read 5000"]
    assert GatedServer.events[2:] == ["close"]


class _Unencodable(asyncssh.SFTPServer):
    """Refuses every open with a reason the protocol cannot encode (a lone surrogate)."""

    def open(self, path: bytes, pflags: int, attrs: Any) -> Any:
        raise asyncssh.SFTPPermissionDenied("refused: " + path.decode("utf-8", "surrogateescape"))


class _UnencodableSession(_Session):
    def session_started(self) -> None:
        chan: Any = self._chan
        start_server(_Unencodable(chan), self, chan, 3)


class _UnencodableServer(_Server):
    def session_requested(self) -> Any:
        return _UnencodableSession()


def test_a_protocol_that_fails_closes_the_agents_channel_instead_of_leaving_it_waiting(
        tmp_path: Path) -> None:
    # asyncssh cannot encode the error's reason, so the protocol task fails; the agent's
    # sftp once waited for an answer that never came
    outcome: list[str] = []

    async def main() -> None:
        key = asyncssh.generate_private_key("ssh-ed25519")
        server = await asyncssh.create_server(_UnencodableServer, "127.0.0.1", 0,
                                              server_host_keys=[key], encoding=None)
        port = server.sockets[0].getsockname()[1]
        try:
            async with asyncssh.connect("127.0.0.1", port, known_hosts=None, username="u",
                                        client_keys=None, agent_path=None, config=None) as conn:
                async with conn.start_sftp_client(path_encoding=None) as sftp:
                    try:
                        await asyncio.wait_for(sftp.open(b"/tmp/bad\xffname", "rb"), GUARD)
                    except asyncio.TimeoutError:
                        outcome.append("no answer")
                    except (asyncssh.SFTPError, asyncssh.Error, ConnectionError, EOFError) as exc:
                        outcome.append(type(exc).__name__)
        finally:
            server.close()

    try:
        asyncio.run(asyncio.wait_for(main(), 3 * GUARD))   # a channel left open hangs its close
    except asyncio.TimeoutError:
        outcome.append("hung")
    assert outcome and outcome[0] not in ("no answer", "hung"), outcome
