"""The tail journal: what the maskers hold undecided, encrypted on disk, so that a ``kill -9``
of the bastion *and* its recording worker loses nothing the agent was shown.

An acknowledgement from the recording worker releases output to the agent that the worker's
masker may still hold back undecided (bastion.recording.acks, "Undecided tails").  The bastion
process keeps those tails in memory for the next worker; this journal keeps them on disk too,
written by :meth:`TailJournal.record` *before* the acknowledgement releases anything, so the
next start (bastion.recording.recover) decides them through a masker and appends them to the
recording before its ``interrupted`` marker.

The tails are undecided: they may hold the first part of a secret, unmasked.  So they are
never on disk in clear: each record is sealed with AES-256-GCM under a key derived from the
vault passphrase (:meth:`bastion.vault.Vault.subkey`), and the journal is a 0600 file in the
0700 recordings dir.  No pickle: a record is a fixed binary layout (:func:`encode`).

On disk (``DATA_DIR/recordings/.tails``): records, each ``u32 length`` + 12-byte nonce +
ciphertext (with tag).  A record sets or clears one stream's tail; the last record for a
stream wins.  When the file passes :data:`COMPACT_BYTES` it is rewritten with what is held
now (written beside it, then renamed over it).  Like the recordings, it is written with
``os.write`` and not fsync'd per acknowledgement: it survives the processes, not the machine.

Reading stops at the first record that is torn (a kill during a write) or does not
authenticate (another passphrase, a damaged file): what was before it counts.

Not covered: when tails change (acks.py), how they are written into recordings (recover.py).
"""

from __future__ import annotations

import logging
import os
import struct
import time
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bastion.private import open_private_file
from bastion.proto.masker import suppressor_from_spec, suppressor_spec

log = logging.getLogger("bastion.recording")

FILE_NAME = ".tails"
PURPOSE = "recording tail journal"       # the vault subkey's purpose
COMPACT_BYTES = 1 << 20
_AD = b"bastion-tail-journal v1"
_LEN = struct.Struct(">I")
_HEAD = struct.Struct(">QBB")            # cid, stream name length, has tail
_AT = struct.Struct(">QB")               # file size then, suppressor kind (0 none, 1 block, 2 run)
_MAX_RECORD = 1 << 20
_WARN_EVERY = 60.0

Key = tuple[int, str]                    # (channel id, stream)


def _blob(data: bytes) -> bytes:
    return _LEN.pack(len(data)) + data


def encode(cid: int, stream: str, tail: Any) -> bytes:
    """One record's plaintext: ``tail`` (bastion.recording.sink.Tail) or None (cleared)."""
    name = stream.encode()
    out = [_HEAD.pack(cid, len(name), tail is not None), name]
    if tail is not None:
        (ctx, held, sup), carry, at = tail[:3], tail[3], tail[4]
        spec = suppressor_spec(sup)
        kind = 0 if spec is None else (1 if spec == b"" else 2)
        out += [_blob(ctx), _blob(held), _blob(carry), _AT.pack(at, kind), _blob(spec or b"")]
    return b"".join(out)


def decode(data: bytes) -> tuple[Key, Any]:
    """The inverse of :func:`encode` (raises ValueError on a malformed record)."""
    try:
        cid, n, has = _HEAD.unpack_from(data, 0)
        pos = _HEAD.size
        stream = data[pos:pos + n].decode()
        pos += n
        if not has:
            return (cid, stream), None
        parts = []
        for _ in range(3):
            (size,) = _LEN.unpack_from(data, pos)
            parts.append(data[pos + 4:pos + 4 + size])
            pos += 4 + size
        at, kind = _AT.unpack_from(data, pos)
        pos += _AT.size
        (size,) = _LEN.unpack_from(data, pos)
        spec = data[pos + 4:pos + 4 + size]
    except (struct.error, UnicodeDecodeError) as exc:
        raise ValueError(f"malformed tail record: {exc}") from exc
    sup = suppressor_from_spec(None if kind == 0 else (b"" if kind == 1 else spec))
    ctx, held, carry = parts
    return (cid, stream), (ctx, held, sup, carry, at)


class TailJournal:
    """The journal of one recordings dir (see the module doc).  Not thread-safe: the caller
    (AckQueue, under its lock) serialises :meth:`record`."""

    def __init__(self, rec_dir: Path, key: bytes, name: str = FILE_NAME) -> None:
        self.path = Path(rec_dir) / name
        self._aead = AESGCM(key)
        self._held: dict[Key, Any] = {}
        self._fd = -1
        self._size = 0
        self._warned = 0.0
        self.failures = 0

    # -- writing --------------------------------------------------------------------
    def start(self) -> None:
        """Begin an empty journal (after recovery has taken what the last one held)."""
        self._rewrite()

    def record(self, changes: dict[Key, Any]) -> bool:
        """Set or clear the tails in ``changes``; False if they could not be written (logged:
        the tails stay in the bastion's memory, only a kill -9 of both processes now loses
        them)."""
        if not changes:
            return True
        for key, tail in changes.items():
            if tail is None:
                self._held.pop(key, None)
            else:
                self._held[key] = tail
        try:
            if self._fd < 0 or self._size >= COMPACT_BYTES:
                self._rewrite()
            else:
                self._append([self._seal(encode(cid, s, t)) for (cid, s), t in changes.items()])
            return True
        except OSError as exc:
            self._failed(exc)
            return False

    def drop_channel(self, cid: int) -> bool:
        """Clear every stream of a channel whose close is written."""
        return self.record({key: None for key in self._held if key[0] == cid})

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _seal(self, plain: bytes) -> bytes:
        nonce = os.urandom(12)
        sealed = nonce + self._aead.encrypt(nonce, plain, _AD)
        return _LEN.pack(len(sealed)) + sealed

    def _append(self, records: list[bytes]) -> None:
        data = b"".join(records)
        done = 0
        while done < len(data):
            done += os.write(self._fd, data[done:])
        self._size += len(data)

    def _rewrite(self) -> None:
        """Write what is held now to a new file and put it in the journal's place."""
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.new")
        fd = open_private_file(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND)
        old, self._fd, self._size = self._fd, fd, 0
        try:
            self._append([self._seal(encode(cid, s, t)) for (cid, s), t in self._held.items()])
            os.replace(tmp, self.path)
        except BaseException:
            os.close(fd)
            self._fd = old
            tmp.unlink(missing_ok=True)
            raise
        if old >= 0:
            os.close(old)

    def _failed(self, exc: OSError) -> None:
        self.failures += 1
        now = time.monotonic()
        if now - self._warned >= _WARN_EVERY:
            self._warned = now
            log.warning("recording tail journal: cannot write %s: %s (the masker's undecided "
                        "output is kept in memory only; %d failure(s))",
                        self.path, exc.strerror or exc, self.failures)


def read_all(rec_dir: Path, key: bytes) -> dict[Key, Any]:
    """What every journal in ``rec_dir`` holds (``.tails`` and the workers' ``.tails.wN``:
    ``bastion serve --workers``), for a start that recovers every session."""
    held: dict[Key, Any] = {}
    for path in sorted(Path(rec_dir).glob(FILE_NAME + "*")):
        if path.name == FILE_NAME or path.name[len(FILE_NAME):].startswith(".w") and \
                path.name[len(FILE_NAME) + 2:].isdigit():
            held.update(read(rec_dir, key, path.name))
    return held


def read(rec_dir: Path, key: bytes, name: str = FILE_NAME) -> dict[Key, Any]:
    """What a journal left by an earlier process holds: ``{(cid, stream): tail}``."""
    path = Path(rec_dir) / name
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        return {}
    try:
        data = b""
        while chunk := os.read(fd, 1 << 20):
            data += chunk
    finally:
        os.close(fd)
    aead, pos = AESGCM(key), 0
    held: dict[Key, Any] = {}
    while pos + _LEN.size <= len(data):
        (size,) = _LEN.unpack_from(data, pos)
        sealed = data[pos + _LEN.size:pos + _LEN.size + size]
        if size < 28 or size > _MAX_RECORD or len(sealed) < size:
            log.warning("recording tail journal %s: torn record at %d: the rest is ignored",
                        path, pos)
            break
        try:
            key_, tail = decode(aead.decrypt(sealed[:12], sealed[12:], _AD))
        except (InvalidTag, ValueError) as exc:
            log.warning("recording tail journal %s: record at %d does not %s: the rest is "
                        "ignored", path, pos,
                        "authenticate (another vault passphrase?)" if isinstance(exc, InvalidTag)
                        else "parse")
            break
        if tail is None:
            held.pop(key_, None)
        else:
            held[key_] = tail
        pos += _LEN.size + size
    return held
