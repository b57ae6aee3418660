"""Recordings play in the real asciinema (pip install asciinema; part of the [test] extra)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bastion.identity.principal import Principal
from bastion.policy import Action, Decision
from bastion.recording import Recorder, player

ASCIINEMA = Path(sys.executable).with_name("asciinema")
pytestmark = pytest.mark.skipif(not ASCIINEMA.exists(),
                                reason="asciinema not installed: pip install -e '.[test]'")


def run_asciinema(*args: str) -> subprocess.CompletedProcess:
    # a new session has no controlling tty, so asciinema never touches the test's terminal
    return subprocess.run([str(ASCIINEMA), *args], capture_output=True, timeout=60,
                          start_new_session=True)


@pytest.fixture
def recording(tmp_path):
    rec = Recorder.open(tmp_path)
    s = rec.start_session(principal=Principal(subject="oid", name="bot"), client="c", target="web1",
                          login="deploy")
    ch = s.open_channel("exec", command="make", term="xterm-256color", width=90, height=20)
    ch.command("make", Decision(Action.ALLOW, "build", "ok"))
    ch.output(b"\x1b[1mbuilding\x1b[0m\r\n")
    ch.output(b"cc: warning\n", stderr=True)
    ch.output(b"bin:\xff\xfe\r\n")
    ch.output(bytes(4096))                               # a NUL run: an "oz" event
    ch.resize(100, 30)
    ch.marker("approval 7 granted by alice")
    ch.output("done ✓\r\n".encode())
    ch.close(exit_status=0)
    s.close()
    rec.close()
    return ch.path


def test_asciinema_cat_shows_the_output(recording):
    assert b'"oz", "4096"' in recording.read_bytes()
    out = run_asciinema("cat", str(recording))
    assert out.returncode == 0, out.stderr
    text = out.stdout.decode()
    assert "\x1b[1mbuilding\x1b[0m\r\n" in text
    assert "bin:" in text and "done ✓" in text
    # stderr ("e"), binary ("ob") and NUL-run ("oz") events are skipped by foreign players,
    # not an error
    assert "cc: warning" not in text and "\x00" not in text


def test_asciinema_play_accepts_the_file(recording):
    out = run_asciinema("play", "-s", "100", "-i", "0.01", str(recording))
    assert out.returncode == 0, out.stderr
    assert b"building" in out.stdout and "done ✓".encode() in out.stdout


def test_merged_stderr_export_shows_in_asciinema(recording, tmp_path):
    merged = tmp_path / "merged.cast"
    with open(merged, "wb") as fh:
        player.export_cast(recording, fh, merge_stderr=True)
    out = run_asciinema("cat", str(merged))
    assert out.returncode == 0, out.stderr
    assert b"cc: warning" in out.stdout
