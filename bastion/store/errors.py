"""The store's one exception family: PostgreSQL errors as the ``sqlite3.Error`` callers catch.

The index code (recording/, approvals/) was written against ``sqlite3`` and catches
``sqlite3.Error`` / ``sqlite3.OperationalError`` at every boundary.  The PostgreSQL backend
(bastion.store.pgconn) raises these subclasses of them instead of psycopg's own errors, so
every existing ``except`` keeps working and no caller imports psycopg: a lost connection or
a server that went away is operational (the recording worker stops and is restarted, sessions
are refused meanwhile), a broken constraint is an integrity error.

Messages are psycopg's first line (no connection string, so no password).

Not covered: turning them into :class:`bastion.errors.RecordingError` (the callers do).
"""

from __future__ import annotations

import sqlite3


class StoreError(sqlite3.DatabaseError):
    """Any failure of the PostgreSQL store.  ``detail``: what only the operator sees (the
    server's address), kept out of the message, which may reach agents."""

    detail: str | None = None


class StoreOperationalError(StoreError, sqlite3.OperationalError):
    """The server is unreachable, went away, a transaction was aborted, a query was bad."""


class StoreIntegrityError(StoreError, sqlite3.IntegrityError):
    """A unique, foreign-key or check constraint refused a row."""


class StoreDataError(StoreError, sqlite3.DataError):
    """A value the store refuses (out of range, not valid text) or a limit one exceeds (an
    index entry's size): the row's fault, not the server's (bastion.recording.quarantine)."""


def translate(exc: BaseException) -> StoreError:
    """The StoreError for a psycopg exception (the caller raises it ``from exc``)."""
    import psycopg

    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if isinstance(exc, psycopg.IntegrityError):
        return StoreIntegrityError(first)
    if isinstance(exc, (psycopg.DataError, psycopg.errors.ProgramLimitExceeded)):
        return StoreDataError(first)
    return StoreOperationalError(first)
