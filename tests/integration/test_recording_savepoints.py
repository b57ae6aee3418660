"""The savepoints of a normal batch (bastion.recording.quarantine), through the real
:class:`Applier` on both backends: a refused operation is rolled back alone and the rest of
its batch is committed; on PostgreSQL a transaction takes at most ``PG_SAVEPOINTS`` of them
(past 64 subtransactions every other session's snapshot overflows), after which a refused
operation fails the batch as any failure does (the replay then keeps it aside)."""

from __future__ import annotations

import time

from bastion.recording import quarantine, schema
from bastion.recording.ops import (OP_CHANNEL_CLOSE, OP_CHANNEL_OPEN, OP_COMMAND,
                                   OP_COMMAND_RESULT, OP_SESSION_CLOSE, OP_SESSION_START)
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


def test_what_follows_a_kept_channel_joins_its_file_and_is_then_forgotten(tmp_path, backend):
    """Through the real Applier: a channel whose opening is refused, then its command, the
    command's result and the channel's close, in one batch: all four in one file, nothing
    of them in the index, and once the close is in the file the channel is forgotten (the
    map does not grow for ever); the session itself goes on and closes in the index."""
    events: list = []
    a = _applier(tmp_path, events)
    cid, sid, cmd = 5, 1, 9
    opening = (OP_CHANNEL_OPEN, cid, sid, "exec", "echo x", None, 2**64, 24, None, time.time(),
               "recordings/s1-c5.cast", b'{"version": 2}\n', None)
    try:
        assert a.apply(_start(sid)) and a.apply(opening)
        assert a.kept_aside == {("channel", cid): quarantine.listing(tmp_path)[0].path}
        assert a.apply((OP_COMMAND, cmd, sid, cid, time.time(), 0.1, "echo x", "[]", "allow",
                        "r", "why", None, "allow: echo x"))
        assert a.apply((OP_COMMAND_RESULT, cmd, 0))
        assert a.apply((OP_CHANNEL_CLOSE, cid, 0.2, time.time(), 0, None, 0, 0, None))
        assert a.kept_aside == {("command", cmd): quarantine.listing(tmp_path)[0].path}
        assert a.apply((OP_SESSION_CLOSE, sid, time.time(), "closed"))
        assert a.error is None
        assert a.flush_files() and a.commit()
    finally:
        a.conn.close()
    [kept] = quarantine.listing(tmp_path)
    assert len(kept.path.read_text().splitlines()) == 2 + 4
    assert [e[0] for e in events].count("poisoned") == 1
    conn = schema.connect(tmp_path, readonly=True)
    try:
        assert list(conn.execute("SELECT id FROM commands")) == []
        assert list(conn.execute("SELECT id FROM channels")) == []
        assert [tuple(r) for r in conn.execute("SELECT id, status FROM sessions")] == [
            (sid, "closed")]
    finally:
        conn.close()


def _close(sid: int) -> tuple:
    return (OP_SESSION_CLOSE, sid, time.time(), "closed")


def _refuse_sealing(conn, backend: str, sid: int) -> None:
    """The store refuses the last statement of session ``sid``'s seal (its hash)."""
    if backend == "postgresql":
        conn._conn.execute(             # the raw psycopg connection (autocommit)
            "CREATE FUNCTION refuse_seal() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'refused by the test' USING ERRCODE = 'check_violation'; "
            "END $$")
        conn._conn.execute(
            f"CREATE TRIGGER refuse_seal BEFORE UPDATE OF hash ON sessions FOR EACH ROW "
            f"WHEN (NEW.id = {sid}) EXECUTE FUNCTION refuse_seal()")
    else:
        conn.execute(f"CREATE TRIGGER refuse_seal BEFORE UPDATE OF hash ON sessions "
                     f"WHEN NEW.id = {sid} BEGIN SELECT RAISE(ABORT, 'refused by the test'); END")


def test_a_seal_undone_with_its_operation_takes_the_chain_head_back(tmp_path, backend):
    """An operation refused after it sealed a row (its savepoint rolled back) undid that
    link: the next seal in the same transaction follows the head the store has again.  On
    PostgreSQL the worker's connection keeps the head its own seals set instead of asking
    for it (bastion.store.pgconn), pipelined as ``bastion serve`` runs it: it must forget
    that head at ROLLBACK TO SAVEPOINT, or session 3's link would follow session 2's undone
    one and ``verify`` would find the chain broken.  (A batch of ``bastion serve`` seals at
    its commit instead, tests/integration/test_recording_late_seals.py; sealing at once on a
    pipelined connection is what a takeover of a dead peer's sessions does,
    bastion.recording.leases, and what this test runs.)"""
    from bastion.recording.verify import verify_index
    events: list = []
    a = _applier(tmp_path, events)
    try:
        _refuse_sealing(a.conn, backend, 2)
        if backend == "postgresql":
            a.conn.pipelined = True
            a.late_lock = False
        assert all(a.apply(op) for op in (_start(1), _start(2), _start(3)))
        assert a.apply(_close(1)) and a.apply(_close(2)) and a.apply(_close(3))
        assert a.error is None
        assert a.flush_files() and a.commit()
    finally:
        a.conn.close()
    [kept] = quarantine.listing(tmp_path)
    assert (kept.operation, kept.session) == ("session-close", "2")
    report = verify_index(tmp_path)
    assert report.ok, report.problems
    conn = schema.connect(tmp_path, readonly=True)
    try:
        sealed = [tuple(r) for r in conn.execute(
            "SELECT id, seq FROM sessions WHERE seq IS NOT NULL ORDER BY seq")]
    finally:
        conn.close()
    assert [sid for sid, _ in sealed] == [1, 3]
    assert sealed[1][1] == sealed[0][1] + 1           # no gap where session 2's link was
