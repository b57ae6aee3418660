"""Recording and index end to end: real ssh → bastion serve → real sshd, then the reviewer CLI."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.e2e.harness import BastionRig, PtyAgent


@pytest.fixture(scope="module")
def rec_rig(tmp_path_factory, issuer):
    r = BastionRig(tmp_path_factory.mktemp("rec"), issuer).setup().start()
    yield r
    r.close()


def _json(rig, *args):
    return json.loads(rig.cli(*args, "--json").out)


def _session_of(rig, marker: str) -> dict:
    """The session whose commands include ``marker``, found through the FTS search."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        hits = _json(rig, "commands", "search", marker)
        if hits:
            sid = hits[0]["session_id"] if "session_id" in hits[0] else hits[0]["session"]
            show = _json(rig, "sessions", "show", str(sid))
            if show["status"] != "active":
                return show
        time.sleep(0.2)
    raise AssertionError(f"no closed session with {marker!r}")


def test_exec_is_indexed_with_its_decision_and_plays_in_asciinema(rec_rig, token):
    r = rec_rig.ssh(token, "echo recorded-output-1234")
    assert r.returncode == 0, r.err
    show = _session_of(rec_rig, "recorded-output-1234")
    assert show["principal"]["name"] == "e2e-agent"
    assert show["target"] == "web1" and show["login"] == rec_rig.sshd.user
    [cmd] = [c for c in show["commands"] if "recorded-output-1234" in c["line"]]
    assert cmd["action"] == "allow" and cmd["rule"] == "read-only-tools"
    [chan] = show["channels"]
    cast = rec_rig.data_dir / chan["path"]
    played = subprocess.run([str(rec_rig_bin("asciinema")), "cat", str(cast)],
                            capture_output=True, timeout=30)
    assert played.returncode == 0, played.stderr
    assert b"recorded-output-1234" in played.stdout


def rec_rig_bin(name):
    import sys
    from pathlib import Path
    return Path(sys.executable).parent / name


def test_denied_command_is_indexed_with_rule_and_reason(rec_rig, token):
    r = rec_rig.ssh(token, f"rm -rf {rec_rig.canary_dir}/x-denied-marker")
    assert r.returncode == 126
    hits = _json(rec_rig, "commands", "search", "x-denied-marker", "--action", "deny")
    assert hits, "denied command not in the index"
    assert hits[0]["rule"] == "no-recursive-delete"
    assert "no-recursive-delete" in hits[0]["reason"]


def test_refused_login_is_a_row(rec_rig, issuer, agent_client):
    bad = issuer.mint(client=agent_client, audience="api://elsewhere")
    assert rec_rig.ssh(bad, "true").returncode == 255
    rows = _json(rec_rig, "sessions", "list", "--status", "refused")
    assert any("wrong audience" in (row.get("reason") or "") for row in rows)


def test_shell_lines_and_output_are_recorded(rec_rig, token):
    agent = PtyAgent(rec_rig, token)
    try:
        agent.wait_ready()
        agent.send(b"echo shell-rec-$((2*21))\r")
        agent.read_until(b"shell-rec-42")
        agent.send(b"exit\r")
        agent.wait()
    finally:
        agent.close()
    show = _session_of(rec_rig, "shell-rec")
    assert any(c["line"] == "echo shell-rec-$((2*21))" and c["action"] == "allow"
               for c in show["commands"])
    exported = rec_rig.cli("sessions", "export", str(show["id"]), "--format", "cast").out
    assert "shell-rec-42" in exported


def test_control_sequences_in_a_command_are_shown_inert(rec_rig, token):
    # an agent tries to hide what it ran from a reviewer: clear the screen, retitle the
    # terminal, then write an innocent-looking line over it
    evil = "echo hidden-marker-77 \x1b[2J\x1b]0;owned\x07\x1b[1A\rls"
    rec_rig.ssh(token, evil)
    out = rec_rig.cli("commands", "search", "hidden-marker-77").out
    assert "\x1b" not in out and "\x07" not in out
    assert "hidden-marker-77" in out
    listed = rec_rig.cli("sessions", "list").out
    assert "\x1b" not in listed


def test_verify_passes_then_names_a_tampered_recording_and_row(tmp_path_factory, issuer, token):
    rig = BastionRig(tmp_path_factory.mktemp("tamper"), issuer).setup().start()
    try:
        assert rig.ssh(token, "echo tamper-target-1").returncode == 0
        assert rig.ssh(token, "echo tamper-target-2").returncode == 0
        show = _session_of(rig, "tamper-target-1")
        _session_of(rig, "tamper-target-2")
        assert rig.cli("verify").returncode == 0
    finally:
        rig.stop()
    cast = str(rig.data_dir / show["channels"][0]["path"])
    data = bytearray(open(cast, "rb").read())
    i = data.find(b"tamper-target-1", data.find(b"\n") + 1)
    data[i] = ord("X")
    open(cast, "wb").write(bytes(data))
    bad = rig.cli("verify", check=False)
    assert bad.returncode != 0
    assert cast.split("/")[-1] in bad.out + bad.err
    # restore the file, then change a row instead
    data[i] = ord("t")
    open(cast, "wb").write(bytes(data))
    assert rig.cli("verify").returncode == 0
    db = rig.index()
    db.execute("UPDATE commands SET action = 'allow', line = 'echo harmless' "
               "WHERE line = 'echo tamper-target-2'")
    db.commit()
    db.close()
    bad = rig.cli("verify", check=False)
    assert bad.returncode != 0
    assert "command" in (bad.out + bad.err).lower()
    rig.close()


def test_kill_9_leaves_a_valid_recording_and_an_interrupted_row(tmp_path_factory, issuer, token):
    rig = BastionRig(tmp_path_factory.mktemp("kill9"), issuer).setup().start()
    proc = None
    try:
        proc = rig.ssh_popen(token, "echo before-kill-marker; sleep 60")
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            casts = list((rig.data_dir / "recordings").rglob("*.cast"))
            if casts and b"before-kill-marker" in casts[0].read_bytes():
                break
            time.sleep(0.1)
        else:
            raise AssertionError("the output never reached the recording")
        rig.stop(signal.SIGKILL)
        proc.kill()
        proc.wait()
        for line in casts[0].read_bytes().splitlines():
            json.loads(line)                       # every flushed line parses
        rig.start()                                # the next start marks it interrupted
        rows = _json(rig, "sessions", "list", "--status", "interrupted")
        assert rows, "no interrupted session after kill -9 and restart"
        assert rig.cli("verify").returncode == 0
    finally:
        if proc and proc.poll() is None:
            proc.kill()
        rig.close()


def test_sessions_are_refused_when_recording_is_impossible(tmp_path_factory, issuer, token):
    rig = BastionRig(tmp_path_factory.mktemp("norec"), issuer).setup().start()
    try:
        assert rig.ssh(token, "true").returncode == 0
        recordings = rig.data_dir / "recordings"
        shutil.rmtree(recordings)
        recordings.write_text("a file where the recordings directory was\n")
        first = rig.ssh(token, "echo should-not-run")
        second = rig.ssh(token, "echo should-not-run-either")
        assert "should-not-run" not in first.out + second.out
        assert second.returncode == 255
        assert "cannot be recorded" in second.err or "recorded" in second.err
    finally:
        rig.close()


def _recording_worker(rig) -> int:
    pid = rig.proc.pid
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        if b"bastion.recording.worker" in Path(f"/proc/{child}/cmdline").read_bytes():
            return int(child)
    raise AssertionError("bastion serve has no recording worker process")


def test_a_stalled_recorder_holds_a_big_upload_back_and_never_ends_it(rec_rig, token):
    """Stdin an agent sends while its session starts (here: while the recording worker
    takes nothing, as on a disk that stalls) waits in the agent's SSH window, not in the
    bastion: more than the recording queue's hard limit goes through, late but whole."""
    size = 96 * 1024 * 1024                 # the queue refuses more than 64 MiB
    chunk = b"0123456789abcdef" * 65536
    worker = _recording_worker(rec_rig)
    os.kill(worker, signal.SIGSTOP)
    try:
        proc = rec_rig.ssh_popen(token, "wc -c")

        def feed():
            try:
                for _ in range(size // len(chunk)):
                    proc.stdin.write(chunk)
                proc.stdin.close()
            except BrokenPipeError:
                pass
        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        time.sleep(3)                       # the agent sends; the recording cannot start
    finally:
        os.kill(worker, signal.SIGCONT)
    feeder.join(180)
    out, err = proc.stdout.read(), proc.stderr.read()
    proc.wait(60)
    assert proc.returncode == 0, err.decode(errors="replace")
    assert out.split() == [str(size).encode()]
