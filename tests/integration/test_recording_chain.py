"""Tamper evidence: verify names the first break; prune keeps the chain verifiable."""

from __future__ import annotations

import sqlite3

import pytest

from bastion.identity.principal import Principal
from bastion.policy import Action, Decision
from bastion.recording import Recorder, chain, query
from bastion.recording.verify import prune, verify_index

AGENT = Principal(subject="oid-agent", name="bot")
DAY = 86400.0


def make_session(rec: Recorder, target: str, lines: list[str], *, close: bool = True):
    s = rec.start_session(principal=AGENT, client="127.0.0.1:1", target=target, login="deploy")
    ch = s.open_channel("exec", command=lines[0])
    for line in lines:
        cid = ch.command(line, Decision(Action.ALLOW if "rm" not in line else Action.DENY, "r", "why"))
        ch.output(f"output of {line}\n".encode())
        ch.command_result(cid, 0)
    if close:
        ch.close(exit_status=0)
        s.close()
    rec.flush()
    return s, ch


@pytest.fixture
def populated(tmp_path):
    rec = Recorder.open(tmp_path)
    made = [make_session(rec, "web1", ["uptime", "df -h"]),
            make_session(rec, "web2", ["rm -rf /tmp/x", "ls"]),
            make_session(rec, "db1", ["psql -c 'select 1'"])]
    rec.refused(principal=None, client="10.0.0.9:2", target="web1", login="root", reason="bad token")
    rec.close()
    return tmp_path, made


def db(path):
    return sqlite3.connect(path / "index.sqlite", isolation_level=None)


def test_clean_index_verifies(populated):
    path, made = populated
    report = verify_index(path)
    assert report.ok, report.problems
    assert report.rows == 4 + 3 + 5          # sessions + channels + commands
    assert report.files == 3
    head_seq, head_hash = report.head_seq, report.head_hash
    assert head_seq == report.rows and len(head_hash) == 64


def test_modified_recording_byte_is_named(populated):
    path, made = populated
    _, ch = made[1]
    data = bytearray(ch.path.read_bytes())
    data[-5] ^= 0x01
    ch.path.write_bytes(bytes(data))
    report = verify_index(path)
    assert not report.ok
    assert report.first.kind == "file-modified"
    assert report.first.path == str(ch.path.relative_to(path))
    assert f"channel {ch.id} of session {made[1][0].id}" in report.first.message


def test_missing_recording_is_named(populated):
    path, made = populated
    made[0][1].path.unlink()
    report = verify_index(path)
    assert report.first.kind == "file-missing"


def test_modified_row_is_named(populated):
    path, made = populated
    conn = db(path)
    victim = conn.execute("SELECT id, seq FROM commands WHERE line = 'rm -rf /tmp/x'").fetchone()
    conn.execute("UPDATE commands SET action = 'allow' WHERE id = ?", (victim[0],))
    conn.close()
    report = verify_index(path)
    assert not report.ok
    assert (report.first.kind, report.first.table, report.first.row_id, report.first.seq) == \
        ("modified", "commands", victim[0], victim[1])
    assert len(report.problems) == 1


def test_rehashed_row_breaks_the_next_link(populated):
    """An attacker who recomputes the changed row's own hash still breaks the chain after it."""
    path, _ = populated
    conn = db(path)
    conn.row_factory = sqlite3.Row
    row = dict(conn.execute("SELECT * FROM commands WHERE line = 'rm -rf /tmp/x'").fetchone())
    prev = None
    for t in chain.CHAINED_TABLES:
        prev = prev or conn.execute(f"SELECT hash FROM {t} WHERE seq = ?", (row["seq"] - 1,)).fetchone()
    row["line"] = "ls -la"
    conn.execute("UPDATE commands SET line = ?, hash = ? WHERE id = ?",
                 ("ls -la", chain.row_hash(prev[0], "commands", row), row["id"]))
    conn.close()
    report = verify_index(path)
    assert not report.ok
    assert report.first.seq == row["seq"] + 1 and report.first.kind == "modified"


def test_deleted_row_is_a_gap(populated):
    path, _ = populated
    conn = db(path)
    rid, seq = conn.execute("SELECT id, seq FROM commands WHERE line = 'df -h'").fetchone()
    conn.execute("DELETE FROM commands WHERE id = ?", (rid,))
    conn.close()
    report = verify_index(path)
    assert report.first.kind == "gap"
    assert report.first.seq == seq and f"seq {seq} missing" in report.first.message


def test_deleted_tail_is_caught_by_the_head(populated):
    path, _ = populated
    conn = db(path)
    conn.execute("DELETE FROM sessions WHERE status = 'refused'")
    conn.close()
    report = verify_index(path)
    assert [p.kind for p in report.problems] == ["head"]


def test_unsealing_a_row_is_caught(populated):
    path, _ = populated
    conn = db(path)
    conn.execute("UPDATE commands SET seq = NULL, hash = NULL WHERE line = 'uptime'")
    conn.close()
    kinds = {p.kind for p in verify_index(path).problems}
    assert {"gap", "unsealed"} <= kinds


def test_prune_keeps_chain_verifiable(tmp_path):
    rec = Recorder.open(tmp_path)
    old = [make_session(rec, "web1", ["uptime"]), make_session(rec, "web2", ["reboot-old"])]
    rec.refused(principal=None, client="c", target="x", login="y", reason="old probe")
    rec.flush()
    conn = db(tmp_path)
    old_end = conn.execute("SELECT MAX(COALESCE(ended, started)) FROM sessions").fetchone()[0]
    conn.close()
    new = make_session(rec, "web3", ["uptime-new"])
    rec.close()
    conn = db(tmp_path)
    first_new = conn.execute("SELECT started FROM sessions WHERE id = ?", (new[0].id,)).fetchone()[0]
    conn.close()
    assert first_new > old_end
    cutoff = (old_end + first_new) / 2

    dry = prune(tmp_path, older_than=90 * DAY, now=cutoff + 90 * DAY, dry_run=True)
    assert dry.sessions == 3 and old[0][1].path.exists()
    report = prune(tmp_path, older_than=90 * DAY, now=cutoff + 90 * DAY)
    assert (report.sessions, report.files_deleted) == (3, 2)
    assert report.rows == 3 + 2 + 2
    assert not old[0][1].path.exists() and not old[1][1].path.exists()
    assert new[1].path.exists()

    verified = verify_index(tmp_path)
    assert verified.ok, verified.problems
    assert verified.start_seq == report.checkpoint_seq and verified.rows == 3
    idx = query.open_index(tmp_path)
    assert [s["id"] for s in query.list_sessions(idx)] == [new[0].id]
    assert query.search_commands(idx, "reboot") == []              # FTS entries gone too
    assert [c["line"] for c in query.search_commands(idx, "uptime*")] == ["uptime-new"]

    # ids are never reused after prune
    rec = Recorder.open(tmp_path)
    try:
        assert rec.start_session(principal=AGENT, client="c", target="t", login="l").id > new[0].id
    finally:
        rec.close()
    # tampering after the checkpoint is still caught
    conn = db(tmp_path)
    conn.execute("UPDATE commands SET line = 'whoami'")
    conn.close()
    assert verify_index(tmp_path).first.kind == "modified"


def test_prune_stops_at_an_active_session(tmp_path):
    rec = Recorder.open(tmp_path)
    live, _ = make_session(rec, "web1", ["tail -f log"], close=False)   # its command is sealed
    make_session(rec, "web2", ["uptime"])
    report = prune(tmp_path, older_than=1.0, now=10 ** 10)
    assert report.sessions == 0 and report.blocked_by == live.id
    live.close()
    rec.flush()
    report = prune(tmp_path, older_than=1.0, now=10 ** 10)
    assert report.sessions == 2
    assert verify_index(tmp_path).ok
    rec.close()
    assert verify_index(tmp_path).ok


def test_prune_while_recording(tmp_path):
    rec = Recorder.open(tmp_path)
    try:
        make_session(rec, "web1", ["one"])
        prune(tmp_path, older_than=1.0, now=10 ** 10)
        make_session(rec, "web1", ["two"])
        report = verify_index(tmp_path)
        assert report.ok and report.rows == 3
    finally:
        rec.close()


def test_prune_in_batches(tmp_path, monkeypatch):
    from bastion.recording import verify as verify_mod
    monkeypatch.setattr(verify_mod, "PRUNE_BATCH", 4)
    rec = Recorder.open(tmp_path)
    for i in range(6):
        make_session(rec, f"web{i}", [f"cmd{i}", f"other{i}"])
    rec.close()
    report = prune(tmp_path, older_than=1.0, now=10 ** 10)
    assert report.sessions == 6
    conn = db(tmp_path)
    assert conn.execute("SELECT COUNT(*) FROM checkpoints").fetchone()[0] > 1
    conn.close()
    assert verify_index(tmp_path).ok
