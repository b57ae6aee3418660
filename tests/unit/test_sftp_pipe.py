"""bastion.ssh.sftppipe: the agent's bulk sftp requests in flight together, within a byte
budget, and not read on while the agent leaves answers queued."""

from __future__ import annotations

import asyncio
import struct

import pytest
from asyncssh.constants import FXP_READ, FXP_WRITE
from asyncssh.logging import logger

from bastion.ssh.sftppipe import MAX_IN_FLIGHT_BYTES, READ_MAX, PipelinedHandler, bulk_cost

MiB = 1024 * 1024


def sftp_packet(pkttype: int, pktid: int, body: bytes) -> bytes:
    payload = bytes([pkttype]) + struct.pack(">I", pktid) + body
    return struct.pack(">I", len(payload)) + payload


def write_request(pktid: int, offset: int, data: bytes, handle: bytes = b"h") -> bytes:
    body = struct.pack(">I", len(handle)) + handle + struct.pack(">Q", offset)
    return sftp_packet(FXP_WRITE, pktid, body + struct.pack(">I", len(data)) + data)


def read_payload(length: int, handle: bytes = b"h") -> bytes:
    return (bytes([FXP_READ]) + struct.pack(">I", 7) + struct.pack(">I", len(handle)) + handle
            + struct.pack(">Q", 0) + struct.pack(">I", length))


@pytest.mark.parametrize("pkttype, payload, cost", [
    (FXP_READ, read_payload(32 * 1024), 32 * 1024),
    (FXP_READ, read_payload(255 * 1024), 255 * 1024),
    (FXP_READ, read_payload(2**32 - 1), READ_MAX),          # answered short, held at most this
    (FXP_READ, b"\x05", 0),                                 # malformed: the handler refuses it
    (FXP_WRITE, b"w" * 1000, 1000),
    (FXP_WRITE, b"", 0),
])
def test_bulk_cost(pkttype, payload, cost):
    assert bulk_cost(pkttype, payload) == cost


class FakeChannel:
    def is_closing(self) -> bool:
        return False


class FakeWriter:
    """An SSHWriter: records writes; ``drain`` blocks while ``paused``."""

    def __init__(self) -> None:
        self.channel = FakeChannel()
        self.writes: list[bytes] = []
        self.events: list[str] = []
        self.paused = False
        self.resumed = asyncio.Event()

    def write(self, data: bytes) -> None:
        self.writes.append(data)
        self.events.append("write")

    def write_eof(self) -> None:
        self.events.append("eof")

    def close(self) -> None:
        self.events.append("close")

    async def drain(self) -> None:
        while self.paused:
            self.resumed.clear()
            await self.resumed.wait()


class FakeReader:
    logger = logger

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    async def readexactly(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise asyncio.IncompleteReadError(self.data[self.pos:], n)
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk


class SlowServer:
    """An SFTP server whose writes take a few loop turns; counts the bytes in flight."""

    def __init__(self) -> None:
        self.held = self.peak = self.done = 0

    async def write(self, file_obj: object, offset: int, data: bytes) -> int:
        self.held += len(data)
        self.peak = max(self.peak, self.held)
        for _ in range(3):
            await asyncio.sleep(0)
        self.held -= len(data)
        self.done += 1
        return len(data)

    def close(self, file_obj: object) -> None:
        pass

    def exit(self) -> None:
        pass


def handler_for(requests: bytes, writer: FakeWriter, server: SlowServer) -> PipelinedHandler:
    handler = PipelinedHandler(server, FakeReader(requests), writer, 3)  # type: ignore[arg-type]
    handler._file_handles[b"h"] = object()
    return handler


def test_writes_in_flight_stay_within_the_byte_budget():
    async def run() -> SlowServer:
        # 40 writes of 1 MiB arrive at once; without the budget all 40 would be in flight
        data = b"d" * MiB
        requests = b"".join(write_request(i, i * MiB, data) for i in range(40))
        server, writer = SlowServer(), FakeWriter()
        await handler_for(requests, writer, server).recv_packets()
        assert server.done == 40
        assert len(writer.writes) == 40              # every write answered
        return server
    server = asyncio.run(run())
    assert server.peak <= MAX_IN_FLIGHT_BYTES
    assert server.peak >= MAX_IN_FLIGHT_BYTES // 2   # and still many at once (pipelined)


def test_no_bulk_request_starts_while_the_agent_leaves_answers_queued():
    async def run() -> None:
        requests = b"".join(write_request(i, i * 1000, b"x" * 1000) for i in range(5))
        server, writer = SlowServer(), FakeWriter()
        writer.paused = True                          # the channel is over its high-water mark
        task = asyncio.ensure_future(handler_for(requests, writer, server).recv_packets())
        for _ in range(20):
            await asyncio.sleep(0)
        assert server.done == 0 and server.peak == 0
        writer.paused = False
        writer.resumed.set()
        await task
        assert server.done == 5
    asyncio.run(run())
