"""The savepoints of a normal batch (bastion.recording.quarantine), through the real
:class:`Applier` on both backends: a refused operation is rolled back alone and the rest of
its batch is committed; on PostgreSQL a transaction takes at most ``PG_SAVEPOINTS`` of them
(past 64 subtransactions every other session's snapshot overflows), after which a refused
operation fails the batch as any failure does (the replay then keeps it aside)."""

from __future__ import annotations

import time

from bastion.recording import quarantine, schema
from bastion.recording.ops import OP_SESSION_START
from bastion.recording.writer import Applier

PRINCIPAL = {"subject": "oid-agent", "name": "bot"}


def _start(sid: int) -> tuple:
    return (OP_SESSION_START, sid, time.time(), PRINCIPAL, "127.0.0.1:1", "web1", "deploy")


BAD = _start(2**63)            # an id neither backend can store (int64 at most)


def _applier(data_dir, events):
    return Applier(schema.connect(data_dir), data_dir, 1 << 20, events.append)


def _ids(data_dir) -> list[int]:
    conn = schema.connect(data_dir, readonly=True)
    try:
        return [r[0] for r in conn.execute("SELECT id FROM sessions ORDER BY id")]
    finally:
        conn.close()


def test_a_refused_operation_is_rolled_back_alone_and_its_batch_committed(tmp_path, backend):
    events: list = []
    a = _applier(tmp_path, events)
    try:
        assert a.apply(_start(1)) and a.apply(BAD) and a.apply(_start(2))
        assert a.error is None
        assert a.flush_files() and a.commit()
    finally:
        a.conn.close()
    assert _ids(tmp_path) == [1, 2]
    [poisoned] = [e for e in events if e[0] == "poisoned"]
    assert poisoned[1] == 2**63
    [kept] = quarantine.listing(tmp_path)
    assert kept.operation == "session-start" and kept.session == str(2**63)


def test_a_postgresql_transaction_takes_a_bounded_number_of_savepoints(tmp_path, backend):
    events: list = []
    a = _applier(tmp_path, events)
    limit = quarantine.PG_SAVEPOINTS if backend == "postgresql" else None
    assert a.apart_left == (0 if limit else None)
    try:
        n = limit or 500
        for sid in range(1, n + 1):
            assert a.apply(_start(sid)), a.error
        if limit:
            # the allowance is spent: the refused one fails the batch, as before
            assert not a.apply(BAD)
            assert a.error is not None and quarantine.listing(tmp_path) == []
            a._rollback()
            a.error = None
            # a new transaction has a full allowance again
            assert a.apply(_start(n + 1)) and a.apply(BAD)
            assert a.error is None and len(quarantine.listing(tmp_path)) == 1
        else:                                   # SQLite: no limit
            assert a.apply(BAD) and a.error is None
            assert len(quarantine.listing(tmp_path)) == 1
        assert a.flush_files() and a.commit()
    finally:
        a.conn.close()
    # PostgreSQL: the failed transaction was rolled back whole; SQLite: all committed
    assert _ids(tmp_path) == ([n + 1] if limit else list(range(1, n + 1)))
