"""Stored copies of transferred files (``store_transfers``) in the PostgreSQL store
(migration 14, bastion.store.transfercopies): the real Recorder and its worker write a copy
made by the real ContentCapture into the store with its transfers row; another node's data
dir reads it back; a copy changed before the worker reads it fails the worker and the row
then says the copy was lost; prune deletes copies with their sessions; verify finds a changed
piece; ``bastion store import`` uploads a one-node source's copies under the transfers' ids
in the store, renumbered or not.  A private PostgreSQL cluster (tests/pgcluster.py)."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from pathlib import Path

import pytest

from bastion.errors import RecordingError
from bastion.proto.masker import BUILTIN
from bastion.recording import Recorder, importer, query, schema
from bastion.recording.content import ContentCapture
from bastion.recording.transfers import TransferRow, record_transfer
from bastion.recording.verify import prune, verify_index
from bastion.store import transfercopies
from tests.integration.recordkit import AGENT
from tests.integration.test_store_import import STORE_VARS

pytestmark = pytest.mark.integration

SECRET = b"AKIAQ3EGXMPL4KZ7RT2W"
BODY = b"[default]\naws_access_key_id = " + SECRET + b"\nregion = eu-west-1\n"


def _transfer(rec: Recorder, body: bytes = BODY, *, tamper: bool = False) -> tuple[int, dict]:
    """One sftp session with one put whose copy is captured as the relay does (masked, the
    file closed before the row is queued).  ``tamper``: the copy's first byte is changed
    (same size) between its close and the row's queueing.  (session id, content JSON)."""
    s = rec.start_session(principal=AGENT, client="127.0.0.1:1", target="files1", login="deploy")
    ch = s.open_channel("sftp")
    rec.flush()                          # the worker made the recording's dir (as in serve)
    capture = ContentCapture(rec.data_dir, ch.path, BUILTIN, 1 << 20)
    capture.feed(body)
    content = capture.close(complete=True)
    info = json.loads(content)
    if tamper:
        path = rec.data_dir / info["path"]
        path.write_bytes(b"#" + path.read_bytes()[1:])
    record_transfer(ch, TransferRow("put", "/srv/up/credentials", "ok", "allow", "up", "why",
                                    nbytes=len(body), sha256=hashlib.sha256(body).hexdigest(),
                                    content=content))
    ch.close(exit_status=0)
    s.close()
    return s.id, info


def _row(data_dir: Path, session_id: int) -> dict:
    db = query.open_index(data_dir)
    [row] = list(db.query("SELECT * FROM transfers WHERE session_id = ?", [session_id]))
    return dict(row)


def test_the_worker_stores_the_copy_with_its_row_and_any_node_reads_it(tmp_path, pg_store,
                                                                       monkeypatch):
    monkeypatch.setenv("BASTION_NODE", "node-a")
    rec = Recorder.open(tmp_path / "a")
    sid, info = _transfer(rec)
    rec.flush()
    rec.close()
    local = (tmp_path / "a" / info["path"]).read_bytes()
    assert SECRET not in local and b"[MASKED:aws-access-key-id]" in local
    row = _row(tmp_path / "a", sid)
    conn = schema.connect(tmp_path / "a", readonly=True)
    try:
        assert transfercopies.read(conn, row["id"]) == local      # committed with the row
    finally:
        conn.close()
    # another node: its own (empty) data dir, the same store
    monkeypatch.setenv("BASTION_NODE", "node-b")
    (tmp_path / "b").mkdir()
    data, got = query.transfer_content(tmp_path / "b", row)
    assert data == local and got["sha256"] == hashlib.sha256(local).hexdigest()
    # node a's file gone: node a reads the store's copy too
    (tmp_path / "a" / info["path"]).unlink()
    assert query.transfer_content(tmp_path / "a", row)[0] == local
    report = verify_index(tmp_path / "b")
    assert report.ok, report.problems
    assert report.copies == 1


def test_a_copy_changed_before_the_worker_reads_it_fails_closed_and_the_row_says_so(
        tmp_path, pg_store):
    rec = Recorder.open(tmp_path)
    sid, info = _transfer(rec, tamper=True)
    with pytest.raises(RecordingError, match="storing transfer content"):
        rec.flush()                              # the worker failed: nothing acknowledged
    assert rec.wait_state("failed") == "failed"
    assert "storing transfer content" in (rec.error or "")
    rec.retry_now()                              # the next worker replays the row
    assert rec.wait_state("ok") == "ok"
    rec.flush()
    rec.close()
    row = _row(tmp_path, sid)
    stored = json.loads(row["content"])
    assert "changed after it was written: its SHA-256" in stored["lost"]
    assert {k: stored[k] for k in info} == info                  # the link itself is kept
    conn = schema.connect(tmp_path, readonly=True)
    try:
        assert transfercopies.read(conn, row["id"]) is None
    finally:
        conn.close()
    with pytest.raises(RecordingError, match="never reached the store"):
        query.transfer_content(tmp_path / "elsewhere", row)
    assert rec.status()["failures"] == 1
    conn = schema.connect(tmp_path, readonly=True)
    try:                      # the failed worker's insert of row and pieces was taken back
        assert conn.execute("SELECT COUNT(*) FROM transfers").fetchone()[0] == 1
        assert conn.execute("SELECT COUNT(*) FROM transfer_copies").fetchone()[0] == 0
    finally:
        conn.close()
    report = verify_index(tmp_path)          # the changed file is still this node's to find
    assert [(p.kind, p.table, p.row_id) for p in report.problems] == \
        [("file-modified", "transfers", row["id"])]
    (tmp_path / info["path"]).unlink()
    [problem] = verify_index(tmp_path).problems
    assert problem.kind == "file-missing" and f"transfer {row['id']}" in problem.message
    assert "in neither the store nor this data dir" in problem.message


def test_prune_deletes_the_stored_copies_with_their_sessions(tmp_path, pg_store):
    rec = Recorder.open(tmp_path)
    first, _ = _transfer(rec)
    rec.flush()
    kept, _ = _transfer(rec, b"a later file\n")
    rec.flush()
    rec.close()
    conn = schema.connect(tmp_path, readonly=True)
    try:
        ended = conn.execute("SELECT ended FROM sessions WHERE id = ?", (first,)).fetchone()[0]
        later = conn.execute("SELECT started FROM sessions WHERE id = ?", (kept,)).fetchone()[0]
        ids = {r[0]: r[1] for r in conn.execute("SELECT session_id, id FROM transfers")}
    finally:
        conn.close()
    cutoff = (ended + later) / 2
    report = prune(tmp_path, older_than=86400.0, now=cutoff + 86400.0)
    assert report.sessions == 1
    conn = schema.connect(tmp_path, readonly=True)
    try:
        assert transfercopies.read(conn, ids[first]) is None
        left = conn.execute("SELECT DISTINCT transfer_id FROM transfer_copies").fetchall()
        assert [r[0] for r in left] == [ids[kept]]
    finally:
        conn.close()
    assert verify_index(tmp_path).ok


def test_verify_finds_a_changed_piece_and_names_the_transfer(tmp_path, pg_store):
    rec = Recorder.open(tmp_path)
    sid, info = _transfer(rec)
    rec.flush()
    rec.close()
    tid = _row(tmp_path, sid)["id"]
    conn = schema.connect(tmp_path)
    conn.execute("UPDATE transfer_copies SET data = CAST(? AS bytea) WHERE transfer_id = ?",
                 (b"forged\n", tid))
    conn.close()
    report = verify_index(tmp_path)
    assert not report.ok
    [problem] = report.problems
    assert problem.kind == "file-modified" and problem.table == "transfers"
    assert problem.row_id == tid and f"transfer {tid}" in problem.message
    assert "in the store was modified" in problem.message
    # the reader refuses it too once this node's file is gone
    (tmp_path / info["path"]).unlink()
    with pytest.raises(RecordingError, match="store's copy .* was modified"):
        query.transfer_content(tmp_path, _row(tmp_path, sid))


# -- bastion store import ----------------------------------------------------------------

def _source(tmp_path: Path, monkeypatch, body: bytes) -> tuple[Path, dict]:
    """A one-node SQLite data dir with one put and its copy; (data dir, source row)."""
    data = tmp_path / "old"
    with monkeypatch.context() as m:
        for name in STORE_VARS:
            m.delenv(name, raising=False)
        rec = Recorder.open(data)
        sid, _ = _transfer(rec, body)
        rec.flush()
        rec.close()
    lite = sqlite3.connect(data / "index.sqlite")
    lite.row_factory = sqlite3.Row
    row = dict(lite.execute("SELECT * FROM transfers WHERE session_id = ?", (sid,)).fetchone())
    lite.close()
    return data, row


def _copies(tmp_path: Path) -> dict[int, bytes]:
    conn = schema.connect(tmp_path / "reader")          # migrates a store a dry run left bare
    try:
        return {int(r[0]): transfercopies.read(conn, int(r[0])) or b"" for r in
                conn.execute("SELECT DISTINCT transfer_id FROM transfer_copies")}
    finally:
        conn.close()


def test_import_uploads_the_copies_under_the_transfers_ids(tmp_path, pg_store, monkeypatch):
    data, row = _source(tmp_path, monkeypatch, BODY)
    copy = (data / json.loads(row["content"])["path"]).read_bytes()
    (tmp_path / "reader").mkdir()
    dry = importer.import_data_dir(data, dry_run=True)
    assert (dry.copies, dry.copy_bytes) == (1, len(copy))
    assert _copies(tmp_path) == {}                                # dry: nothing written
    done = importer.import_data_dir(data)
    assert done.copies == 1 and not done.renumbered
    assert _copies(tmp_path) == {row["id"]: copy}
    moved = _row(tmp_path / "reader", row["session_id"])
    assert query.transfer_content(tmp_path / "reader", moved)[0] == copy
    assert verify_index(tmp_path / "reader").ok


def test_a_renumbered_import_reaches_the_copy_by_the_new_id(tmp_path, pg_store, monkeypatch):
    rec = Recorder.open(tmp_path / "node")          # the store's own transfer takes id 1
    own_sid, _ = _transfer(rec, b"the store's own file\n")
    rec.flush()
    rec.close()
    data, row = _source(tmp_path, monkeypatch, BODY)
    copy = (data / json.loads(row["content"])["path"]).read_bytes()
    (tmp_path / "reader").mkdir()
    own = _row(tmp_path / "reader", own_sid)
    assert own["id"] == row["id"]                   # the source's id is taken in the store
    done = importer.import_data_dir(data, while_serving=True)    # the node's heartbeat
    [run] = [r for r in done.renumbered if r["table"] == "transfers"]
    new_id = run["new_first"]
    assert new_id != row["id"]
    copies = _copies(tmp_path)
    assert copies[new_id] == copy and copies[own["id"]] != copy
    moved = query.get_transfer(query.open_index(tmp_path / "reader"), new_id)
    assert query.transfer_content(tmp_path / "reader", moved)[0] == copy
    assert query.transfer_content(tmp_path / "reader", own)[0] == b"the store's own file\n"
    report = verify_index(tmp_path / "node")        # the node's own recordings are there
    assert report.ok, report.problems
    assert report.copies == 2


def test_import_refuses_a_changed_copy_even_in_a_dry_run(tmp_path, pg_store, monkeypatch):
    data, row = _source(tmp_path, monkeypatch, BODY)
    path = data / json.loads(row["content"])["path"]
    path.write_bytes(path.read_bytes().replace(b"region", b"REGION"))     # same size
    for dry in (True, False):
        with pytest.raises(RecordingError, match=f"transfer {row['id']} in .*changed"):
            importer.import_data_dir(data, dry_run=dry)
    os.unlink(path)
    with pytest.raises(RecordingError, match="cannot be read"):
        importer.import_data_dir(data)
    (tmp_path / "reader").mkdir()
    conn = schema.connect(tmp_path / "reader")
    try:
        assert conn.execute("SELECT COUNT(*) FROM transfers").fetchone()[0] == 0
        assert conn.execute("SELECT COUNT(*) FROM transfer_copies").fetchone()[0] == 0
    finally:
        conn.close()
