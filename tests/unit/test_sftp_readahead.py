"""bastion.ssh.sftpreadahead: an agent's 32 KiB reads answered from larger upstream reads,
byte for byte what the file holds, with short reads, EOF and errors passed on."""

from __future__ import annotations

import asyncio
import os
import random

import pytest

from bastion.ssh.sftpreadahead import ReadAhead, block_size

BLOCK = 4 * 32 * 1024


class FakeFile:
    """An upstream file: ``read(size, offset)`` like asyncssh's, at most ``cap`` per call."""

    def __init__(self, data: bytes, cap: int = 1 << 30, fail_at: int | None = None) -> None:
        self.data, self.cap, self.fail_at = data, cap, fail_at
        self.calls: list[tuple[int, int]] = []

    async def read(self, size: int, offset: int) -> bytes:
        self.calls.append((offset, size))
        await asyncio.sleep(0)
        if self.fail_at is not None and offset <= self.fail_at < offset + size:
            raise OSError("upstream failed")
        return self.data[offset:offset + min(size, self.cap)]


async def agent(ra: ReadAhead, length: int, step: int = 32 * 1024, *, shuffle: bool = False,
                inflight: int = 64) -> bytes:
    """Read like OpenSSH's sftp: requests of ``step`` at increasing offsets, many in flight;
    a short answer is asked again for the rest."""
    got: dict[int, bytes] = {}

    async def one(off: int, size: int) -> None:
        while size > 0:
            data = await ra.read(off, size)
            if not data:
                return
            got[off] = data
            off, size = off + len(data), size - len(data)

    offsets = list(range(0, length + step, step))
    if shuffle:
        random.Random(1).shuffle(offsets)
    for i in range(0, len(offsets), inflight):
        await asyncio.gather(*(one(o, step) for o in offsets[i:i + inflight]))
    out, pos = b"", 0
    while pos in got:
        out += got[pos]
        pos += len(got[pos])
    return out


@pytest.mark.parametrize("length", [0, 1, 32 * 1024, BLOCK, BLOCK + 1, 3 * BLOCK + 12345])
@pytest.mark.parametrize("cap", [1 << 30, BLOCK - 1000, 20_000])
@pytest.mark.parametrize("shuffle", [False, True])
def test_what_the_agent_gets_is_the_file(length, cap, shuffle):
    data = os.urandom(length)
    up = FakeFile(data, cap=cap)
    assert asyncio.run(agent(ReadAhead(up, BLOCK), length, shuffle=shuffle)) == data


def test_sequential_reads_go_upstream_in_blocks():
    data = os.urandom(10 * BLOCK)
    up = FakeFile(data)
    assert asyncio.run(agent(ReadAhead(up, BLOCK), len(data), inflight=8)) == data
    sizes = {size for _, size in up.calls}
    assert sizes == {BLOCK}                       # no 32 KiB request reached the target
    assert len(up.calls) <= 10 + 4                # each block once (and a few past EOF)


def test_odd_sizes_spanning_blocks_are_relayed_as_they_are():
    data = os.urandom(3 * BLOCK)
    up = FakeFile(data)
    assert asyncio.run(agent(ReadAhead(up, BLOCK), len(data), step=100_000)) == data
    assert any(size == 100_000 for _, size in up.calls)


def test_an_upstream_error_is_the_error_of_the_request():
    up = FakeFile(os.urandom(4 * BLOCK), fail_at=BLOCK + 5)

    async def run() -> None:
        ra = ReadAhead(up, BLOCK)
        assert len(await ra.read(0, 32 * 1024)) == 32 * 1024
        with pytest.raises(OSError):
            await ra.read(BLOCK, 32 * 1024)
        ra.close()
    asyncio.run(run())


def test_blocks_behind_the_agent_are_dropped():
    up = FakeFile(os.urandom(20 * BLOCK))

    async def run() -> int:
        ra = ReadAhead(up, BLOCK)
        for off in range(0, 20 * BLOCK, 32 * 1024):
            await ra.read(off, 32 * 1024)
        return len(ra.blocks)
    assert asyncio.run(run()) <= 4 + 2


@pytest.mark.parametrize("max_read, block", [(0, 0), (261120, 229376), (32768, 32768),
                                             (1 << 20, 1 << 20), (1000, 0)])
def test_block_size(max_read, block):
    assert block_size(max_read) == block
