"""Write transactions in PostgreSQL's pipeline mode: one round trip per *read*, not per statement.

The recording worker commits a batch as one transaction of many small statements (a
recorded command costs ~20: its rows, the recording's chunks, two chain seals).  Sent one
by one, each waits for its answer: a round trip to the server, which under CPU load is a
wait for both processes to be scheduled (measured in docs/SCALING.md: ~1 ms each at a load
of 10, far more at 30, where the worker fell more than 10 s behind and sessions were refused).

With :attr:`PgConnection.pipelined` (bastion.store.pgconn) a write transaction (``BEGIN
IMMEDIATE`` ... ``COMMIT``) runs in psycopg's pipeline mode: each statement is sent at once
and its result is read only when the caller reads it (:class:`Pending`: ``fetchone``,
``rowcount``...), which sends a sync and collects every result up to it in one round trip.
Statements nobody reads (inserts, most updates) cost no wait of their own; the ``COMMIT``
collects them.  A statement a sync has collected already (sent before another one that was
read) is read without another one, so two queries sent before either is read cost one round
trip.  The chain head likewise: asked for with the transaction's BEGIN, then kept as its own
seals move it (bastion.recording.chain, ``PgConnection.chain_head``); a recording batch
begun with ``PgConnection.begin_late`` takes the chain's lock only at its end and seals
there (:attr:`Pipe.seals`, ``chain.seal_deferred``).  The statements
run in the same order, in the same transaction, under the same lock: only when the caller
learns of an error changes (at the next read or at the commit, not at the statement), and
any error still fails the commit, so a batch is committed whole or not at all, as before.

Not covered: which connections use it (the recording worker's: bastion.recording.worker).
"""

from __future__ import annotations

from typing import Any, Iterator

from bastion.store.errors import StoreOperationalError


class Pending:
    """The result of a statement sent in pipeline mode, read like ``pgconn.Cursor``: the
    first read waits for it (one sync for everything sent before it)."""

    def __init__(self, owner: Any, cur: Any, sql: str) -> None:
        self._owner = owner            # the PgConnection (its sync translates errors)
        self._cur = cur
        self._sql = sql
        self._done: Any = None
        self._pipe: Pipe | None = owner._pipe
        self._n = self._pipe.sent if self._pipe is not None else 0

    def _result(self) -> Any:
        if self._done is None:
            # a sync since it was sent collected it already (statements sent together are
            # read with one round trip); a pipeline that has ended collected it at its end
            pipe = self._pipe
            if pipe is not None and pipe is self._owner._pipe and pipe.synced < self._n:
                self._owner._pipe_sync()
            self._done = self._owner._cursor_of(self._cur, self._sql)
        return self._done

    @property
    def rowcount(self) -> int:
        return int(self._result().rowcount)

    @property
    def lastrowid(self) -> int | None:
        value = self._result().lastrowid
        return None if value is None else int(value)

    @property
    def description(self) -> Any:
        return self._result().description

    def fetchone(self) -> Any:
        return self._result().fetchone()

    def fetchall(self) -> list[Any]:
        rows: list[Any] = self._result().fetchall()
        return rows

    def __iter__(self) -> Iterator[Any]:
        return iter(self._result())

    def close(self) -> None:
        """Nothing to free: the result is collected with the transaction's next sync."""


class Pipe:
    """One write transaction's pipeline on a psycopg connection."""

    def __init__(self, raw: Any, late: bool = False) -> None:
        self._cm = raw.pipeline()
        self.pipeline = self._cm.__enter__()
        self.failed = False            # a sync raised: the transaction is aborted
        self.sent = 0                  # statements sent ...
        self.synced = 0                # ... and how many of them a sync has collected
        # begun without the chain's lock (PgConnection.begin_late): the lock is still to
        # take, and the seals wait for the commit (bastion.recording.chain); the savepoints
        # set since, with how many seals were waiting then (a rollback to one drops the rest)
        self.unlocked = late
        self.seals: list[Any] | None = [] if late else None
        self.marks: dict[str, int] = {}

    def sync(self) -> None:
        sent = self.sent
        self.pipeline.sync()
        self.synced = sent

    def end(self) -> None:
        """Leave pipeline mode (a last sync: raises the first error of the transaction)."""
        cm, self._cm = self._cm, None
        if cm is not None:
            cm.__exit__(None, None, None)

    def abandon(self) -> None:
        """Leave pipeline mode after an error (the transaction is rolled back next)."""
        cm, self._cm = self._cm, None
        if cm is not None:
            try:
                cm.__exit__(StoreOperationalError, StoreOperationalError("abandoned"), None)
            except Exception:  # noqa: BLE001 - the error was reported already
                pass
