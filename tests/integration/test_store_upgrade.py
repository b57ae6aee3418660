"""Upgrading nodes one at a time on a private PostgreSQL cluster: the store records the oldest
bastion that still uses it (``schema_version.oldest``, bastion.store.pgschema); a bastion
older than the store keeps recording, reading and importing while every migration since is
additive, and refuses, naming both versions, when one is not.  The store "one version
ahead" is made by hand: a real extra column and the version and ``oldest`` a newer bastion
would have written."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bastion.errors import RecordingError
from bastion.recording import Recorder, query, schema
from bastion.recording.verify import verify_index
from bastion.store import pgconn, pgschema
from tests.integration.recordkit import record_session
from tests.pgcluster import undo_migration_15

pytestmark = pytest.mark.integration

BASTION = str(Path(sys.executable).with_name("bastion"))
V = pgschema.SCHEMA_VERSION


def _versions(conn) -> tuple[int, int | None]:
    return tuple(conn.execute("SELECT version, oldest FROM schema_version").fetchone())


def _ahead(data_dir: Path, oldest: int) -> None:
    """The store as a bastion of schema V+1 would leave it, with ``oldest`` recorded."""
    conn = schema.connect(data_dir)
    conn.execute("ALTER TABLE nodes ADD COLUMN from_the_future text")
    conn.execute("UPDATE schema_version SET version = ?, oldest = ?", (V + 1, oldest))
    conn.close()


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([BASTION, *args], env=dict(os.environ), capture_output=True,
                          text=True, timeout=120)


def test_the_store_records_the_oldest_bastion_that_can_use_it(tmp_path, pg_store):
    conn = schema.connect(tmp_path)
    # from nothing: the last migration that is not additive
    assert _versions(conn) == (V, max(m for m in range(1, V + 1) if m not in pgschema.ADDITIVE))
    undo_migration_15(conn)                         # a store of the release before 15
    conn.execute("UPDATE schema_version SET version = 14")
    conn.close()
    conn = schema.connect(tmp_path)                 # migrates: 15 is additive, 14 may stay
    assert _versions(conn) == (V, 14)
    conn.close()
    assert pgschema.oldest_after(15, 14) == 14      # additive: a 14 may go on
    assert pgschema.oldest_after(V + 1, 14) == V + 1  # a migration not listed raises it


def test_a_bastion_older_than_an_additive_migration_keeps_serving(tmp_path, pg_store, caplog):
    rec = Recorder.open(tmp_path)
    record_session(rec, "web1", ["uptime"])
    rec.close()
    _ahead(tmp_path, oldest=V)
    pgconn._warned_newer.clear()
    with caplog.at_level(logging.WARNING, logger="bastion.store"):
        rec = Recorder.open(tmp_path)               # its worker connects and writes
        record_session(rec, "web2", ["df -h"])
        rec.close()
    warned = [r.getMessage() for r in caplog.records if "newer than this bastion" in r.getMessage()]
    assert len(warned) == 1 and f"schema {V + 1}" in warned[0] and "upgrade it soon" in warned[0]
    conn = schema.connect(tmp_path)
    assert _versions(conn) == (V + 1, V)            # nothing migrated back or forth
    conn.close()
    db = query.open_index(tmp_path)                 # a reader
    assert {r["target"] for r in query.list_sessions(db)} == {"web1", "web2"}
    assert verify_index(tmp_path).ok
    listed = _cli("sessions", "list", "--json")     # the CLI, a process of its own
    assert listed.returncode == 0, listed.stderr
    assert "web2" in listed.stdout
    status = _cli("status", "--data-dir", str(tmp_path), "--json")    # no serve: exit 4
    assert json.loads(status.stdout)["index"]["schema"] == {"store": V + 1, "bastion": V}
    human = _cli("status", "--data-dir", str(tmp_path))
    assert f"schema {V + 1}, newer than this bastion's ({V})" in " ".join(human.stdout.split())


def test_a_bastion_older_than_a_breaking_migration_refuses_and_says_why(tmp_path, pg_store,
                                                                        monkeypatch):
    rec = Recorder.open(tmp_path)
    record_session(rec, "web1", ["uptime"])
    rec.close()
    _ahead(tmp_path, oldest=V + 1)
    why = (f"the PostgreSQL store has schema {V + 1}, newer than this bastion ({V}), and a "
           f"bastion older than schema {V + 1} cannot use it: upgrade this node")
    with pytest.raises(RecordingError) as err:
        schema.connect(tmp_path / "writer")
    assert why in str(err.value)
    with pytest.raises(RecordingError) as err:
        schema.connect(tmp_path / "reader", readonly=True)
    assert why in str(err.value)
    listed = _cli("sessions", "list")
    assert listed.returncode != 0 and why in listed.stderr
    # a one-node data dir imported into it: refused the same way, before anything is written
    monkeypatch.delenv("BASTION_STORE_URL")
    source = Recorder.open(tmp_path / "one-node")
    record_session(source, "web3", ["ls"])
    source.close()
    monkeypatch.setenv("BASTION_STORE_URL", pg_store["BASTION_STORE_URL"])
    for extra in (["--dry-run"], []):
        done = _cli("store", "import", "--from", str(tmp_path / "one-node"), "--policy",
                    "/nonexistent.toml", *extra)
        assert done.returncode != 0 and why in done.stderr, done.stderr
