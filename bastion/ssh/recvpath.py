"""Fewer copies and less per-packet work when the bastion's SSH connections receive a packet.

asyncssh keeps what a connection has received in one ``bytes`` (``_inpbuf``) and, per
packet, slices the header block off its front (copying all that follows), slices the
rest and the MAC out, slices the remainder off again, joins the header with the rest
for the cipher (and the ciphertext with the tag for AES-GCM), slices the payload out of
the plaintext, wraps it in an ``SSHPacket`` and copies the channel data out of that:
about seven copies of a 32 KiB packet (more of the buffer behind it) before the relay
sees its bytes.  What :func:`fast_recv_path` does instead, on one connection:

* It shadows the connection's ``_recv_pkthdr`` (asyncssh's packet-header state; its
  ``_recv_handler`` is set from that attribute) with a handler that, for the four
  encryption classes asyncssh uses with OpenSSH (chacha20-poly1305, AES-GCM, AES-CTR
  with HMAC, ETM or not) and no compression, walks the received buffer at an offset:
  the header through asyncssh's own ``decrypt_header``, the MAC or tag verified and
  the packet decrypted over views of the buffer (the cipher calls asyncssh makes, in
  the same order, on the same bytes; for chacha20-poly1305 one ChaCha20 keystream gives
  the Poly1305 key (block 0) and the data (from block 1), where asyncssh makes two), and
  the buffer cut once when the handler returns.  A packet not yet complete is left in
  the buffer whole (its header is read again when the rest has come: for these ciphers
  that needs no state), except with AES-CTR (or CBC) without ETM, whose header came from
  the running keystream: there the state is what asyncssh's header step leaves
  (``_packet``, ``_pktlen``), with this module's body step as the handler.
* A CHANNEL_DATA packet for an open channel of asyncssh's own classes, within its
  window, after authentication, that parses exactly (channel, length, data, nothing
  after) goes to the channel's ``_accept_data`` with the data as one ``bytes``; the
  sequence number and ``_auth_final`` are set as asyncssh's ``_finish_recv_packet``
  sets them.  No ``SSHPacket``, no handler lookup, no log line (only when the channel
  logs below debug level 2, where asyncssh logs nothing for such a packet).
* Consecutive such packets for one channel in what one read brought are delivered
  together: one ``_accept_data`` with their data joined, as soon as a packet for
  another channel or of another kind comes, or the read's packets run out (never
  later than that, so no latency is added).  Each packet is checked against the
  window as it comes, its data counted before the next is checked; asyncssh, which
  delivers each at once, may have sent an adjust in between and count it, although
  the peer cannot have seen it yet: a peer that keeps to the window it was granted
  meets the same answer from both, one that does not is disconnected here.  OpenSSH's
  sshd sends a command's output in 16 KiB packets (what it reads from the command at a
  time), so on a bulk transfer this halves the calls the relay and the recording make
  per MB.  A channel class whose ``_accept_data`` is not asyncssh's (TUN, which strips
  a header per packet) is given each packet alone.
* A WINDOW_ADJUST for an open channel of asyncssh's own classes, after authentication,
  that parses exactly, is asyncssh's ``_process_window_adjust`` and
  ``_finish_recv_packet`` done in place, without an ``SSHPacket`` (OpenSSH's client
  sends one for every ~96 KiB it consumes, on the inner and the outer channel: about
  20 per MB downloaded).
* Every other packet -- key exchange, a rekey's NEWKEYS, EOF, close,
  a malformed or out-of-window CHANNEL_DATA, one before authentication -- and a packet
  whose MAC or tag fails goes through asyncssh's own ``_recv_packet`` with what this
  module decrypted (``None`` for a failed check, so asyncssh raises its MAC error and
  disconnects).  An oversized packet raises asyncssh's error after the header, as
  asyncssh does.  Other ciphers, compression and the unencrypted start of a
  connection are asyncssh's path unchanged.

Applied only if the source of every asyncssh function it replaces, mirrors or relies
on hashes to what this module was written against (:data:`WRITTEN_FOR`); otherwise
asyncssh is left alone.  Equivalence with asyncssh's own receive path per cipher and
MAC, across a rekey, with a tampered packet and an oversized one, is tested in
tests/integration/test_recvpath.py.
"""

from __future__ import annotations

from typing import Any, Callable

from asyncssh import channel as _channel
from asyncssh import connection as _connection
from asyncssh import encryption as _enc
from asyncssh import mac as _mac
from asyncssh import packet as _packet
from asyncssh.constants import MSG_CHANNEL_DATA, MSG_CHANNEL_WINDOW_ADJUST
from asyncssh.crypto import chacha as _chacha
from asyncssh.crypto import cipher as _cipher
from asyncssh.misc import ProtocolError
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives.poly1305 import Poly1305

from bastion.ssh import mirrored
from bastion.ssh.sendpath import _aesgcm, chacha_keystream

_GCM_TAG = 16

_MIRRORED: dict[str, Callable[..., Any]] = {
    "SSHConnection.data_received": _connection.SSHConnection.data_received,
    "SSHConnection._recv_data": _connection.SSHConnection._recv_data,
    "SSHConnection._recv_pkthdr": _connection.SSHConnection._recv_pkthdr,
    "SSHConnection._recv_packet": _connection.SSHConnection._recv_packet,
    "SSHConnection._finish_recv_packet": _connection.SSHConnection._finish_recv_packet,
    "BasicEncryption.decrypt_header": _enc.BasicEncryption.decrypt_header,
    "BasicEncryption.decrypt_packet": _enc.BasicEncryption.decrypt_packet,
    "ETMEncryption.decrypt_header": _enc.ETMEncryption.decrypt_header,
    "ETMEncryption.decrypt_packet": _enc.ETMEncryption.decrypt_packet,
    "GCMEncryption.decrypt_header": _enc.GCMEncryption.decrypt_header,
    "GCMEncryption.decrypt_packet": _enc.GCMEncryption.decrypt_packet,
    "ChachaEncryption.decrypt_header": _enc.ChachaEncryption.decrypt_header,
    "ChachaEncryption.decrypt_packet": _enc.ChachaEncryption.decrypt_packet,
    "ChachaCipher.verify_and_decrypt": _chacha.ChachaCipher.verify_and_decrypt,
    "chacha20": _chacha.chacha20,
    "poly1305_verify": _chacha.poly1305_verify,
    "poly1305_key": _chacha.poly1305_key,
    "GCMCipher._update_iv": _cipher.GCMCipher._update_iv,
    "BasicCipher.decrypt": _cipher.BasicCipher.decrypt,
    "_HMAC.verify": _mac._HMAC.verify,
    "SSHPacketHandler.process_packet": _packet.SSHPacketHandler.process_packet,
    "SSHChannel._process_data": _channel.SSHChannel._process_data,
    "SSHChannel._accept_data": _channel.SSHChannel._accept_data,
    "SSHChannel._process_window_adjust": _channel.SSHChannel._process_window_adjust,
}
WRITTEN_FOR = "ed6f38f6c88066247efb30fd9ed75b6a634dfd1f92b1ba6fc03ab7e086c93edd"


def mirrored_digest() -> str:
    """sha256 over the source of what this module mirrors or relies on (see WRITTEN_FOR)."""
    return mirrored.digest(_MIRRORED)


APPLIES = mirrored.as_written(_MIRRORED, WRITTEN_FOR)

_BASIC, _ETM = _enc.BasicEncryption, _enc.ETMEncryption
_GCM, _CHACHA = _enc.GCMEncryption, _enc.ChachaEncryption
_HANDLED = (_BASIC, _ETM, _GCM, _CHACHA)
_PROCESS_DATA = _channel.SSHChannel._process_data
_PROCESS_PACKET = _packet.SSHPacketHandler.process_packet
_ACCEPT_DATA = _channel.SSHChannel._accept_data
_PROCESS_ADJUST = _channel.SSHChannel._process_window_adjust
_ADJUSTABLE = frozenset(("open", "eof_pending", "eof"))    # asyncssh's check, as a set
_adjust_classes: dict[type, bool] = {}
_fast_classes: dict[type, bool] = {}
_joining_classes: dict[type, bool] = {}


def _own_handler(cache: dict[type, bool], cls: type, msg: int, handler: Any) -> bool:
    """Whether ``cls`` handles ``msg`` with asyncssh's own ``handler`` (cached per class)."""
    ok = cache.get(cls)
    if ok is None:
        handlers = getattr(cls, "_packet_handlers", {})
        ok = cache[cls] = (handlers.get(msg) is handler
                           and getattr(cls, "process_packet", None) is _PROCESS_PACKET)
    return ok


def _fast_class(cls: type) -> bool:
    """asyncssh's own CHANNEL_DATA handling (a subclass may change ``_accept_data`` only)."""
    return _own_handler(_fast_classes, cls, MSG_CHANNEL_DATA, _PROCESS_DATA)


def _adjust_class(cls: type) -> bool:
    """asyncssh's own WINDOW_ADJUST handling."""
    return _own_handler(_adjust_classes, cls, MSG_CHANNEL_WINDOW_ADJUST, _PROCESS_ADJUST)


def _joins(cls: type) -> bool:
    """Whether data of several packets may go to ``cls._accept_data`` joined (asyncssh's own)."""
    ok = _joining_classes.get(cls)
    if ok is None:
        ok = _joining_classes[cls] = getattr(cls, "_accept_data", None) is _ACCEPT_DATA
    return ok


def _deliver(chan: Any, held: list[bytes], size: int) -> None:
    """Give ``chan`` the data of its held packets (``size`` bytes, already counted
    against its window) in one ``_accept_data``, which counts it again."""
    data = held[0] if len(held) == 1 else b"".join(held)
    held.clear()
    chan._recv_window += size
    chan._accept_data(data)


def _open(kind: type, enc: Any, seq: int, view: memoryview, start: int, end: int,
          macsize: int, first: bytes) -> Any:
    """What asyncssh's ``decrypt_packet`` returns for the packet at view[start:end] (its
    header block ``first`` as ``decrypt_header`` returned it): the plaintext after the
    length, or None if the MAC or tag does not verify."""
    if kind is _GCM:
        cipher = enc._cipher
        try:
            plain = _aesgcm(cipher).decrypt(cipher._iv, view[start + 4:end], view[start:start + 4])
        except InvalidTag:
            plain = None
        cipher._update_iv()
        return plain
    body = end - macsize
    mac = view[body:end].tobytes()
    if kind is _CHACHA:
        nonce = seq.to_bytes(8, "big")
        # asyncssh derives the Poly1305 key from ChaCha20 block 0 and decrypts from block 1,
        # each with a new Cipher; here one keystream does both (block 0, then on from 1)
        stream, poly_key = chacha_keystream(enc._cipher._key, nonce)
        try:
            Poly1305.verify_tag(poly_key, view[start:body], mac)
        except InvalidSignature:
            return None
        return stream.update(view[start + 4:body])
    if kind is _ETM:
        if enc._mac.verify(seq, view[start:body], mac):
            return enc._cipher.decrypt(view[start + 4:body])
        return None
    blocksize = len(first)
    packet = first + enc._cipher.decrypt(view[start + blocksize:body])
    return memoryview(packet)[4:] if enc._mac.verify(seq, packet, mac) else None


def takes_whole(conn: Any) -> bool:
    """Whether ``conn`` now receives through this path, which copies nothing per packet, so
    a large read is best handed to it whole (bastion.ssh.wire's ``feed_in_slices`` asks):
    appended to an empty buffer a ``bytes`` is not even copied."""
    return ("_recv_pkthdr" in vars(conn) and type(conn._recv_encryption) in _HANDLED
            and not conn._decompressor)


def fast_recv_path(conn: Any) -> bool:
    """Shadow ``conn._recv_pkthdr`` with the fewer-copies receive path (module doc), on
    that instance only.  Returns whether it was installed."""
    if not APPLIES or "_recv_pkthdr" in vars(conn):
        return False
    asyncssh_header = conn._recv_pkthdr        # asyncssh's bound methods
    asyncssh_packet = conn._recv_packet

    def through_asyncssh(enc: Any, plain: Any) -> bool:
        # asyncssh's _recv_packet, its decrypt_packet answered with what was decrypted
        # here (it calls it once, first thing): dispatch, errors, async handlers, logging
        # and sequence numbers are asyncssh's own.
        given = None if plain is None else bytes(plain)

        def decrypt_packet(*_args: Any) -> Any:
            del enc.decrypt_packet
            return given

        enc.decrypt_packet = decrypt_packet
        try:
            return bool(asyncssh_packet())
        finally:
            enc.__dict__.pop("decrypt_packet", None)

    def run(pending: tuple[bytes, int] | None) -> bool:
        c = conn
        enc = c._recv_encryption
        kind = type(enc)
        if kind not in _HANDLED or c._decompressor:
            if pending is None:
                return bool(asyncssh_header())
            return bool(asyncssh_packet())       # (state as asyncssh's header step left it)
        buf = c._inpbuf
        total = len(buf)
        blocksize, macsize = c._recv_blocksize, c._recv_macsize
        view = memoryview(buf)
        off = 0
        held: list[bytes] = []    # data of the consecutive CHANNEL_DATA packets for held_chan
        held_chan: Any = None
        held_size = 0
        try:
            while True:
                seq = c._recv_seq
                if pending is None:
                    if total - off < blocksize:
                        return False
                    first, head = enc.decrypt_header(seq, buf[off:off + blocksize], 4)
                    pktlen = int.from_bytes(head, "big")
                    off += blocksize
                    if pktlen > c._max_recv_pktlen:
                        c._packet = first
                        raise ProtocolError("Max packet size exceeded")
                else:
                    (first, pktlen), pending = pending, None
                rest = 4 + pktlen + macsize - blocksize
                if total - off < rest:
                    if kind is _BASIC:
                        # its header came from the running keystream: keep it, as asyncssh does
                        c._packet, c._pktlen = first, pktlen
                        c._recv_handler = body
                    else:
                        off -= blocksize          # read the header again (it needs no state)
                    return False
                start = off - blocksize
                if start < 0:                     # the header block was cut off earlier
                    region = memoryview(b"".join((first, view[off:off + rest])))
                    plain = _open(kind, enc, seq, region, 0, blocksize + rest, macsize, first)
                else:
                    plain = _open(kind, enc, seq, view, start, off + rest, macsize, first)
                chan = adjusted = None
                msg = plain[1] if plain is not None and len(plain) >= 10 and c._auth_complete \
                    else None
                if msg == MSG_CHANNEL_DATA:
                    padlen = plain[0]
                    end = len(plain) - padlen
                    if padlen and end >= 10 and int.from_bytes(plain[6:10], "big") == end - 10:
                        chan = c._channels.get(int.from_bytes(plain[2:6], "big"))
                elif msg == MSG_CHANNEL_WINDOW_ADJUST and plain[0] and len(plain) - plain[0] == 10:
                    adjusted = c._channels.get(int.from_bytes(plain[2:6], "big"))
                if held_chan is not None and chan is not held_chan:
                    to, held_chan = held_chan, None       # (nothing held twice if it raises)
                    _deliver(to, held, held_size)         # what came before this packet
                    held_size = 0
                    if c._inpbuf is not buf:
                        return False              # closed (asyncssh emptied the buffer)
                if (adjusted is not None and _adjust_class(type(adjusted))
                        and adjusted._recv_state in _ADJUSTABLE
                        and adjusted._logger._debug_level < 2):
                    # asyncssh's _process_window_adjust, then its _finish_recv_packet
                    off += rest
                    c._packet = b""
                    adjusted._send_window += int.from_bytes(plain[6:10], "big")
                    adjusted._flush_send_buf()
                    c._auth_final = True
                    if c._transport:
                        c._recv_seq = (seq + 1) & 0xffffffff
                    c._recv_handler = header
                    if c._inpbuf is not buf or c._recv_encryption is not enc:
                        return False              # closed or re-keyed: stop here
                    continue
                if (chan is None or not _fast_class(type(chan)) or chan._recv_state != "open"
                        or end - 10 > chan._recv_window or chan._logger._debug_level >= 2):
                    c._inpbuf, off = buf[off:], 0
                    c._packet, c._pktlen = first, pktlen
                    return through_asyncssh(enc, plain)
                off += rest
                c._packet = b""
                data = plain[10:end]
                if type(data) is not bytes:
                    data = bytes(data)
                joins = _joins(type(chan))
                if joins:
                    held.append(data)             # delivered with what follows for chan
                    held_chan = chan
                    held_size += len(data)
                    chan._recv_window -= len(data)
                else:
                    chan._accept_data(data)
                # asyncssh's _finish_recv_packet for a channel packet on an encrypted link
                c._auth_final = True
                if c._transport:
                    c._recv_seq = (seq + 1) & 0xffffffff
                c._recv_handler = header
                if not joins and (c._inpbuf is not buf or c._recv_encryption is not enc):
                    return False                  # closed (asyncssh emptied the buffer) or
                                                  # re-keyed: stop here
        finally:
            if off and c._inpbuf is buf:
                c._inpbuf = buf[off:]             # (first: the held data's receiver may raise)
            if held_chan is not None:
                _deliver(held_chan, held, held_size)

    def header() -> bool:
        return run(None)

    def body() -> bool:
        return run((conn._packet, conn._pktlen))

    header._bastion_fast = True                # type: ignore[attr-defined]
    conn._recv_pkthdr = header
    if getattr(conn, "_recv_handler", None) == asyncssh_header:
        conn._recv_handler = header
    return True
