"""Read-ahead for an agent's sequential sftp reads: fewer, larger reads upstream.

OpenSSH's ``sftp`` reads a file in 32 KiB requests, 64 outstanding.  Relaying each one as
its own upstream request costs the bastion a Python round of packet work per 32 KiB.
:class:`ReadAhead` instead reads the file upstream in *blocks* of the target's own read
size (a multiple of 32 KiB, up to ``limits@openssh.com``'s ``max-read-length``), a few
blocks ahead of the agent, and answers the agent's requests from them.

* A request that falls inside one block is answered from it (the block is fetched, and
  the next ``depth - 1`` prefetched, if they are not yet).  One that spans two blocks, or
  starts past what a short block returned, is relayed as it is.
* A block that came back short answers what it holds (SFTP allows short reads); the
  agent asks again for the rest, and that request is relayed.  An empty block is EOF.
* Blocks behind the agent are dropped, so a file holds at most ``depth + 1`` blocks.
* An upstream error of a block is the error of every request it answers.

What the agent gets is what the target held when the block was read, a few hundred KiB
ahead of its requests; SFTP promises nothing more for a file that changes while it is
read.  The hash of a whole-file read is made from the bytes the agent gets, in offset
order, as before.  Not covered: random access gains nothing (it is relayed as it comes).
"""

from __future__ import annotations

import asyncio
from typing import Any

AGENT_READ = 32 * 1024          # what OpenSSH's sftp asks for per request
DEPTH = 4                       # blocks fetched ahead of the one being read


def block_size(max_read_len: int) -> int:
    """The largest multiple of 32 KiB the target serves in one read (0: no read-ahead)."""
    return (max_read_len // AGENT_READ) * AGENT_READ if max_read_len else 0


class ReadAhead:
    """The blocks of one open file (see the module doc)."""

    def __init__(self, up: Any, block: int, depth: int = DEPTH) -> None:
        self.up = up
        self.block = block
        self.depth = depth
        self.blocks: dict[int, asyncio.Future[bytes]] = {}
        self.front = 0                  # the highest block an agent request fell in

    async def read(self, offset: int, size: int) -> bytes:
        b, lo = divmod(offset, self.block)
        if lo + size > self.block or size <= 0:
            return await self._direct(offset, size)
        if b > self.front:
            self.front = b
            for old in [k for k in self.blocks if k < b - 1]:
                del self.blocks[old]    # not cancelled: a request may still await it
        for i in range(b, b + self.depth):
            if i not in self.blocks:
                self.blocks[i] = self._fetch(i)
        data = await asyncio.shield(self.blocks[b])
        if lo < len(data):
            return data[lo:lo + size]
        if len(data) == 0:
            return b""                  # the block starts at or past EOF
        return await self._direct(offset, size)   # past a short block: ask the target

    def close(self) -> None:
        for fut in self.blocks.values():
            fut.cancel()
        self.blocks.clear()

    def _fetch(self, index: int) -> "asyncio.Future[bytes]":
        fut: asyncio.Future[bytes] = asyncio.ensure_future(
            self.up.read(self.block, index * self.block))
        fut.add_done_callback(_retrieve)
        return fut

    async def _direct(self, offset: int, size: int) -> bytes:
        data: bytes = await self.up.read(size, offset)
        return data


def _retrieve(fut: "asyncio.Future[bytes]") -> None:
    """A prefetch nobody awaited must not log 'exception never retrieved'."""
    if not fut.cancelled():
        fut.exception()
