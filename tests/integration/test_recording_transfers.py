"""transfers rows (sftp file operations): written by the recording worker, sealed into the hash
chain at once, checked by verify, removed by prune with their session, shown by the query."""

from __future__ import annotations

import sqlite3

from bastion.identity.principal import Principal
from bastion.recording import Recorder, query
from bastion.recording.transfers import TransferRow, record_transfer
from bastion.recording.verify import prune, verify_index

AGENT = Principal(subject="oid-agent", name="bot")
DAY = 86400.0
DIGEST = "ab" * 32


def sftp_session(rec: Recorder) -> int:
    s = rec.start_session(principal=AGENT, client="127.0.0.1:1", target="web1", login="deploy")
    ch = s.open_channel("sftp")
    record_transfer(ch, TransferRow("put", "/srv/app/x.tgz", "ok", "allow", "deploy",
                                    "writes /srv/app/x.tgz", nbytes=10, sha256=DIGEST,
                                    duration=0.5))
    record_transfer(ch, TransferRow("put", "/home/deploy/.ssh/authorized_keys", "denied", "deny",
                                    "no-ssh", "writes ~/.ssh/authorized_keys"))
    ch.close(exit_status=0)
    s.close()
    rec.flush()
    return s.id


def test_rows_are_sealed_verified_and_shown(tmp_path):
    rec = Recorder.open(tmp_path)
    sid = sftp_session(rec)
    rec.close()
    report = verify_index(tmp_path)
    assert report.ok, report.problems
    assert report.rows == 1 + 1 + 2              # session, channel, two transfers
    record = query.get_session(query.open_index(tmp_path), sid)
    assert [(t["op"], t["result"], t["rule"], t["sha256"]) for t in record["transfers"]] == [
        ("put", "ok", "deploy", DIGEST), ("put", "denied", "no-ssh", None)]
    assert all(t["seq"] for t in record["transfers"]) and "uid" not in record["transfers"][0]

    conn = sqlite3.connect(tmp_path / "index.sqlite", isolation_level=None)
    conn.execute("UPDATE transfers SET result = 'ok', action = 'allow' WHERE result = 'denied'")
    conn.close()
    first = verify_index(tmp_path).first
    assert (first.kind, first.table) == ("modified", "transfers")


def test_prune_takes_the_transfers_with_their_session(tmp_path):
    rec = Recorder.open(tmp_path)
    sftp_session(rec)
    rec.close()
    conn = sqlite3.connect(tmp_path / "index.sqlite", isolation_level=None)
    ended = conn.execute("SELECT MAX(ended) FROM sessions").fetchone()[0]
    conn.close()
    report = prune(tmp_path, older_than=DAY, now=ended + 2 * DAY)
    assert (report.sessions, report.rows) == (1, 4)
    conn = sqlite3.connect(tmp_path / "index.sqlite", isolation_level=None)
    assert conn.execute("SELECT COUNT(*) FROM transfers").fetchone()[0] == 0
    conn.close()
    assert verify_index(tmp_path).ok
