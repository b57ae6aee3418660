"""The index is readable by readers that ignore the WAL (`datasette --immutable`, a file copy):
the recording worker checkpoints it while idle and truncates the WAL when it stops."""

from __future__ import annotations

import sqlite3
import time

from bastion.identity.principal import Principal
from bastion.policy import Action, Decision
from bastion.recording import Recorder, schema
from bastion.recording.worker import checkpoint


def _immutable_rows(path, table: str) -> int:
    conn = sqlite3.connect(f"file:{path}?immutable=1", uri=True)
    try:
        return conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
    finally:
        conn.close()


def test_a_checkpoint_makes_committed_rows_visible_without_the_wal(tmp_path):
    conn = schema.connect(tmp_path)
    conn.execute("PRAGMA wal_autocheckpoint = 0")          # (the default would only act at 4 MB)
    index = schema.index_path(tmp_path)
    checkpoint(conn)                                        # the schema itself was in the WAL
    before = _immutable_rows(index, "checkpoints")
    conn.execute("INSERT INTO checkpoints (seq, hash, created, cutoff, sessions, rows) "
                 "VALUES (1, 'h', 1, 1, 0, 0)")
    conn.commit()
    assert _immutable_rows(index, "checkpoints") == before        # only in the WAL so far
    checkpoint(conn)
    assert _immutable_rows(index, "checkpoints") == before + 1
    conn.close()


def test_the_running_worker_checkpoints_while_idle(tmp_path, monkeypatch):
    monkeypatch.setenv("BASTION_INDEX_CHECKPOINT", "0.5")   # (30 s by default)
    rec = Recorder.open(tmp_path)
    try:
        s = rec.start_session(principal=Principal(subject="oid-1"), client="192.0.2.1:1",
                              target="web1", login="deploy")
        ch = s.open_channel("exec", command="uptime")
        ch.command("uptime", Decision(Action.ALLOW, "ro", "reads"))
        ch.output(b"up\n")
        ch.close(exit_status=0)
        s.close()
        rec.flush()
        index = schema.index_path(tmp_path)
        deadline = time.monotonic() + 15
        seen = 0
        while time.monotonic() < deadline:
            try:
                seen = _immutable_rows(index, "commands")
            except sqlite3.DatabaseError:
                seen = 0                              # the schema not checkpointed yet
            if seen:
                break
            time.sleep(0.2)
        assert seen == 1            # while the bastion runs, without reading the WAL
    finally:
        rec.close()
