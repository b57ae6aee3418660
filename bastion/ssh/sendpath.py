"""Fewer copies and less per-packet work when the bastion's SSH connections send a packet.

A relay sends every byte three times through asyncssh (outer, inner and upstream
connection), and asyncssh's ``send_packet`` builds each packet by concatenation:
``Byte(type) + b''.join(args)``, then ``Byte(padlen) + payload + padding``, then the
cipher's ``header + data[:-16]`` and ``packet + mac``: about six copies of the payload
per packet, plus, with AES-GCM, a new ``AESGCM`` object (a key schedule) for every
packet sent and received.  What this module does instead, with the same bytes on the
wire:

* :func:`fast_send_path` shadows ``send_packet`` on one connection (on that instance
  only) with one that, for channel-level packets once keys and auth are in place, joins
  the packet once (header, padding length, type, arguments, padding), encrypts it and
  hands the transport the ciphertext and the tag as two writes (the transport,
  bastion.ssh.wire's ``JoinedTransport``, joins a loop turn's writes anyway).  Padding,
  sequence numbers, nonces, MACs, rekey accounting and the IGNORE before each packet
  follow asyncssh's own code for the four encryption classes it uses with OpenSSH
  (chacha20-poly1305, AES-GCM, AES-CTR with HMAC, ETM or not).  Everything else
  (key exchange, auth, a rekey that is due, compression, other ciphers) goes to
  asyncssh's method unchanged.  The packet log line is made only at debug level 3,
  where asyncssh's logger would print it.
* :func:`reuse_gcm_keys` makes asyncssh's ``GCMCipher`` keep one ``AESGCM`` per key
  (a rekey makes a new ``GCMCipher``, so a new key gets a new object); the nonce is
  still advanced per packet by asyncssh's own ``_update_iv``.
* :func:`channel_args_unjoined` has a channel hand the connection its channel number
  and arguments as they are, since the connection joins them anyway (one copy less),
  and send each packet's data as a view of its send buffer: asyncssh copied each
  packet off the front of the buffered bytearray and shifted the rest down (a 256 KiB
  write sent as 32 KiB packets was moved ~3.5 times over), then copied it again with
  its length prefix.

Each is applied only if the source of every asyncssh function it replaces or mirrors
hashes to what this module was written against (:data:`WRITTEN_FOR`); otherwise
asyncssh is left alone.  Byte-for-byte comparisons with asyncssh's own send path, per
cipher and MAC and across a rekey, are in tests/integration/test_sendpath.py.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable

from asyncssh import channel as _channel
from asyncssh import connection as _connection
from asyncssh import encryption as _enc
from asyncssh.constants import (MSG_CHANNEL_DATA, MSG_CHANNEL_EOF, MSG_CHANNEL_EXTENDED_DATA,
                                MSG_IGNORE, MSG_USERAUTH_LAST)
from asyncssh.crypto import chacha as _chacha
from asyncssh.crypto import cipher as _cipher
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.ciphers.algorithms import ChaCha20
from cryptography.hazmat.primitives.poly1305 import Poly1305

from bastion.ssh import mirrored

_GCM_TAG = 16
_EMPTY_STRING = b"\0\0\0\0"          # asyncssh's String(b"")
_CHACHA_CTR_0 = (0).to_bytes(8, "little")        # asyncssh's _CTR_0: block counter 0
_CHACHA_BLOCK = bytes(64)
_POLY1305_KEYBYTES = 32

# What the replacements mirror, by qualified name, and the sha256 of their source in
# asyncssh 2.24.1 (the version these were written and tested against).
_MIRRORED: dict[str, Callable[..., Any]] = {
    "SSHConnection.send_packet": _connection.SSHConnection.send_packet,
    "SSHConnection._send": _connection.SSHConnection._send,
    "BasicEncryption.encrypt_packet": _enc.BasicEncryption.encrypt_packet,
    "ETMEncryption.encrypt_packet": _enc.ETMEncryption.encrypt_packet,
    "GCMEncryption.encrypt_packet": _enc.GCMEncryption.encrypt_packet,
    "ChachaEncryption.encrypt_packet": _enc.ChachaEncryption.encrypt_packet,
    "ChachaCipher.encrypt_and_sign": _chacha.ChachaCipher.encrypt_and_sign,
    "chacha20": _chacha.chacha20,
    "poly1305": _chacha.poly1305,
    "poly1305_key": _chacha.poly1305_key,
    "GCMCipher.__init__": _cipher.GCMCipher.__init__,
    "GCMCipher._update_iv": _cipher.GCMCipher._update_iv,
    "GCMCipher.encrypt_and_sign": _cipher.GCMCipher.encrypt_and_sign,
    "GCMCipher.verify_and_decrypt": _cipher.GCMCipher.verify_and_decrypt,
    "SSHChannel.send_packet": _channel.SSHChannel.send_packet,
    "SSHChannel._flush_send_buf": _channel.SSHChannel._flush_send_buf,
    "SSHChannel.write": _channel.SSHChannel.write,
    "SSHChannel._close_send": _channel.SSHChannel._close_send,
}
WRITTEN_FOR = "ab5eae8cde81e1e830b46b9b0fb45d32979dc6a55d28a6569bb16b872e52cc0c"


def mirrored_digest() -> str:
    """sha256 over the source of what this module replaces or mirrors (see WRITTEN_FOR)."""
    return mirrored.digest(_MIRRORED)


APPLIES = mirrored.as_written(_MIRRORED, WRITTEN_FOR)


# -- chacha20-poly1305: one keystream per packet -----------------------------------
def chacha_keystream(key: bytes, nonce: bytes) -> tuple[Any, bytes]:
    """The ChaCha20 keystream of one chacha20-poly1305 packet (``key`` the cipher's main
    key, ``nonce`` the 8-byte sequence number) as an encryptor already at block 1, where
    the packet's data begins, and the Poly1305 key (block 0's first 32 bytes).  asyncssh
    makes one ``Cipher`` for the Poly1305 key and another for the data, each starting
    its own keystream; the bytes are the same."""
    stream = Cipher(ChaCha20(key, _CHACHA_CTR_0 + nonce), mode=None).encryptor()
    return stream, stream.update(_CHACHA_BLOCK)[:_POLY1305_KEYBYTES]


# -- AES-GCM: one AESGCM per key ------------------------------------------------
def _aesgcm(cipher: Any) -> AESGCM:
    aead: AESGCM | None = cipher.__dict__.get("_bastion_aead")
    if aead is None:
        aead = cipher._bastion_aead = AESGCM(cipher._key)
    return aead


def _gcm_encrypt_and_sign(self: Any, header: bytes, data: bytes) -> tuple[bytes, bytes]:
    data = _aesgcm(self).encrypt(self._iv, data, header)
    self._update_iv()
    return header + data[:-_GCM_TAG], data[-_GCM_TAG:]


def _gcm_verify_and_decrypt(self: Any, header: bytes, data: bytes, mac: bytes) -> bytes | None:
    try:
        decrypted: bytes | None = _aesgcm(self).decrypt(self._iv, data + mac, header)
    except InvalidTag:
        decrypted = None
    self._update_iv()
    return decrypted


def reuse_gcm_keys() -> bool:
    """Have asyncssh's GCMCipher keep one AESGCM per key (module doc).  Once per process;
    False if already done or asyncssh is not the version this was written for."""
    cls = _cipher.GCMCipher
    if not APPLIES or cls.encrypt_and_sign is _gcm_encrypt_and_sign:
        return False
    cls.encrypt_and_sign = _gcm_encrypt_and_sign          # type: ignore[method-assign]
    cls.verify_and_decrypt = _gcm_verify_and_decrypt      # type: ignore[method-assign]
    return True


# -- channels: arguments passed on unjoined --------------------------------------
def _channel_send_packet(self: Any, pkttype: int, *args: bytes) -> None:
    if self._send_chan is None:
        return
    self._conn.send_packet(pkttype, self._send_chan.to_bytes(4, "big"), *args, handler=self)


def _flush_send_buf(self: Any) -> None:
    # asyncssh's SSHChannel._flush_send_buf, sending views of each buffered bytearray
    # (asyncssh's ``write`` appends a new one per write and never changes it) from an
    # offset kept with it, instead of slicing a copy off its front and shifting the rest
    # down for every packet; the length prefix goes as its own argument (no String copy).
    # The buffer's state is updated before each packet is sent, as asyncssh's is.
    while self._send_buf and self._send_window:
        pktsize = min(self._send_window, self._send_pktsize)
        buf, datatype = self._send_buf[0]
        head = self.__dict__.get("_bastion_head")
        pos = head[1] if head is not None and head[0] is buf else 0
        if len(buf) - pos > pktsize:
            data = memoryview(buf)[pos:pos + pktsize]
            self._bastion_head = (buf, pos + pktsize)
        else:
            data = memoryview(buf)[pos:] if pos else buf
            self._bastion_head = None
            del self._send_buf[0]
        size = len(data)
        self._send_buf_len -= size
        self._send_window -= size
        if datatype is None:
            self.send_packet(MSG_CHANNEL_DATA, size.to_bytes(4, "big"), data)
        else:
            self.send_packet(MSG_CHANNEL_EXTENDED_DATA, datatype.to_bytes(4, "big"),
                             size.to_bytes(4, "big"), data)
    self._pause_resume_writing()
    if not self._send_buf:
        if self._send_state == "eof_pending":
            self.send_packet(MSG_CHANNEL_EOF)
            self._send_state = "eof"
        elif self._send_state == "close_pending":
            self._close_send()


def channel_args_unjoined() -> bool:
    """Have channels pass their arguments to the connection unjoined and send from their
    buffers without re-slicing them (module doc).  Once per process; False if already
    done or asyncssh is not as written for."""
    cls = _channel.SSHChannel
    if not APPLIES or cls.send_packet is _channel_send_packet:
        return False
    cls.send_packet = _channel_send_packet                # type: ignore[method-assign]
    cls._flush_send_buf = _flush_send_buf                 # type: ignore[method-assign]
    return True


# -- the connection's send path ---------------------------------------------------
_BASIC, _ETM = _enc.BasicEncryption, _enc.ETMEncryption
_GCM, _CHACHA = _enc.GCMEncryption, _enc.ChachaEncryption
_HANDLED = (_BASIC, _ETM, _GCM, _CHACHA)


def fast_send_path(conn: Any) -> bool:
    """Shadow ``conn.send_packet`` with the one-copy send path (module doc), on that
    instance only, over whatever ``send_packet`` it has now (e.g. wire's IGNORE filter).
    Returns whether it was installed."""
    if not APPLIES or getattr(conn.send_packet, "_bastion_fast", False):
        return False
    inner = conn.send_packet               # the filter or asyncssh's bound method

    def send_packet(pkttype: int, *args: bytes, handler: Any = None) -> None:
        c = conn
        enc = c._send_encryption
        if (pkttype <= MSG_USERAUTH_LAST or not c._auth_complete or not c._kex_complete
                or c._compressor or type(enc) not in _HANDLED
                or c._rekey_bytes_sent >= c._rekey_bytes
                or (c._rekey_seconds and time.monotonic() >= c._rekey_time)):
            inner(pkttype, *args, handler=handler)
            return
        inner(MSG_IGNORE, _EMPTY_STRING)   # asyncssh's own; the filter may drop it
        transport = c._transport
        size = 1
        for arg in args:
            size += len(arg)
        blocksize = c._send_blocksize
        padlen = -(c._send_enchdrlen + size) % blocksize
        if padlen < 4:
            padlen += blocksize
        pktlen = 1 + size + padlen
        hdr = pktlen.to_bytes(4, "big")
        seq = c._send_seq
        kind = type(enc)
        if kind is _GCM:
            cipher = enc._cipher
            body = b"".join((bytes((padlen, pkttype)), *args, os.urandom(padlen)))
            out = _aesgcm(cipher).encrypt(cipher._iv, body, hdr)
            cipher._update_iv()
            first, second = hdr, out
        elif kind is _CHACHA:
            # asyncssh's ChachaCipher.encrypt_and_sign with one keystream for the data
            # and the Poly1305 key (chacha_keystream) and the tag over the joined packet
            cipher = enc._cipher
            nonce = seq.to_bytes(8, "big")
            stream, poly_key = chacha_keystream(cipher._key, nonce)
            body = b"".join((bytes((padlen, pkttype)), *args, os.urandom(padlen)))
            first = _chacha.chacha20(cipher._adkey, hdr, nonce, 0) + stream.update(body)
            second = Poly1305.generate_tag(poly_key, first)
        elif kind is _ETM:
            body = b"".join((bytes((padlen, pkttype)), *args, os.urandom(padlen)))
            first = hdr + enc._cipher.encrypt(body)
            second = enc._mac.sign(seq, first)
        else:
            packet = b"".join((hdr, bytes((padlen, pkttype)), *args, os.urandom(padlen)))
            second = enc._mac.sign(seq, packet) if enc._mac else b""
            first = enc._cipher.encrypt(packet)
        if transport:
            try:
                transport.write(first)
                if second:
                    transport.write(second)
            except ConnectionError:       # pragma: no cover - as asyncssh's _send
                pass
        c._send_seq = (seq + 1) & 0xffffffff
        c._rekey_bytes_sent += pktlen
        logged = handler or c
        if logged.logger._debug_level >= 3:
            logged.log_sent_packet(pkttype, seq, bytes((pkttype,)) + b"".join(args))

    send_packet._bastion_fast = True        # type: ignore[attr-defined]
    conn.send_packet = send_packet
    return True


def install_process_wide() -> bool:
    """The per-process parts (GCM keys, channel arguments); True if both now apply."""
    reuse_gcm_keys()
    channel_args_unjoined()
    return APPLIES
