"""``bastion store import``: a one-node data dir made by the real Recorder (SQLite), imported
through the real CLI into a PostgreSQL store on a private cluster (tests/pgcluster.py); the
store then answers list, search, export, play and verify as the source did; refusals write
nothing."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from bastion.approvals.model import Approver
from bastion.approvals.proof import verify_grant
from bastion.approvals.store import ApprovalStore
from bastion.policy import Action, Decision
from bastion.recording import Recorder
from bastion.recording.transfers import TransferRow, record_transfer
from bastion.recording.verify import prune
from bastion.store import pgschema
from tests.approvalkit import proven, rules
from tests.integration.recordkit import AGENT, record_session

pytestmark = pytest.mark.integration

BASTION = str(Path(sys.executable).parent / "bastion")
ALICE = Approver(subject="alice-oid", tenant="t1", name="Alice", roles=("sre-leads",))
REVIEW = Decision(Action.REVIEW, "restarts", "systemctl restart needs approval")
STORE_VARS = ("BASTION_STORE_URL", "BASTION_STORE_PASSWORD_FILE", "BASTION_NODE",
              "BASTION_POLICY")
#: what a re-seal changes by design (the store's chain position and hash), and the store's
#: own column; everything else must read back the same
RESEALED = {"seq", "hash", "node"}


def _sftp_session(rec: Recorder) -> int:
    s = rec.start_session(principal=AGENT, client="127.0.0.1:1", target="files1", login="deploy")
    ch = s.open_channel("sftp")
    record_transfer(ch, TransferRow("put", "/srv/app/x.tgz", "ok", "allow", "deploy",
                                    "writes /srv/app/x.tgz", nbytes=10, sha256="ab" * 32,
                                    duration=0.5))
    ch.close(exit_status=0)
    s.close()
    rec.flush()
    return s.id


def _make_source(data: Path) -> dict:
    """A one-node data dir: a pruned session (a checkpoint), exec sessions with allowed and
    denied commands, an sftp transfer, a refused login, an answered approval."""
    rec = Recorder.open(data)
    record_session(rec, "web0", ["uptime-old"])
    rec.flush()
    conn = sqlite3.connect(data / "index.sqlite")
    old_end = conn.execute("SELECT MAX(ended) FROM sessions").fetchone()[0]
    conn.close()
    s1 = record_session(rec, "web1", ["uptime", "df -h"])
    s2 = record_session(rec, "web2", ["rm -rf /tmp/x", "ls"])
    s3 = _sftp_session(rec)
    rec.refused(principal=None, client="10.0.0.9:2", target="web1", login="root",
                reason="bad token")
    rec.close()
    conn = sqlite3.connect(data / "index.sqlite")
    first_new = conn.execute("SELECT MIN(started) FROM sessions WHERE target = 'web1'").fetchone()[0]
    conn.close()
    cutoff = (old_end + first_new) / 2
    pruned = prune(data, older_than=86400.0, now=cutoff + 86400.0)
    assert pruned.sessions == 1 and pruned.checkpoint_seq
    approvals = ApprovalStore.open(data)
    request = approvals.create(node="old1", principal=AGENT, target="web1", login="deploy",
                               line="systemctl restart nginx", decision=REVIEW, session_id=s1,
                               command_id=None, channel="exec", timeout=300.0,
                               grant_check=lambda g: verify_grant(g, rules(), now=0))
    import time
    approvals.answer(request.id, proven(ALICE, now=time.time()), approve=True,
                     reason="ticket 9", approvers=("role:sre-leads",))
    approvals.close()
    return {"sessions": [s1, s2, s3]}


def _env(store: dict | None, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in STORE_VARS}
    env.update(store or {})
    env.update(extra)
    return env


def _run(env: dict, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([BASTION, *args], env=env, capture_output=True, text=True, timeout=120)
    if ok:
        assert done.returncode == 0, done.stderr
    return done


def _json(env: dict, *args: str):
    return json.loads(_run(env, *args, "--json").stdout)


def _strip(value):
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in RESEALED}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def _store_rows(pg: dict) -> dict[str, int]:
    """Rows in the store's tables (none at all: the store was never migrated)."""
    import psycopg
    password = Path(pg["BASTION_STORE_PASSWORD_FILE"]).read_text().strip()
    with psycopg.connect(pg["BASTION_STORE_URL"], password=password, autocommit=True) as conn:
        if conn.execute("SELECT to_regclass('sessions')").fetchone()[0] is None:
            return {}
        return {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
                for t in ("sessions", "channels", "commands", "transfers", "approvals",
                          "recording_chunks", "imports")}


@pytest.fixture
def source(tmp_path, pg_store, monkeypatch):
    for name in STORE_VARS:                      # the source is a one-node SQLite data dir
        monkeypatch.delenv(name, raising=False)
    data = tmp_path / "old"
    made = _make_source(data)
    for key, value in pg_store.items():
        monkeypatch.setenv(key, value)
    made["dir"] = data
    return made


def _views(env: dict, data: Path, sessions: list[int]) -> dict:
    """What a reviewer sees of ``sessions`` through the CLI: list, a search, each export, a
    play and one export as asciicast."""
    where = ("--data-dir", str(data))
    return {
        "list": _json(env, "sessions", "list", *where),
        "search": _json(env, "commands", "search", "uptime OR rm", "--raw", *where),
        "export": [_json(env, "sessions", "export", str(s), *where) for s in sessions],
        "play": _json(env, "sessions", "play", str(sessions[0]), *where),
        "cast": _run(env, "sessions", "export", str(sessions[1]), *where).stdout,
    }


def test_the_store_answers_as_the_source_did(tmp_path, source, pg_store):
    src, data = _env(None), source["dir"]
    before = _views(src, data, source["sessions"])
    before["verify"] = _json(src, "verify", "--data-dir", str(data))
    assert before["verify"]["ok"] and before["verify"]["start_seq"] > 0      # pruned: a checkpoint
    assert len(before["list"]) == 4 and len(before["search"]) == 2     # uptime-old was pruned

    done = _json(_env(pg_store), "store", "import", "--from", str(data), "--node", "old1")
    assert (done["sessions"], done["refused"], done["channels"], done["commands"],
            done["transfers"], done["approvals"], done["recordings"]) == (4, 1, 3, 4, 1, 1, 3)
    assert (done["source_head_seq"], done["source_head_hash"]) == \
        (before["verify"]["head"]["seq"], before["verify"]["head"]["hash"])
    assert done["source_start_seq"] == before["verify"]["start_seq"]
    assert done["source_start_hash"] == before["verify"]["checkpoint"]["hash"]
    assert done["node"] == "old1" and done["bytes"] > 0

    # another node, its own (empty) data dir: everything from the store
    other_dir = tmp_path / "node2"
    other_dir.mkdir()
    other = _env(pg_store, BASTION_NODE="node2")
    after = _views(other, other_dir, source["sessions"])
    for key in ("list", "search", "export", "play", "cast"):
        assert _strip(after[key]) == _strip(before[key]), key
    assert [s["id"] for s in after["list"]] == [s["id"] for s in before["list"]]
    assert before["play"][0]["events"] and "output of rm -rf /tmp/x" in before["cast"]
    # the chains tie: source seq s is store seq first + s - (source start + 1)
    shift = done["store_first_seq"] - done["source_start_seq"] - 1
    for old, new in zip(before["export"], after["export"], strict=True):
        assert new["seq"] == old["seq"] + shift
        assert [c["seq"] for c in new["commands"]] == [c["seq"] + shift for c in old["commands"]]
    assert all(s["id"] < pgschema.ID_BLOCK for s in after["list"])

    checked = _json(other, "verify", "--data-dir", str(other_dir))
    assert checked["ok"], checked["problems"]
    assert checked["rows_checked"] == before["verify"]["rows_checked"]
    assert checked["files_checked"] == 3 and checked["files_elsewhere"] == 0   # the store's copies
    assert checked["head"]["seq"] == done["store_last_seq"]
    assert checked["head"]["hash"] == done["store_head_hash"]
    # the node the sessions belong to checks its own files in the data dir
    own = _json(_env(pg_store, BASTION_NODE="old1"), "verify", "--data-dir", str(data))
    assert own["ok"] and own["files_checked"] == 3

    rows = _store_rows(pg_store)
    assert rows["approvals"] == 1 and rows["imports"] == 1 and rows["transfers"] == 1
    [kept] = _json(other, "store", "imports")
    assert (kept["source"], kept["source_head_seq"], kept["source_head_hash"],
            kept["source_start_seq"], kept["store_first_seq"], kept["store_last_seq"],
            kept["store_head_hash"]) == (done["source"], done["source_head_seq"],
                                         done["source_head_hash"], done["source_start_seq"],
                                         done["store_first_seq"], done["store_last_seq"],
                                         done["store_head_hash"])
    listed = _run(other, "store", "imports").stdout
    assert f"head seq {done['source_head_seq']} {done['source_head_hash']}" in listed
    import psycopg
    password = Path(pg_store["BASTION_STORE_PASSWORD_FILE"]).read_text().strip()
    with psycopg.connect(pg_store["BASTION_STORE_URL"], password=password) as conn:
        pg_approval = conn.execute("SELECT id, status, approver_subject, answer_reason, "
                                   "session_id FROM approvals").fetchall()
    lite = sqlite3.connect(data / "index.sqlite")
    assert [tuple(r) for r in pg_approval] == lite.execute(
        "SELECT id, status, approver_subject, answer_reason, session_id FROM approvals").fetchall()
    lite.close()

    # the store's own next rows do not collide with the imported ids
    rec = Recorder.open(tmp_path / "node3")
    sid = record_session(rec, "web3", ["hostname"])
    rec.close()
    assert sid > pgschema.ID_BLOCK
    approvals = ApprovalStore.open(tmp_path / "node3")
    fresh = approvals.create(node="node3", principal=AGENT, target="web3", login="deploy",
                             line="systemctl restart nginx", decision=REVIEW, session_id=sid,
                             command_id=None, channel="exec", timeout=300.0)
    approvals.close()
    assert fresh.id > pg_approval[0][0]
    assert _json(other, "verify", "--data-dir", str(other_dir))["ok"]


def test_a_second_import_is_refused(source, pg_store):
    env = _env(pg_store)
    first = _run(env, "store", "import", "--from", str(source["dir"]))
    print(first.stdout, first.stderr)
    assert "imported: 4 session(s) (1 refused login(s))" in first.stdout
    assert "source chain: starts at prune checkpoint seq" in first.stdout
    assert "store chain: the imported rows are seq 1.." in first.stdout
    assert "next: `bastion verify`" in first.stderr
    rows = _store_rows(pg_store)
    again = _run(env, "store", "import", "--from", str(source["dir"]), ok=False)
    assert again.returncode != 0
    assert "already imported at" in again.stderr
    assert _store_rows(pg_store) == rows
    dry = _run(env, "store", "import", "--from", str(source["dir"]), "--dry-run", ok=False)
    assert dry.returncode != 0 and "already imported at" in dry.stderr


def test_dry_run_counts_and_writes_nothing(source, pg_store):
    env = _env(pg_store)
    assert _store_rows(pg_store) == {}                       # never migrated
    dry = _json(env, "store", "import", "--from", str(source["dir"]), "--dry-run")
    assert dry["dry_run"] and (dry["sessions"], dry["commands"], dry["recordings"]) == (4, 4, 3)
    assert dry["store_first_seq"] is None
    assert _store_rows(pg_store) == {}
    bad = _run(env, "store", "import", "--from", str(source["dir"]), "--dry-run", "--node",
               "no such/node", ok=False)
    assert bad.returncode != 0 and "--node: node must be letters" in bad.stderr
    text = _run(env, "store", "import", "--from", str(source["dir"]), "--dry-run").stdout
    assert "would import: 4 session(s)" in text and "nothing was written" in text
    assert _store_rows(pg_store) == {}


def _tamper_recording(data: Path) -> None:
    conn = sqlite3.connect(data / "index.sqlite")
    (path,) = conn.execute("SELECT path FROM channels WHERE kind = 'exec' ORDER BY id "
                           "LIMIT 1").fetchone()
    conn.close()
    raw = bytearray((data / path).read_bytes())
    raw[-3] ^= 0x01
    (data / path).write_bytes(bytes(raw))


def _tamper_row(data: Path) -> None:
    conn = sqlite3.connect(data / "index.sqlite")
    conn.execute("UPDATE commands SET action = 'allow' WHERE action = 'deny'")
    conn.commit()
    conn.close()


@pytest.mark.parametrize("tamper", [_tamper_recording, _tamper_row])
def test_a_tampered_source_is_refused_with_nothing_written(source, pg_store, tamper):
    env = _env(pg_store)
    _run(env, "store", "import", "--from", str(source["dir"]), "--dry-run")
    tamper(source["dir"])
    for extra in ((), ("--dry-run",)):
        refused = _run(env, "store", "import", "--from", str(source["dir"]), *extra, ok=False)
        assert refused.returncode != 0
        assert "does not verify" in refused.stderr and "nothing was imported" in refused.stderr
        assert "bastion verify --data-dir" in refused.stderr
    assert _store_rows(pg_store) in ({}, {t: 0 for t in _store_rows(pg_store)})


def test_a_source_in_use_is_refused(source, pg_store, monkeypatch):
    env = _env(pg_store)
    for name in STORE_VARS:                       # `bastion serve` still records into it
        monkeypatch.delenv(name, raising=False)
    rec = Recorder.open(source["dir"])
    try:
        refused = _run(env, "store", "import", "--from", str(source["dir"]), ok=False)
    finally:
        rec.close()
    assert refused.returncode != 0
    assert "a bastion process is recording into" in refused.stderr
    assert "stop `bastion serve`" in refused.stderr
    assert _store_rows(pg_store) == {}


def test_a_source_with_a_session_left_active_is_refused(source, pg_store):
    # as a crash leaves it: the session row still active, not sealed
    conn = sqlite3.connect(source["dir"] / "index.sqlite")
    conn.execute("UPDATE sessions SET status = 'active', seq = NULL, hash = NULL, ended = NULL "
                 "WHERE id = ?", (source["sessions"][2],))
    conn.commit()
    conn.close()
    refused = _run(_env(pg_store), "store", "import", "--from", str(source["dir"]), ok=False)
    assert refused.returncode != 0
    assert "1 session(s)" in refused.stderr and "still active" in refused.stderr
    assert _store_rows(pg_store) == {}


def test_each_recording_is_checked_again_as_it_is_uploaded(source, pg_store):
    # a file changed after the source verified (nobody should: its lock is held) is still
    # caught by the SHA-256 of the bytes the store got, and the transaction rolls back
    from bastion.errors import RecordingError
    from bastion.recording import importer
    _tamper_recording(source["dir"])
    src = importer._open_source(source["dir"])
    try:
        src.execute("BEGIN")
        report = importer.ImportReport(source=str(source["dir"]), node="n1", dry_run=False)
        with pytest.raises(RecordingError, match="its SHA-256 is not the one sealed"):
            importer._copy(src, source["dir"], report)
    finally:
        src.close()
    assert set(_store_rows(pg_store).values()) == {0}


def test_without_a_store_configured_it_says_what_to_set(source, tmp_path):
    refused = _run(_env(None), "store", "import", "--from", str(source["dir"]), "--policy",
                   str(tmp_path / "none.toml"), ok=False)
    assert refused.returncode != 0
    assert "no PostgreSQL store is configured" in refused.stderr
    assert "BASTION_STORE_URL" in refused.stderr


def test_the_store_named_by_the_policy_is_used(source, tmp_path, pg_store):
    policy = tmp_path / "policy.toml"
    policy.write_text(f'[store]\nurl = "{pg_store["BASTION_STORE_URL"]}"\n'
                      f'password_file = "{pg_store["BASTION_STORE_PASSWORD_FILE"]}"\n'
                      'node = "old1"\n')
    done = _json(_env(None), "store", "import", "--from", str(source["dir"]), "--policy",
                 str(policy))
    assert done["node"] == "import" and done["sessions"] == 4
    assert _store_rows(pg_store)["sessions"] == 4
    # no node's sessions: this node (old1, [store] node) checks them in the store, and its
    # data dir has none of their files
    empty = tmp_path / "empty"
    empty.mkdir()
    checked = _json(_env(None, BASTION_POLICY=str(policy)), "verify", "--data-dir", str(empty))
    assert checked["ok"] and checked["files_checked"] == 3, checked["problems"]


def test_a_store_a_node_serves_on_is_refused_unless_asked(source, pg_store, tmp_path):
    from bastion.recording import leases, schema
    conn = schema.connect(tmp_path / "serving")        # a node's recording worker beats
    leases.beat(conn)
    conn.close()
    env = _env(pg_store)
    for extra in (("--dry-run",), ()):
        refused = _run(env, "store", "import", "--from", str(source["dir"]), *extra, ok=False)
        assert refused.returncode != 0
        assert "1 node(s) serve on this store" in refused.stderr and "test-node" in refused.stderr
    assert _store_rows(pg_store)["sessions"] == 0
    done = _json(env, "store", "import", "--from", str(source["dir"]), "--while-serving")
    assert done["sessions"] == 4 and _store_rows(pg_store)["sessions"] == 4


def test_rows_in_many_batches_and_windows_seal_the_same_chain(source, pg_store, monkeypatch):
    # the batching and the windowed read-back, with sizes that split this small source
    from bastion.recording import importer
    from bastion.recording.verify import verify_index
    monkeypatch.setattr(importer, "BATCH", 2)
    monkeypatch.setattr(importer, "WINDOW", 3)
    report = importer.import_data_dir(source["dir"])
    assert (report.store_first_seq, report.store_last_seq) == (1, 12)
    checked = verify_index(source["dir"])
    assert checked.ok, checked.problems
    assert (checked.rows, checked.files, checked.head_hash) == (12, 3, report.store_head_hash)
