"""Recordings in the shared store: every byte written to a recording file, also in PostgreSQL.

On a PostgreSQL store the recording worker keeps writing each recording to its file in the
data dir (the durability promise of docs/RECORDINGS.md is unchanged), and every piece it
writes is inserted into ``recording_chunks`` (channel id, offset, bytes) in the transaction
that commits the batch -- so what an acknowledgement covers is in the store too, and a
reviewer on any node can play or export a recording made on another (:func:`materialize`).

Where the file and the store can disagree, the file wins and the store is brought in line:

* a new worker adopting a recording (after a worker failure) uploads what the file has
  beyond the store's last chunk (written, not committed, when the old worker died) and drops
  chunks past the file's valid end (:func:`resync_tail`);
* crash recovery at start cuts the file and appends its marker: the channel's chunks are
  replaced by the file (:func:`replace_all`).

``bastion prune`` deletes a pruned channel's chunks with its row (bastion.recording.verify).

Not covered: SQLite (recordings are files only).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

PIECE = 1 << 20      # bytes per row when a whole file is uploaded


class Pending:
    """What the recording worker wrote since its last commit (``Sink.on_write`` feeds it)."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, int, bytes]] = []
        self.bytes = 0

    def on_write(self, cid: int, offset: int, data: bytes) -> None:
        self.rows.append((cid, offset, data))
        self.bytes += len(data)

    def insert(self, conn: Any) -> None:
        """Into the store, inside the caller's open transaction; then forgotten."""
        insert(conn, self.rows)
        self.rows.clear()
        self.bytes = 0


ROWS_PER_INSERT = 64  # one statement for a batch's pieces (each a round trip and ~0.3 ms
                      # of the worker's CPU under load: docs/SCALING.md, "Measured at scale")
_ROW = "(CAST(? AS bigint), CAST(? AS bigint), CAST(? AS bytea))"


def insert(conn: Any, pieces: list[tuple[int, int, bytes]]) -> None:
    """Insert ``(channel_id, offset, data)`` rows (inside the caller's transaction), up to
    :data:`ROWS_PER_INSERT` in one statement.

    Never into a recording another node sealed ``interrupted`` (bastion.recording.leases): a
    node that was only slow must not write past the marker its peer appended."""
    for start in range(0, len(pieces), ROWS_PER_INSERT):
        part = pieces[start:start + ROWS_PER_INSERT]
        params: list[Any] = []
        for cid, offset, data in part:
            params += (cid, offset, bytes(data))
        conn.execute('INSERT OR IGNORE INTO recording_chunks (channel_id, "offset", data) '
                     f"SELECT v.c, v.o, v.d FROM (VALUES {', '.join([_ROW] * len(part))}) "
                     "AS v(c, o, d) WHERE NOT EXISTS (SELECT 1 FROM channels WHERE id = v.c "
                     "AND status = 'interrupted' AND seq IS NOT NULL)", params)


def stored_end(conn: Any, cid: int) -> int:
    row = conn.execute('SELECT COALESCE(MAX("offset" + length(data)), 0) FROM recording_chunks '
                       "WHERE channel_id = ?", (cid,)).fetchone()
    return int(row[0]) if row else 0


def _upload(conn: Any, cid: int, path: Path, start: int, end: int) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        at = start
        while at < end:
            data = os.pread(fd, min(PIECE, end - at), at)
            if not data:
                break
            insert(conn, [(cid, at, data)])
            at += len(data)
    finally:
        os.close(fd)


def resync_tail(conn: Any, cid: int, path: Path, size: int) -> None:
    """The store's copy of a recording whose file is ``size`` bytes: drop what is past it,
    add what the file has beyond the store's last chunk."""
    conn.execute('DELETE FROM recording_chunks WHERE channel_id = ? AND "offset" >= ?',
                 (cid, size))
    conn.execute('DELETE FROM recording_chunks WHERE channel_id = ? AND "offset" + length(data) > ?',
                 (cid, size))
    end = stored_end(conn, cid)
    if end < size:
        _upload(conn, cid, path, end, size)


def replace_all(conn: Any, cid: int, path: Path) -> None:
    """The store's copy of a recording becomes the file as it is now."""
    conn.execute("DELETE FROM recording_chunks WHERE channel_id = ?", (cid,))
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        return
    _upload(conn, cid, path, 0, size)


def materialize(conn: Any, cid: int, dest: Path, sha256: str | None) -> Path | None:
    """Write a recording from the store to ``dest`` (0600); None if the store has none of it.

    An existing ``dest`` whose SHA-256 is the sealed one is used as it is."""
    from bastion.private import make_private_dirs, open_private_file
    if sha256 and dest.exists() and file_sha256(dest) == sha256:
        return dest
    rows = conn.execute('SELECT "offset", data FROM recording_chunks WHERE channel_id = ? '
                        'ORDER BY "offset"', (cid,)).fetchall()
    if not rows:
        return None
    make_private_dirs(dest.parent)
    tmp = dest.with_name(dest.name + f".part-{os.getpid()}")
    fd = open_private_file(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        at = 0
        for offset, data in rows:
            if offset != at:                  # a hole: only the prefix before it is sure
                break
            os.write(fd, bytes(data))
            at += len(data)
    finally:
        os.close(fd)
    os.replace(tmp, dest)
    return dest


def sha256_of(conn: Any, cid: int) -> str | None:
    """The SHA-256 of the store's copy of a recording (None: it has none)."""
    h = hashlib.sha256()
    found = False
    for _, data in conn.execute('SELECT "offset", data FROM recording_chunks WHERE '
                                'channel_id = ? ORDER BY "offset"', (cid,)):
        h.update(bytes(data))
        found = True
    return h.hexdigest() if found else None


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def upload_file(conn: Any, cid: int, path: Path) -> tuple[str, int]:
    """A whole file as the store's copy of channel ``cid``, inside the caller's transaction
    (``bastion store import``): the SHA-256 and size of the bytes inserted, read once, so the
    caller compares what the store got with the sealed hash.  A chunk the channel has already
    is an error, never skipped."""
    h = hashlib.sha256()
    at = 0
    with open(path, "rb") as fh:
        while data := fh.read(PIECE):
            conn.execute('INSERT INTO recording_chunks (channel_id, "offset", data) '
                         "VALUES (?, ?, CAST(? AS bytea))", (cid, at, data))
            h.update(data)
            at += len(data)
    return h.hexdigest(), at
