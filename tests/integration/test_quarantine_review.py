"""``bastion verify`` sees the operations the recording worker kept aside (rows the index
does not have) and exits 4 until an operator acknowledges them with ``bastion quarantine
ack``, which moves them to ``quarantine/reviewed/`` (bastion.recording.quarantine).

The kept-aside file is made by the real worker: an operation with a value the index refuses
(a byte count of 2^64), as in test_recording_quarantine.py."""

from __future__ import annotations

import json
import os
import stat

import pytest
from typer.testing import CliRunner

from bastion.cli.main import app
from bastion.cli.sessions import VERIFY_FAILED, VERIFY_KEPT_ASIDE
from bastion.recording import Recorder, quarantine
from bastion.recording.transfers import TransferRow, record_transfer
from bastion.recording.verify import verify_index
from tests.integration.recordkit import AGENT, record_session

RUNNER = CliRunner(env={"COLUMNS": "400", "BASTION_DATA_DIR": None})


def cli(*args: str):
    return RUNNER.invoke(app, list(args))


def _keep_one_aside(data_dir, path="/srv/up/\x1b[2Jx") -> int:
    """A session whose transfer row the index refuses: kept aside by the worker."""
    rec = Recorder.open(data_dir, backoff=(0.05, 0.2))
    try:
        s = rec.start_session(principal=AGENT, client="127.0.0.1:2", target="web1",
                              login="deploy")
        ch = s.open_channel("sftp", command=None)
        record_transfer(ch, TransferRow("put", path, "ok", "allow", "up", "why", nbytes=2**64))
        rec.flush()
        ch.close(exit_status=0)
        s.close()
        record_session(rec, "web2", ["echo fine"])
    finally:
        rec.close()
    return s.id


def test_verify_without_anything_kept_aside_exits_0(tmp_path):
    record_session_only(tmp_path)
    report = verify_index(tmp_path)
    assert report.ok and report.kept_aside == []
    r = cli("verify", "--data-dir", str(tmp_path))
    assert r.exit_code == 0, r.output
    assert "kept aside" not in r.output
    assert json.loads(cli("verify", "--data-dir", str(tmp_path), "--json").stdout)[
        "kept_aside"] == []
    listed = cli("quarantine", "list", "--data-dir", str(tmp_path))
    assert listed.exit_code == 0 and "nothing kept aside" in listed.stdout


def record_session_only(data_dir) -> None:
    rec = Recorder.open(data_dir)
    try:
        record_session(rec, "web1", ["echo hi"])
    finally:
        rec.close()


def test_verify_reports_kept_aside_operations_until_they_are_acknowledged(tmp_path):
    sid = _keep_one_aside(tmp_path)
    [kept] = list((tmp_path / "quarantine").iterdir())

    report = verify_index(tmp_path)
    assert report.ok, report.problems              # not a break of the chain
    [entry] = report.kept_aside
    assert entry["path"] == str(kept)
    assert (entry["session"], entry["operation"]) == (str(sid), "transfer")
    assert "OverflowError" in entry["why"]

    r = cli("verify", "--data-dir", str(tmp_path))
    assert r.exit_code == VERIFY_KEPT_ASIDE, r.output
    assert "1 recording operation(s) kept aside and not acknowledged" in r.stderr
    assert str(kept) in r.stderr and f"session {sid} channel" in r.stderr
    assert "bastion quarantine ack" in r.stderr
    as_json = cli("verify", "--data-dir", str(tmp_path), "--json")
    assert as_json.exit_code == VERIFY_KEPT_ASIDE
    doc = json.loads(as_json.stdout)
    assert doc["ok"] is True and [k["path"] for k in doc["kept_aside"]] == [str(kept)]

    listed = cli("quarantine", "list", "--data-dir", str(tmp_path))
    assert listed.exit_code == 0, listed.output
    assert kept.name in listed.stdout and "transfer" in listed.stdout
    assert "\x1b" not in listed.stdout              # the file holds agent text: never replayed
    assert "\x1b" not in cli("quarantine", "list", "--data-dir", str(tmp_path),
                             "--json").stdout

    wrong = cli("quarantine", "ack", "../index.sqlite", "--data-dir", str(tmp_path))
    assert wrong.exit_code == 1 and "no file" in wrong.stderr
    neither = cli("quarantine", "ack", "--data-dir", str(tmp_path))
    assert neither.exit_code == 1 and "--all" in neither.stderr
    assert kept.exists()                            # nothing moved by a refused ack

    done = cli("quarantine", "ack", kept.name, "--data-dir", str(tmp_path))
    assert done.exit_code == 0, done.output
    moved = tmp_path / "quarantine" / "reviewed" / kept.name
    assert not kept.exists() and moved.exists()
    assert stat.S_IMODE(moved.stat().st_mode) == 0o600
    assert stat.S_IMODE(moved.parent.stat().st_mode) == 0o700
    assert "/srv/up/" in moved.read_text()          # kept, never deleted

    assert verify_index(tmp_path).kept_aside == []
    assert cli("verify", "--data-dir", str(tmp_path)).exit_code == 0
    reviewed = cli("quarantine", "list", "--reviewed", "--data-dir", str(tmp_path))
    assert kept.name in reviewed.stdout


def test_a_break_wins_over_kept_aside_and_ack_all(tmp_path):
    _keep_one_aside(tmp_path)
    # another entry nobody expected there: reported, never opened
    os.symlink("/etc/passwd", tmp_path / "quarantine" / "odd-link")
    assert len(verify_index(tmp_path).kept_aside) == 2
    cast = next((tmp_path / "recordings").rglob("*.cast"))
    cast.write_bytes(cast.read_bytes() + b"tampered\n")
    r = cli("verify", "--data-dir", str(tmp_path))
    assert r.exit_code == VERIFY_FAILED, r.output
    assert "2 recording operation(s) kept aside" in r.stderr
    assert "not a file the worker wrote" in r.stderr

    done = cli("quarantine", "ack", "--all", "--data-dir", str(tmp_path), "--json")
    assert done.exit_code == 0, done.output
    assert len(json.loads(done.stdout)) == 2
    assert quarantine.listing(tmp_path) == []
    assert len(quarantine.listing(tmp_path, reviewed=True)) == 2


@pytest.mark.parametrize("args", [["quarantine", "list"], ["quarantine", "ack"]])
def test_help_teaches(args):
    text = cli(*args, "--help").stdout
    assert "Example: bastion " + " ".join(args) in text
    assert "verify" in text
