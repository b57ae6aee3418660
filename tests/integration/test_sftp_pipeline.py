"""bastion.ssh.sftppipe with real asyncssh peers on 127.0.0.1: reads are in flight together,
and a request that is not a read or write waits until none is."""

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
    expected = 2

    def read(self, file_obj: object, offset: int, size: int) -> Any:
        async def gated() -> bytes:
            type(self).started += 1
            self.events.append(f"read {offset}")
            if type(self).started >= self.expected:
                self.gate.set()
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


def test_reads_are_in_flight_together_and_close_waits(tmp_path: Path) -> None:
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
                    reads = asyncio.gather(f.read(1000, 0), f.read(1000, 5000))
                    try:
                        done, _ = await asyncio.wait({reads}, timeout=GUARD)
                    finally:
                        GatedServer.gate.set()       # never leave the server stuck
                    assert done, "the second read never reached the server: not pipelined"
                    got.extend(await reads)
                    await f.close()
        finally:
            server.close()

    asyncio.run(main())
    assert got == [data[:1000], data[5000:6000]]
    assert sorted(GatedServer.events[:2]) == ["read 0", "read 5000"]
    assert GatedServer.events[2:] == ["close"]
