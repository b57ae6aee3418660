"""Run an SSH server connection over an SSH channel (the inner connection).

The agent's ``ssh -J`` opens a direct-tcpip channel on the outer connection and
speaks SSH inside it.  :class:`InnerLink` is the channel's session: it feeds the
bytes to an ``asyncssh.SSHServerConnection`` and hands that connection a
transport, :class:`CoalescingTransport`, that writes back into the channel.

Why coalesce: an inner SSH packet carrying 32 KiB of data is about 32,813 bytes
long, and the outer channel's packets are limited to 32,768 bytes by the client,
so writing each inner packet on its own costs two outer packets (one nearly
empty).  Writes made in the same event-loop turn are joined and sent as one,
which the outer channel then cuts into full packets.  The joining itself is
bastion.ssh.wire's, as is dropping asyncssh's per-packet IGNORE (see there).

The channel's receive window (:data:`LINK_WINDOW`, 8 MiB) is what the agent may send
ahead of the bastion's window adjustments.  asyncssh's default is 2 MiB, and asyncssh
adjusts only once half of it is used, so an upload had 1-2 MiB on the way per round trip
(OpenSSH adjusts after every few packets): with 20 ms between agent and bastion a put ran
at 0.8x ProxyJump, with 8 MiB at 1.1-1.3x (docs/BENCHMARKS.md).  The window is credit,
not a buffer: what arrives is handed to the inner connection at once (asyncssh never
pauses its transport), and the inner channels' own windows (``INNER_WINDOW``) bound
what the bastion holds for them; bytes beyond them are a protocol error.
"""

from __future__ import annotations

from typing import Any, Callable

import asyncssh

from bastion.ssh import recvpath, sendpath
from bastion.ssh.wire import JoinedTransport, drop_cbc_padding_packets

LINK_WINDOW = 8 * 1024 * 1024   # receive window of the direct-tcpip channel (module doc)
LINK_PACKET = 32 * 1024         # and its max packet (OpenSSH's own for such channels)


class CoalescingTransport(JoinedTransport):
    """The inner connection's transport: writes joined per loop turn, sent into the channel."""

    def __init__(self, chan: asyncssh.SSHTCPChannel, peername: tuple[str, int]) -> None:
        super().__init__(chan)          # close, abort, pause/resume_reading go to the channel
        self._chan = chan
        self._peername = peername

    def _emit(self, data: bytes) -> None:
        try:
            self._chan.write(data)
        except (OSError, asyncssh.Error):
            # The channel closed under pending writes: asyncssh raises the builtin
            # BrokenPipeError (an OSError) from write(); a closed connection may raise
            # one of its own errors.  Either way nothing more can be sent.
            self._closing = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return self._peername
        if name == "sockname":
            return ("bastion", 0)
        if name == "socket":
            return None
        return self._chan.get_extra_info(name, default)

    def get_write_buffer_size(self) -> int:
        return self._size

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def is_closing(self) -> bool:
        return self._closing

    def can_write_eof(self) -> bool:
        return False

    def write_eof(self) -> None:
        raise NotImplementedError("the inner connection's channel does not half-close")


class InnerLink(asyncssh.SSHTCPSession):
    """The direct-tcpip channel's session: an SSH server connection runs inside it."""

    def __init__(self, make_connection: Callable[[], asyncssh.SSHServerConnection],
                 peername: tuple[str, int], on_lost: Callable[[], None] | None = None) -> None:
        self._make_connection = make_connection
        self._peername = peername
        self._on_lost = on_lost
        self.inner: asyncssh.SSHServerConnection | None = None
        self.transport: CoalescingTransport | None = None
        self.ctx: Any = None              # the InnerContext (set by the outer server)

    def connection_made(self, chan: asyncssh.SSHTCPChannel) -> None:
        self.transport = CoalescingTransport(chan, self._peername)
        self.inner = self._make_connection()
        drop_cbc_padding_packets(self.inner)
        sendpath.fast_send_path(self.inner)         # over the filter (bastion.ssh.sendpath)
        sendpath.install_process_wide()
        recvpath.fast_recv_path(self.inner)         # (bastion.ssh.recvpath)
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
