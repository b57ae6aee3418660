"""Tamper evidence: one hash chain across ``sessions``, ``channels``, ``commands`` and
``transfers``.

Rows change while a session runs (a session row is opened ``active`` and
closed later; a command gets its exit status after it ran), so a row joins
the chain when it is **sealed**, i.e. when it is final:

* a refused attempt: at once;
* a command: when its exit status is recorded, or when its channel closes;
* a transfer (one sftp file operation): when it is inserted (it is final then);
* a channel: when it closes (its recording's SHA-256 is then known);
* a session: when it closes, after all its channels and commands;
* rows of sessions left ``active`` by a crash: at the next start (``interrupted``).

Sealing assigns ``seq`` = chain head + 1 and
``hash = sha256(prev_hash + "\\n" + canonical_json([table, row]))`` where
``row`` is every column of the row as read back from SQLite (including
``id`` and ``seq``, excluding ``hash``), ``canonical_json`` is sorted keys,
no spaces, ASCII.  ``chain_head`` holds the last ``(seq, hash)``; it is
updated in the same transaction.  The chain starts at ``seq 0`` with 64
zeros, or at the latest checkpoint left by ``bastion prune``.

What it proves: a changed, deleted or re-ordered row, or a changed recording
file (its SHA-256 is in the sealed channel row), shows up in ``bastion
verify``.  What it cannot prove on its own: someone able to write the
database can rewrite the whole chain from the point they changed, or cut
rows at its end; record the head that ``bastion verify`` prints somewhere
else (ticket, log shipper) and compare later to catch that.  Rows of active
sessions are not sealed yet.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from typing import Any

from bastion.errors import RecordingError

CHAINED_TABLES = ("sessions", "channels", "commands", "transfers")


#: columns added after rows of their table were sealed: left out of the hash while NULL
LATE_COLUMNS = {"transfers": frozenset({"content"})}


def canonical(table: str, row: dict) -> str:
    late = LATE_COLUMNS.get(table, frozenset())
    payload = {k: v for k, v in row.items() if k != "hash" and not (v is None and k in late)}
    return json.dumps([table, payload], sort_keys=True, separators=(",", ":"),
                      ensure_ascii=True, allow_nan=False)


def row_hash(prev: str, table: str, row: dict) -> str:
    return hashlib.sha256((prev + "\n" + canonical(table, row)).encode("ascii")).hexdigest()


_HEAD = "SELECT seq, hash FROM chain_head WHERE id = 1"


def head(conn: sqlite3.Connection) -> tuple[int, str]:
    """The chain's last link.  On a PostgreSQL connection in a write transaction, the one it
    knows (``PgConnection.chain_head``): asked for with its BEGIN by :func:`prefetch_head`,
    then as its own seals set it, until the transaction ends or rolls back to a savepoint
    (bastion.store.pgconn forgets it then); else asked for now."""
    known = getattr(conn, "chain_head", None)
    if known is not None and not isinstance(known, tuple):     # asked for with BEGIN
        seq, digest = known.fetchone()
        known = conn.chain_head = (int(seq), str(digest))      # type: ignore[attr-defined]
    if known is not None:
        return known
    seq, digest = conn.execute(_HEAD).fetchone()
    return int(seq), str(digest)


def prefetch_head(conn: sqlite3.Connection) -> None:
    """Just after a write transaction's BEGIN on a pipelined PostgreSQL connection: ask for
    the head with it, so the first seal reads it without a round trip of its own (a sync for
    an earlier statement has collected it).  The transaction holds the chain's lock, taken
    before this query runs, so no other node moves the head meanwhile.  Elsewhere nothing."""
    if getattr(conn, "pipelined", False) and hasattr(conn, "chain_head"):
        conn.chain_head = conn.execute(_HEAD)


def seal(conn: sqlite3.Connection, table: str, row_id: int) -> bool:
    """Seal one row (must be called inside a write transaction).

    Returns False if the row is missing or already sealed.
    """
    if table not in CHAINED_TABLES:
        raise ValueError(table)
    seq, prev = head(conn)
    # the row as sealed, in the statement that seals it (one round trip less on PostgreSQL)
    rows = conn.execute(f"UPDATE {table} SET seq = ? WHERE id = ? AND seq IS NULL RETURNING *",
                        (seq + 1, row_id)).fetchall()
    if len(rows) != 1:
        return False
    row = rows[0]
    digest = row_hash(prev, table, dict(row))
    conn.execute(f"UPDATE {table} SET hash = ? WHERE id = ?", (digest, row_id))
    conn.execute("UPDATE chain_head SET seq = ?, hash = ? WHERE id = 1", (seq + 1, digest))
    if hasattr(conn, "chain_head") and conn.in_transaction:
        # PostgreSQL: the transaction holds the chain's lock, so the head stays what it set
        # until it ends or rolls back (bastion.store.pgconn forgets it then): the next seal
        # need not ask (a round trip saved per seal; SQLite's reads cost none)
        conn.chain_head = (seq + 1, digest)
    return True


def lookup_unsealed_children(conn: sqlite3.Connection, *, channel_id: int | None = None,
                             session_id: int | None = None) -> list[tuple[str, Any]]:
    """Send the queries for the unsealed commands (and, for a session, channels), in the
    order :func:`seal_unsealed_children` seals them, without reading them: a caller may send
    others before it reads any (one round trip for all on a pipelined store)."""
    found: list[tuple[str, Any]] = []
    if channel_id is not None:
        found.append(("commands", conn.execute(
            "SELECT id FROM commands WHERE channel_id = ? AND seq IS NULL ORDER BY id",
            (channel_id,))))
    if session_id is not None:
        found.append(("commands", conn.execute(
            "SELECT id FROM commands WHERE session_id = ? AND seq IS NULL ORDER BY id",
            (session_id,))))
        found.append(("channels", conn.execute(
            "SELECT id FROM channels WHERE session_id = ? AND seq IS NULL ORDER BY id",
            (session_id,))))
    return found


def seal_unsealed_children(conn: sqlite3.Connection, *, channel_id: int | None = None,
                           session_id: int | None = None,
                           found: list[tuple[str, Any]] | None = None) -> int:
    """Seal the unsealed commands (and, for a session, channels) in id order (those
    ``found`` by :func:`lookup_unsealed_children` before, if given).  Every list is read
    before the first seal: sealing a command changes no channel row."""
    if found is None:
        found = lookup_unsealed_children(conn, channel_id=channel_id, session_id=session_id)
    ids = [(table, [r[0] for r in cur]) for table, cur in found]
    count = 0
    for table, row_ids in ids:
        # (a command listed twice, by its channel and its session, is sealed once: the
        # second seal finds it sealed)
        count += sum(seal(conn, table, i) for i in row_ids)
    return count


def iter_chain(conn: sqlite3.Connection, *, after: int = 0):
    """Yield ``(seq, table, row_dict)`` of every sealed row with seq > after, in seq order.

    Streams three cursors merged by seq, so it runs in constant memory.
    """
    import heapq

    def rows(table: str):
        cur = conn.execute(f"SELECT * FROM {table} WHERE seq > ? ORDER BY seq", (after,))
        for row in cur:
            yield (row["seq"], table, dict(row))

    yield from heapq.merge(*(rows(t) for t in CHAINED_TABLES), key=lambda item: item[0])


def begin(conn: sqlite3.Connection) -> None:
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        raise RecordingError(f"the session index is busy or not writable: {exc}",
                             hint="retry; if it persists check the data dir's permissions and free space") from exc
