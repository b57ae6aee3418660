"""Stored copies of transferred files in the shared store (``transfer_copies``, migration 14).

With ``[settings] store_transfers = true`` each sftp get/put keeps a masked copy of the file
(bastion.recording.content) as a file beside the channel's recording on the node that relayed
it.  On a PostgreSQL store the recording worker also writes that copy's bytes here, keyed by
the transfer's id, in the transaction that inserts the ``transfers`` row linking it
(bastion.recording.writer), so a reviewer on any node can read it (:func:`read`).  The row's
``content`` JSON keeps the copy's SHA-256 (sealed in the hash chain); the bytes here are
checked against it by every reader and by ``bastion verify``.

The bytes are kept in pieces of up to :data:`PIECE` bytes (``"offset"`` within the copy), as
``recording_chunks`` keeps recordings.  A copy's rows go with its transfers row (prune;
``ON DELETE CASCADE`` as well).

Not covered: SQLite (the copies are files only), checking a copy against its row
(bastion.recording.copies).
"""

from __future__ import annotations

import hashlib
from typing import Any, BinaryIO

from bastion.store.chunks import PIECE


_INSERT = ('INSERT INTO transfer_copies (transfer_id, "offset", data) '
           "VALUES (?, ?, CAST(? AS bytea))")


def upload(conn: Any, transfer_id: int, fh: BinaryIO) -> tuple[str, int]:
    """What ``fh`` reads as the store's copy of transfer ``transfer_id``, inside the caller's
    transaction, :data:`PIECE` bytes at a time (never the whole copy in memory): the SHA-256
    and size of the bytes inserted, for the caller to compare with the row.  A copy the
    transfer has already is an error (the primary key), never overwritten."""
    h = hashlib.sha256()
    at = 0
    while data := fh.read(PIECE):
        conn.execute(_INSERT, (transfer_id, at, data))
        h.update(data)
        at += len(data)
    if not at:                         # an empty copy is a copy: one empty piece says so
        conn.execute(_INSERT, (transfer_id, 0, b""))
    return h.hexdigest(), at


def read(conn: Any, transfer_id: int) -> bytes | None:
    """The store's copy of transfer ``transfer_id`` (None: the store has none).  Pieces that
    do not follow each other (a hole: a piece deleted) give the prefix before the hole,
    which the caller's SHA-256 check then refuses."""
    rows = conn.execute('SELECT "offset", data FROM transfer_copies WHERE transfer_id = ? '
                        'ORDER BY "offset"', (transfer_id,)).fetchall()
    if not rows:
        return None
    out = bytearray()
    for offset, data in rows:
        if offset != len(out):
            break
        out += bytes(data)
    return bytes(out)


def sha256_of(conn: Any, transfer_id: int) -> str | None:
    """The SHA-256 of the store's copy of transfer ``transfer_id`` (None: it has none)."""
    data = read(conn, transfer_id)
    return None if data is None else hashlib.sha256(data).hexdigest()

