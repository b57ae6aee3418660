"""bastion.ssh.wire: joined writes, the IGNORE filter's decisions, and asyncssh over SocketTunnel.

The filter's table uses a recording stand-in for a connection (it only calls
``send_packet`` and ``get_extra_info``); the tunnel runs real asyncssh peers on
127.0.0.1; the end-to-end check with OpenSSH is in tests/e2e/test_data_path.py.
"""

from __future__ import annotations

import asyncio

import asyncssh
import pytest
from asyncssh.constants import MSG_CHANNEL_DATA, MSG_IGNORE

from bastion.ssh import wire

EMPTY = b"\0\0\0\0"


class _Conn:
    def __init__(self, cipher):
        self.cipher = cipher
        self.sent: list[tuple] = []

    def send_packet(self, pkttype, *args, handler=None):
        self.sent.append((pkttype, args))

    def get_extra_info(self, name, default=None):
        return self.cipher if name == "send_cipher" else default


@pytest.mark.parametrize("cipher, dropped", [
    ("aes128-gcm@openssh.com", True),
    ("aes256-gcm@openssh.com", True),
    ("chacha20-poly1305@openssh.com", True),
    ("aes128-ctr", True),
    ("aes256-ctr", True),
    ("aes128-cbc", False),          # the CBC countermeasure stays
    ("aes256-cbc", False),
    ("3des-cbc", False),
    (None, False),                  # before keys: nothing known, nothing dropped
    ("some-future-cipher", False),  # unknown: kept
])
def test_filter_drops_the_empty_ignore_only_without_cbc(cipher, dropped):
    conn = _Conn(cipher)
    assert wire.drop_cbc_padding_packets(conn)
    conn.send_packet(MSG_IGNORE, EMPTY)
    conn.send_packet(MSG_CHANNEL_DATA, b"\0\0\0\5hello")
    expected = [(MSG_CHANNEL_DATA, (b"\0\0\0\5hello",))]
    if not dropped:
        expected.insert(0, (MSG_IGNORE, (EMPTY,)))
    assert conn.sent == expected


def test_filter_passes_ignores_that_carry_data_and_follows_a_cipher_change():
    conn = _Conn("aes128-gcm@openssh.com")
    wire.drop_cbc_padding_packets(conn)
    conn.send_packet(MSG_IGNORE, b"\0\0\0\1x")         # someone's deliberate IGNORE
    conn.cipher = "aes128-cbc"                          # re-keyed onto CBC
    conn.send_packet(MSG_IGNORE, EMPTY)
    assert conn.sent == [(MSG_IGNORE, (b"\0\0\0\1x",)), (MSG_IGNORE, (EMPTY,))]


def test_filter_is_installed_once():
    conn = _Conn("aes128-gcm@openssh.com")
    assert wire.drop_cbc_padding_packets(conn)
    assert not wire.drop_cbc_padding_packets(conn)
    conn.send_packet(MSG_CHANNEL_DATA, b"x")
    assert conn.sent == [(MSG_CHANNEL_DATA, (b"x",))]


def test_asyncssh_send_packet_still_has_the_shape_the_filter_expects():
    assert wire._send_packet_as_expected()


class _Target(asyncio.Transport):
    def __init__(self):
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = self.aborted = False
        self.paused = 0

    def write(self, data):
        self.writes.append(bytes(data))

    def close(self):
        self.closed = True

    def abort(self):
        self.aborted = True

    def is_closing(self):
        return self.closed or self.aborted

    def get_write_buffer_size(self):
        return 7

    def get_extra_info(self, name, default=None):
        return ("127.0.0.1", 9) if name == "peername" else default

    def pause_reading(self):
        self.paused += 1

    def resume_reading(self):
        self.paused -= 1


async def test_writes_in_one_loop_turn_become_one_write():
    target = _Target()
    t = wire.JoinedTransport(target)
    for part in (b"a", b"bc", b"", b"def"):
        t.write(part)
    assert target.writes == []                      # nothing sent yet in this turn
    assert t.get_write_buffer_size() == 6 + 7
    await asyncio.sleep(0)
    assert target.writes == [b"abcdef"]
    t.write(b"g")
    await asyncio.sleep(0)
    assert target.writes == [b"abcdef", b"g"]       # a later turn is its own write


async def test_a_large_backlog_is_sent_without_waiting_for_the_turn():
    target = _Target()
    t = wire.JoinedTransport(target)
    chunk = b"x" * (wire.FLUSH_THRESHOLD // 2)
    t.write(chunk)
    t.write(chunk)
    assert target.writes == [chunk + chunk]
    t.write(b"tail")
    await asyncio.sleep(0)
    assert target.writes == [chunk + chunk, b"tail"]


async def test_close_sends_what_is_buffered_and_abort_drops_it():
    target = _Target()
    t = wire.JoinedTransport(target)
    t.write(b"last words")
    t.close()
    assert target.writes == [b"last words"] and target.closed
    t.write(b"after close")
    await asyncio.sleep(0)
    assert target.writes == [b"last words"]

    target2 = _Target()
    t2 = wire.JoinedTransport(target2)
    t2.write(b"dropped")
    t2.abort()
    await asyncio.sleep(0)
    assert target2.writes == [] and target2.aborted


async def test_reading_and_extra_info_pass_to_the_socket_transport():
    target = _Target()
    t = wire.JoinedTransport(target)
    t.pause_reading()
    assert target.paused == 1
    t.resume_reading()
    assert target.paused == 0
    assert t.get_extra_info("peername") == ("127.0.0.1", 9)


class _Echo(asyncssh.SSHServerSession):
    def connection_made(self, chan):
        self.chan = chan

    def shell_requested(self):
        return True

    def exec_requested(self, command):
        return True

    def data_received(self, data, datatype):
        self.chan.write(data)

    def eof_received(self):
        self.chan.exit(0)
        return False


class _Server(asyncssh.SSHServer):
    def begin_auth(self, username):
        return False

    def session_requested(self):
        return _Echo()


async def test_asyncssh_peers_over_socket_tunnels_relay_exactly():
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    server_conns = []

    class _Watched(_Server):
        def connection_made(self, conn):
            server_conns.append(conn)

    acceptor = await asyncssh.listen(
        "127.0.0.1", 0, server_factory=_Watched, server_host_keys=[host_key],
        encryption_algs=["aes128-gcm@openssh.com"], encoding=None,
        tunnel=wire.SocketTunnel(reuse_address=True))
    try:
        port = acceptor.get_port()
        assert port > 0
        data = bytes(range(256)) * 4096                  # 1 MiB, every byte value
        async with asyncssh.connect(
                "127.0.0.1", port, known_hosts=None, username="any", client_keys=None,
                agent_path=None, config=None, encryption_algs=["aes128-gcm@openssh.com"],
                tunnel=wire.SocketTunnel()) as conn:
            result = await conn.run("echo", input=data, encoding=None)
            assert result.stdout == data
            assert isinstance(conn._transport, wire.JoinedTransport)    # the tunnel took effect
            assert "send_packet" in vars(conn)                          # and the filter
            assert "data_received" in vars(conn)                        # and the slicing
        assert isinstance(server_conns[0]._transport, wire.JoinedTransport)
    finally:
        acceptor.close()
        await acceptor.wait_closed()


class _Sink(asyncssh.SSHTCPSession):
    def data_received(self, data, datatype):
        pass


class _Forwarding(asyncssh.SSHServer):
    def begin_auth(self, username):
        return False

    def connection_requested(self, dest_host, dest_port, orig_host, orig_port):
        return _Sink()


async def test_inner_transport_stops_quietly_when_its_channel_closed_under_pending_writes(caplog):
    """Issue 16 item 9: asyncssh raises the builtin BrokenPipeError from a closed channel's
    write(); the inner connection's transport takes it as the end (no traceback logged)."""
    from bastion.ssh.link import CoalescingTransport

    host_key = asyncssh.generate_private_key("ssh-ed25519")
    acceptor = await asyncssh.listen("127.0.0.1", 0, server_factory=_Forwarding,
                                     server_host_keys=[host_key], encoding=None)
    try:
        async with asyncssh.connect("127.0.0.1", acceptor.get_port(), known_hosts=None,
                                    username="any", client_keys=None, agent_path=None,
                                    config=None) as conn:
            chan, _ = await conn.create_connection(_Sink, "inner", 22)
            chan.close()
            with pytest.raises(BrokenPipeError):             # what asyncssh really raises
                chan.write(b"x")
            transport = CoalescingTransport(chan, ("127.0.0.1", 5000))
            transport.write(b"pending inner packet")
            await asyncio.sleep(0)                            # the joined write goes out now
            assert transport.is_closing()
            transport.write(b"more")                          # ignored once closing
            await asyncio.sleep(0)
    finally:
        acceptor.close()
        await acceptor.wait_closed()
    assert "Traceback" not in caplog.text
    assert not [r for r in caplog.records if r.exc_info]


class _Receiver:
    def __init__(self):
        self._transport = object()
        self.got: list[bytes] = []

    def data_received(self, data, datatype=None):
        self.got.append(b"" + data)                     # what asyncssh does with it


def test_reads_reach_the_connection_in_slices_whole_and_in_order():
    conn = _Receiver()
    assert wire.feed_in_slices(conn) and not wire.feed_in_slices(conn)   # once
    data = bytes(range(256)) * 1025                       # 262,400 bytes: 4 slices and a rest
    conn.data_received(data)
    conn.data_received(b"small")
    assert b"".join(conn.got) == data + b"small"
    assert [len(g) for g in conn.got] == [wire.SLICE] * 4 + [data.__len__() - 4 * wire.SLICE, 5]


class _ClosingReceiver(_Receiver):
    def data_received(self, data, datatype=None):
        self.got.append(bytes(data))
        self._transport = None                          # asyncssh's _force_close


def test_slicing_stops_when_what_came_before_closed_the_connection():
    conn = _ClosingReceiver()
    wire.feed_in_slices(conn)
    conn.data_received(bytes(3 * wire.SLICE))
    assert len(conn.got) == 1


class _LoggedConn:
    _handler_names = {94: "MSG_CHANNEL_DATA"}

    def __init__(self, level):
        self.lines: list[str] = []
        outer = self

        class _Logger:
            _debug_level = level

            def packet(self, pktid, packet, msg, *args):
                outer.lines.append(msg % args)
        self.logger = _Logger()


def test_packet_log_lines_are_made_only_at_debug_level_3():
    wire.skip_unlogged_packet_lines()
    log_packet = asyncssh.packet.SSHPacketLogger._log_packet
    quiet, loud = _LoggedConn(1), _LoggedConn(3)
    log_packet(quiet, "Sent", 94, 7, b"x" * 100)
    log_packet(loud, "Sent", 94, 7, b"x" * 100, "note")
    assert quiet.lines == []
    assert loud.lines == ["Sent MSG_CHANNEL_DATA (94), 100 bytes (note)"]
