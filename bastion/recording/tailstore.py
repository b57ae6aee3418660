"""The tail journal in the shared store: what the maskers hold back undecided, for a peer.

On one node the bastion keeps the maskers' undecided tails in an encrypted file
(bastion.recording.tailjournal), so its own restart writes them.  A node killed for good
never restarts: the peer that closes its sessions (bastion.recording.leases) reads them
from here instead.  On PostgreSQL the recording worker writes what changed into
``recording_tails`` (channel, stream, sealed record) **in the transaction that commits the
batch**, so the store's tails always match the store's copy of the recording
(``recording_chunks``) to the byte, and both are committed before the acknowledgement
that shows the agent those bytes: the same promise as the file journal (it survives the
processes; PostgreSQL's own ``fsync`` makes it survive the machine too).  A stream's row
is deleted when its bytes are decided and written, a channel's rows when it is closed,
taken over or recovered.

The rows are undecided output, possibly the first part of a secret in clear: each is sealed
with AES-256-GCM (the record layout of the file journal, :func:`tailjournal.encode`; the
associated data names the channel and stream, so a row cannot be moved to another).  The
key: HKDF over scrypt of the vault passphrase with a salt kept in ``store_salts``
(:func:`key_for`, :meth:`bastion.vault.Vault.salted_subkey`), so every node with the same
passphrase has it (each may have its own vault files and host CA).  The bastion process
derives it and hands it to its recording worker through a pipe (bastion.recording.process);
a database dump holds no key.  A row that does not open (another passphrase) is reported by
:func:`read` as unreadable: the peer records that it could not decide it, never the bytes.

So that this stays a slip of a dead node and not the way a deployment runs, each node keeps
a check value of its key in ``store_salts`` (``tail key check:NODE``, an HMAC of a fixed
text: it tells keys apart without revealing them), and a node refuses to start while a node
that is alive (a heartbeat within ``LEASE``) has another (:class:`KeyMismatch`): their
held-back output would not open for each other on a takeover.  A dead node's other key is
only logged: the takeover records what it cannot open as above.

Not covered: what the peer does with the tails (bastion.recording.leases), SQLite.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import struct
import time
from typing import Any, Callable, Iterable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bastion.errors import RecordingError
from bastion.recording.tailjournal import decode, encode

log = logging.getLogger("bastion.recording")

PURPOSE = "recording tails in the shared store"
CHECK_PREFIX = "tail key check:"         # + node name: that node's check value
_CHECK_TEXT = b"bastion store tail key check v1"
_AD = b"bastion-store-tail v1"
_KEY = struct.Struct(">Q")

Key = tuple[int, str]                    # (channel id, stream)


class KeyMismatch(RecordingError):
    """A node that is alive seals its tails with another key (another vault passphrase)."""


def key_for(conn: Any, derive: Callable[[bytes], bytes], lease: float | None = None,
            now: float | None = None) -> bytes:
    """The store's tail key: ``derive(salt)`` with the store's salt (made by the first node
    to ask; committed here), after :func:`check_peers`."""
    conn.execute("INSERT OR IGNORE INTO store_salts (purpose, salt) VALUES (?, ?)",
                 (PURPOSE, os.urandom(16)))
    (salt,) = conn.execute("SELECT salt FROM store_salts WHERE purpose = ?",
                           (PURPOSE,)).fetchone()
    if conn.in_transaction:
        conn.execute("COMMIT")
    key = derive(bytes(salt))
    check_peers(conn, key, lease, now)
    return key


def check_value(key: bytes) -> bytes:
    return hmac.new(key, _CHECK_TEXT, hashlib.sha256).digest()[:16]


def check_peers(conn: Any, key: bytes, lease: float | None = None,
                now: float | None = None) -> None:
    """Refuse (:class:`KeyMismatch`) if a node alive within ``lease`` seconds has another tail
    key; otherwise record this node's check value (committed)."""
    from bastion.recording.leases import LEASE
    lease = LEASE if lease is None else lease
    now = time.time() if now is None else now
    me = conn.execute("SELECT current_setting('bastion.node', true)").fetchone()[0] or ""
    mine = check_value(key)
    rows = conn.execute(
        "SELECT s.purpose, s.salt, n.seen FROM store_salts s LEFT JOIN nodes n "
        "ON n.name = substr(s.purpose, ?) WHERE s.purpose LIKE ? ORDER BY s.purpose",
        (len(CHECK_PREFIX) + 1, CHECK_PREFIX + "%")).fetchall()
    for purpose, value, seen in rows:
        node = purpose[len(CHECK_PREFIX):]
        if node == me or hmac.compare_digest(bytes(value), mine):
            continue
        if seen is not None and seen > now - lease:
            raise KeyMismatch(
                f"node {node} (alive: a heartbeat {max(0.0, now - seen):.0f} s ago) uses another "
                "vault passphrase for the shared store: what each node's maskers hold back "
                "would not open on the other after a takeover; this node does not start",
                hint="start every node with the same BASTION_VAULT_PASSPHRASE "
                     "(docs/SCALING.md, 'A two-node deployment')")
        log.warning("node %s, last seen %s, used another vault passphrase: output it held "
                    "back undecided will not open here if its sessions are taken over",
                    node, "never" if seen is None else f"{now - seen:.0f} s ago")
    conn.execute("INSERT INTO store_salts (purpose, salt) VALUES (?, ?) ON CONFLICT (purpose) "
                 "DO UPDATE SET salt = excluded.salt", (CHECK_PREFIX + me, mine))
    if conn.in_transaction:
        conn.execute("COMMIT")


def _ad(cid: int, stream: str) -> bytes:
    return _AD + _KEY.pack(cid) + stream.encode()


def seal(key: bytes, cid: int, stream: str, tail: Any) -> bytes:
    nonce = os.urandom(12)
    return nonce + AESGCM(key).encrypt(nonce, encode(cid, stream, tail), _ad(cid, stream))


def write(conn: Any, key: bytes, changes: dict[Key, Any], closed: Iterable[int] = ()) -> None:
    """Set or clear the tails in ``changes`` and forget every tail of the ``closed`` channels
    (inside the caller's open transaction: the batch's)."""
    closed = set(closed)
    for (cid, stream), tail in sorted(changes.items()):
        if cid in closed:
            continue
        if tail is None:
            conn.execute("DELETE FROM recording_tails WHERE channel_id = ? AND stream = ?",
                         (cid, stream))
        else:
            conn.execute("INSERT INTO recording_tails (channel_id, stream, data) VALUES "
                         "(?, ?, ?) ON CONFLICT (channel_id, stream) DO UPDATE SET "
                         "data = EXCLUDED.data", (cid, stream, seal(key, cid, stream, tail)))
    for cid in sorted(closed):
        clear(conn, cid)


def clear(conn: Any, cid: int) -> None:
    conn.execute("DELETE FROM recording_tails WHERE channel_id = ?", (cid,))


def read(conn: Any, key: bytes | None, cid: int) -> tuple[dict[str, Any], list[str]]:
    """A channel's tails ``{stream: tail}``, and the streams whose row does not open with
    ``key`` (or there is no key)."""
    tails: dict[str, Any] = {}
    unreadable: list[str] = []
    for stream, data in conn.execute("SELECT stream, data FROM recording_tails WHERE "
                                     "channel_id = ? ORDER BY stream", (cid,)).fetchall():
        data = bytes(data)
        try:
            if key is None or len(data) < 28:
                raise ValueError("no key" if key is None else "short")
            got, tail = decode(AESGCM(key).decrypt(data[:12], data[12:], _ad(cid, stream)))
            if got != (cid, stream) or tail is None:
                raise ValueError("another channel's row")
        except (InvalidTag, ValueError):
            unreadable.append(stream)
            continue
        tails[stream] = tail
    return tails, unreadable
