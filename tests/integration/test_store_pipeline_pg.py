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
