"""The PostgreSQL store with the real recorder, query, verify and approvals code, on a private
cluster (tests/pgcluster.py): schema parity with SQLite, one chain for two writers, ids that
do not collide, NOTIFY waking a waiting broker, [store] settings that never show a password."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading

import pytest

from bastion.config import parse_config
from bastion.policy import Action, Decision
from bastion.recording import Recorder, query, schema
from bastion.recording.verify import verify_index
from bastion.store import ftscheck, location, pgconn, pgschema
from bastion.store.notify import Listener
from tests.integration.recordkit import AGENT, record_session
from tests.pgcluster import undo_migration_15

pytestmark = pytest.mark.integration


def _columns_sqlite(tmp_path) -> dict[str, list[str]]:
    conn = schema.connect(tmp_path)
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type IN "
                                         "('table', 'view') AND name NOT LIKE 'sqlite_%' "
                                         "AND name NOT LIKE 'commands_fts%'")]
    out = {t: [r[1] for r in conn.execute(f"PRAGMA table_info({t})")] for t in tables}
    conn.close()
    return out


def _taken_over(tmp_path, monkeypatch, lease: str):
    """Node a (worker heartbeat every ``lease``/6 s) records a channel with one line; node b
    finds a's heartbeat an hour old and seals a's session.  (a's recorder, session, channel,
    b's connection); BASTION_NODE is left at b."""
    import time as _time

    from bastion.recording import leases
    monkeypatch.setenv("BASTION_NODE", "a")
    monkeypatch.setenv("BASTION_STORE_LEASE", lease)
    rec = Recorder.open(tmp_path / "a")
    s = rec.start_session(principal=AGENT, client="127.0.0.1:1", target="web1", login="deploy")
    ch = s.open_channel("exec", command="tail -f log")
    ch.output(b"seen before the lease ran out\n")
    rec.flush()
    monkeypatch.setenv("BASTION_NODE", "b")
    conn = schema.connect(tmp_path / "b")
    assert leases.take_over(conn, 60.0, now=_time.time() + 3600) == [s.id]
    return rec, s, ch, conn


def test_the_schemas_agree_table_by_table(tmp_path, monkeypatch, pg_store):
    assert pgschema.SCHEMA_VERSION == schema.SCHEMA_VERSION, \
        "a SQLite migration has no PostgreSQL twin in bastion.store.pgschema"
    monkeypatch.delenv("BASTION_STORE_URL")
    (tmp_path / "lite").mkdir()
    lite = _columns_sqlite(tmp_path / "lite")
    monkeypatch.setenv("BASTION_STORE_URL", pg_store["BASTION_STORE_URL"])
    conn = schema.connect(tmp_path / "pg")
    pg = {}
    for table in lite:
        rows = conn.execute("SELECT column_name FROM information_schema.columns WHERE "
                            "table_name = ? ORDER BY ordinal_position", (table,)).fetchall()
        pg[table] = [r[0] for r in rows]
    extra = {"sessions": ["node"], "sessions_iso": ["node"]}
    for table, cols in lite.items():
        expected = [c for c in pg[table] if c not in extra.get(table, [])]
        assert expected == cols, table
    assert conn.execute("PRAGMA user_version").fetchone()[0] == schema.SCHEMA_VERSION
    conn.close()


def test_recorder_query_and_verify_on_postgresql(tmp_path, pg_store):
    rec = Recorder.open(tmp_path)
    record_session(rec, "web1", ["uptime", "df -h"])
    record_session(rec, "web2", ["rm -rf /tmp/x", "ls"])
    rec.refused(principal=None, client="10.0.0.9:2", target="web1", login="root",
                reason="bad token")
    rec.close()
    assert not (tmp_path / "index.sqlite").exists()
    report = verify_index(tmp_path)
    assert report.ok, report.problems
    assert report.rows == 3 + 2 + 4 and report.files == 2
    db = query.open_index(tmp_path)
    rows = query.list_sessions(db)
    assert {r["target"] for r in rows} == {"web1", "web2"}
    assert all(r["id"] > pgschema.ID_BLOCK for r in rows)
    assert [r["status"] for r in query.list_sessions(db, target="web2")] == ["closed"]
    assert len(query.list_sessions(db, denied=True)) == 2      # the refused one and web2
    [hit] = query.search_commands(db, "rm -rf")
    assert hit["action"] == "deny" and hit["target"] == "web2"
    assert query.search_commands(db, "upt*")[0]["line"] == "uptime"
    assert [h["line"] for h in query.search_commands(db, "uptime OR ls", raw=True)] == \
        ["ls", "uptime"]
    assert [h["line"] for h in query.search_commands(db, "NEAR(rm tmp, 1)", raw=True)] == \
        ["rm -rf /tmp/x"]
    assert query.search_commands(db, "NEAR(rm tmp, 0)", raw=True) == []     # rf between
    with pytest.raises(Exception, match="bad full-text query.*no such column: target"):
        query.search_commands(db, "target:web2", raw=True)


def test_two_writers_share_one_chain_and_never_share_an_id(tmp_path, pg_store, monkeypatch):
    recs = []
    for node in "ab":                       # two nodes: each worker inherits its BASTION_NODE
        monkeypatch.setenv("BASTION_NODE", node)
        recs.append(Recorder.open(tmp_path / node))
    errors: list[BaseException] = []

    def run(rec: Recorder, name: str) -> None:
        try:
            for i in range(8):
                record_session(rec, f"{name}{i}", [f"echo {name} {i}", "true"])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(r, n)) for r, n in zip(recs, "ab", strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in recs:
        r.close()
    assert not errors
    monkeypatch.setenv("BASTION_NODE", "a")
    report = verify_index(tmp_path / "a")
    assert report.ok, report.problems                 # no gap, no duplicate seq
    # b's recordings are checked through the store's copy from a's data dir
    assert report.rows == 16 * 4 and report.files == 16 and report.files_elsewhere == 0
    ids = [r["id"] for r in query.list_sessions(query.open_index(tmp_path), limit=100)]
    assert len(ids) == len(set(ids)) == 16


def test_an_answer_on_another_connection_wakes_the_listener(tmp_path, pg_store):
    from bastion.approvals.store import ApprovalStore
    store = ApprovalStore.open(tmp_path)
    listener = Listener(location.current())
    try:
        assert listener.wait(0.01) is True             # connecting: read once, may have missed
        assert listener.wait(0.05) is False            # nothing changed
        record = store.create(node="n", principal=AGENT, target="web1", login="root",
                              line="touch x", decision=Decision(Action.REVIEW, "r", "why"),
                              session_id=None, command_id=None, channel="exec", timeout=60)
        other = ApprovalStore.open(tmp_path)
        other.finish(record.id, "cancelled", "test")
        other.close()
        assert listener.wait(30) is True
    finally:
        listener.close()
        store.close()


def test_store_settings_from_policy_never_show_the_password(tmp_path):
    text = ('[store]\nurl = "postgresql://bastion:hunter2-pw@db1/bastion"\n'
            'password_file = "pw.txt"\nnode = "node-1"\n')
    cfg = parse_config(text, str(tmp_path / "policy.toml"))
    assert cfg.store.node == "node-1" and cfg.store.password_file == str(tmp_path / "pw.txt")
    assert "hunter2" not in repr(cfg.store) and "hunter2" not in repr(cfg)
    assert location.safe_url(cfg.store.url) == "postgresql://bastion:***@db1/bastion"
    with pytest.raises(Exception, match="postgresql://"):
        parse_config('[store]\nurl = "mysql://x"\n', "p.toml")
    with pytest.raises(Exception, match="node"):
        parse_config('[store]\nurl = "postgresql://x"\nnode = "a b"\n', "p.toml")


def test_an_unreachable_store_is_a_recording_error_that_says_what_to_do(tmp_path, monkeypatch,
                                                                        pg_cluster):
    from bastion.errors import RecordingError
    from tests.pgcluster import _free_port
    monkeypatch.setenv("BASTION_STORE_URL", f"postgresql://bastion@127.0.0.1:{_free_port()}/x")
    with pytest.raises(RecordingError, match="unavailable") as info:
        schema.connect(tmp_path)
    assert "PostgreSQL" in (info.value.hint or "")
    assert "127.0.0.1" in info.value.hint and "127.0.0.1" not in str(info.value)
    assert isinstance(info.value.__cause__, sqlite3.OperationalError)


def test_a_reader_that_cannot_connect_says_why_once(caplog):
    """The readers' pool retries a refused connection until its timeout, logging a warning
    for each attempt: none of them is shown, and the one error names the driver's reason."""
    import logging

    from tests.pgcluster import _free_port
    settings = location.StoreSettings(url=f"postgresql://bastion@127.0.0.1:{_free_port()}/x",
                                      node="reader-test")
    caplog.set_level(logging.DEBUG)
    with pytest.raises(sqlite3.OperationalError, match="cannot be reached") as info:
        pgconn.connect(settings, readonly=True)
    detail = info.value.detail
    assert "refused" in detail.lower() and "couldn't get a connection" not in detail, detail
    assert not [r for r in caplog.records if r.name.startswith("psycopg")], caplog.text
    assert [r.getMessage() for r in caplog.records if r.name == "bastion.store"] == [
        f"store: cannot reach {detail}"]


def test_the_cli_on_an_unreachable_store_prints_one_error_and_the_reason(tmp_path):
    import os
    import subprocess
    import sys

    from tests.pgcluster import _free_port
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
    env.update(BASTION_STORE_URL=f"postgresql://bastion@127.0.0.1:{_free_port()}/x",
               BASTION_DATA_DIR=str(tmp_path), HOME=str(tmp_path))
    p = subprocess.run([sys.executable, "-m", "bastion.cli.main", "sessions", "list"], env=env,
                       capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert p.returncode == 1, p.stderr
    assert "error connecting in" not in p.stderr, p.stderr
    assert "store: cannot reach" not in p.stderr, p.stderr     # the hint below says it
    assert p.stderr.count("error: the session index is unavailable") == 1, p.stderr
    hint = [ln for ln in p.stderr.splitlines() if ln.startswith("hint:")]
    assert len(hint) == 1 and "refused" in hint[0].lower() and "BASTION_STORE_URL" in hint[0]


def test_a_commit_after_an_aborted_statement_raises(tmp_path, pg_store):
    conn = pgconn.connect(location.current())
    conn.execute("BEGIN IMMEDIATE")
    with pytest.raises(sqlite3.OperationalError):
        conn.execute("SELECT no_such_column FROM sessions")
    with pytest.raises(sqlite3.OperationalError, match="rolled back"):
        conn.execute("COMMIT")
    assert not conn.in_transaction
    conn.close()


def test_a_reader_of_a_store_never_migrated_is_told_to_start_serve_once(tmp_path, pg_store):
    from bastion.errors import RecordingError
    with pytest.raises(RecordingError, match="start `bastion serve`"):
        schema.connect(tmp_path, readonly=True)


def test_ids_continue_in_a_fresh_block_when_one_runs_out(tmp_path, pg_store):
    schema.connect(tmp_path).close()                          # migrated
    block = pgschema.ID_BLOCK
    ids = pgconn.IdRange(3 * block + block - 1, "sessions", location.current())
    first, last, fresh = next(ids), next(ids), next(ids)
    assert (first, last) == (4 * block - 1, 4 * block)        # the end of block 3
    assert (fresh - 1) % block == 0 and (fresh - 1) // block != 3
    assert next(ids) == fresh + 1


def test_a_percent_in_quoted_text_is_text(tmp_path, pg_store):
    conn = schema.connect(tmp_path)
    assert conn.execute("SELECT 'ok%' LIKE 'ok%', ? || '%'", ("50",)).fetchone() == (True, "50%")
    assert conn.execute("SELECT 'a%b'").fetchone() == ("a%b",)
    conn.close()


def test_the_stores_copy_of_a_recording_survives_a_worker_killed_mid_channel(tmp_path,
                                                                             pg_store):
    import os
    import signal

    from bastion.store import chunks
    rec = Recorder.open(tmp_path)
    s = rec.start_session(principal=AGENT, client="127.0.0.1:1", target="web1", login="deploy")
    ch = s.open_channel("exec", command="cat big")
    ch.output(b"before the kill\n" * 1000)
    rec.flush()
    os.kill(rec._writer.proc.pid, signal.SIGKILL)
    assert rec.wait_state("failed", "recovering", timeout=60) in ("failed", "recovering")
    assert rec.wait_state("ok", timeout=60) == "ok"        # a new worker adopted the file
    try:
        ch.output(b"after the kill\n")
    except Exception:  # noqa: BLE001 - the channel may have been stopped by the failure
        pass
    ch.close(exit_status=0)
    s.close()
    rec.flush()
    rec.close()
    report = verify_index(tmp_path)
    assert report.ok, report.problems
    conn = schema.connect(tmp_path, readonly=True)
    [row] = conn.execute("SELECT id, path, sha256 FROM channels").fetchall()
    assert row[2] and chunks.sha256_of(conn, row[0]) == row[2]
    assert (tmp_path / row[1]).read_bytes().count(b"before the kill") == 1000
    conn.close()


@pytest.mark.parametrize("stored, file_size", [
    (0, 100),            # nothing committed yet: all uploaded
    (40, 100),           # written, not committed when the worker died: the gap uploaded
    (100, 100),          # in step
    (100, 60),           # the file was cut back to its last whole line: the store too
])
def test_resync_brings_the_store_in_line_with_the_file(tmp_path, pg_store, stored, file_size):
    from bastion.store import chunks
    data = bytes(range(100))
    path = tmp_path / "rec.cast"
    path.write_bytes(data[:file_size])
    conn = schema.connect(tmp_path)
    conn.execute("BEGIN IMMEDIATE")
    chunks.insert(conn, [(7, at, data[at:at + 20]) for at in range(0, stored, 20)])
    chunks.resync_tail(conn, 7, path, file_size)
    conn.execute("COMMIT")
    assert chunks.sha256_of(conn, 7) == hashlib.sha256(data[:file_size]).hexdigest()
    out = chunks.materialize(conn, 7, tmp_path / "copy" / "rec.cast", None)
    assert out is not None and out.read_bytes() == data[:file_size]
    conn.close()


def test_prune_on_postgresql_keeps_the_chain_verifiable_and_drops_the_copies(tmp_path,
                                                                             pg_store):
    from bastion.recording.verify import prune
    rec = Recorder.open(tmp_path)
    record_session(rec, "web1", ["uptime-old"])
    conn = schema.connect(tmp_path, readonly=True)
    old_end = conn.execute("SELECT MAX(ended) FROM sessions").fetchone()[0]
    conn.close()
    record_session(rec, "web2", ["uptime-new"])
    rec.close()
    conn = schema.connect(tmp_path, readonly=True)
    (first_new,) = conn.execute("SELECT started FROM sessions WHERE target = 'web2'").fetchone()
    conn.close()
    cutoff = (old_end + first_new) / 2
    report = prune(tmp_path, older_than=86400.0, now=cutoff + 86400.0)
    assert (report.sessions, report.files_deleted) == (1, 1)
    verified = verify_index(tmp_path)
    assert verified.ok, verified.problems
    assert verified.rows == 3 and verified.files == 1
    conn = schema.connect(tmp_path, readonly=True)
    kept = {r[0] for r in conn.execute("SELECT DISTINCT channel_id FROM recording_chunks")}
    assert kept == {r[0] for r in conn.execute("SELECT id FROM channels")} and len(kept) == 1
    conn.close()
    assert [c["line"] for c in query.search_commands(query.open_index(tmp_path), "uptime*")] \
        == ["uptime-new"]


def test_a_connection_lost_to_a_server_restart_is_opened_again(tmp_path, pg_store, pg_cluster):
    from bastion.approvals.store import ApprovalStore
    from bastion.errors import ApprovalError
    store = ApprovalStore.open(tmp_path)                 # the broker's long-lived connection
    assert store.version() == 0
    pg_cluster.stop("fast")
    pg_cluster.start()
    with pytest.raises(ApprovalError):                   # the statement that finds it lost
        store.version()
    assert store.version() == 0                          # the next one reconnects
    store.close()


def test_a_peer_takes_over_the_sessions_of_a_node_past_its_lease(tmp_path, pg_store,
                                                                 monkeypatch):
    """Node a records; node b finds a's heartbeat older than the lease (a clock an hour on
    stands for a dead node) and closes a's session from the store's copy.  Node a was only
    slow: nothing it writes lands in the sealed session; at its next heartbeat its worker
    makes its file the sealed copy (its verify passes before any restart) and the channel
    is stopped (its agent does not go on unrecorded)."""
    import time as _time

    from bastion.errors import RecordingError
    from bastion.recording import leases
    from bastion.store import chunks
    rec, s, ch, conn = _taken_over(tmp_path, monkeypatch, "3")   # a beats every 0.5 s
    assert leases.take_over(conn, 60.0, now=_time.time() + 3600) == []       # once only
    monkeypatch.setenv("BASTION_NODE", "a")
    row = query.get_session(query.open_index(tmp_path / "a"), s.id)
    assert row["status"] == "interrupted" and "node a stopped answering" in row["reason"]
    [chan] = row["channels"]
    copy = chunks.materialize(conn, chan["id"], tmp_path / "copy.cast", chan["sha256"])
    data = copy.read_bytes()
    assert b"seen before the lease ran out" in data
    assert b"recording interrupted (node a stopped answering; marked by node b)" in data
    assert hashlib.sha256(data).hexdigest() == chan["sha256"]
    local = tmp_path / "a" / chan["path"]
    deadline = _time.monotonic() + 60
    while not (ch.lost and local.read_bytes() == data):       # a's next heartbeat
        assert _time.monotonic() < deadline, "node a never noticed its session was taken"
        _time.sleep(0.1)
    assert "another node closed this session" in ch.lost
    own = local.with_name(local.name + ".after-takeover")      # a's own copy, kept beside
    assert b"seen before the lease ran out" in own.read_bytes() and own.read_bytes() != data
    with pytest.raises(RecordingError):
        ch.output(b"written after the takeover\n")
    ch.close(exit_status=0)
    s.close()
    rec.flush()
    report = verify_index(tmp_path / "a")                   # before any restart
    assert report.ok, report.problems
    rec.close()
    copy = chunks.materialize(conn, chan["id"], tmp_path / "copy2.cast", None)
    assert copy.read_bytes() == data and local.read_bytes() == data
    conn.close()
    Recorder.open(tmp_path / "a").close()                               # a starts again
    assert local.read_bytes() == data
    report = verify_index(tmp_path / "a")
    assert report.ok, report.problems


def test_a_password_file_others_can_read_is_refused_with_the_fix(tmp_path, pg_store,
                                                                   pg_cluster):
    """As libpq refuses a ~/.pgpass that others can read: the CLI (and `serve`) stop with the
    chmod to run; the same file made private works."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    schema.connect(tmp_path / "data").close()          # the store's schema, as serve makes it
    pw = tmp_path / "pg-password"
    pw.write_text(pg_cluster.password_file.read_text())
    os.chmod(pw, 0o640)
    env = {**os.environ, **pg_store, "BASTION_STORE_PASSWORD_FILE": str(pw)}
    env.pop("BASTION_POLICY", None)
    argv = [str(Path(sys.executable).parent / "bastion"), "sessions", "list", "--json",
            "--data-dir", str(tmp_path / "data")]
    refused = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0
    assert "accessible by other users" in refused.stderr and f"chmod 600 {pw}" in refused.stderr
    assert pg_cluster.password_file.read_text().strip() not in refused.stderr + refused.stdout
    os.chmod(pw, 0o600)
    ok = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout) == []


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_search_folds_diacritics_on_both_backends(tmp_path, request, monkeypatch, backend):
    # SQLite's unicode61 tokenizer removes diacritics; PostgreSQL's index (migration 8) and
    # the query translation must do the same, or a reviewer's search finds less there
    if backend == "postgresql":
        request.getfixturevalue("pg_store")
    else:
        monkeypatch.delenv("BASTION_STORE_URL", raising=False)
    rec = Recorder.open(tmp_path)
    record_session(rec, "web1", ["echo naïve Café", "echo crème brûlée", "uptime"])
    rec.close()
    db = query.open_index(tmp_path)
    lines = lambda q, **kw: [h["line"] for h in query.search_commands(db, q, **kw)]   # noqa: E731
    assert lines("naive") == ["echo naïve Café"]
    assert lines("NAÏVE cafe") == ["echo naïve Café"]
    assert lines("creme brul*") == ["echo crème brûlée"]
    assert lines('"crème brûlée" OR uptime', raw=True) == ["uptime", "echo crème brûlée"]
    assert lines("naïveté") == []


def test_migration_8_folds_the_lines_indexed_before_it(tmp_path, pg_store):
    # a store as the previous release left it (schema 7: migration 1's bastion_fts_text, the
    # index built with it) with a line already indexed; the upgrade must refold that line
    rec = Recorder.open(tmp_path)
    record_session(rec, "web1", ["echo déjà vu"])
    rec.close()
    conn = schema.connect(tmp_path)
    old = pgschema.MIGRATIONS[0].split("CREATE FUNCTION bastion_fts_text")[1].split("$$;")[0]
    conn.execute("CREATE OR REPLACE FUNCTION bastion_fts_text" + old + "$$")
    conn.execute("REINDEX INDEX commands_tsv")
    conn.execute("DROP TABLE imports")             # migration 9's: not in a store of 7
    conn.execute("DROP TABLE import_ids")          # migration 10's
    _undo_first_token(conn)                        # nor the first token's weight (11)
    conn.execute("DROP TABLE transfer_copies")     # nor migration 14's
    undo_migration_15(conn)                        # and migration 15's
    conn.execute("UPDATE schema_version SET version = 7")
    found = "SELECT count(*) FROM commands_fts WHERE tsv @@ to_tsquery('simple', ?)"
    assert conn.execute(found, ("deja",)).fetchone()[0] == 0        # the old index: not folded
    conn.close()
    rec = Recorder.open(tmp_path)                                   # migrates to 8
    rec.close()
    db = query.open_index(tmp_path)
    assert [h["line"] for h in query.search_commands(db, "deja vu")] == ["echo déjà vu"]
    assert db.conn.execute("SELECT version FROM schema_version").fetchone()[0] == \
        pgschema.SCHEMA_VERSION          # 8 and the migrations after it
    assert verify_index(tmp_path).ok


def _first_token_migration() -> int:
    return next(i for i, m in enumerate(pgschema.MIGRATIONS) if "bastion_fts_vector" in m)


def _undo_first_token(conn) -> None:
    """The index and view as migration 1 made them, before the first token had weight A."""
    conn.execute("DROP VIEW commands_fts")
    conn.execute("DROP INDEX commands_tsv")
    conn.execute("DROP FUNCTION bastion_fts_vector(text)")
    for fn in ftscheck.FUNCTIONS:                # migration 11's and 13's
        conn.execute(f"DROP FUNCTION IF EXISTS {fn}")
    for stmt in pgschema.MIGRATIONS[0].split(";"):
        if "INDEX commands_tsv" in stmt or "VIEW commands_fts" in stmt:
            conn.execute(stmt)


def test_the_first_token_migration_reindexes_the_lines_recorded_before_it(tmp_path, pg_store):
    # a store as the release before it left it (the index on to_tsvector(bastion_fts_text(
    # line)), no weights) with lines already indexed; the upgrade must index them again so
    # that ^word finds them
    rec = Recorder.open(tmp_path)
    record_session(rec, "web1", ["sudo systemctl restart nginx", "echo sudo", "  ./sudo -v"])
    rec.close()
    conn = schema.connect(tmp_path)
    _undo_first_token(conn)
    conn.execute("DROP TABLE transfer_copies")     # migration 14's
    undo_migration_15(conn)                        # and migration 15's
    conn.execute("UPDATE schema_version SET version = ?", (_first_token_migration(),))
    assert conn.execute("SELECT count(*) FROM commands_fts WHERE tsv @@ 'sudo:A'").fetchone()[0] \
        == 0                                                        # no weights before it
    conn.close()
    rec = Recorder.open(tmp_path)                                   # migrates
    rec.close()
    db = query.open_index(tmp_path)
    lines = lambda q: sorted(h["line"] for h in query.search_commands(db, q, raw=True))  # noqa: E731
    assert lines("^sudo") == ["  ./sudo -v", "sudo systemctl restart nginx"]
    assert lines("sudo NOT ^sudo") == ["echo sudo"]
    assert lines("NEAR(sudo restart, 1)") == ["sudo systemctl restart nginx"]
    assert db.conn.execute("SELECT version FROM schema_version").fetchone()[0] == \
        pgschema.SCHEMA_VERSION
    db.conn.execute("SET enable_seqscan = off")                    # 3 rows: it would scan
    plan = "\n".join(r[0] for r in db.conn.execute(
        "EXPLAIN SELECT rowid FROM commands_fts WHERE commands_fts MATCH ?", ("^sudo",)))
    assert "commands_tsv" in plan                                   # the index, not a scan
    assert verify_index(tmp_path).ok


def test_output_a_slow_node_relays_after_the_takeover_is_never_shown(tmp_path, pg_store,
                                                                       monkeypatch):
    """Node b seals a's session; a (slow, not dead: its next heartbeat is minutes away) then
    records output for it and holds it for its agent, as the SSH layer does.  The store
    refuses that output (past b's marker), so the agent must never be shown it: a's worker
    learns of the takeover from that batch's own commit and stops the channel before the
    batch's acknowledgement could release it."""
    import asyncio

    from bastion.recording.gate import AgentGate
    from bastion.store import chunks
    rec, s, ch, conn = _taken_over(tmp_path, monkeypatch, "600")  # a beats every 100 s
    monkeypatch.setenv("BASTION_NODE", "a")
    shown: list[bytes] = []
    failures: list[Exception] = []

    class AgentSide:                       # what the gate writes to: the agent's channel
        def write(self, data, datatype=None):
            shown.append(bytes(data))

        def close(self):
            pass

    async def relay() -> None:
        loop = asyncio.get_running_loop()
        gate = AgentGate(AgentSide(), ch, failures.append)
        ch.output(b"relayed after the takeover\n")
        gate.write(b"relayed after the takeover\n")
        deadline = loop.time() + 60
        while not (shown or failures):
            assert loop.time() < deadline, "the held output was neither shown nor dropped"
            await asyncio.sleep(0.05)

    asyncio.run(relay())
    assert shown == []
    assert len(failures) == 1 and "another node closed this session" in str(failures[0])
    [chan] = query.get_session(query.open_index(tmp_path / "a"), s.id)["channels"]
    sealed = chunks.materialize(conn, chan["id"], tmp_path / "copy.cast", chan["sha256"])
    assert b"relayed after the takeover" not in sealed.read_bytes()
    local = tmp_path / "a" / chan["path"]
    assert local.read_bytes() == sealed.read_bytes()            # a's file is the sealed copy
    aside = local.with_name(local.name + ".after-takeover")     # a's own, for an investigation
    assert b"relayed after the takeover" in aside.read_bytes()
    s.close()
    rec.close()
    conn.close()
    report = verify_index(tmp_path / "a")
    assert report.ok, report.problems


def _compression(conn) -> tuple[str, list[str]]:
    """recording_chunks.data's compression setting ('l': lz4, '': the default, pglz) and the
    method each stored piece was compressed with (None: stored as is)."""
    (setting,) = conn.execute("SELECT attcompression FROM pg_attribute WHERE attrelid = "
                              "CAST('recording_chunks' AS regclass) AND attname = 'data'").fetchone()
    pieces = [r[0] for r in conn.execute(
        'SELECT pg_column_compression(data) FROM recording_chunks ORDER BY channel_id, "offset"')]
    return setting, pieces


def test_recordings_are_stored_with_lz4_and_a_store_before_it_is_upgraded(tmp_path, pg_store):
    text = b"".join(b"2026-12-07 01:%02d web1 nginx: GET /index.html 200 %d\n" % (i % 60, i)
                    for i in range(3000))            # compressible log text, ~150 KB
    rec = Recorder.open(tmp_path)
    s = rec.start_session(principal=AGENT, client="127.0.0.1:1", target="web1", login="deploy")
    ch = s.open_channel("exec", command="cat app.log")
    ch.output(text)
    rec.flush()
    conn = schema.connect(tmp_path)
    setting, pieces = _compression(conn)
    assert setting == "l" and "lz4" in pieces and "pglz" not in pieces, (setting, pieces)
    # the store as migration 11 left it: pieces already stored with pglz
    conn.execute("ALTER TABLE recording_chunks ALTER COLUMN data SET COMPRESSION pglz")
    conn.execute("DROP TABLE transfer_copies")        # migration 14's
    undo_migration_15(conn)                           # and migration 15's
    conn.execute("UPDATE schema_version SET version = 11")
    ch.output(text)                                   # stored with pglz meanwhile
    ch.close(exit_status=0)
    s.close()
    rec.close()
    assert _compression(conn)[1].count("pglz") >= 1
    conn.close()
    rec = Recorder.open(tmp_path)                     # migrates to 12
    s = rec.start_session(principal=AGENT, client="127.0.0.1:2", target="web1", login="deploy")
    ch = s.open_channel("exec", command="cat app.log")
    ch.output(text)
    ch.close(exit_status=0)
    s.close()
    rec.close()
    conn = schema.connect(tmp_path, readonly=True)
    setting, pieces = _compression(conn)
    assert conn.execute("SELECT version FROM schema_version").fetchone()[0] == \
        pgschema.SCHEMA_VERSION
    conn.close()
    assert setting == "l" and pieces.count("pglz") >= 1 and pieces[-1] != "pglz", pieces
    db = query.open_index(tmp_path)
    for row in db.conn.execute("SELECT id FROM sessions ORDER BY id"):
        (chan,) = query.get_session(db, row[0])["channels"]
        assert chan["sha256"]                      # both kinds read back whole: verify below
    assert verify_index(tmp_path).ok


def test_sessions_list_by_node_takes_a_name_with_its_workers_or_a_glob(tmp_path, pg_store,
                                                                       monkeypatch):
    import os
    import subprocess
    import sys
    from pathlib import Path
    ids = {}
    for node in ("a", "a-w1", "a-w2", "ab", "b-w1"):
        monkeypatch.setenv("BASTION_NODE", node)
        rec = Recorder.open(tmp_path / node)
        ids[node] = record_session(rec, "web1", ["uptime"])
        rec.close()
    db = query.open_index(tmp_path)

    def listed(node):
        return sorted(r["node"] for r in query.list_sessions(db, node=node))
    assert listed("a") == ["a", "a-w1", "a-w2"]          # not "ab": its workers, not a prefix
    assert listed("a-w2") == ["a-w2"]
    assert listed("a*") == ["a", "a-w1", "a-w2", "ab"]   # a glob is taken as it is
    assert listed("b") == ["b-w1"]
    assert listed("c") == []
    assert len(query.list_sessions(db)) == 5
    bastion = str(Path(sys.executable).with_name("bastion"))
    wide = subprocess.run([bastion, "sessions", "list", "--node", "b", "--wide"],
                          env=dict(os.environ, COLUMNS="200"), capture_output=True, text=True,
                          timeout=60)
    assert wide.returncode == 0, wide.stderr
    assert "1 session(s)" in wide.stdout and wide.stdout.rstrip().endswith("b-w1")
    assert " node" in wide.stdout.splitlines()[2]          # the header names the column
    monkeypatch.delenv("BASTION_STORE_URL")                 # SQLite: one node, no --node
    (tmp_path / "lite").mkdir()
    Recorder.open(tmp_path / "lite").close()
    with pytest.raises(Exception, match="sessions have no node on SQLite"):
        query.list_sessions(query.open_index(tmp_path / "lite"), node="a")


def test_a_takeover_expires_the_approvals_the_dead_nodes_session_waited_for(tmp_path, pg_store,
                                                                           monkeypatch):
    """A command held for approval on node a never runs once a's session is taken over: its
    request ends expired (via node-gone) in the takeover's transaction, so an approver on
    another node is not asked to answer it; another session's request stays pending."""
    import time as _time

    from bastion.approvals.model import EXPIRED, VIA_NODE_GONE
    from bastion.approvals.store import ApprovalStore
    from bastion.errors import ApprovalError
    from bastion.recording import leases
    from tests.approvalkit import proven
    from tests.integration.test_store_import import ALICE, REVIEW

    monkeypatch.setenv("BASTION_NODE", "a")
    rec = Recorder.open(tmp_path / "a")
    s = rec.start_session(principal=AGENT, client="127.0.0.1:1", target="web1", login="deploy")
    ch = s.open_channel("exec", command="systemctl restart nginx")
    rec.flush()
    approvals = ApprovalStore.open(tmp_path / "a")

    def request(node, session_id):
        return approvals.create(node=node, principal=AGENT, target="web1", login="deploy",
                                line="systemctl restart nginx", decision=REVIEW,
                                session_id=session_id, command_id=None, channel="exec",
                                timeout=300.0, grant_check=lambda g: True)
    held = request("a", s.id)
    other = request("c", s.id + 1)                      # another node's session: untouched
    monkeypatch.setenv("BASTION_NODE", "b")
    conn = schema.connect(tmp_path / "b")
    try:
        assert leases.take_over(conn, 60.0, now=_time.time() + 3600) == [s.id]
        gone, kept = approvals.get(held.id), approvals.get(other.id)
        assert (gone.status, gone.via) == (EXPIRED, VIA_NODE_GONE)
        assert "node a stopped answering" in gone.answer_reason
        assert "marked interrupted by node b" in gone.answer_reason
        assert kept.status == "pending"
        alice = proven(ALICE, now=_time.time())
        with pytest.raises(ApprovalError, match="not pending|no longer pending|expired"):
            approvals.answer(held.id, alice, approve=True, reason="too late",
                             approvers=("role:sre-leads",))         # nobody can approve it now
        assert approvals.get(held.id).status == "expired"
        approvals.answer(other.id, alice, approve=True, reason="in time",
                         approvers=("role:sre-leads",))          # the live one still can be
        assert approvals.get(other.id).status == "approved"
    finally:
        conn.close()
        approvals.close()
        ch.close(exit_status=0)
        s.close()
        rec.close()
