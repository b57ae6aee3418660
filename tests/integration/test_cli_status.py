"""``bastion status`` against a real Recorder (its worker, socket and index) in this process.

The recorder answers on DATA_DIR/status.sock from its own thread, so the CLI runs in-process
through typer's runner while the recorder records."""

from __future__ import annotations

import json
import os
import signal

import pytest
import typer
from typer.testing import CliRunner

from bastion.cli import status as status_cli
from bastion.identity.principal import Principal
from bastion.recording import Recorder
from bastion.recording.status import SOCKET_NAME, read_status

AGENT = Principal(subject="oid-agent", name="deploy-bot", roles=("agents",))


def make_app() -> typer.Typer:
    app = typer.Typer(pretty_exceptions_enable=False)
    status_cli.register(app)

    @app.command("unused")              # a second command keeps `status` a subcommand
    def _unused() -> None:
        pass

    return app


APP = make_app()
RUNNER = CliRunner(env={"COLUMNS": "200", "BASTION_DATA_DIR": None})


def cli(*args: str):
    return RUNNER.invoke(APP, ["status", *args])


def test_nothing_running_exits_4_and_says_so(tmp_path):
    result = cli("--data-dir", str(tmp_path))
    assert result.exit_code == 4
    assert "not running" in result.output
    assert "SQLite in the data dir" in result.output          # where the index lives
    info = json.loads(cli("--data-dir", str(tmp_path), "--json").output)
    assert info["running"] is False and info["serve"] is None
    assert info["store"] == "SQLite in the data dir"


def test_a_postgresql_store_is_named_without_its_password_and_why_it_cannot_be_read(
        tmp_path, monkeypatch):
    from tests.pgcluster import _free_port
    port = _free_port()
    monkeypatch.setenv("BASTION_STORE_URL", f"postgresql://bastion:pw-s3cret@127.0.0.1:{port}/x")
    monkeypatch.setenv("BASTION_NODE", "node-b")
    result = cli("--data-dir", str(tmp_path))
    assert result.exit_code == 4, result.output
    text = " ".join(result.output.split())                  # the table folds long lines
    assert f"PostgreSQL postgresql://bastion:***@127.0.0.1:{port}/x as node node-b" in text, text
    assert "not readable from here" in text and "refused" in text.lower(), text
    assert "pw-s3cret" not in result.output


def test_a_recording_serve_answers_with_its_state(tmp_path):
    rec = Recorder.open(tmp_path, backoff=(3600, 3600))
    try:
        sock = tmp_path / SOCKET_NAME
        assert oct(sock.stat().st_mode & 0o777) == "0o600"
        s = rec.start_session(principal=AGENT, client="c", target="t", login="l")
        ch = s.open_channel("exec", command="x")
        rec.flush()
        result = cli("--data-dir", str(tmp_path))
        assert result.exit_code == 0, result.output
        assert "recording" in result.output and "1 open, 1 channel(s)" in result.output
        assert "reserve 4.2 MB in place" in result.output
        info = json.loads(cli("--data-dir", str(tmp_path), "--json").output)
        serve = info["serve"]
        assert info["running"] and serve["pid"] == os.getpid() and serve["state"] == "ok"
        assert serve["worker_pid"] == rec._writer.proc.pid
        assert info["disk"]["free_bytes"] > 0 and info["index"]["active_sessions"] == 1

        os.kill(rec._writer.proc.pid, signal.SIGKILL)          # a fault: refusing
        assert rec.wait_state("failed") == "failed"
        result = cli("--data-dir", str(tmp_path))
        assert result.exit_code == 3
        assert "REFUSING SESSIONS" in result.output and "killed by signal 9" in result.output
        assert "1 failure(s)" in result.output
        ch.close(exit_status=255)
        rec.retry_now()
        assert rec.wait_state("ok") == "ok"
        result = cli("--data-dir", str(tmp_path))
        assert result.exit_code == 0
        assert "last recovery" in result.output and "after 1 attempt(s)" in result.output
        s.close()
    finally:
        rec.close()
    assert not (tmp_path / SOCKET_NAME).exists()                # removed at close
    assert read_status(tmp_path) is None


def test_a_long_data_dir_path_still_answers(tmp_path):
    deep = tmp_path / ("d" * 60) / ("e" * 60)                  # past sun_path's 108 bytes
    rec = Recorder.open(deep)
    try:
        assert read_status(deep)["state"] == "ok"
    finally:
        rec.close()


@pytest.mark.parametrize("flag", ["--help"])
def test_help_teaches_and_ends_with_an_example(flag):
    result = RUNNER.invoke(APP, ["status", flag])
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "REFUSING SESSIONS" in text and "index lag" in text and "reserve" in text
    assert "Exit status: 0 recording, 3 refusing sessions, 4" in text
    assert "Example: bastion status --data-dir /var/lib/bastion" in text


def test_a_worker_that_accepts_but_never_answers_is_shown_as_not_answering(tmp_path):
    """`serve --workers N`: a stopped (SIGSTOP) or stuck worker's socket still accepts (the
    kernel's backlog) but never answers; status and /metrics must not fail on it."""
    import socket

    from bastion.recording.status import read_workers
    stuck = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stuck.bind(str(tmp_path / "status.w2.sock"))
    stuck.listen(4)                         # never accepted, never answered
    try:
        assert read_workers(tmp_path) == {2: None}
    finally:
        stuck.close()
