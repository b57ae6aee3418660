"""Pipeline mode on the recording worker's connection (bastion.store.pipeline) against a
private PostgreSQL cluster: reads see what was sent before them, a transaction commits
whole, an error sent in the middle fails the commit and leaves nothing behind, and the
connection is usable after it."""

from __future__ import annotations

import sqlite3
import time

import pytest

from bastion.recording import chain, schema
from bastion.store.pipeline import Pending

pytestmark = pytest.mark.integration


def _conn(tmp_path):
    conn = schema.connect(tmp_path)
    conn.pipelined = True
    return conn


def _session(conn, sid: int) -> None:
    conn.execute("INSERT INTO sessions (id, started, status, target) VALUES (?, ?, 'active', ?)",
                 (sid, time.time(), "web1"))


def test_reads_in_a_pipelined_transaction_see_what_was_sent_before(tmp_path, pg_store):
    conn = _conn(tmp_path)
    conn.execute("BEGIN IMMEDIATE")
    _session(conn, 7)
    cur = conn.execute("SELECT target FROM sessions WHERE id = ?", (7,))
    assert isinstance(cur, Pending)                  # sent, not waited for
    assert cur.fetchone()[0] == "web1"
    assert chain.seal(conn, "sessions", 7)           # reads the head and the sealed row
    assert not chain.seal(conn, "sessions", 7)       # sealed already: no row returned
    upd = conn.execute("UPDATE sessions SET status = 'closed' WHERE id = ? AND seq IS NULL", (7,))
    conn.execute("COMMIT")
    assert upd.rowcount == 0                         # read after the commit: still there
    assert not conn.in_transaction
    row = conn.execute("SELECT seq, hash, status FROM sessions WHERE id = 7").fetchone()
    assert row[0] == 1 and row[1] and row[2] == "active"
    conn.close()


def test_an_error_in_the_middle_fails_the_commit_and_leaves_nothing(tmp_path, pg_store):
    conn = _conn(tmp_path)
    conn.execute("BEGIN IMMEDIATE")
    _session(conn, 1)
    conn.execute("COMMIT")
    conn.execute("BEGIN IMMEDIATE")
    _session(conn, 2)
    try:
        _session(conn, 1)                             # a duplicate key: fails on the server
        _session(conn, 3)
    except sqlite3.Error:
        pass        # psycopg may report it at a later statement, when it collects the result
    with pytest.raises(sqlite3.Error):                # either way the commit refuses
        conn.execute("COMMIT")
    assert not conn.in_transaction
    ids = [r[0] for r in conn.execute("SELECT id FROM sessions ORDER BY id").fetchall()]
    assert ids == [1]                                 # nothing of the failed transaction
    conn.execute("BEGIN IMMEDIATE")                   # and the connection goes on
    _session(conn, 4)
    conn.execute("COMMIT")
    assert conn.execute("SELECT count(*) FROM sessions").fetchone()[0] == 2
    conn.close()


def test_an_error_seen_at_a_read_is_never_committed_silently(tmp_path, pg_store):
    conn = _conn(tmp_path)
    conn.execute("BEGIN IMMEDIATE")
    _session(conn, 1)
    conn.execute("COMMIT")
    conn.execute("BEGIN IMMEDIATE")
    _session(conn, 1)
    with pytest.raises(sqlite3.Error):
        conn.execute("SELECT count(*) FROM sessions").fetchone()
    _session(conn, 5)
    with pytest.raises(sqlite3.Error, match="aborted"):
        conn.execute("COMMIT")
    assert [r[0] for r in conn.execute("SELECT id FROM sessions").fetchall()] == [1]
    conn.execute("BEGIN IMMEDIATE")
    _session(conn, 6)
    conn.execute("ROLLBACK")
    assert [r[0] for r in conn.execute("SELECT id FROM sessions").fetchall()] == [1]
    conn.close()


def test_a_batchs_recording_pieces_reach_the_store_before_its_commit(tmp_path, pg_store,
                                                                      monkeypatch):
    """The worker sends each piece it writes to the store as it is written (pipelined, in the
    batch's transaction), not all at the commit: the server stores them while the worker
    applies the rest.  The operations come from a real Recorder (on SQLite, captured); an
    Applier on the store applies them as the worker would."""
    from bastion.recording import Recorder
    from bastion.recording.ops import OP_BARRIER, OP_PROBE, OP_STOP
    from bastion.recording.writer import EARLY_CHUNK_BYTES, Applier
    from bastion.store import chunks
    from tests.integration.recordkit import AGENT
    from tests.integration.test_store_import import STORE_VARS
    ops: list = []
    with monkeypatch.context() as m:                  # a one-node recorder: its operations
        for var in STORE_VARS:
            m.delenv(var, raising=False)
        put = Recorder._put
        m.setattr(Recorder, "_put", lambda self, op, n=0: (ops.append(op), put(self, op, n))[1])
        rec = Recorder.open(tmp_path / "one-node")
        s = rec.start_session(principal=AGENT, client="127.0.0.1:1", target="web1",
                              login="deploy")
        ch = s.open_channel("exec", command="cat app.log")
        line = b"2026-12-07 web1 nginx: GET /index.html 200\n"
        for _ in range(16):
            ch.output(line * 3000)                    # 16 x 130 KB of log text
        rec.close()
    conn = _conn(tmp_path / "store")
    applier = Applier(conn, tmp_path / "store", 256 * 1024 * 1024, lambda event: None)
    cid = ch.id
    most = 0
    for op in ops:
        if op[0] in (OP_STOP, OP_BARRIER, OP_PROBE):  # the worker's own, not the recording's
            continue
        assert applier.apply(op), applier.error
        most = max(most, applier._chunks.bytes)
    # never more than about a piece waiting (of 2 MB applied in one transaction)
    assert EARLY_CHUNK_BYTES <= 256 * 1024 and 0 < most < 512 * 1024, most
    assert conn.in_transaction
    assert applier.flush_files() and applier.commit()
    reader = schema.connect(tmp_path / "store", readonly=True)
    stored = chunks.stored_end(reader, cid)
    reader.close()
    size = sum(p.stat().st_size for p in (tmp_path / "store" / "recordings").rglob("*.cast"))
    assert stored == size > 16 * len(line) * 3000     # everything the file has, committed
    conn.close()


@pytest.mark.parametrize("seen_at", ["send", "read"])
def test_a_savepoint_undoes_an_error_wherever_psycopg_reported_it(tmp_path, pg_store, seen_at):
    """psycopg reports a pipelined statement's error at whichever call collects its result:
    a later statement's send when the answer has arrived by then (the CI race of session 15),
    else a read.  Either way ROLLBACK TO SAVEPOINT must undo it: the server ignores every
    message after an error until a sync, so the rollback must not be sent before one."""
    conn = _conn(tmp_path)
    conn.execute("BEGIN IMMEDIATE")
    _session(conn, 1)
    conn.execute("SAVEPOINT sp")
    with pytest.raises(sqlite3.Error):
        _session(conn, 1)                             # a duplicate key: fails on the server
        if seen_at == "send":
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:        # until psycopg raises it at a send
                time.sleep(0.02)
                conn.execute("SELECT 1")
        else:
            conn.execute("SELECT 1").fetchone()
    conn.execute("ROLLBACK TO SAVEPOINT sp")
    conn.execute("RELEASE SAVEPOINT sp")
    _session(conn, 2)
    conn.execute("COMMIT")
    ids = [r[0] for r in conn.execute("SELECT id FROM sessions ORDER BY id")]
    assert ids == [1, 2]
    conn.close()
