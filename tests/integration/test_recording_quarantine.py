"""An operation the index refuses even in the replay after a failure is kept aside
(bastion.recording.quarantine): the node records again after one replay, instead of failing
every replay for ever with every session refused.

The operation is made through the public API with a value no SSH peer can send (a byte count
of 2^64: SQLite's driver cannot take it, PostgreSQL's bigint refuses it), standing for the
next hole nobody has found yet."""

from __future__ import annotations

import stat

import pytest

from bastion.errors import RecordingError
from bastion.recording import Recorder, query
from bastion.recording.transfers import TransferRow, record_transfer
from bastion.recording.verify import verify_index
from tests.integration.recordkit import AGENT, record_session


def test_an_operation_refused_even_in_the_replay_is_kept_aside_and_recording_goes_on(
        tmp_path, backend, capfd):
    rec = Recorder.open(tmp_path, backoff=(0.05, 0.2))
    try:
        bystander = rec.start_session(principal=AGENT, client="127.0.0.1:1", target="web1",
                                      login="deploy")
        open_then = bystander.open_channel("exec", command="sleep 100")
        poisoned = rec.start_session(principal=AGENT, client="127.0.0.1:2", target="web1",
                                     login="deploy")
        ch = poisoned.open_channel("sftp", command=None)
        record_transfer(ch, TransferRow("put", "/srv/up/x", "ok", "allow", "up", "why",
                                        nbytes=2**64))
        with pytest.raises(RecordingError):
            rec.flush()                          # the first failure: as for any failure
        assert open_then.lost                    # (channels open then are stopped once)
        assert rec.wait_state("ok", timeout=60) == "ok", rec.status()
        # the node records again; the session with the refused operation opens no more
        record_session(rec, "web2", ["echo after"])
        with pytest.raises(RecordingError, match="kept aside"):
            poisoned.open_channel("exec", command="true")
        ch.close(exit_status=0)
        poisoned.close()
        bystander.close()
        status = rec.status()
        rec.flush()
    finally:
        rec.close()

    assert status["quarantined"] == 1 and status["state"] == "ok", status
    [kept] = list((tmp_path / "quarantine").iterdir())
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert stat.S_IMODE(kept.parent.stat().st_mode) == 0o700
    text = kept.read_text()
    assert "/srv/up/x" in text and str(2**64) in text
    err = capfd.readouterr().err                 # the worker's log (its own process)
    assert "cannot be stored even in a replay" in err and str(kept) in err
    db = query.open_index(tmp_path)
    assert [h["line"] for h in query.search_commands(db, "after", raw=True)] == ["echo after"]
    assert list(db.execute("SELECT id FROM transfers")) == []
    report = verify_index(tmp_path)
    assert report.ok, report.problems


def test_a_failure_of_the_node_is_not_kept_aside():
    # the disk, a lock, the connection: retried as before, never set apart
    import sqlite3

    from bastion.recording import quarantine
    assert not quarantine.own_fault(OSError(28, "No space left on device"))
    assert not quarantine.own_fault(sqlite3.OperationalError("database is locked"))
    assert quarantine.own_fault(OverflowError("Python int too large"))
    assert quarantine.own_fault(sqlite3.DataError("string or blob too big"))
