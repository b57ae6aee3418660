"""The store seam: where the session index, approvals and the hash chain live.

Two backends sit behind one interface, the ``sqlite3.Connection`` subset the index code
(bastion.recording, bastion.approvals) already speaks:

* **SQLite** (the default, one node): ``DATA_DIR/index.sqlite``, opened by
  bastion.recording.schema exactly as before.
* **PostgreSQL** (several nodes sharing one store): ``[store] url`` in policy.toml or
  ``BASTION_STORE_URL`` (location.py).  bastion.store.pgconn wraps a psycopg connection so
  the same statements run there (translate.py rewrites the few SQLite forms), errors are
  ``sqlite3.Error`` subclasses (errors.py), the schema has the same numbered migrations
  (pgschema.py), approvals wake their brokers by ``NOTIFY`` (notify.py).

The callers never name a dialect: they ask this module whose rows are theirs
(:func:`own_sessions_clause`) and which backend is in use only to say so in messages.

Not covered: the recordings themselves (files in the data dir, on both backends).
"""

from __future__ import annotations

from bastion.store.errors import StoreError, StoreIntegrityError, StoreOperationalError
from bastion.store.location import StoreSettings, configure, current, safe_url


def own_sessions_clause(alias: str = "") -> str:
    """SQL to AND into a ``sessions`` query so it keeps only this node's sessions.

    Empty on SQLite (one node owns the file); on PostgreSQL the ``node`` column against
    this connection's ``bastion.node``."""
    if not current().postgres:
        return ""
    col = f"{alias}.node" if alias else "node"
    return f" AND {col} = current_setting('bastion.node', true)"


def describe() -> str:
    """Which store this process uses, for logs (never a password)."""
    s = current()
    return f"PostgreSQL {safe_url(s.url)} as node {s.node}" if s.postgres else "SQLite in the data dir"


__all__ = ["StoreError", "StoreIntegrityError", "StoreOperationalError", "StoreSettings",
           "configure", "current", "describe", "own_sessions_clause", "safe_url"]
