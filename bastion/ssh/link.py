"""Run an SSH server connection over an SSH channel (the inner connection).

The agent's ``ssh -J`` opens a direct-tcpip channel on the outer connection and
speaks SSH inside it.  :class:`InnerLink` is the channel's session: it feeds the
bytes to an ``asyncssh.SSHServerConnection`` and hands that connection a
transport, :class:`CoalescingTransport`, that writes back into the channel.

Why coalesce: an inner SSH packet carrying 32 KiB of data is about 32,813 bytes
long, and the outer channel's packets are limited to 32,768 bytes by the client,
so writing each inner packet on its own costs two outer packets (one nearly
empty).  Writes made in the same event-loop turn are joined and sent as one,
which the outer channel then cuts into full packets.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable

import asyncssh

# Flush at once when this much is waiting, without waiting for the loop turn.
FLUSH_THRESHOLD = 256 * 1024


class CoalescingTransport(asyncio.Transport):
    """An asyncio transport over an SSH channel that joins writes made in one loop turn."""

    def __init__(self, chan: asyncssh.SSHTCPChannel, peername: tuple[str, int]) -> None:
        super().__init__()
        self._chan = chan
        self._peername = peername
        self._buf: list[bytes] = []
        self._size = 0
        self._scheduled = False
        self._closing = False
        self._loop = asyncio.get_running_loop()

    # -- asyncio.Transport -------------------------------------------------
    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return self._peername
        if name == "sockname":
            return ("bastion", 0)
        if name == "socket":
            return None
        return self._chan.get_extra_info(name, default)

    def write(self, data: bytes) -> None:
        if self._closing or not data:
            return
        self._buf.append(bytes(data))
        self._size += len(data)
        if self._size >= FLUSH_THRESHOLD:
            self._flush()
        elif not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._flush)

    def flush(self) -> None:
        """Send what is buffered now (shutdown)."""
        self._flush()

    def _flush(self) -> None:
        self._scheduled = False
        if not self._buf:
            return
        data = self._buf[0] if len(self._buf) == 1 else b"".join(self._buf)
        self._buf.clear()
        self._size = 0
        try:
            self._chan.write(data)
        except (asyncssh.BrokenPipeError, asyncssh.DisconnectError, OSError):
            self._closing = True

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if not self._closing:
            self._flush()
            self._closing = True
            self._chan.close()

    def abort(self) -> None:
        self._closing = True
        self._buf.clear()
        self._chan.abort()

    def pause_reading(self) -> None:
        self._chan.pause_reading()

    def resume_reading(self) -> None:
        self._chan.resume_reading()

    def can_write_eof(self) -> bool:
        return False


class InnerLink(asyncssh.SSHTCPSession):
    """The direct-tcpip channel's session: an SSH server connection runs inside it."""

    def __init__(self, make_connection: Callable[[], asyncssh.SSHServerConnection],
                 peername: tuple[str, int], on_lost: Callable[[], None] | None = None) -> None:
        self._make_connection = make_connection
        self._peername = peername
        self._on_lost = on_lost
        self.inner: asyncssh.SSHServerConnection | None = None
        self.transport: CoalescingTransport | None = None

    def connection_made(self, chan: asyncssh.SSHTCPChannel) -> None:
        self.transport = CoalescingTransport(chan, self._peername)
        self.inner = self._make_connection()
        self.inner.connection_made(self.transport)

    def data_received(self, data: bytes, datatype: Any) -> None:
        self.inner.data_received(data)

    def eof_received(self) -> bool:
        self.inner.eof_received()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.inner is not None:
            self.inner.connection_lost(exc)
        if self._on_lost:
            self._on_lost()
