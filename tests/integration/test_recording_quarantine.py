"""An operation the index refuses for its own values is kept aside
(bastion.recording.quarantine): in the batch where it first fails, every row-writing
operation runs in a savepoint, so the refused one is rolled back alone, written to
DATA_DIR/quarantine and its channel stopped -- no worker failure, no replay, and no other
channel open on the node is stopped.

The operation is made through the public API with a value no SSH peer can send (a byte count
of 2^64: SQLite's driver cannot take it, PostgreSQL's bigint refuses it), standing for the
next hole nobody has found yet."""

from __future__ import annotations

import os
import signal
import stat
import time

import pytest

from bastion.errors import RecordingError
from bastion.metrics import METRICS
from bastion.policy import Action, Decision
from bastion.recording import Recorder, quarantine, query
from bastion.recording.transfers import TransferRow, record_transfer
from bastion.recording.verify import verify_index
from tests.integration.recordkit import AGENT, record_session


def test_an_unstorable_operation_stops_only_its_own_channel(tmp_path, backend, capfd):
    quarantined_before = METRICS.value("bastion_recording_quarantined_total")
    rec = Recorder.open(tmp_path, backoff=(0.05, 0.2))
    try:
        bystander = rec.start_session(principal=AGENT, client="127.0.0.1:1", target="web1",
                                      login="deploy")
        open_then = bystander.open_channel("exec", command="tail -f /var/log/app")
        open_then.output(b"before the refused operation\n")
        poisoned = rec.start_session(principal=AGENT, client="127.0.0.1:2", target="web1",
                                     login="deploy")
        ch = poisoned.open_channel("sftp", command=None)
        record_transfer(ch, TransferRow("put", "/srv/up/x", "ok", "allow", "up", "why",
                                        nbytes=2**64))
        open_then.output(b"in the same batch\n")
        rec.flush()                              # no failure reaches the bastion process
        assert ch.lost is not None and "the channel was stopped" in ch.lost, ch.lost
        assert open_then.lost is None            # the other session's channel goes on
        open_then.output(b"after the refused operation\n")
        with pytest.raises(RecordingError, match="kept aside"):
            poisoned.open_channel("exec", command="true")
        record_session(rec, "web2", ["echo after"])
        status = rec.status()
        open_then.close(exit_status=0)
        ch.close(exit_status=0)
        poisoned.close()
        bystander.close()
        rec.flush()
    finally:
        rec.close()

    # the worker never failed: no replay, nobody refused
    assert status["failures"] == 0 and status["recoveries"] == 0, status
    assert status["quarantined"] == 1 and status["state"] == "ok", status
    assert METRICS.value("bastion_recording_quarantined_total") == quarantined_before + 1
    [kept] = list((tmp_path / "quarantine").iterdir())
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert stat.S_IMODE(kept.parent.stat().st_mode) == 0o700
    text = kept.read_text()
    assert "/srv/up/x" in text and str(2**64) in text
    err = capfd.readouterr().err                 # the worker's log (its own process)
    assert "cannot be stored" in err and str(kept) in err
    assert "even in a replay" not in err and "recording failure" not in err
    db = query.open_index(tmp_path)
    assert [h["line"] for h in query.search_commands(db, "after", raw=True)] == ["echo after"]
    assert list(db.execute("SELECT id FROM transfers")) == []
    row = db.execute("SELECT status, path FROM channels WHERE id = ?", (open_then.id,)).fetchone()
    assert row[0] == "closed"
    cast = (tmp_path / row[1]).read_text()
    for line in ("before the refused operation", "in the same batch",
                 "after the refused operation"):
        assert line in cast
    report = verify_index(tmp_path)
    assert report.ok, report.problems


def _the_one_kept_opening(data_dir, status, cid):
    """The worker never failed and kept aside one operation: channel ``cid``'s opening."""
    assert status["failures"] == 0 and status["quarantined"] == 1, status
    [kept] = quarantine.listing(data_dir)
    assert (kept.operation, kept.channel) == ("channel-open", str(cid))
    return kept


def test_a_refused_channel_open_leaves_no_recording_and_stops_nothing_else(tmp_path, backend):
    rec = Recorder.open(tmp_path, backoff=(0.05, 0.2))
    try:
        bystander = rec.start_session(principal=AGENT, client="127.0.0.1:1", target="web1",
                                      login="deploy")
        open_then = bystander.open_channel("exec", command="sleep 100")
        poisoned = rec.start_session(principal=AGENT, client="127.0.0.1:2", target="web1",
                                     login="deploy")
        ch = poisoned.open_channel("shell", term="xterm", width=2**64, height=24)
        rec.flush()
        assert ch.lost is not None and open_then.lost is None
        open_then.output(b"still recorded\n")
        open_then.close(exit_status=0)
        ch.close(exit_status=0)
        poisoned.close()
        bystander.close()
        rec.flush()
        status = rec.status()
    finally:
        rec.close()
    _the_one_kept_opening(tmp_path, status, ch.id)
    db = query.open_index(tmp_path)
    assert [r[0] for r in db.execute("SELECT id FROM channels")] == [open_then.id]
    # the refused channel's recording was not left behind without its row (PostgreSQL
    # learns of the refusal after the file was made)
    assert [p.name for p in (tmp_path / "recordings").rglob("*.cast")] == [
        open_then.path.name]
    assert b"still recorded" in open_then.path.read_bytes()
    report = verify_index(tmp_path)
    assert report.ok and len(report.kept_aside) == 1, report.problems


def test_what_builds_on_a_kept_operation_joins_it_before_the_bastion_knows(tmp_path, backend):
    """A channel's command, its result and its close, queued right after its refused opening
    (as an exec channel does, before the bastion hears of the refusal), go to the same kept
    file: one fault, one file, one report, and no command row pointing at a missing channel
    (PostgreSQL refused it -- a second fault; SQLite, which checks no reference, took it)."""
    rec = Recorder.open(tmp_path, backoff=(0.05, 0.2))
    try:
        sess = rec.start_session(principal=AGENT, client="127.0.0.1:2", target="web1",
                                 login="deploy")
        ch = sess.open_channel("exec", command="echo kept-with-it", width=2**64, height=24)
        cid = ch.command("echo kept-with-it", Decision(Action.ALLOW, "r", "because", []))
        ch.command_result(cid, 0)
        ch.close(exit_status=0)
        rec.flush()
        sess.close()
        rec.flush()
        status = rec.status()
    finally:
        rec.close()
    kept = _the_one_kept_opening(tmp_path, status, ch.id)
    body = kept.path.read_text()
    assert body.count("kept-with-it") >= 3, body        # the opening's command, the line, label
    assert len(body.splitlines()) == 2 + 4, body         # why, whose, then the four operations
    db = query.open_index(tmp_path)
    assert list(db.execute("SELECT id FROM commands")) == []
    assert list(db.execute("SELECT id FROM channels")) == []
    [(status_,)] = db.execute("SELECT status FROM sessions")
    assert status_ == "closed"
    report = verify_index(tmp_path)
    assert report.ok and len(report.kept_aside) == 1, report.problems


def test_an_unstorable_operation_left_to_a_replay_is_kept_aside_there(tmp_path, backend,
                                                                     capfd):
    # the worker dies (not the operation's fault) before it applies the operation: the
    # next worker's replay keeps it aside, and the node records again
    rec = Recorder.open(tmp_path, backoff=(0.05, 0.2))
    try:
        poisoned = rec.start_session(principal=AGENT, client="127.0.0.1:2", target="web1",
                                     login="deploy")
        ch = poisoned.open_channel("sftp", command=None)
        rec.flush()
        pid = rec.status()["worker_pid"]
        os.kill(pid, signal.SIGSTOP)             # what is put now is not applied by it
        record_transfer(ch, TransferRow("put", "/srv/up/y", "ok", "allow", "up", "why",
                                        nbytes=2**64))
        os.kill(pid, signal.SIGKILL)
        give_up = time.monotonic() + 60          # until the supervisor has seen it die
        while rec.status()["failures"] == 0 and time.monotonic() < give_up:
            time.sleep(0.01)
        assert rec.wait_state("ok", timeout=60) == "ok", rec.status()
        with pytest.raises(RecordingError, match="kept aside"):
            poisoned.open_channel("exec", command="true")
        record_session(rec, "web2", ["echo after"])
        status = rec.status()
        poisoned.close()
    finally:
        rec.close()
    assert status["failures"] == 1 and status["quarantined"] == 1, status
    [kept] = list((tmp_path / "quarantine").iterdir())
    assert "/srv/up/y" in kept.read_text()
    assert "cannot be stored even in a replay" in capfd.readouterr().err
    db = query.open_index(tmp_path)
    assert [h["line"] for h in query.search_commands(db, "after", raw=True)] == ["echo after"]


def test_a_failure_of_the_node_is_not_kept_aside():
    # the disk, a lock, the connection: retried as before, never set apart
    import sqlite3

    from bastion.recording import quarantine
    assert not quarantine.own_fault(OSError(28, "No space left on device"))
    assert not quarantine.own_fault(sqlite3.OperationalError("database is locked"))
    assert quarantine.own_fault(OverflowError("Python int too large"))
    assert quarantine.own_fault(sqlite3.DataError("string or blob too big"))
