"""bastion.ssh.sendpath: the one-copy send path puts exactly asyncssh's bytes on the wire.

Two asyncssh connection objects (made without a socket: only the state ``send_packet``
reads) get the same keys from asyncssh's own ``get_encryption``; one sends through
asyncssh's method (with asyncssh's GCMCipher and SSHChannel code restored), the other
through ``fast_send_path``.  Padding comes from a seeded ``os.urandom`` replayed for
both, so the written streams must be equal byte for byte, per cipher and MAC, for
packets of several sizes, with and without wire's IGNORE filter, across a due rekey
(asyncssh's KEXINIT path) and new keys.  The stream is then decrypted and
authenticated with asyncssh's receiving code.  The end-to-end checks with OpenSSH
(including ``RekeyLimit``) are in tests/e2e/test_data_path.py.
"""

from __future__ import annotations

import os
import random

import asyncssh
import pytest
from asyncssh import channel as achannel
from asyncssh import connection as aconn
from asyncssh.constants import (MSG_CHANNEL_DATA, MSG_CHANNEL_WINDOW_ADJUST, MSG_GLOBAL_REQUEST,
                                MSG_IGNORE)
from asyncssh.crypto import chacha as achacha
from asyncssh.crypto import cipher as acipher
from asyncssh.encryption import get_encryption, get_encryption_params

from cryptography.hazmat.primitives.ciphers import Cipher
from cryptography.hazmat.primitives.ciphers.algorithms import ChaCha20

from bastion.ssh import sendpath, wire

CASES = [
    (b"chacha20-poly1305@openssh.com", b""),
    (b"aes128-gcm@openssh.com", b""),
    (b"aes256-gcm@openssh.com", b""),
    (b"aes128-ctr", b"hmac-sha2-256-etm@openssh.com"),
    (b"aes256-ctr", b"hmac-sha2-512-etm@openssh.com"),
    (b"aes128-ctr", b"hmac-sha2-256"),
    (b"aes192-ctr", b"hmac-sha2-512"),
    (b"aes256-cbc", b"hmac-sha2-256"),     # CBC: the IGNOREs stay, the fast path still builds
]
SIZES = [0, 1, 3, 15, 16, 17, 31, 100, 1000, 4096, 32759, 32768, 65536 + 7]


class _Writes:
    def __init__(self) -> None:
        self.data: list[bytes] = []

    def write(self, data) -> None:
        self.data.append(bytes(data))

    def stream(self) -> bytes:
        return b"".join(self.data)


def _keys(enc_alg: bytes, mac_alg: bytes, salt: int):
    keysize, ivsize, blocksize, mac_keysize, _, etm = get_encryption_params(enc_alg, mac_alg)
    rnd = random.Random(salt)
    key, iv, mac_key = (rnd.randbytes(n) for n in (keysize, ivsize, mac_keysize))
    return (key, iv, mac_key, etm, blocksize)


def _encryption(enc_alg, mac_alg, keys):
    key, iv, mac_key, etm, _ = keys
    return get_encryption(enc_alg, key, iv, mac_alg, mac_key, etm)


def _conn(enc_alg, mac_alg, keys, rekey_bytes=1 << 40):
    c = aconn.SSHClientConnection.__new__(aconn.SSHClientConnection)
    c._auth_complete = c._kex_complete = True
    c._auth_in_progress = False
    c._rekey_bytes, c._rekey_bytes_sent = rekey_bytes, 0
    c._rekey_seconds, c._rekey_time = 3600, 1e18
    c._deferred_packets = []
    c._compressor, c._compress_after_auth = None, False
    c._strict_kex = True
    c._kexinit_sent = False
    c._send_seq = 7
    c._logger = asyncssh.logging.logger
    c._transport = _Writes()
    c.kexinits = []
    c._send_kexinit = lambda: c.kexinits.append(c._send_seq)
    _set_keys(c, enc_alg, mac_alg, keys)
    c.get_extra_info = lambda name, default=None: (
        enc_alg.decode() if name == "send_cipher" else default)
    return c


def _set_keys(c, enc_alg, mac_alg, keys):
    c._send_encryption = _encryption(enc_alg, mac_alg, keys)
    c._send_enchdrlen = 1 if keys[3] else 5
    c._send_blocksize = max(8, keys[4])


def _drive(c, enc_alg, mac_alg, seed):
    """Packets of every size, a due rekey, new keys, more packets; returns what was written."""
    rnd = random.Random(seed)
    chan = (5).to_bytes(4, "big")

    def burst():
        for size in SIZES:
            data = rnd.randbytes(size)
            c.send_packet(MSG_CHANNEL_DATA, chan, len(data).to_bytes(4, "big"), data)
        c.send_packet(MSG_CHANNEL_WINDOW_ADJUST, chan, (1 << 20).to_bytes(4, "big"))
        c.send_packet(MSG_IGNORE, b"\0\0\0\3abc")          # below the fast path: asyncssh's
        c.send_packet(MSG_GLOBAL_REQUEST, b"\0\0\0\4ping\0")

    burst()
    c._rekey_bytes = c._rekey_bytes_sent                    # due now: asyncssh sends KEXINIT
    c.send_packet(MSG_CHANNEL_DATA, chan, b"\0\0\0\2hi")
    c._rekey_bytes = 1 << 40
    _set_keys(c, enc_alg, mac_alg, _keys(enc_alg, mac_alg, seed + 1))   # NEWKEYS
    c._rekey_bytes_sent = 0
    burst()
    return c._transport.stream()


@pytest.fixture
def seeded_urandom(monkeypatch):
    state = {}

    def urandom(n):
        return state["rnd"].randbytes(n)

    def reseed(seed):
        state["rnd"] = random.Random(seed)

    monkeypatch.setattr(os, "urandom", urandom)
    return reseed


def _asyncssh_own(monkeypatch):
    """Restore asyncssh's GCMCipher and SSHChannel methods (the process may have patched them)."""
    m = sendpath._MIRRORED
    monkeypatch.setattr(acipher.GCMCipher, "encrypt_and_sign", m["GCMCipher.encrypt_and_sign"])
    monkeypatch.setattr(acipher.GCMCipher, "verify_and_decrypt",
                        m["GCMCipher.verify_and_decrypt"])
    monkeypatch.setattr(achannel.SSHChannel, "send_packet", m["SSHChannel.send_packet"])


def _decrypt_all(stream, enc_alg, mac_alg, seeds, switch_after):
    """Parse ``stream`` with asyncssh's receiving code; returns (seq, payload) per packet."""
    keys = _keys(enc_alg, mac_alg, seeds[0])
    dec = _encryption(enc_alg, mac_alg, keys)
    _, _, blocksize, _, macsize, _ = get_encryption_params(enc_alg, mac_alg)
    blocksize = max(8, blocksize)
    seq, pos, out = 7, 0, []
    while pos < len(stream):
        first = stream[pos:pos + blocksize]
        first, header = dec.decrypt_header(seq, first, 4)
        pktlen = int.from_bytes(header[:4], "big")
        end = pos + 4 + pktlen + macsize
        rest = stream[pos + blocksize:end - macsize]
        packet = dec.decrypt_packet(seq, first, rest, 4, stream[end - macsize:end])
        assert packet is not None, f"packet {seq} failed authentication"
        padlen = packet[0]
        out.append((seq, bytes(packet[1:len(packet) - padlen])))
        pos, seq = end, (seq + 1) & 0xffffffff
        if len(out) == switch_after:
            dec = _encryption(enc_alg, mac_alg, _keys(enc_alg, mac_alg, seeds[1]))
    return out


@pytest.mark.parametrize("filtered", [True, False], ids=["ignore-filter", "no-filter"])
@pytest.mark.parametrize("enc_alg, mac_alg", CASES, ids=[f"{e.decode()}+{m.decode() or 'aead'}"
                                                         for e, m in CASES])
def test_fast_send_path_writes_asyncssh_bytes(enc_alg, mac_alg, filtered, seeded_urandom,
                                              monkeypatch):
    assert sendpath.APPLIES
    keys = _keys(enc_alg, mac_alg, 100)

    with monkeypatch.context() as own:
        _asyncssh_own(own)
        ref = _conn(enc_alg, mac_alg, keys)
        if filtered:
            assert wire.drop_cbc_padding_packets(ref)
        seeded_urandom(1)
        expected = _drive(ref, enc_alg, mac_alg, 100)

    sendpath.install_process_wide()
    fast = _conn(enc_alg, mac_alg, keys)
    if filtered:
        assert wire.drop_cbc_padding_packets(fast)
    assert sendpath.fast_send_path(fast)
    assert not sendpath.fast_send_path(fast)            # once per connection
    seeded_urandom(1)
    got = _drive(fast, enc_alg, mac_alg, 100)

    assert len(expected) > 2 * sum(SIZES)
    assert got == expected
    assert fast._send_seq == ref._send_seq
    assert fast._rekey_bytes_sent == ref._rekey_bytes_sent
    assert fast.kexinits == ref.kexinits and ref.kexinits     # the due rekey: KEXINIT sent

    # what was sent decrypts and authenticates with asyncssh's receiving code (patched GCM)
    packets = _decrypt_all(got, enc_alg, mac_alg, (100, 101),
                           switch_after=len(SIZES) + 3 + 1 + (len(SIZES) + 3 if not filtered or
                                                               b"cbc" in enc_alg else 0))
    datas = [p for _, p in packets if p[0] == MSG_CHANNEL_DATA]
    assert [len(p) - 9 for p in datas] == SIZES + [2] + SIZES


CHACHA = b"chacha20-poly1305@openssh.com"


def _chacha_runs(seeded_urandom, monkeypatch):
    """asyncssh's own stream and the fast path's for chacha20-poly1305 (the _drive script)."""
    keys = _keys(CHACHA, b"", 100)
    with monkeypatch.context() as own:
        _asyncssh_own(own)
        ref = _conn(CHACHA, b"", keys)
        seeded_urandom(1)
        expected = _drive(ref, CHACHA, b"", 100)
    sendpath.install_process_wide()
    fast = _conn(CHACHA, b"", keys)
    assert sendpath.fast_send_path(fast)
    seeded_urandom(1)
    return expected, _drive(fast, CHACHA, b"", 100)


def test_chacha_fast_path_uses_one_keystream_per_packet(seeded_urandom, monkeypatch):
    made = []
    real = sendpath.chacha_keystream

    def counted(key, nonce):
        made.append(nonce)
        return real(key, nonce)

    monkeypatch.setattr(sendpath, "chacha_keystream", counted)
    expected, got = _chacha_runs(seeded_urandom, monkeypatch)
    assert got == expected
    # one keystream per packet the fast path built, by its sequence number: the data,
    # window adjust and global request of both bursts (the IGNOREs, KEXINIT and the
    # packet sent while the rekey was due are asyncssh's)
    seqs = [int.from_bytes(n, "big") for n in made]
    assert len(seqs) == 2 * (len(SIZES) + 2) and seqs == sorted(set(seqs))


def _keystream_from(offset):
    """chacha_keystream with the right Poly1305 key but the data from byte ``offset``."""
    def keystream(key, nonce):
        poly_key = Cipher(ChaCha20(key, bytes(8) + nonce), mode=None).encryptor().update(
            bytes(32))
        stream = Cipher(ChaCha20(key, bytes(8) + nonce), mode=None).encryptor()
        stream.update(bytes(offset))
        return stream, poly_key
    return keystream


@pytest.mark.parametrize("offset", [0, 32, 128])
def test_a_wrong_chacha_keystream_offset_is_caught(offset, seeded_urandom, monkeypatch):
    """The data must be encrypted from block 1 (byte 64) of the packet's keystream.  From
    anywhere else, with the Poly1305 key still right (so the tags still verify), the
    comparison with asyncssh's bytes fails; from byte 64 it passes."""
    monkeypatch.setattr(sendpath, "chacha_keystream", _keystream_from(offset))
    expected, got = _chacha_runs(seeded_urandom, monkeypatch)
    assert len(got) == len(expected) and got != expected
    monkeypatch.setattr(sendpath, "chacha_keystream", _keystream_from(64))   # the right one
    expected, got = _chacha_runs(seeded_urandom, monkeypatch)
    assert got == expected


@pytest.mark.parametrize("size", [0, 1, 63, 64, 65, 127, 200, 32768 + 13])
def test_chacha_keystream_is_asyncssh_poly1305_key_and_block_1(size):
    rnd = random.Random(size)
    key, nonce, data = rnd.randbytes(32), rnd.randbytes(8), rnd.randbytes(size)
    stream, poly_key = sendpath.chacha_keystream(key, nonce)
    assert poly_key == achacha.poly1305_key(key, nonce)
    assert stream.update(data) == achacha.chacha20(key, data, nonce, 1)


def test_gcm_cipher_reuses_one_aesgcm_per_key_with_the_same_output(monkeypatch):
    key, iv = bytes(range(16)), bytes(range(12))
    with monkeypatch.context() as own:
        _asyncssh_own(own)
        ref = acipher.GCMCipher("aes128-gcm", key, iv)
        expected = [ref.encrypt_and_sign(b"hdr%d" % i, b"x" * i) for i in range(5)]
    sendpath.reuse_gcm_keys()
    mine = acipher.GCMCipher("aes128-gcm", key, iv)
    assert [mine.encrypt_and_sign(b"hdr%d" % i, b"x" * i) for i in range(5)] == expected
    first = mine.__dict__["_bastion_aead"]
    mine.encrypt_and_sign(b"h", b"y")
    assert mine.__dict__["_bastion_aead"] is first         # one object for the key
    dec = acipher.GCMCipher("aes128-gcm", key, iv)
    for i, (head_ct, tag) in enumerate(expected):
        head = b"hdr%d" % i
        assert dec.verify_and_decrypt(head, head_ct[len(head):], tag) == b"x" * i
    assert dec.verify_and_decrypt(b"h", b"z", b"\0" * 16) is None   # a bad tag is refused


def test_channel_passes_its_arguments_unjoined_with_the_same_payload():
    class Conn:
        sent: list = []

        def send_packet(self, pkttype, *args, handler=None):
            self.sent.append((pkttype, b"".join(args), handler))

    chan = achannel.SSHChannel.__new__(achannel.SSHChannel)
    chan._conn, chan._send_chan = Conn(), 0x01020304
    sendpath._MIRRORED["SSHChannel.send_packet"](chan, MSG_CHANNEL_DATA, b"\0\0\0\1", b"a")
    sendpath.channel_args_unjoined()
    chan.send_packet(MSG_CHANNEL_DATA, b"\0\0\0\1", b"a")
    assert Conn.sent[0] == Conn.sent[1] == (MSG_CHANNEL_DATA, b"\1\2\3\4\0\0\0\1a", chan)


def test_installed_asyncssh_is_the_one_the_send_path_was_written_for():
    assert sendpath.mirrored_digest() == sendpath.WRITTEN_FOR
    assert sendpath.APPLIES


def test_a_changed_asyncssh_is_left_alone(monkeypatch):
    monkeypatch.setattr(sendpath, "APPLIES", False)
    c = _conn(b"aes128-gcm@openssh.com", b"", _keys(b"aes128-gcm@openssh.com", b"", 1))
    before = c.send_packet
    assert not sendpath.fast_send_path(c)
    assert "send_packet" not in vars(c) and c.send_packet == before


class _RecordingConn:
    def __init__(self) -> None:
        self.sent: list[tuple[int, bytes]] = []

    def send_packet(self, pkttype, *args, handler=None):
        self.sent.append((pkttype, bytes(b"".join(args))))


class _Session:
    def __init__(self, events) -> None:
        self.events = events

    def pause_writing(self):
        self.events.append("pause")

    def resume_writing(self):
        self.events.append("resume")


def _channel(events):
    chan = achannel.SSHChannel.__new__(achannel.SSHChannel)
    chan._conn, chan._send_chan = _RecordingConn(), 0x0A0B0C0D
    chan._logger = asyncssh.logging.logger
    chan._send_buf, chan._send_buf_len = [], 0
    chan._send_window, chan._send_pktsize = 0, 32768
    chan._send_state, chan._send_paused = "open", False
    chan._send_high_water, chan._send_low_water = 100_000, 20_000
    chan._session = _Session(events)
    chan._encoding, chan._write_datatypes = None, {1}
    return chan


def _channel_script(chan, seed):
    """Writes of many sizes (stdout and stderr) against windows opened a bit at a time."""
    rnd = random.Random(seed)
    for _step in range(60):
        for _ in range(rnd.randrange(3)):
            size = rnd.choice([1, 100, 32767, 32768, 32769, 70000, 262144, 300001])
            chan.write(rnd.randbytes(size), rnd.choice([None, None, 1]))
        chan._send_window += rnd.choice([0, 1, 5000, 32768, 40000, 200000, 1 << 20])
        chan._flush_send_buf()
    chan._send_window += 1 << 30
    chan._send_state = "eof_pending"
    chan._flush_send_buf()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_channel_flush_sends_what_asyncssh_sends(seed, monkeypatch):
    with monkeypatch.context() as own:
        _asyncssh_own(own)
        own.setattr(achannel.SSHChannel, "_flush_send_buf",
                    sendpath._MIRRORED["SSHChannel._flush_send_buf"])
        ref_events: list = []
        ref = _channel(ref_events)
        _channel_script(ref, seed)
    sendpath.channel_args_unjoined()
    assert achannel.SSHChannel._flush_send_buf is sendpath._flush_send_buf
    events: list = []
    mine = _channel(events)
    _channel_script(mine, seed)
    assert len(ref._conn.sent) > 100
    assert mine._conn.sent == ref._conn.sent
    assert events == ref_events and "pause" in events and "resume" in events
    assert mine._send_buf == ref._send_buf == [] and mine._send_buf_len == ref._send_buf_len == 0
    assert mine._send_state == ref._send_state == "eof"
