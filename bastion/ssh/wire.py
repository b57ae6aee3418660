"""What the bastion's SSH connections put on the wire: fewer packets and fewer writes per byte.

A relay pays asyncssh's per-packet costs three times (upstream, inner, outer
connection), and two of them are not needed with the ciphers the bastion
negotiates (measured in bench/, see docs/BENCHMARKS.md):

* **An empty SSH_MSG_IGNORE before every packet.**  Once keys are in use,
  asyncssh sends an empty IGNORE ahead of each packet past the key exchange
  messages: the countermeasure RFC 4251 section 9.3.1 describes for the CBC
  modes, whose next IV an attacker could otherwise predict.  It doubles the
  packets (each one padded from ``os.urandom``, encrypted and written).  The
  AEAD modes and CTR have no such IV; for them :func:`drop_cbc_padding_packets`
  skips these IGNOREs on one connection.  A CBC cipher keeps them.  asyncssh
  offers no option for this, so the function shadows the connection's
  ``send_packet`` (on that instance only) with a filter that passes everything
  else through unchanged; if asyncssh's method ever stops looking as expected,
  the function leaves the connection alone.
* **One ``write`` per packet.**  An asyncio socket transport tries ``send()``
  on every ``write``.  :class:`JoinedTransport` joins the writes made in one
  event-loop turn into one (the ``FLUSH_THRESHOLD`` sends at once), so a turn
  that relays several packets costs one system call.  :class:`SocketTunnel`
  gives asyncssh's ``listen()``/``connect()`` TCP connections with that
  transport, through their ``tunnel`` parameter (an object with
  ``create_server``/``create_connection``, as asyncssh calls them); reads go
  straight from the socket to the connection.
* **Copies of what was received.**  asyncssh keeps received bytes in one ``bytes``
  and re-slices it for every packet, copying all that follows each time: a 256 KiB
  socket read holding eight 32 KiB packets was copied about nine times over before
  it was parsed.  :func:`feed_in_slices` hands a socket connection its reads 64 KiB
  at a time (views, no copy), so what asyncssh re-copies stays about one packet
  (measured: 0.89 -> 0.31 ms CPU per MB of a mock of that parsing).  Bytes, order
  and asyncssh's own handling are unchanged.  Once bastion.ssh.recvpath receives for
  the connection (keys in use), which copies nothing per packet, reads go whole.
* **A log line per packet that nobody logs.**  asyncssh formats a line for every
  packet sent and received (its name, ``plural(len, 'byte')``) before its logger
  checks for debug level 3 (packet dumps) and drops it: ~3 % of the relay's event
  loop.  :func:`skip_unlogged_packet_lines` checks the level first; at level 3 the
  line is made and logged as before.

:class:`JoinedTransport` is also the base of the inner connection's transport
(bastion.ssh.link), which writes into an SSH channel instead of a socket.

Not covered: choosing ciphers (bastion.ssh.algs); building each sent packet and parsing
each received one with fewer copies (bastion.ssh.sendpath and bastion.ssh.recvpath,
installed here on socket connections).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import Any, Callable

import asyncssh
from asyncssh.constants import MSG_IGNORE

from bastion.ssh import recvpath, sendpath

log = logging.getLogger("bastion.wire")

# Flush at once when this much is waiting, without waiting for the end of the loop turn.
FLUSH_THRESHOLD = 256 * 1024

# Ciphers without a CBC chain: the per-packet IGNORE protects nothing with them.
NO_CBC = frozenset({
    "aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "chacha20-poly1305@openssh.com",
    "aes128-ctr", "aes192-ctr", "aes256-ctr",
})
_EMPTY_STRING = b"\0\0\0\0"          # asyncssh's String(b""): the IGNORE's only argument


def _send_packet_as_expected() -> bool:
    try:
        params = list(inspect.signature(asyncssh.SSHClientConnection.send_packet).parameters)
    except (TypeError, ValueError):  # pragma: no cover - asyncssh internals changed
        return False
    return params[:3] == ["self", "pkttype", "args"]


_FILTER_APPLIES = _send_packet_as_expected()


def drop_cbc_padding_packets(conn: asyncssh.SSHClientConnection | asyncssh.SSHServerConnection
                             ) -> bool:
    """Skip asyncssh's empty IGNORE before each packet on ``conn`` while its cipher is not CBC.

    Returns whether the filter was installed.  The cipher is checked on every
    such packet, so a connection that re-keys onto a CBC cipher gets them again.
    """
    if not _FILTER_APPLIES or "send_packet" in vars(conn):
        return False
    send = conn.send_packet             # the bound class method
    extra = conn.get_extra_info

    def send_packet(pkttype: int, *args: bytes, **kwargs: Any) -> None:
        if pkttype == MSG_IGNORE and args == (_EMPTY_STRING,) and \
                extra("send_cipher") in NO_CBC:
            return
        send(pkttype, *args, **kwargs)

    conn.send_packet = send_packet      # type: ignore[method-assign]
    return True


def skip_unlogged_packet_lines() -> bool:
    """Make asyncssh's per-packet log line only when it would be logged (module doc).
    Once per process; False if asyncssh's method does not look as expected (left alone)."""
    cls = asyncssh.packet.SSHPacketLogger
    orig = cls._log_packet
    if getattr(orig, "_bastion_checked", False):
        return False
    if list(inspect.signature(orig).parameters) != ["self", "msg", "pkttype", "pktid", "packet",
                                                    "note"]:
        return False

    def _log_packet(self: Any, msg: str, pkttype: int, pktid: Any, packet: Any,
                    note: str = "") -> None:
        if self.logger._debug_level >= 3:
            orig(self, msg, pkttype, pktid, packet, note)

    _log_packet._bastion_checked = True         # type: ignore[attr-defined]
    cls._log_packet = _log_packet               # type: ignore[method-assign]
    return True


SLICE = 64 * 1024             # what feed_in_slices hands asyncssh at a time


def feed_in_slices(conn: asyncio.Protocol) -> bool:
    """Have ``conn`` (an asyncssh connection on a socket) receive its reads in
    :data:`SLICE` pieces (module doc).  Returns whether it was installed (once per
    connection, on that instance only)."""
    if "data_received" in vars(conn):
        return False
    receive: Callable[..., None] = conn.data_received

    def data_received(data: bytes, *args: Any) -> None:     # (a channel passes a datatype)
        if len(data) <= SLICE or recvpath.takes_whole(conn):
            receive(data, *args)
            return
        with memoryview(data) as view:
            for i in range(0, len(view), SLICE):
                if getattr(conn, "_transport", True) is None:
                    return                       # closed by what came before: stop there
                receive(view[i:i + SLICE], *args)   # (asyncssh appends it to a bytes)

    conn.data_received = data_received          # type: ignore[method-assign]
    return True


class JoinedTransport(asyncio.Transport):
    """An asyncio transport that joins the writes made in one loop turn into one.

    ``target`` takes the joined writes and ``close``, ``abort``,
    ``pause_reading`` and ``resume_reading``; this class is complete for a socket
    transport there.  A subclass over something else (an SSH channel) overrides
    :meth:`_emit` and whatever its target lacks.
    """

    def __init__(self, target) -> None:
        super().__init__()
        self._target = target
        self._buf: list[bytes] = []
        self._size = 0
        self._scheduled = False
        self._closing = False
        self._loop = asyncio.get_running_loop()

    # -- joining -----------------------------------------------------------
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

    def writelines(self, list_of_data) -> None:
        for data in list_of_data:
            self.write(data)

    def flush(self) -> None:
        """Send what is buffered now."""
        self._flush()

    def _flush(self) -> None:
        self._scheduled = False
        if not self._buf:
            return
        data = self._buf[0] if len(self._buf) == 1 else b"".join(self._buf)
        self._buf.clear()
        self._size = 0
        self._emit(data)

    def _emit(self, data: bytes) -> None:
        self._target.write(data)

    # -- the rest of asyncio.Transport, passed to the target -----------------
    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._target.get_extra_info(name, default)

    def get_write_buffer_size(self) -> int:
        return self._size + self._target.get_write_buffer_size()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._target.set_write_buffer_limits(high, low)

    def is_closing(self) -> bool:
        return self._closing or self._target.is_closing()

    def close(self) -> None:
        if not self._closing:
            self._flush()
            self._closing = True
            self._target.close()

    def abort(self) -> None:
        self._closing = True
        self._buf.clear()
        self._size = 0
        self._target.abort()

    def pause_reading(self) -> None:
        self._target.pause_reading()

    def resume_reading(self) -> None:
        self._target.resume_reading()

    def can_write_eof(self) -> bool:
        return self._target.can_write_eof()

    def write_eof(self) -> None:
        self._flush()
        self._target.write_eof()


class _Handoff(asyncio.Protocol):
    """Gives a new socket's connection a :class:`JoinedTransport`, then steps out of the way."""

    def __init__(self, conn: asyncio.Protocol) -> None:
        self.conn = conn

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.set_protocol(self.conn)     # reads go straight to the connection
        if isinstance(self.conn, asyncssh.connection.SSHConnection):
            drop_cbc_padding_packets(self.conn)
            sendpath.fast_send_path(self.conn)      # over the filter (bastion.ssh.sendpath)
            sendpath.install_process_wide()
            feed_in_slices(self.conn)
            recvpath.fast_recv_path(self.conn)      # (bastion.ssh.recvpath)
            skip_unlogged_packet_lines()
        self.conn.connection_made(JoinedTransport(transport))


class SocketTunnel:
    """Plain TCP for asyncssh's ``tunnel=`` parameter, each connection on a :class:`JoinedTransport`.

    ``asyncssh.listen(..., tunnel=SocketTunnel(reuse_address=True))`` and
    ``asyncssh.connect(..., tunnel=SocketTunnel())`` then behave as without a
    tunnel (the host and port are asyncssh's, resolved by the event loop).
    """

    def __init__(self, **server_kwargs: Any) -> None:
        self._server_kwargs = server_kwargs

    async def create_connection(self, session_factory: Callable[[], asyncio.Protocol],
                                host: str, port: int):
        loop = asyncio.get_running_loop()
        made: list[asyncio.Protocol] = []

        def protocol() -> _Handoff:
            made.append(session_factory())
            return _Handoff(made[0])

        transport, _ = await loop.create_connection(protocol, host, port)
        return transport, made[0]

    async def create_server(self, session_factory: Callable[[str, int], asyncio.Protocol],
                            host: str, port: int) -> asyncio.AbstractServer:
        loop = asyncio.get_running_loop()
        return await loop.create_server(lambda: _Handoff(session_factory("", 0)),
                                        host or None, port, **self._server_kwargs)
