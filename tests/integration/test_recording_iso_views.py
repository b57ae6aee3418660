"""The index's ``*_iso`` views: ISO-8601 UTC beside the epoch columns, read-only, chain intact."""

from __future__ import annotations

import re
import sqlite3
from datetime import datetime, timezone
from pathlib import Path

import pytest

from bastion.identity.principal import Principal
from bastion.policy import Action, Decision
from bastion.recording import Recorder, schema
from bastion.recording.verify import verify_index

AGENT = Principal(subject="oid-agent", name="bot")
VIEWS = {"sessions": ("started", "ended"), "channels": ("started", "ended"),
         "commands": ("time",), "transfers": ("time",),
         "approvals": ("created", "expires", "answered", "window_until", "revoked", "refused")}


ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def epoch_of(iso: str) -> float:
    assert ISO.fullmatch(iso), iso
    return datetime.strptime(iso, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp()


@pytest.fixture
def index(tmp_path: Path) -> Path:
    rec = Recorder.open(tmp_path)
    for target, close in (("web1", True), ("db1", False)):
        s = rec.start_session(principal=AGENT, client="127.0.0.1:1", target=target, login="deploy")
        ch = s.open_channel("exec", command="uptime")
        cid = ch.command("uptime", Decision(Action.ALLOW, "r", "why"))
        ch.output(b"up 1 day\n")
        ch.command_result(cid, 0)
        if close:
            ch.close(exit_status=0)
            s.close()
    rec.refused(principal=None, client="10.0.0.9:2", target="web1", login="root", reason="bad token")
    rec.close()
    return tmp_path


def test_each_time_column_has_its_iso_twin_in_utc(index: Path) -> None:
    conn = schema.connect(index, readonly=True)
    seen = 0
    for table, columns in VIEWS.items():
        base = [dict(r) for r in conn.execute(f"SELECT * FROM {table} ORDER BY id")]
        view = [dict(r) for r in conn.execute(f"SELECT * FROM {table}_iso ORDER BY id")]
        assert len(view) == len(base)
        for row, vrow in zip(base, view, strict=True):
            assert {k: vrow[k] for k in row} == row          # every table column, unchanged
            for column in columns:
                if row[column] is None:
                    assert vrow[f"{column}_iso"] is None
                    continue
                # the same instant to the millisecond (SQLite converts through a Julian day
                # number, so the last digit may round either way at a half millisecond)
                assert abs(epoch_of(vrow[f"{column}_iso"]) - row[column]) < 0.00055, \
                    (table, column, row[column], vrow[f"{column}_iso"])
                seen += 1
    # sessions: 3 started, 3 ended (db1 interrupted at close); channels: 2 + 2; commands: 2
    assert seen == 12
    for table, columns in VIEWS.items():       # the empty ones (transfers, approvals) too
        names = [d[0] for d in conn.execute(f"SELECT * FROM {table}_iso LIMIT 0").description]
        assert names[-len(columns):] == [f"{c}_iso" for c in columns]


def test_the_views_are_read_only_and_the_chain_still_verifies(index: Path) -> None:
    conn = sqlite3.connect(index / schema.INDEX_NAME, isolation_level=None)
    with pytest.raises(sqlite3.OperationalError, match="view"):
        conn.execute("UPDATE sessions_iso SET started_iso = 'x'")
    with pytest.raises(sqlite3.OperationalError, match="view"):
        conn.execute("DELETE FROM commands_iso")
    report = verify_index(index)
    assert report.ok and report.rows == 3 + 2 + 2, report.problems


def test_an_index_from_before_the_views_gains_them_and_keeps_verifying(index: Path) -> None:
    conn = sqlite3.connect(index / schema.INDEX_NAME, isolation_level=None)
    for table in VIEWS:
        conn.execute(f"DROP VIEW {table}_iso")
    conn.execute("ALTER TABLE transfers DROP COLUMN content")     # what migration 6 added
    conn.execute("DROP TABLE imports")                             # what migration 9 added
    conn.execute("DROP TABLE import_ids")                          # what migration 10 added
    conn.execute("PRAGMA user_version = 4")                        # before the views (5)
    conn.close()
    with pytest.raises(Exception, match="older than this bastion"):
        schema.connect(index, readonly=True)
    schema.connect(index).close()               # what `bastion serve` does on start
    conn = schema.connect(index, readonly=True)
    assert conn.execute("SELECT COUNT(*) FROM sessions_iso WHERE started_iso LIKE '____-__-__T"
                        "__:__:__.___Z'").fetchone()[0] == 3
    assert verify_index(index).ok


def test_iso_text_of_known_instants(tmp_path: Path) -> None:
    conn = schema.connect(tmp_path)             # a scratch index: these rows are never sealed
    for started in (0.0, 1765000000.5, 1700000059.9999, 1765000000.123):
        conn.execute("INSERT INTO sessions (started, status) VALUES (?, 'active')", (started,))
    assert [tuple(r) for r in conn.execute("SELECT started_iso, ended_iso FROM sessions_iso")] == [
        ("1970-01-01T00:00:00.000Z", None), ("2025-12-06T05:46:40.500Z", None),
        ("2023-11-14T22:14:20.000Z", None), ("2025-12-06T05:46:40.123Z", None)]
