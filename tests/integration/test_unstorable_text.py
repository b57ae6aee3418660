"""Agent text the index drivers cannot take as it is (NUL, bytes that were not UTF-8) is
stored on both backends, in the form a reviewer is shown, and recording goes on.

Before bastion.recording.storable, one such value failed the recording worker's batch and
every replay of it, so the node refused every session until restarted."""

from __future__ import annotations


from bastion.approvals.store import ApprovalStore
from bastion.policy import Action, Decision
from bastion.recording import Recorder, query
from bastion.recording.transfers import TransferRow, record_transfer
from bastion.recording.verify import verify_index
from tests.integration.recordkit import AGENT, record_session
from tests.integration.test_approvals_store import ALICE, APPROVERS


def test_nul_and_undecodable_bytes_are_stored_as_shown_and_recording_goes_on(tmp_path,
                                                                             backend):
    rec = Recorder.open(tmp_path)
    rec.refused(principal=AGENT, client="127.0.0.1:9", target="web\x00x", login="de\udcffploy",
                reason="unknown target")
    record_session(rec, "web1", ["echo a\x00b", "uptime"])
    s = rec.start_session(principal=AGENT, client="127.0.0.1:1", target="web1", login="deploy")
    shell = s.open_channel("exec", command="cat /tmp/\udcfe")
    shell.command("cat /tmp/\udcfe", Decision(Action.ALLOW, "r", "why"))
    shell.close(exit_status=0)
    ch = s.open_channel("sftp", command=None)
    record_transfer(ch, TransferRow("put", "/srv/up/bad\udcffname", "ok", "allow", "up", "ok"))
    ch.marker("a marker with a NUL\x00 and \udcc0")
    ch.close(exit_status=0)
    s.close()
    rec.flush()                                  # raised "session recording is not possible"
    record_session(rec, "web2", ["echo after"])  # and so did every session after it
    rec.close()

    db = query.open_index(tmp_path)
    lines = {h["line"] for h in query.search_commands(db, "echo OR cat", raw=True)}
    assert lines == {"echo a\u2400b", "cat /tmp/\\xfe", "echo after"}
    [refused] = [r for r in query.list_sessions(db, denied=True) if r["status"] == "refused"]
    assert (refused["target"], refused["login"]) == ("web\u2400x", "de\\xffploy")
    rows = [dict(r) for r in db.execute("SELECT path FROM transfers")]
    assert rows == [{"path": "/srv/up/bad\\xffname"}]
    report = verify_index(tmp_path)
    assert report.ok, report.problems


def test_an_approval_request_for_such_a_line_is_stored(tmp_path, backend):
    Recorder.open(tmp_path).close()              # the index, migrated
    store = ApprovalStore.open(tmp_path)
    record = store.create(node="n", principal=AGENT, target="web1", login="root",
                          line="touch /tmp/a\x00b \udcff", session_id=None, command_id=None,
                          decision=Decision(Action.REVIEW, "r", "why"), channel="exec",
                          timeout=60)
    assert store.get(record.id).line == "touch /tmp/a\u2400b \\xff"
    done = store.answer(record.id, ALICE, approve=False, reason="no\x00pe", approvers=APPROVERS)
    assert (done.status, done.answer_reason) == ("denied", "no\u2400pe")


def test_a_transfer_path_longer_than_the_store_index_takes_is_cut_and_recording_goes_on(
        tmp_path, backend):
    # PostgreSQL's btree index on transfers.path refuses an entry over 2,704 bytes: such a
    # path (an agent's, or a target's realpath answer) failed the batch and every replay
    path = "/srv/up/" + "".join(chr(0x61 + (i * 7919) % 26) for i in range(6000))
    rec = Recorder.open(tmp_path)
    s = rec.start_session(principal=AGENT, client="127.0.0.1:1", target="web1", login="deploy")
    ch = s.open_channel("sftp", command=None)
    record_transfer(ch, TransferRow("put", path, "denied", "deny", "r", "why", path2=path))
    ch.close(exit_status=0)
    s.close()
    rec.flush()
    record_session(rec, "web2", ["echo after"])
    rec.close()

    db = query.open_index(tmp_path)
    [row] = [dict(r) for r in db.execute("SELECT path, path2 FROM transfers")]
    assert row["path"] == row["path2"]
    assert row["path"].startswith(path[:2048] + f"...[{len(path) - 2048} more bytes; sha256 ")
    assert [h["line"] for h in query.search_commands(db, "after", raw=True)] == ["echo after"]
    assert verify_index(tmp_path).ok
