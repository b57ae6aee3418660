"""bastion.ssh.recvpath: the fewer-copies receive path does what asyncssh's own does.

Two asyncssh connection objects (made without a socket: only the state the receive path
reads) get the same keys from asyncssh's ``get_encryption``; one receives through
asyncssh's own code, the other with ``fast_recv_path`` installed.  Both are fed the same
byte stream, built with asyncssh's own ``encrypt_packet``, cut into the same chunks (1 B
to 200 KB, and through wire's ``feed_in_slices``): channel data of many sizes to an open
channel and to a paused one, stderr, window adjusts, IGNORE, DEBUG, a packet type nobody
handles (asyncssh answers UNIMPLEMENTED), a key change (NEWKEYS: new keys, strict-kex
sequence reset), more of the same with the new keys, then an ending: nothing, a
tampered packet (MAC failure: disconnect), an oversized packet, data for an unknown
channel, beyond the window, after EOF, with trailing bytes, with a wrong length, with
no padding.  Everything each connection did must be the same: data delivered (and to
whom, as what type, in order; the fast path delivers a read's consecutive packets for one
channel together, so consecutive deliveries to one channel are compared joined), packets
handled, packets sent back, the disconnect or internal error and its reason, the sequence
number, the windows and what is left in the buffer.  The stream
is also checked against what was sent, so a receive path broken both ways still fails.
End to end through OpenSSH with rekeys: tests/e2e/test_sendpath_ciphers.py.
"""

from __future__ import annotations

import random

import asyncssh
import pytest
from asyncssh import channel as achannel
from asyncssh import connection as aconn
from asyncssh.constants import (MSG_CHANNEL_DATA, MSG_CHANNEL_EOF, MSG_CHANNEL_EXTENDED_DATA,
                                MSG_CHANNEL_WINDOW_ADJUST, MSG_DEBUG, MSG_IGNORE, MSG_NEWKEYS)
from asyncssh.encryption import get_encryption, get_encryption_params

from bastion.ssh import recvpath, wire
from tests.integration import test_sendpath

# the cipher/MAC pairs and payload sizes the send path is compared on (asyncssh's
# BasicEncryption covers aes256-cbc too: a chained decryptor)
CASES, SIZES = test_sendpath.CASES, test_sendpath.SIZES
ENDINGS = ["clean", "tampered", "oversize", "unknown-channel", "window", "after-eof",
           "trailing", "bad-length", "no-padding"]
MAX_PKTLEN = 70_000
OPEN, PAUSED, SMALL = 5, 6, 7


def _keys(enc_alg, mac_alg, salt):
    keysize, ivsize, blocksize, mac_keysize, macsize, etm = get_encryption_params(enc_alg, mac_alg)
    rnd = random.Random(salt)
    key, iv, mac_key = (rnd.randbytes(n) for n in (keysize, ivsize, mac_keysize))
    return {"key": key, "iv": iv, "mac_key": mac_key, "etm": etm,
            "blocksize": max(8, blocksize), "macsize": macsize}


def _encryption(enc_alg, mac_alg, k):
    return get_encryption(enc_alg, k["key"], k["iv"], mac_alg, k["mac_key"], k["etm"])


class _Sender:
    """Builds packets as asyncssh's send_packet does (its encrypt_packet, its padding)."""

    def __init__(self, enc_alg, mac_alg, keys, rnd, seq=3) -> None:
        self.enc_alg, self.mac_alg, self.rnd = enc_alg, mac_alg, rnd
        self.seq, self.out = seq, bytearray()
        self.rekey(keys)

    def rekey(self, keys) -> None:
        self.keys, self.enc = keys, _encryption(self.enc_alg, self.mac_alg, keys)

    def packet(self, payload: bytes, padlen: int | None = None, tamper: bool = False,
               length: int | None = None) -> None:
        bs = self.keys["blocksize"]
        hdrlen = 1 if self.keys["etm"] else 5            # asyncssh's _send_enchdrlen
        if padlen is None:
            padlen = -(hdrlen + len(payload)) % bs
            if padlen < 4:
                padlen += bs
        body = bytes((padlen,)) + payload + self.rnd.randbytes(padlen)
        pktlen = len(body) if length is None else length
        data, mac = self.enc.encrypt_packet(self.seq, pktlen.to_bytes(4, "big"), body)
        wire_bytes = bytearray(data + mac)
        if tamper:
            wire_bytes[len(wire_bytes) // 2] ^= 0x01
        self.out += wire_bytes
        self.seq = (self.seq + 1) & 0xffffffff


def _data(chan, data):
    return bytes((MSG_CHANNEL_DATA,)) + chan.to_bytes(4, "big") + len(data).to_bytes(4, "big") + data


def _stream(enc_alg, mac_alg, ending, seed):
    """The stream and what a correct receiver delivers to the open channel before the end."""
    rnd = random.Random(seed)
    s = _Sender(enc_alg, mac_alg, _keys(enc_alg, mac_alg, seed), rnd)
    delivered: list[bytes] = []

    def burst():
        for size in SIZES:
            data = rnd.randbytes(size)
            s.packet(_data(OPEN, data))
            if data:                                     # (asyncssh delivers no empty data)
                delivered.append(data)
            s.packet(_data(PAUSED, data[:50]))
        s.packet(bytes((MSG_CHANNEL_EXTENDED_DATA,)) + OPEN.to_bytes(4, "big") + b"\0\0\0\1"
                 + b"\0\0\0\5err\n\0")
        s.packet(bytes((MSG_CHANNEL_WINDOW_ADJUST,)) + OPEN.to_bytes(4, "big") + b"\0\1\0\0")
        s.packet(bytes((MSG_IGNORE,)) + b"\0\0\0\3abc")
        s.packet(bytes((MSG_DEBUG,)) + b"\0\0\0\0\5hello\0\0\0\0")
        s.packet(bytes((200,)) + b"nobody handles this")

    burst()
    s.packet(bytes((MSG_NEWKEYS,)))
    s.seq = 0                                            # strict kex: the count starts again
    s.rekey(_keys(enc_alg, mac_alg, seed + 1))
    burst()
    if ending == "tampered":
        s.packet(_data(OPEN, b"x" * 5000), tamper=True)
    elif ending == "oversize":
        s.packet(_data(OPEN, b"y" * (MAX_PKTLEN + 10)))
    elif ending == "unknown-channel":
        s.packet(_data(99, b"z" * 100))
    elif ending == "window":
        s.packet(_data(SMALL, b"w" * 1001))
    elif ending == "after-eof":
        s.packet(bytes((MSG_CHANNEL_EOF,)) + OPEN.to_bytes(4, "big"))
        s.packet(_data(OPEN, b"late"))
    elif ending == "trailing":
        s.packet(_data(OPEN, b"abc") + b"!")
    elif ending == "bad-length":
        s.packet(bytes((MSG_CHANNEL_DATA,)) + OPEN.to_bytes(4, "big") + (9).to_bytes(4, "big")
                 + b"short")
    elif ending == "no-padding":
        s.packet(_data(OPEN, b"p" * 22), padlen=0)
    for _ in range(3):                                   # what follows must not be delivered
        s.packet(_data(OPEN, b"after the end"))
    return bytes(s.out), delivered, s.seq


class _Session:
    def __init__(self, events, chan_id) -> None:
        self.events, self.chan_id = events, chan_id

    def data_received(self, data, datatype):
        assert type(data) is bytes
        self.events.append(("data", self.chan_id, data, datatype))

    def eof_received(self):
        self.events.append(("eof", self.chan_id))
        return True


def _new_keys(conn, enc_alg, mac_alg, keys):
    """NEWKEYS as asyncssh's connection takes it for the receive side: the new keys go in."""
    conn._recv_encryption = _encryption(enc_alg, mac_alg, keys)
    conn._recv_blocksize, conn._recv_macsize = keys["blocksize"], keys["macsize"]


def _channel(conn, chan_id, events, paused, window):
    chan = achannel.SSHChannel.__new__(achannel.SSHChannel)
    chan._conn, chan._send_chan, chan._recv_chan = conn, chan_id + 100, chan_id
    chan._logger = conn.logger.get_child(context=f"chan={chan_id}")
    chan._loop = None
    chan._recv_state, chan._send_state = "open", "open"
    chan._init_recv_window = chan._recv_window = window
    chan._recv_paused, chan._recv_buf = paused, []
    chan._encoding, chan._read_datatypes = None, {1}
    chan._send_window, chan._send_pktsize, chan._send_buf, chan._send_buf_len = 0, 32768, [], 0
    chan._send_paused, chan._send_high_water, chan._send_low_water = False, 1 << 20, 0
    chan._session = _Session(events, chan_id)
    return chan


def _receiver(enc_alg, mac_alg, seed, events, seq=3):
    c = aconn.SSHClientConnection.__new__(aconn.SSHClientConnection)
    keys = _keys(enc_alg, mac_alg, seed)
    c._logger = asyncssh.logging.logger
    c._inpbuf, c._packet, c._pktlen = b"", b"", 0
    c._recv_encryption = _encryption(enc_alg, mac_alg, keys)
    c._recv_blocksize, c._recv_macsize = keys["blocksize"], keys["macsize"]
    c._recv_seq, c._max_recv_pktlen = seq, MAX_PKTLEN
    c._decompressor, c._decompress_after_auth = None, False
    c._auth_complete = c._kex_complete = True
    c._auth, c._auth_final, c._ignore_first_kex, c._strict_kex = None, False, False, True
    c._kex = None
    c._transport = object()
    c._channels = {}
    for chan_id, paused, window in ((OPEN, False, 300_000), (PAUSED, True, 300_000),
                                    (SMALL, False, 1000)):
        c._channels[chan_id] = _channel(c, chan_id, events, paused, window)
    c._recv_handler = c._recv_pkthdr
    c._reset_keepalive_timer = lambda: None
    c.send_packet = lambda pkttype, *args, handler=None: events.append(
        ("sent", pkttype, b"".join(args)))
    c._send_disconnect = lambda code, reason, lang: events.append(("disconnect", code, reason))

    def force_close(exc):
        events.append(("closed", type(exc).__name__, str(exc)))
        c._transport, c._inpbuf = None, b""

    def process_packet(pkttype, seq, packet):      # the connection's own handlers, recorded
        events.append(("conn", pkttype, seq, packet.get_remaining_payload()))
        if pkttype == MSG_NEWKEYS:
            _new_keys(c, enc_alg, mac_alg, _keys(enc_alg, mac_alg, seed + 1))
        return pkttype != 200

    c._force_close = force_close
    c.process_packet = process_packet
    return c


def _chunks(stream, seed):
    rnd = random.Random(seed)
    pos = 0
    while pos < len(stream):
        n = rnd.choice([1, 7, 100, 4096, 32768 + 5, 65536, 200_000])
        yield stream[pos:pos + n]
        pos += n


def _run(c, stream, seed):
    for chunk in _chunks(stream, seed):
        if c._transport is None:
            break                                    # a closed transport delivers no more
        c.data_received(chunk)
    chans = c._channels
    return {"seq": c._recv_seq, "left": c._inpbuf, "auth_final": c._auth_final,
            "windows": {k: chans[k]._recv_window for k in chans},
            "buffered": {k: chans[k]._recv_buf for k in chans},
            "states": {k: chans[k]._recv_state for k in chans}}


def _joined(events):
    """``events`` with consecutive data deliveries to one channel, of one type, joined."""
    out: list = []
    for e in events:
        if (e[0] == "data" and out and out[-1][0] == "data" and out[-1][1] == e[1]
                and out[-1][3] == e[3]):
            out[-1] = ("data", e[1], out[-1][2] + e[2], e[3])
        else:
            out.append(e)
    return out


def _joined_state(state):
    """``state`` with each paused channel's buffered data joined the same way."""
    buffered = {k: [(d, t) for _, d, t in (e[1:] for e in _joined(
        [("data", 0, d, t) for d, t in buf]))] for k, buf in state["buffered"].items()}
    return {**state, "buffered": buffered}


@pytest.fixture
def count_packets(monkeypatch):
    made = []

    class Counted(aconn.SSHPacket):
        def __init__(self, *args):
            made.append(1)
            super().__init__(*args)

    monkeypatch.setattr(aconn, "SSHPacket", Counted)
    return made


@pytest.mark.parametrize("ending", ENDINGS)
@pytest.mark.parametrize("enc_alg, mac_alg", CASES, ids=[f"{e.decode()}+{m.decode() or 'aead'}"
                                                         for e, m in CASES])
def test_fast_recv_path_does_what_asyncssh_does(enc_alg, mac_alg, ending, count_packets):
    assert recvpath.APPLIES
    seed = 7 + ENDINGS.index(ending)
    stream, delivered, _ = _stream(enc_alg, mac_alg, ending, seed)
    results = {}
    for name in ("asyncssh", "fast", "fast-sliced"):
        events: list = []
        c = _receiver(enc_alg, mac_alg, seed, events)
        if name == "fast-sliced":
            assert wire.feed_in_slices(c)              # as wire installs both
        if name != "asyncssh":
            assert recvpath.fast_recv_path(c)
            assert not recvpath.fast_recv_path(c)      # once per connection
        count_packets.clear()
        state = _run(c, stream, seed)
        results[name] = (events, state, len(count_packets))

    ref_events, ref_state, ref_parsed = results["asyncssh"]
    for name in ("fast", "fast-sliced"):
        events, state, parsed = results[name]
        assert _joined(events) == _joined(ref_events), name
        assert _joined_state(state) == _joined_state(ref_state), name
        assert parsed < ref_parsed // 2, (name, parsed, ref_parsed)   # data skipped SSHPacket

    # and what asyncssh itself did is what was sent (so a path broken both ways still fails)
    got = [e[2] for e in ref_events if e[:2] == ("data", OPEN) and e[3] is None]
    kex = [e for e in ref_events if e[:2] == ("conn", MSG_NEWKEYS)]
    assert kex == [("conn", MSG_NEWKEYS, 3 + 2 * len(SIZES) + 5, b"")]
    unimplemented = [e for e in ref_events if e[0] == "sent" and e[1] == 3]
    assert len(unimplemented) == 2
    assert any(e[:2] == ("sent", MSG_CHANNEL_WINDOW_ADJUST) for e in ref_events)
    closed = [e for e in ref_events if e[0] == "closed"]
    if ending == "clean":
        assert got == delivered + [b"after the end"] * 3 and not closed
        assert ref_state["seq"] == 2 * len(SIZES) + 5 + 3
        assert ref_state["left"] == b""
    else:
        assert got == delivered
        assert len(closed) == 1
        reason = {"tampered": "MAC verification failed", "oversize": "Max packet size exceeded",
                  "unknown-channel": "Invalid channel number 99 received",
                  "window": "Window exceeded", "after-eof": "Channel not open for sending"}
        if ending in reason:
            assert closed[0][2] == reason[ending]
            assert ("disconnect",) == tuple(e[0] for e in ref_events if e[0] == "disconnect")
    paused = ref_state["buffered"][PAUSED]
    assert [d for d, _ in paused] == [d[:50] for d in delivered if d[:50]]


def test_installed_asyncssh_is_the_one_the_receive_path_was_written_for():
    assert recvpath.mirrored_digest() == recvpath.WRITTEN_FOR
    assert recvpath.APPLIES


def test_a_changed_asyncssh_is_left_alone(monkeypatch):
    monkeypatch.setattr(recvpath, "APPLIES", False)
    c = _receiver(b"aes128-gcm@openssh.com", b"", 1, [])
    assert not recvpath.fast_recv_path(c)
    assert "_recv_pkthdr" not in vars(c)


def test_a_packet_split_anywhere_is_received_the_same(count_packets):
    """Every cut point of one GCM and one CTR packet pair: delivered exactly once each."""
    for enc_alg, mac_alg in ((b"aes128-gcm@openssh.com", b""), (b"aes128-ctr", b"hmac-sha2-256")):
        rnd = random.Random(1)
        s = _Sender(enc_alg, mac_alg, _keys(enc_alg, mac_alg, 1), rnd)
        s.packet(_data(OPEN, b"a" * 300))
        first = len(s.out)
        s.packet(_data(OPEN, b"b" * 200))
        for cut in range(1, len(s.out)):
            events: list = []
            c = _receiver(enc_alg, mac_alg, 1, events)
            assert recvpath.fast_recv_path(c)
            c.data_received(bytes(s.out[:cut]))
            c.data_received(bytes(s.out[cut:]))
            # the first packet is delivered with the first read if it came whole in it,
            # else with the second packet, in the second read
            want = [b"a" * 300, b"b" * 200] if cut >= first else [b"a" * 300 + b"b" * 200]
            assert [e[2] for e in events] == want, cut
            assert c._recv_seq == 5 and c._inpbuf == b""


@pytest.mark.parametrize("enc_alg, mac_alg", CASES[:2] + CASES[5:6])
def test_sequence_numbers_wrap_as_asyncssh_wraps_them(enc_alg, mac_alg):
    start = 0xffffffff - 5
    rnd = random.Random(3)
    s = _Sender(enc_alg, mac_alg, _keys(enc_alg, mac_alg, 3), rnd, seq=start)
    for i in range(12):
        s.packet(_data(OPEN, b"%d" % i * 1000))
    seen = {}
    for fast in (False, True):
        events: list = []
        c = _receiver(enc_alg, mac_alg, 3, events, seq=start)
        if fast:
            assert recvpath.fast_recv_path(c)
        c.data_received(bytes(s.out))
        seen[fast] = (events, c._recv_seq)
    assert seen[True][1] == seen[False][1] == 6
    assert len(seen[False][0]) == 12 and "closed" not in str(seen[False][0])
    assert seen[True][0] == _joined(seen[False][0])      # one read: one delivery
    assert len(seen[True][0]) == 1


def test_the_channel_classes_the_bastion_uses_take_the_fast_path():
    for cls in (achannel.SSHClientChannel, achannel.SSHServerChannel, achannel.SSHTCPChannel):
        assert recvpath._fast_class(cls), cls

    class Overridden(achannel.SSHChannel):
        _packet_handlers = {**achannel.SSHChannel._packet_handlers,
                            MSG_CHANNEL_DATA: lambda *args: True}

    assert not recvpath._fast_class(Overridden)      # its own CHANNEL_DATA handling is kept


def _one_read(enc_alg, mac_alg, payloads, *, fast, chan_class=None):
    """Every payload as one packet, all in one read; what the receiver did."""
    s = _Sender(enc_alg, mac_alg, _keys(enc_alg, mac_alg, 5), random.Random(5))
    for payload in payloads:
        s.packet(payload)
    events: list = []
    c = _receiver(enc_alg, mac_alg, 5, events)
    if chan_class is not None:
        c._channels[OPEN].__class__ = chan_class
    if fast:
        assert recvpath.fast_recv_path(c)
    c.data_received(bytes(s.out))
    return events, {k: ch._recv_window for k, ch in c._channels.items()}, c._recv_seq


@pytest.mark.parametrize("enc_alg, mac_alg", CASES[:2] + CASES[5:6])
def test_a_reads_packets_for_one_channel_are_delivered_together_in_order(enc_alg, mac_alg):
    eof = bytes((MSG_CHANNEL_EOF,)) + OPEN.to_bytes(4, "big")
    payloads = [_data(OPEN, b"a" * 16384), _data(OPEN, b"b" * 16384), _data(SMALL, b"c" * 10),
                _data(OPEN, b"d" * 5), eof]
    ref = _one_read(enc_alg, mac_alg, payloads, fast=False)
    got = _one_read(enc_alg, mac_alg, payloads, fast=True)
    assert [e[:3] for e in ref[0]] == [("data", OPEN, b"a" * 16384), ("data", OPEN, b"b" * 16384),
                                       ("data", SMALL, b"c" * 10), ("data", OPEN, b"d" * 5),
                                       ("eof", OPEN)]
    # the two first packets in one delivery; the other channel's, the next data and the
    # EOF each in their place after it
    assert [e[:3] for e in got[0]] == [("data", OPEN, b"a" * 16384 + b"b" * 16384),
                                       ("data", SMALL, b"c" * 10), ("data", OPEN, b"d" * 5),
                                       ("eof", OPEN)]
    assert got[1:] == ref[1:]                             # windows and sequence numbers


@pytest.mark.parametrize("enc_alg, mac_alg", CASES[:2] + CASES[5:6])
def test_held_data_counts_against_the_window_the_peer_was_granted(enc_alg, mac_alg):
    """SMALL has a window of 1000 and the peer gets no adjust while it sends: 400 and 500
    fit and are delivered together; 200 more do not, and the connection is closed as
    asyncssh closes it for data beyond the window.  (asyncssh itself, delivering the 500
    alone, sends an adjust at once and counts it, although the peer cannot have seen it
    yet, and lets the 200 through: a peer that keeps to its window never meets either.)"""
    payloads = [_data(SMALL, b"x" * 400), _data(SMALL, b"y" * 500), _data(SMALL, b"z" * 200)]
    ref_events, _, _ = _one_read(enc_alg, mac_alg, payloads, fast=False)
    events, _, _ = _one_read(enc_alg, mac_alg, payloads, fast=True)
    assert [e[:3] for e in events if e[0] in ("data", "closed")] == [
        ("data", SMALL, b"x" * 400 + b"y" * 500), ("closed", "ProtocolError", "Window exceeded")]
    assert [e[:3] for e in ref_events if e[0] in ("data", "closed")] == [
        ("data", SMALL, b"x" * 400), ("data", SMALL, b"y" * 500), ("data", SMALL, b"z" * 200)]
    within = [_data(SMALL, b"x" * 400), _data(SMALL, b"y" * 600)]     # exactly the window
    events, windows, _ = _one_read(enc_alg, mac_alg, within, fast=True)
    assert [e[:3] for e in events if e[0] == "data"] == [("data", SMALL, b"x" * 400 + b"y" * 600)]
    assert _one_read(enc_alg, mac_alg, within, fast=False)[1] == windows


def test_a_channel_with_its_own_accept_data_gets_each_packet_alone():
    class PerPacket(achannel.SSHChannel):        # like asyncssh's TUN channel, which strips
        def _accept_data(self, data, datatype=None):   # a header from each packet's data
            super()._accept_data(data[1:], datatype)

    enc_alg, mac_alg = CASES[0]
    payloads = [_data(OPEN, b"1abc"), _data(OPEN, b"2def")]
    ref = _one_read(enc_alg, mac_alg, payloads, fast=False, chan_class=PerPacket)
    got = _one_read(enc_alg, mac_alg, payloads, fast=True, chan_class=PerPacket)
    assert got == ref
    assert [e[2] for e in got[0]] == [b"abc", b"def"]


@pytest.mark.parametrize("enc_alg, mac_alg", CASES[:2] + CASES[5:6])
def test_window_adjusts_take_the_fast_path_and_do_what_asyncssh_does(enc_alg, mac_alg,
                                                                     count_packets):
    def adjust(chan, n):
        return bytes((MSG_CHANNEL_WINDOW_ADJUST,)) + chan.to_bytes(4, "big") + n.to_bytes(4, "big")

    payloads = [_data(OPEN, b"a" * 100), adjust(OPEN, 1000), adjust(SMALL, 5),
                _data(OPEN, b"b" * 100), adjust(OPEN, 7)]
    seen = {}
    for fast in (False, True):
        s = _Sender(enc_alg, mac_alg, _keys(enc_alg, mac_alg, 5), random.Random(5))
        for payload in payloads:
            s.packet(payload)
        events: list = []
        c = _receiver(enc_alg, mac_alg, 5, events)
        for chan_id, chan in c._channels.items():     # what the adjust sets going
            chan._flush_send_buf = lambda chan_id=chan_id, chan=chan, events=events: \
                events.append(("flush", chan_id, chan._send_window))
        if fast:
            assert recvpath.fast_recv_path(c)
        count_packets.clear()
        c.data_received(bytes(s.out))
        seen[fast] = (_joined(events), {k: ch._send_window for k, ch in c._channels.items()},
                      c._recv_seq, len(count_packets))
    assert seen[False][0] == [("data", OPEN, b"a" * 100, None), ("flush", OPEN, 1000),
                              ("flush", SMALL, 5), ("data", OPEN, b"b" * 100, None),
                              ("flush", OPEN, 1007)]
    assert seen[True][:3] == seen[False][:3]
    assert seen[False][3] == len(payloads) and seen[True][3] == 0   # no SSHPacket here


@pytest.mark.parametrize("enc_alg, mac_alg", CASES[:2] + CASES[5:6])
def test_a_receiver_that_raises_gets_the_held_data_once_and_the_window_counts_it_once(
        enc_alg, mac_alg):
    class Raising(_Session):
        def data_received(self, data, datatype):
            super().data_received(data, datatype)
            raise ValueError("the session broke")

    s = _Sender(enc_alg, mac_alg, _keys(enc_alg, mac_alg, 5), random.Random(5))
    for part in (b"a" * 1000, b"b" * 1000, b"c" * 1000):
        s.packet(_data(OPEN, part))
    s.packet(_data(SMALL, b"d" * 10))                    # makes the OPEN data go mid-read
    events: list = []
    c = _receiver(enc_alg, mac_alg, 5, events)
    opened = c._channels[OPEN]
    opened._session = Raising(events, OPEN)
    window = opened._recv_window
    assert recvpath.fast_recv_path(c)
    c.data_received(bytes(s.out))
    assert [e[:3] for e in events] == [("data", OPEN, b"a" * 1000 + b"b" * 1000 + b"c" * 1000),
                                       ("closed", "ValueError", "the session broke")]
    assert opened._recv_window == window - 3000          # counted once, not restored twice
