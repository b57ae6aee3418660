"""``bastion store import`` into a store already in use: a store nodes recorded sessions,
transfers and approvals on, and a second one-node source after a first.  Ids the store has
are renumbered (bastion.recording.renumber), every reference moves with them, the map is
kept and shown; real Recorder and ApprovalStore on both sides, the real CLI as processes,
a private PostgreSQL cluster (tests/pgcluster.py)."""

from __future__ import annotations

import shutil
import sqlite3
import time
from pathlib import Path

import psycopg
import pytest

from bastion.approvals.proof import verify_grant
from bastion.approvals.store import ApprovalStore
from bastion.recording import Recorder
from bastion.store import pgschema
from tests.approvalkit import proven, rules
from tests.integration.recordkit import AGENT, record_session
from tests.integration.test_store_pg import _undo_first_token
from tests.integration.test_store_import import (ALICE, RESEALED, REVIEW, STORE_VARS, _env,
                                                 _json, _run, _sftp_session, _store_rows, _strip)
from tests.pgcluster import undo_migration_15

pytestmark = pytest.mark.integration

# RESEALED (test_store_import): what differs by design between a source's export and the
# store's -- ids and recording paths are compared through the map instead


def _one_node(data: Path, name: str) -> dict:
    """A one-node data dir, ids from 1: two exec sessions, an sftp session, a refused login,
    an approval of a command approved with a grant window and a second one the window
    approved (``granted_by``).  Lines carry ``name`` so a search tells the sources apart."""
    rec = Recorder.open(data)
    s1 = record_session(rec, f"{name}-web1", [f"uptime {name}", f"df -h {name}"])
    s2 = record_session(rec, f"{name}-web2", [f"rm -rf /tmp/{name}", f"ls {name}"])
    s3 = _sftp_session(rec)
    rec.refused(principal=None, client="10.0.0.9:2", target=f"{name}-web1", login="root",
                reason="bad token")
    rec.close()
    lite = sqlite3.connect(data / "index.sqlite")
    (cid,) = lite.execute("SELECT id FROM commands WHERE session_id = ? AND line = ?",
                          (s2, f"ls {name}")).fetchone()
    lite.close()
    approvals = ApprovalStore.open(data)
    first = approvals.create(node=name, principal=AGENT, target=f"{name}-web2", login="deploy",
                             line=f"systemctl restart {name}", decision=REVIEW, session_id=s2,
                             command_id=cid, channel="exec", timeout=300.0)
    approvals.answer(first.id, proven(ALICE, now=time.time()), approve=True, reason="ticket 9",
                     approvers=("role:sre-leads",), window=900, window_max=900)
    second = approvals.create(node=name, principal=AGENT, target=f"{name}-web2",
                              login="deploy", line=f"systemctl restart {name}",
                              decision=REVIEW, session_id=s2, command_id=cid, channel="exec",
                              timeout=300.0,
                              grant_check=lambda g: verify_grant(g, rules(), now=time.time()))
    approvals.close()
    assert (second.status, second.via, second.granted_by) == ("approved", "window", first.id)
    return {"dir": data, "sessions": [s1, s2, s3], "command": cid,
            "approvals": [first.id, second.id]}


def _make(monkeypatch, data: Path, name: str) -> dict:
    with monkeypatch.context() as m:             # a one-node SQLite data dir, no store
        for var in STORE_VARS:
            m.delenv(var, raising=False)
        return _one_node(data, name)


def _pg(pg_store: dict):
    password = Path(pg_store["BASTION_STORE_PASSWORD_FILE"]).read_text().strip()
    return psycopg.connect(pg_store["BASTION_STORE_URL"], password=password, autocommit=True)


def _source_rows(data: Path, table: str) -> list[dict]:
    lite = sqlite3.connect(data / "index.sqlite")
    lite.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in lite.execute(f"SELECT * FROM {table} ORDER BY id")]
    finally:
        lite.close()


def _store_row(pg_store: dict, table: str, rid: int) -> dict:
    with _pg(pg_store) as conn:
        cur = conn.execute(f"SELECT * FROM {table} WHERE id = %s", (rid,))
        row = cur.fetchone()
        assert row is not None, (table, rid)
        return dict(zip([d.name for d in cur.description], row, strict=True))


class Map:
    """The import's runs as a function: (table, old id) -> new id; a table not in the runs
    kept its ids."""

    def __init__(self, runs: list[dict]) -> None:
        self.runs = runs

    def __call__(self, table: str, old: int | None) -> int | None:
        if old is None:
            return None
        for r in self.runs:
            if r["table"] == table and r["old_first"] <= old <= r["old_last"]:
                return r["new_first"] + old - r["old_first"]
        assert all(r["table"] != table for r in self.runs), (table, old)
        return old


def _mapped_export(old: dict, ids: Map) -> dict:
    """A source session's export as the store must give it: every id through the map, a
    renumbered channel's recording under its new name, seq/hash/node left out."""
    def walk(value, table):
        if isinstance(value, list):
            return [walk(v, table) for v in value]
        if not isinstance(value, dict):
            return value
        out = {}
        for key, v in value.items():
            if key in RESEALED:
                continue
            if key == "id":
                v = ids(table, v)
            elif key in ("session_id", "session"):
                v = ids("sessions", v)
            elif key in ("channel_id", "channel") and isinstance(v, int):
                v = ids("channels", v)
            elif key in ("channels", "commands", "transfers"):
                v = walk(v, key)
            out[key] = v
        if table == "channels" and out.get("path") and ids("channels", value["id"]) != value["id"]:
            day = out["path"].rsplit("/", 1)[0]
            out["path"] = f"{day}/s{out['session_id']}-c{out['id']}.cast"
        return out
    return walk(old, "sessions")


def _reader(tmp_path: Path, pg_store: dict) -> tuple[dict, Path]:
    """Another node with an empty data dir: it reads everything from the store."""
    other = tmp_path / "reader"
    other.mkdir(exist_ok=True)
    return _env(pg_store, BASTION_NODE="reader"), other


def _check_source_in_store(made: dict, done: dict, reader: tuple[dict, Path],
                           pg_store: dict) -> Map:
    """Every session of ``made`` exports and plays from the store as from the source, under
    its (new) id; its approvals and transfer name the right rows."""
    env, other = reader
    src, data = _env(None), made["dir"]
    ids = Map(done["renumbered"])
    for sid in made["sessions"]:
        old = _json(src, "sessions", "export", str(sid), "--data-dir", str(data))
        new = _json(env, "sessions", "export", str(ids("sessions", sid)), "--data-dir",
                    str(other))
        assert _strip(new) == _mapped_export(old, ids), sid
        played = [_json(e, "sessions", "play", str(i), "--data-dir", str(d))
                  for e, i, d in ((src, sid, data), (env, ids("sessions", sid), other))]
        assert _strip(played[1]) == _mapped_export(played[0], ids)
    # approvals: the same requests and answers, naming the renumbered session, command and
    # the request whose window approved the second
    for old in _source_rows(data, "approvals"):
        new = _store_row(pg_store, "approvals", ids("approvals", old["id"]))
        for key in ("session_id", "command_id"):
            assert new[key] == ids(key.replace("_id", "s"), old[key])
        assert new["granted_by"] == ids("approvals", old["granted_by"])
        assert {k: v for k, v in new.items() if k not in ("id", "session_id", "command_id",
                                                           "granted_by")} == \
            {k: v for k, v in old.items() if k not in ("id", "session_id", "command_id",
                                                       "granted_by")}
    command = _store_row(pg_store, "commands", ids("commands", made["command"]))
    assert command["line"] == _source_rows(data, "commands")[made["command"] - 1]["line"]
    assert command["session_id"] == ids("sessions", made["sessions"][1])
    # the transfer: the same operation, in the renumbered sftp session and channel
    [old_t] = _source_rows(data, "transfers")
    new_t = _store_row(pg_store, "transfers", ids("transfers", old_t["id"]))
    assert (new_t["uid"], new_t["path"], new_t["op"]) == (old_t["uid"], old_t["path"],
                                                          old_t["op"])
    assert new_t["session_id"] == ids("sessions", made["sessions"][2])
    channel = _store_row(pg_store, "channels", new_t["channel_id"])
    assert (channel["kind"], channel["session_id"]) == ("sftp", new_t["session_id"])
    return ids


def test_import_into_a_store_nodes_recorded_on(tmp_path, pg_store, monkeypatch):
    # a month on the store: node n1 recorded sessions, a transfer, an approval
    rec = Recorder.open(tmp_path / "n1")
    n1 = [record_session(rec, "store-web", ["hostname store"]), _sftp_session(rec)]
    rec.close()
    node_approvals = ApprovalStore.open(tmp_path / "n1")
    mine = node_approvals.create(node="n1", principal=AGENT, target="store-web",
                                 login="deploy", line="systemctl restart store",
                                 decision=REVIEW, session_id=n1[0], command_id=None,
                                 channel="exec", timeout=300.0)
    node_approvals.close()
    with _pg(pg_store) as conn:
        node_transfer = conn.execute("SELECT id, uid, session_id FROM transfers").fetchone()
        # the node stopped a minute ago (its last heartbeat then): the import may run
        conn.execute("UPDATE nodes SET seen = seen - 60")
    assert all(s > pgschema.ID_BLOCK for s in n1) and (mine.id, node_transfer[0]) == (1, 1)

    made = _make(monkeypatch, tmp_path / "old", "old")
    env = _env(pg_store)
    dry = _json(env, "store", "import", "--from", str(made["dir"]), "--dry-run")
    assert [(r["table"], r["old_first"], r["old_last"], r["new_first"], r["rows"])
            for r in dry["renumbered"]] == [("transfers", 1, 1, None, 1),
                                            ("approvals", 1, 2, None, 2)]
    text = _run(env, "store", "import", "--from", str(made["dir"])).stdout
    assert "1 transfers renumbered: 1 is now 2" in text
    assert "2 approvals renumbered: 1-2 are now 2-3" in text
    [done] = _json(env, "store", "imports")
    # sessions, channels and commands kept the ids reviewers know: the nodes' are in blocks
    assert {r["table"] for r in done["renumbered"]} == {"transfers", "approvals"}
    reader = _reader(tmp_path, pg_store)
    ids = _check_source_in_store(made, done, reader, pg_store)
    assert [ids("sessions", s) for s in made["sessions"]] == made["sessions"]

    # the node's own rows are untouched, and everything from both is listed and searched
    assert _store_row(pg_store, "approvals", 1)["session_id"] == n1[0]
    assert _store_row(pg_store, "transfers", 1)["uid"] == node_transfer[1]
    r_env, r_dir = reader
    listed = {s["id"] for s in _json(r_env, "sessions", "list", "--data-dir", str(r_dir))}
    assert listed == set(n1) | set(made["sessions"]) | {4}           # 4: the refused login
    found = _json(r_env, "commands", "search", "store OR old", "--raw", "--data-dir",
                  str(r_dir))
    assert sorted(h["line"] for h in found) == ["df -h old", "hostname store", "ls old",
                                                "rm -rf /tmp/old", "uptime old"]
    moved = _json(r_env, "transfers", "search", "--data-dir", str(r_dir))
    assert sorted((t["id"], t["session_id"]) for t in moved) == \
        [(1, node_transfer[2]), (2, made["sessions"][2])]
    checked = _json(r_env, "verify", "--data-dir", str(r_dir))
    assert checked["ok"], checked["problems"]
    assert checked["files_checked"] == 5                    # 2 of the node's, 3 imported

    # the store's next approval and transfer come after the renumbered ones
    approvals = ApprovalStore.open(tmp_path / "n1")
    fresh = approvals.create(node="n1", principal=AGENT, target="store-web", login="deploy",
                             line="systemctl restart store", decision=REVIEW,
                             session_id=n1[0], command_id=None, channel="exec",
                             timeout=300.0)
    approvals.close()
    assert fresh.id == 4


def test_two_one_node_sources_one_after_the_other(tmp_path, pg_store, monkeypatch):
    a = _make(monkeypatch, tmp_path / "bastion-a", "alpha")
    b = _make(monkeypatch, tmp_path / "bastion-b", "beta")
    env = _env(pg_store)
    first = _json(env, "store", "import", "--from", str(a["dir"]))
    assert first["renumbered"] == []                       # a fresh store: ids kept
    rows = _store_rows(pg_store)

    # --node would leave the renamed recordings out of the copied data dir: refused
    refused = _run(env, "store", "import", "--from", str(b["dir"]), "--node", "b1", ok=False)
    assert refused.returncode != 0 and "--node b1: the store has ids of the source's " \
        "sessions and channels" in refused.stderr and "nothing was imported" in refused.stderr
    assert _store_rows(pg_store) == rows

    text = _run(env, "store", "import", "--from", str(b["dir"])).stdout
    second = _json(env, "store", "imports")[1]
    runs = {r["table"]: r for r in second["renumbered"]}
    assert list(runs) == ["sessions", "channels", "commands", "transfers", "approvals"]
    base = runs["sessions"]["new_first"] - 1
    assert base % pgschema.ID_BLOCK == 0 and base >= pgschema.ID_BLOCK    # a block of its own
    assert [(r["old_first"], r["old_last"], r["new_first"] - base, r["rows"])
            for r in (runs["sessions"], runs["channels"], runs["commands"])] == \
        [(1, 4, 1, 4), (1, 3, 1, 3), (1, 4, 1, 4)]
    assert [(r["old_first"], r["old_last"], r["new_first"]) for r in
            (runs["transfers"], runs["approvals"])] == [(1, 1, 2), (1, 2, 3)]
    assert f"4 sessions renumbered: 1-4 are now {base + 1}-{base + 4}" in text
    assert "2 approvals renumbered: 1-2 are now 3-4" in text

    reader = _reader(tmp_path, pg_store)
    for made, done in ((a, first), (b, second)):
        _check_source_in_store(made, done, reader, pg_store)
    # a node whose data dir is a copy of bastion-a's (its files at the paths a's channels
    # name) plays b's renumbered sessions from the store, not a's files of the same old ids
    copy = tmp_path / "copy-of-a"
    shutil.copytree(a["dir"], copy)
    _check_source_in_store(b, second, (reader[0], copy), pg_store)
    ids = Map(second["renumbered"])
    r_env, r_dir = reader
    # a's ids still name a's rows; b's old ids are followed through the map
    hits = _json(r_env, "commands", "search", "beta", "--data-dir", str(r_dir))
    assert sorted((h["session_id"], h["line"]) for h in hits) == sorted(
        (ids("sessions", s), line) for s, line in ((1, "uptime beta"), (1, "df -h beta"),
                                                   (2, "rm -rf /tmp/beta"), (2, "ls beta")))
    assert _json(r_env, "sessions", "export", "1", "--data-dir", str(r_dir))["target"] == \
        "alpha-web1"
    checked = _json(r_env, "verify", "--data-dir", str(r_dir))
    assert checked["ok"], checked["problems"]
    assert checked["files_checked"] == 6 and checked["files_elsewhere"] == 0

    listed = _run(r_env, "store", "imports").stdout
    assert "  ids: every id kept" in listed
    assert f"  ids: 3 channels renumbered: 1-3 are now {base + 1}-{base + 3}" in listed
    # a ticket that names session 2 of bastion-b, or approval 2, is followed to the store's
    where = _run(r_env, "store", "imports", "--old", "session:2").stdout.splitlines()
    assert where == [f"import 1 from {a['dir']}: kept its sessions' ids: session 2, if it came "
                     "from there",
                     f"import 2 from {b['dir']}: session 2 is now session {base + 2}"]
    assert [(f["how"], f["new"]) for f in _json(r_env, "store", "imports", "--old",
                                                "approvals:2")] == [("kept", 2), ("renumbered", 4)]
    bad = _run(r_env, "store", "imports", "--old", "widget:2", ok=False)
    assert bad.returncode != 0 and "is not TABLE:ID" in bad.stderr and "session" in bad.stderr
    # the same source again is still refused, with the map shown once
    again = _run(env, "store", "import", "--from", str(b["dir"]), ok=False)
    assert "already imported at" in again.stderr
    assert len(_json(env, "store", "imports")) == 2


def test_dry_run_says_what_would_move_and_writes_nothing(tmp_path, pg_store, monkeypatch):
    a = _make(monkeypatch, tmp_path / "bastion-a", "alpha")
    b = _make(monkeypatch, tmp_path / "bastion-b", "beta")
    env = _env(pg_store)
    _run(env, "store", "import", "--from", str(a["dir"]))

    def counters() -> tuple:
        with _pg(pg_store) as conn:
            return tuple(conn.execute(
                f"SELECT last_value FROM {seq}").fetchone()[0] for seq in (
                    "id_blocks", "transfers_id_seq", "approvals_id_seq")) + tuple(
                conn.execute("SELECT COUNT(*) FROM import_ids").fetchone())
    before, rows = counters(), _store_rows(pg_store)
    dry = _json(env, "store", "import", "--from", str(b["dir"]), "--dry-run")
    assert [(r["table"], r["old_first"], r["old_last"], r["new_first"], r["rows"])
            for r in dry["renumbered"]] == [
        ("sessions", 1, 4, None, 4), ("channels", 1, 3, None, 3), ("commands", 1, 4, None, 4),
        ("transfers", 1, 1, None, 1), ("approvals", 1, 2, None, 2)]
    text = _run(env, "store", "import", "--from", str(b["dir"]), "--dry-run").stdout
    assert "4 sessions would be renumbered (the store has some of their ids): 1-4" in text
    assert "nothing was written" in text
    assert (counters(), _store_rows(pg_store)) == (before, rows)    # not even an id claimed


def test_two_sources_that_recorded_nothing_are_two_sources(tmp_path, pg_store, monkeypatch):
    """Both chains end at the genesis; only the path tells them apart (and the same path twice
    is still refused)."""
    env = _env(pg_store)
    for name in ("empty-a", "empty-b"):
        with monkeypatch.context() as m:             # a one-node SQLite data dir, no store
            for var in STORE_VARS:
                m.delenv(var, raising=False)
            Recorder.open(tmp_path / name).close()
        done = _json(env, "store", "import", "--from", str(tmp_path / name))
        assert done["source_head_seq"] == 0 and done["sessions"] == 0
    again = _run(env, "store", "import", "--from", str(tmp_path / "empty-a"), ok=False)
    assert again.returncode != 0 and "was already imported" in again.stderr
    assert len(_json(env, "store", "imports")) == 2


def test_a_store_the_previous_release_imported_into_is_upgraded(tmp_path, pg_store,
                                                                 monkeypatch):
    # bastion-a imported by the previous release (schema 9: no import_ids); this one's
    # import of bastion-b migrates the store (10) and keeps b's map beside a's import
    a = _make(monkeypatch, tmp_path / "bastion-a", "alpha")
    b = _make(monkeypatch, tmp_path / "bastion-b", "beta")
    env = _env(pg_store)
    _run(env, "store", "import", "--from", str(a["dir"]))
    with _pg(pg_store) as conn:
        conn.execute("DROP TABLE import_ids")
        _undo_first_token(conn)                             # migration 11's too
        conn.execute("DROP TABLE transfer_copies")          # and 14's
        undo_migration_15(conn)                             # and migration 15's
        conn.execute("UPDATE schema_version SET version = 9")
    dry = _json(env, "store", "import", "--from", str(b["dir"]), "--dry-run")
    assert len(dry["renumbered"]) == 5
    with _pg(pg_store) as conn:                             # the dry run did not migrate
        assert conn.execute("SELECT version FROM schema_version").fetchone()[0] == 9
    second = _json(env, "store", "import", "--from", str(b["dir"]))
    with _pg(pg_store) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchone()[0] == \
            pgschema.SCHEMA_VERSION
    listed = _json(env, "store", "imports")
    assert [i["renumbered"] for i in listed] == [[], second["renumbered"]]
    _check_source_in_store(b, second, _reader(tmp_path, pg_store), pg_store)


def _pruned_with_an_approval(data: Path) -> None:
    """A one-node data dir whose approval names a session and command `bastion prune`
    deleted since (approvals outlive them): sessions 2.., the approval names session 1."""
    from bastion.recording.verify import prune
    rec = Recorder.open(data)
    old = record_session(rec, "gone-web", ["systemctl restart gone"])
    approvals = ApprovalStore.open(data)
    approvals.create(node="a", principal=AGENT, target="gone-web", login="deploy",
                     line="systemctl restart gone", decision=REVIEW, session_id=old,
                     command_id=1, channel="exec", timeout=300.0)
    approvals.close()
    lite = sqlite3.connect(data / "index.sqlite")
    old_end = lite.execute("SELECT MAX(ended) FROM sessions").fetchone()[0]
    lite.close()
    kept = record_session(rec, "kept-web", ["uptime kept"])
    rec.close()
    lite = sqlite3.connect(data / "index.sqlite")
    new_start = lite.execute("SELECT started FROM sessions WHERE id = ?", (kept,)).fetchone()[0]
    lite.close()
    cutoff = (old_end + new_start) / 2
    assert prune(data, older_than=86400.0, now=cutoff + 86400.0).sessions == 1


def test_an_id_an_imported_approval_still_names_is_not_given_to_another_source(
        tmp_path, pg_store, monkeypatch):
    with monkeypatch.context() as m:
        for var in STORE_VARS:
            m.delenv(var, raising=False)
        _pruned_with_an_approval(tmp_path / "bastion-a")
        rec = Recorder.open(tmp_path / "bastion-b")          # one session: id 1, command 1
        assert record_session(rec, "b-web", ["uptime b"]) == 1
        rec.close()
    env = _env(pg_store)
    assert _json(env, "store", "import", "--from", str(tmp_path / "bastion-a"))[
        "renumbered"] == []
    done = _json(env, "store", "import", "--from", str(tmp_path / "bastion-b"))
    # no row of a has session 1 or command 1, but a's approval names them: b's move
    assert [(r["table"], r["old_first"]) for r in done["renumbered"]] == [("sessions", 1),
                                                                          ("commands", 1)]
    with _pg(pg_store) as conn:
        assert conn.execute("SELECT session_id, command_id FROM approvals").fetchall() == \
            [(1, 1)]
        assert conn.execute("SELECT COUNT(*) FROM sessions WHERE id = 1").fetchone()[0] == 0
        assert conn.execute("SELECT COUNT(*) FROM commands WHERE id = 1").fetchone()[0] == 0
    ids = Map(done["renumbered"])
    r_env, r_dir = _reader(tmp_path, pg_store)
    assert _json(r_env, "sessions", "export", str(ids("sessions", 1)), "--data-dir",
                 str(r_dir))["target"] == "b-web"
    assert _json(r_env, "verify", "--data-dir", str(r_dir))["ok"]
