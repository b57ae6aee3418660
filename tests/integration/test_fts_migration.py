"""Migration 13 on PostgreSQL: a store whose index holds positions (migrations 11-12) is
indexed again as sets of words, and the lines recorded before it are then found exactly,
past the limits the old index had (a word keeps 255 positions there)."""

from __future__ import annotations

import pytest

from bastion.recording import Recorder, query, schema
from bastion.recording.verify import verify_index
from bastion.store import ftscheck, pgschema
from tests.integration.recordkit import record_session
from tests.pgcluster import undo_migration_15

pytestmark = pytest.mark.integration

REPEATED = "echo " + "rep " * 300 + "tail"          # "rep tail" after rep's 255th position


def _as_of_migration_12(conn) -> None:
    """The full-text index, view and functions as migrations 11 and 12 left them (and no
    migration 14 table)."""
    conn.execute("DROP VIEW commands_fts")
    conn.execute("DROP INDEX commands_tsv")
    conn.execute("DROP FUNCTION bastion_fts_vector(text)")
    for fn in ftscheck.FUNCTIONS:
        conn.execute(f"DROP FUNCTION IF EXISTS {fn}")
    conn.execute("CREATE INDEX commands_tsv ON commands USING gin "
                 "(to_tsvector('simple', bastion_fts_text(line)))")
    conn.execute("CREATE VIEW commands_fts AS SELECT id AS rowid, "
                 "to_tsvector('simple', bastion_fts_text(line)) AS tsv FROM commands")
    first_token = next(i for i, m in enumerate(pgschema.MIGRATIONS) if "bastion_fts_vector" in m)
    assert first_token == 10                          # migration 11
    conn.execute(pgschema.MIGRATIONS[first_token])
    conn.execute("DROP TABLE transfer_copies")        # nor migration 14's
    undo_migration_15(conn)                           # and migration 15's
    conn.execute("UPDATE schema_version SET version = 12")


def test_migration_13_indexes_again_the_lines_recorded_before_it(tmp_path, pg_store):
    rec = Recorder.open(tmp_path)
    record_session(rec, "web1", [REPEATED, "sudo systemctl restart nginx", "echo sudo"])
    rec.close()
    conn = schema.connect(tmp_path)
    _as_of_migration_12(conn)
    old = "SELECT count(*) FROM commands_fts WHERE tsv @@ to_tsquery('simple', ?)"
    assert conn.execute(old, ("rep <-> tail",)).fetchone()[0] == 0     # positions stopped
    assert conn.execute(old, ("sudo:A",)).fetchone()[0] == 1           # the old index
    assert conn.execute("SELECT count(*) FROM pg_proc WHERE proname = 'bastion_fts_tokens'"
                        ).fetchone()[0] == 0
    conn.close()
    rec = Recorder.open(tmp_path)                                      # migrates to 13
    rec.close()
    db = query.open_index(tmp_path)
    assert db.conn.execute("SELECT version FROM schema_version").fetchone()[0] == \
        pgschema.SCHEMA_VERSION
    lines = lambda q: sorted(h["line"] for h in query.search_commands(db, q, raw=True))  # noqa: E731
    assert lines('"rep tail"') == [REPEATED]
    assert lines("NEAR(echo tail, 300)") == [REPEATED]
    assert lines("NEAR(echo tail, 299)") == []
    assert lines("^sudo") == ["sudo systemctl restart nginx"]
    assert lines("sudo NOT ^sudo") == ["echo sudo"]
    assert lines("restart") == ["sudo systemctl restart nginx"]
    # the index holds words only now: no positions, no weights
    assert db.conn.execute("SELECT bool_and(tsv = strip(tsv)) FROM commands_fts"
                           ).fetchone()[0] is True
    db.conn.execute("SET enable_seqscan = off")                       # 3 rows: it would scan
    plan = "\n".join(r[0] for r in db.conn.execute(
        "EXPLAIN SELECT rowid FROM commands_fts WHERE commands_fts MATCH ?", ('"rep tail"',)))
    assert "commands_tsv" in plan and "bastion_fts_exact" in plan     # index, then the check
    assert verify_index(tmp_path).ok
