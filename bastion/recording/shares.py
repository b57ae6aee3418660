"""One data dir shared by the worker processes of ``bastion serve --workers N``.

Each worker (1..N) records on its own: its own recorder lock
(``DATA_DIR/recorder.w2.lock``), tail journal (``recordings/.tails.w2``), status socket
(``DATA_DIR/status.w2.sock``) and recording worker; they share the index, one writer at a
time (SQLite's ``BEGIN IMMEDIATE``, WAL).  The parent holds ``DATA_DIR/recorder.lock``, as a
single ``bastion serve`` does, so a second independent ``bastion serve`` on the same data
dir is still refused.

On SQLite a worker's rows are told apart by their ids: worker ``w`` takes only ids with
``id % STRIDE == w`` (sessions, channels, commands), so workers never pick the same id and a
restarted worker marks interrupted only the sessions it had (``id % STRIDE == w``).  Worker 0
is the single process of ``--workers 1`` (every id, as before).  On PostgreSQL ids come in
blocks already (bastion.store.pgconn) and each worker is its own node (``NODE-w2``).

Not covered: starting and restarting the workers (bastion.cli.workers).
"""

from __future__ import annotations

import itertools
from typing import Iterator

STRIDE = 64                     #: at most STRIDE - 1 workers per data dir
MAX_WORKERS = STRIDE - 1


def suffix(worker: int) -> str:
    """``""`` for the single process, ``".w2"`` for worker 2."""
    return f".w{worker}" if worker else ""


def lock_name(worker: int) -> str:
    return f"recorder{suffix(worker)}.lock"


def journal_name(worker: int) -> str:
    return f".tails{suffix(worker)}"


def status_name(worker: int) -> str:
    return f"status{suffix(worker)}.sock"


def first_id(start: int, worker: int) -> int:
    """The first id at or after ``start`` that is worker ``worker``'s."""
    if not worker:
        return start
    return start + (worker - start) % STRIDE


def counter(start: int, worker: int) -> Iterator[int]:
    """Worker ``worker``'s ids from ``start`` on (every id for worker 0)."""
    if not worker:
        return itertools.count(start)
    return itertools.count(first_id(start, worker), STRIDE)


def own_sessions_sql(worker: int) -> str:
    """SQL to AND into a SQLite ``sessions`` query for worker ``worker``'s sessions."""
    if not worker:
        return ""
    return f" AND id % {STRIDE} = {int(worker)}"
