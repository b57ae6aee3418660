"""Migration 6 (``transfers.content``): an index whose transfer rows were sealed before it keeps
verifying after the upgrade, and rows with a stored copy carry its link in the chain."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from bastion.identity.principal import Principal
from bastion.recording import Recorder, chain, schema
from bastion.recording.transfers import TransferRow, record_transfer
from bastion.recording.verify import verify_index

AGENT = Principal(subject="oid-agent", name="bot")


def _session(rec: Recorder, content: str | None) -> None:
    s = rec.start_session(principal=AGENT, client="127.0.0.1:1", target="web1", login="deploy")
    ch = s.open_channel("sftp", command=None)
    record_transfer(ch, TransferRow("put", "/srv/up/x", "ok", "allow", "up", "why", nbytes=3,
                                    sha256="ab" * 32, content=content))
    ch.close(exit_status=0)
    s.close()


def test_rows_sealed_before_migration_6_still_verify(tmp_path: Path) -> None:
    rec = Recorder.open(tmp_path)
    _session(rec, None)
    rec.close()
    # make it the index a schema-5 bastion would have left: no column, every row sealed
    # (hashed) without it
    conn = sqlite3.connect(tmp_path / schema.INDEX_NAME, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute("ALTER TABLE transfers DROP COLUMN content")
    conn.execute("DROP TABLE imports")                      # what migration 9 added
    conn.execute("DROP TABLE import_ids")                   # what migration 10 added
    prev, last = schema.GENESIS, 0
    for seq, table, row in list(chain.iter_chain(conn)):
        prev, last = chain.row_hash(prev, table, row), seq
        conn.execute(f"UPDATE {table} SET hash = ? WHERE id = ?", (prev, row["id"]))
    conn.execute("UPDATE chain_head SET seq = ?, hash = ? WHERE id = 1", (last, prev))
    conn.execute("PRAGMA user_version = 5")
    assert conn.execute("SELECT COUNT(*) FROM transfers WHERE seq IS NOT NULL").fetchone()[0] == 1
    conn.close()
    schema.connect(tmp_path).close()                        # what `bastion serve` does: migrate
    conn = schema.connect(tmp_path, readonly=True)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == schema.SCHEMA_VERSION   # 6 and on
    assert conn.execute("SELECT content FROM transfers").fetchone()[0] is None
    conn.close()
    report = verify_index(tmp_path)
    assert report.ok, report.problems


def test_a_content_link_is_sealed_and_tampering_with_it_is_found(tmp_path: Path) -> None:
    rec = Recorder.open(tmp_path)
    _session(rec, None)
    _session(rec, '{"path": "recordings/x.bin", "bytes": 3, "truncated": false, "sha256": "00"}')
    rec.close()
    assert verify_index(tmp_path).ok
    conn = sqlite3.connect(tmp_path / schema.INDEX_NAME, isolation_level=None)
    conn.execute("UPDATE transfers SET content = '{\"path\": \"recordings/other.bin\"}' "
                 "WHERE content IS NOT NULL")
    conn.close()
    report = verify_index(tmp_path)
    assert not report.ok and any(p.kind == "modified" and p.table == "transfers"
                                 for p in report.problems)
