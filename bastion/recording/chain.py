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

On PostgreSQL every node's writers share the chain, and every write transaction holds one
advisory lock (bastion.store.translate).  A recording batch there takes it at its end
(``PgConnection.begin_late``, bastion.recording.writer ``_locked_db``): its seals are noted
as they are asked for and made just before its commit (:func:`seal_deferred`: numbered by
the server from the head, every row back in one round trip, hashed in order), so the lock
is held for two round trips per batch instead of all of them -- the store's round trip
then bounds each worker's rate, not every node's together.  A seal the store refuses there
fails the whole batch (no longer only its operation); the replay that follows seals at once,
in each operation's savepoint (bastion.recording.quarantine).

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
from typing import Any, Callable

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


def seal(conn: sqlite3.Connection, table: str, row_id: int,
         unsealed: Callable[[], None] | None = None) -> bool:
    """Seal one row (must be called inside a write transaction).

    Returns False if the row is missing or already sealed (and calls ``unsealed``).  In a
    transaction whose seals wait for its commit (:func:`seal_deferred`) it is only noted:
    True, and ``unsealed`` is called then if it finds the row missing or sealed.
    """
    if table not in CHAINED_TABLES:
        raise ValueError(table)
    deferred = getattr(conn, "deferred_seals", None)
    if deferred is not None:
        deferred.append((table, row_id, unsealed))
        return True
    if not _seal_now(conn, table, row_id):
        if unsealed is not None:
            unsealed()
        return False
    return True


def _seal_now(conn: sqlite3.Connection, table: str, row_id: int) -> bool:
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
    deferred = getattr(conn, "deferred_seals", None)
    if deferred is not None:                 # their ids are read at the commit
        deferred.append((None, found, None))
        return 0
    ids = [(table, [r[0] for r in cur]) for table, cur in found]
    count = 0
    for table, row_ids in ids:
        # (a command listed twice, by its channel and its session, is sealed once: the
        # second seal finds it sealed)
        count += sum(seal(conn, table, i) for i in row_ids)
    return count


# One row sealed on the server, after the head as this transaction has moved it: its ``seq``
# is the head's + 1, and the head's ``seq`` moves only if the row was sealed now (missing or
# sealed before: nothing changes, so no seq is skipped).  Both parts read the head as it was
# before the statement.  The row comes back to be hashed (the hash follows at the commit).
_SEAL_LATE = ("WITH s AS (UPDATE {table} SET seq = (SELECT seq + 1 FROM chain_head WHERE id = 1) "
              "WHERE id = ? AND seq IS NULL RETURNING *), "
              "h AS (UPDATE chain_head SET seq = seq + 1 WHERE id = 1 AND EXISTS (SELECT 1 FROM s)) "
              "SELECT * FROM s")


def resolve_deferred(conn: sqlite3.Connection) -> None:
    """Read the unsealed children the transaction's deferred seals asked for (one round trip
    for all, before the chain's lock is taken: they are this node's own rows)."""
    deferred = getattr(conn, "deferred_seals", None)
    if not deferred or all(table is not None for table, _, _ in deferred):
        return
    resolved: list[tuple[str, int, Any]] = []
    for table, what, unsealed in deferred:
        if table is not None:
            resolved.append((table, what, unsealed))
        else:
            resolved.extend((t, int(r[0]), None) for t, cur in what for r in cur)
    deferred[:] = resolved


def seal_deferred(conn: sqlite3.Connection) -> int:
    """Make the seals a transaction begun with ``PgConnection.begin_late`` noted, in the
    order they were asked for, just before its commit; returns how many rows were sealed.

    Under the chain's lock (taken here if it was not yet), every seal is sent at once
    (:data:`_SEAL_LATE`), and one round trip brings the head and the sealed rows back; the
    hashes are then computed in order and sent with the new head, to be collected by the
    commit.  So the transaction holds the lock for two round trips at its end, however many
    rows it seals, where sealing one by one held it from its BEGIN.  A row asked for twice
    (a command sealed with its exit status, then listed as its channel's child) is sealed
    once.  Elsewhere (SQLite, a transaction that seals at once) nothing."""
    deferred = getattr(conn, "deferred_seals", None)
    if not deferred:
        return 0
    resolve_deferred(conn)
    order: list[tuple[str, int, Any]] = []
    asked: set[tuple[str, int]] = set()
    for table, row_id, unsealed in deferred:
        if (table, row_id) not in asked:
            asked.add((table, row_id))
            order.append((table, row_id, unsealed))
    try:
        sealed, missing = _seal_all(conn, order)
    except BaseException:
        # never a commit of rows numbered but not hashed: the whole transaction goes (the
        # batch fails and is replayed, as for any failure at its commit)
        conn.execute("ROLLBACK")
        raise
    deferred.clear()
    for unsealed in missing:
        unsealed()
    return sealed


def _seal_all(conn: sqlite3.Connection,
              order: list[tuple[str, int, Any]]) -> tuple[int, list[Callable[[], None]]]:
    conn.lock_now()                                     # type: ignore[attr-defined]
    got = conn.execute(_HEAD)
    sent = [(table, row_id, unsealed, conn.execute(_SEAL_LATE.format(table=table), (row_id,)))
            for table, row_id, unsealed in order]
    seq, prev = got.fetchone()
    seq, prev = int(seq), str(prev)
    sealed = 0
    missing = []
    for table, row_id, unsealed, cur in sent:
        rows = cur.fetchall()
        if not rows:
            if unsealed is not None:
                missing.append(unsealed)
            continue
        row = dict(rows[0])
        if row.get("seq") != seq + 1:
            raise RecordingError(f"chain: {table} row {row_id} was sealed as {row.get('seq')}, "
                                 f"not {seq + 1}")
        seq += 1
        prev = row_hash(prev, table, row)
        conn.execute(f"UPDATE {table} SET hash = ? WHERE id = ?", (prev, row_id))
        sealed += 1
    if sealed:
        conn.execute("UPDATE chain_head SET seq = ?, hash = ? WHERE id = 1", (seq, prev))
    return sealed, missing


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
