"""Waking a waiting approval broker: ``LISTEN`` on PostgreSQL, a plain sleep on SQLite.

The approvals table's trigger (bastion.store.pgschema, migration 2) sends ``NOTIFY
bastion_approvals, '<id>'`` in the transaction that changes a request's status, on whichever
node (or CLI, or API) answered it.  :class:`Listener` holds one connection that listens; the
broker (bastion.approvals.broker) calls :meth:`Listener.wait` in a thread instead of sleeping
its poll interval, so an answer wakes it as soon as it commits.  It still reads the change
counter after every wake, so a notification lost with a connection (re-listened at once)
costs at most ``FALLBACK`` seconds, never an answer.

Not covered: what the broker does once woken (it reads the rows, as on SQLite).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from bastion.store.location import StoreSettings
from bastion.store.pgschema import NOTIFY_CHANNEL

log = logging.getLogger("bastion.store")

FALLBACK = 2.0        # s: the longest wait without a notification before reading anyway


class Listener:
    """One LISTEN connection; :meth:`wait` blocks until a notification or the timeout."""

    def __init__(self, settings: StoreSettings) -> None:
        self.settings = settings
        self._conn: Any = None
        self._lock = threading.Lock()
        self._closed = False

    def _connect(self) -> Any:
        from bastion.store.pgconn import _open
        conn = _open(self.settings)
        conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
        return conn

    def wait(self, timeout: float) -> bool:
        """True if a notification came (the store changed) within ``min(timeout, FALLBACK)``."""
        timeout = min(timeout, FALLBACK)
        with self._lock:
            if self._closed:
                return False
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = self._connect()
                    return True          # (re)connected: something may have been missed
                for _ in self._conn.notifies(timeout=timeout, stop_after=1):
                    return True
                return False
            except Exception as exc:  # noqa: BLE001 - the broker reads anyway; retry later
                log.warning("approvals: listening for answers failed: %s", exc)
                if self._conn is not None:
                    try:
                        self._conn.close()
                    except Exception:  # noqa: BLE001
                        pass
                self._conn = None
                time.sleep(min(timeout, 0.5))
                return True

    def close(self) -> None:
        self._closed = True
        conn = self._conn
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001
                pass


def listener_for(settings: StoreSettings) -> Listener | None:
    """A Listener on PostgreSQL; None on SQLite (the broker polls)."""
    return Listener(settings) if settings.postgres else None
