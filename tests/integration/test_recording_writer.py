"""Recorder end to end on real files and a real SQLite index."""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import os
import random
import signal
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bastion.errors import RecordingError
from bastion.identity.principal import Principal
from bastion.proto import asciicast
from bastion.proto.masker import BUILTIN, DEFAULT_MAX_HOLDBACK, Masker
from bastion.recording import Recorder, channelfiles, ops, player, query
from bastion.recording.verify import verify_index

AGENT = Principal(subject="oid-agent", app_id="app-1", name="deploy-bot", roles=("agents",))


@dataclass(frozen=True)
class FakeDecision:
    action: str
    rule: str | None
    reason: str
    command: tuple = ()
    commands: tuple = field(default_factory=tuple)


class DictDecision:
    """A decision exposing to_dict() (like the real policy engine)."""

    def to_dict(self):
        return {"action": "review", "rule": "prod-restarts", "reason": "needs a human",
                "commands": [["systemctl", "restart", "nginx"]]}


def read_cast(path):
    with open(path, "rb") as fh:
        header, events = asciicast.iter_cast(fh)
        return header, list(events)


def rows(data_dir, sql, params=()):
    conn = sqlite3.connect(data_dir / "index.sqlite")
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(sql, params)]
    finally:
        conn.close()


@pytest.fixture
def recorder(tmp_path):
    rec = Recorder.open(tmp_path)
    yield rec
    rec.close()


def test_session_is_recorded_and_indexed(tmp_path, recorder):
    s = recorder.start_session(principal=AGENT, client="127.0.0.1:40000", target="web1", login="deploy")
    ch = s.open_channel("exec", command="systemctl status nginx", term="xterm-256color", width=100, height=30,
                        env={"LANG": "C", "API_TOKEN": "s3cr3t"})
    ch.input(b"stdin data")
    cmd = ch.command("systemctl status nginx", FakeDecision("allow", "read-only", "status is read-only",
                                                            commands=(("systemctl", "status", "nginx"),)))
    ch.output(b"\x1b[32m\xe2\x97\x8f nginx.service\x1b[0m\r\n")
    ch.output(b"warning: something\n", stderr=True)
    ch.resize(120, 40)
    ch.command_result(cmd, 3)
    ch.close(exit_status=3)
    s.close()
    recorder.flush()

    header, events = read_cast(ch.path)
    assert header["width"] == 100 and header["height"] == 30
    assert header["title"] == "deploy-bot (oid-agent) → deploy@web1"
    assert header["env"] == {"TERM": "xterm-256color"}
    codes = [(e.code, e.data) for e in events]
    assert ("i", "stdin data") in codes
    assert ("o", "\x1b[32m● nginx.service\x1b[0m\r\n") in codes
    assert ("e", "warning: something\n") in codes
    assert ("r", "120x40") in codes
    assert ("m", "command 1: allow [read-only]: systemctl status nginx") in codes
    assert codes[-1] == ("m", "exit status 3")
    times = [e.time for e in events]
    assert times == sorted(times)

    db = query.open_index(tmp_path)
    record = query.get_session(db, s.id)
    assert record["status"] == "closed" and record["exit_status"] == 3
    assert record["principal"]["subject"] == "oid-agent" and record["principal"]["roles"] == ["agents"]
    assert record["client"] == "127.0.0.1:40000" and record["target"] == "web1" and record["login"] == "deploy"
    assert record["bytes_in"] == len(b"stdin data")
    assert record["bytes_out"] == len("\x1b[32m● nginx.service\x1b[0m\r\n".encode()) + len(b"warning: something\n")
    [chan] = record["channels"]
    assert chan["env"] == {"LANG": "C", "API_TOKEN": "<secret>"}
    assert chan["sha256"] == hashlib.sha256(ch.path.read_bytes()).hexdigest()
    [c] = record["commands"]
    assert (c["id"], c["action"], c["rule"], c["reason"], c["exit_status"]) == \
        (cmd, "allow", "read-only", "status is read-only", 3)
    assert c["commands"] == [["systemctl", "status", "nginx"]]
    marker = next(e for e in events if e.code == "m" and e.data.startswith("command 1"))
    assert abs(marker.time - c["offset"]) < 1e-5          # offset points at the marker
    assert "s3cr3t" not in ch.path.read_text() and "s3cr3t" not in json.dumps(record)
    assert verify_index(tmp_path).ok


def test_decision_duck_typing(tmp_path, recorder):
    from bastion.policy import Action, CommandDecision, Decision
    s = recorder.start_session(principal=AGENT, client="c", target="t", login="l")
    ch = s.open_channel("shell")
    a = ch.command("rm -rf /", Decision(Action.DENY, "no-rm", "destroys the host", ("rm", "-rf", "/"),
                                        (CommandDecision(("rm", "-rf", "/"), Action.DENY, "no-rm"),)))
    b = ch.command("systemctl restart nginx", DictDecision(), approver="alice@example.com")
    c = ch.command("true", object())
    s.close()
    recorder.flush()
    got = {r["id"]: r for r in rows(tmp_path, "SELECT * FROM commands")}
    assert (got[a]["action"], got[a]["rule"], got[a]["reason"]) == ("deny", "no-rm", "destroys the host")
    [simple] = json.loads(got[a]["commands"])
    assert (simple["argv"], simple["action"], simple["rule"]) == (["rm", "-rf", "/"], "deny", "no-rm")
    assert (got[b]["action"], got[b]["approver"]) == ("review", "alice@example.com")
    assert json.loads(got[b]["commands"]) == [["systemctl", "restart", "nginx"]]
    assert got[c]["action"] == "unknown"
    assert all(r["seq"] is not None for r in got.values())      # sealed when the channel closed


def test_refused_attempt_is_a_row(tmp_path, recorder):
    recorder.refused(principal=None, client="203.0.113.9:5555", target="db1", login="root",
                     reason="token rejected: expired")
    recorder.refused(principal=AGENT, client="203.0.113.9:5556", target="db1", login="root",
                     reason="target db1 not granted")
    recorder.flush()
    got = rows(tmp_path, "SELECT * FROM sessions ORDER BY id")
    assert [(r["status"], r["reason"], r["principal_subject"]) for r in got] == [
        ("refused", "token rejected: expired", None), ("refused", "target db1 not granted", "oid-agent")]
    assert all(r["seq"] for r in got)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_binary_output_is_lossless(tmp_path, recorder, seed):
    rng = random.Random(seed)
    s = recorder.start_session(principal=AGENT, client="c", target="t", login="l")
    ch = s.open_channel("exec", command="tar cf - /etc")
    sent = {"stdout": bytearray(), "stderr": bytearray(), "input": bytearray()}
    for _ in range(200):
        blob = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 700)))
        which = rng.choice(["stdout", "stdout", "stderr", "input"])
        sent[which] += blob
        if which == "input":
            ch.input(blob)
        else:
            ch.output(blob, stderr=which == "stderr")
    ch.close(exit_status=0)
    s.close()
    recorder.flush()
    _, events = player.load(ch.path)
    for name, data in sent.items():
        assert player.stream_bytes(events, name) == bytes(data), name


def test_size_cap_writes_truncated_marker(tmp_path):
    rec = Recorder.open(tmp_path, max_bytes=8192)
    try:
        s = rec.start_session(principal=AGENT, client="c", target="t", login="l")
        ch = s.open_channel("exec", command="yes")
        for _ in range(100):
            ch.output(b"y\n" * 250)
        rec.flush()
        assert ch.truncated
        ch.output(b"after the cap\n")
        ch.close(exit_status=0)
        s.close()
        rec.flush()
    finally:
        rec.close()
    data = ch.path.read_bytes()
    assert len(data) <= 8192
    _, events = read_cast(ch.path)
    markers = [e.data for e in events if e.code == "m"]
    assert any("truncated" in m for m in markers)
    assert markers[-1] == "exit status 0"
    assert b"after the cap" not in data
    [chan] = rows(tmp_path, "SELECT * FROM channels")
    [sess] = rows(tmp_path, "SELECT * FROM sessions")
    assert chan["truncated"] == 1 and sess["truncated"] == 1
    assert chan["bytes_out"] == 100 * 500 + len(b"after the cap\n")     # every byte counted
    assert verify_index(tmp_path).ok


def test_recording_reaches_disk_without_close(tmp_path, recorder):
    s = recorder.start_session(principal=AGENT, client="c", target="t", login="l")
    ch = s.open_channel("shell")
    ch.output(b"periodic-flush-check\r\n")
    deadline = time.monotonic() + 15        # the writer flushes every 0.5 s; generous bound
    while b"periodic-flush-check" not in (ch.path.read_bytes() if ch.path.exists() else b""):
        assert time.monotonic() < deadline, "recording not flushed to disk"
        time.sleep(0.05)
    s.close()


async def test_flow_control_high_water_and_drain(tmp_path, recorder):
    s = recorder.start_session(principal=AGENT, client="c", target="t", login="l")
    ch = s.open_channel("exec", command="cat big")
    recorder.flush()
    blocker = sqlite3.connect(tmp_path / "index.sqlite", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")          # the writer's next transaction waits on this
    try:
        ch.command("cat big", FakeDecision("allow", "r", "ok"))
        chunk = b"z" * (1024 * 1024)
        for _ in range(ops.HIGH_WATER // len(chunk) + 2):
            ch.output(chunk)
        assert ch.over_high_water()
        drained = asyncio.ensure_future(ch.drain())
        await asyncio.sleep(0)
        assert not drained.done()               # the writer cannot progress while we hold the lock
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    await asyncio.wait_for(drained, 30)
    assert not ch.over_high_water()
    ch.close()
    s.close()
    recorder.flush()
    assert ch.path.stat().st_size > 10 * 1024 * 1024


def test_hard_limit_raises_instead_of_dropping(tmp_path, recorder):
    s = recorder.start_session(principal=AGENT, client="c", target="t", login="l")
    ch = s.open_channel("exec", command="cat huge")
    recorder.flush()
    blocker = sqlite3.connect(tmp_path / "index.sqlite", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        ch.command("cat huge", FakeDecision("allow", "r", "ok"))
        chunk = b"h" * (1024 * 1024)
        with pytest.raises(RecordingError, match="queue is full"):
            for _ in range(ops.HARD_LIMIT // len(chunk) + 2):
                ch.output(chunk)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    ch.close()
    s.close()


def test_open_refuses_unwritable_data_dir(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    with pytest.raises(RecordingError, match="cannot write recordings") as info:
        Recorder.open(blocker / "data")
    assert info.value.hint and "refuses to run sessions" in info.value.hint


def test_one_recorder_per_data_dir(tmp_path, recorder):
    with pytest.raises(RecordingError, match="another bastion process"):
        Recorder.open(tmp_path)


def test_close_seals_open_sessions_and_ids_continue(tmp_path):
    rec = Recorder.open(tmp_path)
    s = rec.start_session(principal=AGENT, client="c", target="t", login="l")
    ch = s.open_channel("shell")
    ch.output(b"bye\r\n")
    rec.close()
    ch.output(b"after close is ignored, not an error")
    [sess] = rows(tmp_path, "SELECT * FROM sessions")
    [chan] = rows(tmp_path, "SELECT * FROM channels")
    assert sess["status"] == "closed" and sess["seq"] and chan["status"] == "closed" and chan["seq"]
    rec2 = Recorder.open(tmp_path)
    try:
        assert rec2.recovered == []
        s2 = rec2.start_session(principal=AGENT, client="c", target="t", login="l")
        assert s2.id == s.id + 1
        assert s2.open_channel("exec").id == ch.id + 1
    finally:
        rec2.close()
    assert verify_index(tmp_path).ok


@pytest.fixture
def held_recorder(tmp_path):
    """A recorder that, after a failure, tries again only when told (``retry_now``)."""
    rec = Recorder.open(tmp_path, backoff=(3600, 3600))
    yield rec
    rec.close()


def test_unhealthy_after_a_failed_write_until_it_recovers(tmp_path, held_recorder):
    recorder = held_recorder
    s = recorder.start_session(principal=AGENT, client="c", target="t", login="l")
    ch = s.open_channel("exec", command="x")
    ch.output(b"shown before the failure\n")
    recorder.flush()
    # make the next recording path unusable: a directory where the file should be created
    cid = ch.id + 1
    target = ch.path.parent / f"s{s.id}-c{cid}.cast"
    target.mkdir()
    ch2 = s.open_channel("exec", command="y")
    assert ch2.path == target
    with pytest.raises(RecordingError, match="creating recording"):
        recorder.flush()                             # not everything could be written
    assert recorder.wait_state("failed") == "failed"
    assert not recorder.healthy()
    assert "creating recording" in recorder.error
    with pytest.raises(RecordingError, match="not possible"):
        recorder.start_session(principal=AGENT, client="c", target="t", login="l")
    with pytest.raises(RecordingError):
        ch2.output(b"must not run unrecorded")
    with pytest.raises(RecordingError, match="creating recording"):
        ch.output(b"every channel open at the failure is stopped")
    ch.close(exit_status=255)
    ch2.close(exit_status=255)
    # the cause was one file's path: a new worker closes what the failed one left and passes
    # its probe, so sessions are recorded again
    recorder.retry_now()
    assert recorder.wait_state("ok") == "ok"
    assert recorder.healthy() and recorder.error is None
    s2 = recorder.start_session(principal=AGENT, client="c", target="t", login="l")
    ch3 = s2.open_channel("exec", command="z")
    ch3.output(b"after the recovery\n")
    ch3.close(exit_status=0)
    s2.close()
    s.close()
    recorder.flush()
    chans = {r["id"]: r for r in rows(tmp_path, "SELECT * FROM channels")}
    assert chans[ch2.id]["status"] == "failed" and chans[ch2.id]["seq"]
    assert chans[ch.id]["status"] == "failed" and chans[ch.id]["exit_status"] == 255
    assert chans[ch3.id]["status"] == "closed" and chans[ch3.id]["exit_status"] == 0
    _, events = read_cast(ch.path)
    assert events[-2].data == channelfiles.failure_label("creating recording: File exists")
    assert _stdout(ch.path) == b"shown before the failure\n"
    assert _stdout(ch3.path) == b"after the recovery\n"
    status = recorder.status()
    assert status["failures"] == 1 and status["recoveries"] == 1
    assert verify_index(tmp_path).ok


async def test_writer_crash_fails_closed(tmp_path, held_recorder):
    recorder = held_recorder
    s = recorder.start_session(principal=AGENT, client="c", target="t", login="l")
    ch = s.open_channel("exec", command="x")
    recorder.flush()
    blocker = sqlite3.connect(tmp_path / "index.sqlite", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")         # the worker waits on the index while it dies
    try:
        ch.output(b"data")
        ch.command("x", FakeDecision("allow", "r", "ok"))     # a row: the index is needed
        flushed = asyncio.get_running_loop().run_in_executor(None, recorder.flush, 30)
        await asyncio.sleep(0.3)
        os.kill(recorder._writer.proc.pid, signal.SIGKILL)   # the worker dies (OOM killer, bug)
        with pytest.raises(RecordingError):
            await flushed                    # released by the crash handler, not the timeout
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert recorder.wait_state("failed") == "failed"
    assert not recorder.healthy() and "crashed" in recorder.error
    assert "signal 9" in recorder.error
    with pytest.raises(RecordingError, match="not possible"):
        ch.output(b"must not run unrecorded")
    with pytest.raises(RecordingError, match="not possible"):
        recorder.start_session(principal=AGENT, client="c", target="t", login="l")
    with pytest.raises(RecordingError):
        await ch.drain()
    ch.close(exit_status=255)
    s.close()
    # a new worker is started (here when told; by itself after the backoff in service)
    recorder.retry_now()
    assert recorder.wait_state("ok") == "ok"
    recorder.flush()
    [chan] = rows(tmp_path, "SELECT * FROM channels")
    assert chan["status"] == "failed" and chan["exit_status"] == 255 and chan["seq"]
    _, events = read_cast(ch.path)
    assert "the recording worker process crashed (killed by signal 9)" in events[-2].data
    assert verify_index(tmp_path).ok


def test_worker_ignores_signals_meant_for_the_bastion(tmp_path, recorder):
    """Ctrl-C in a terminal or a service manager signalling the whole group reaches the
    worker too: it must go on until the bastion closes its sessions."""
    s = recorder.start_session(principal=AGENT, client="c", target="t", login="l")
    ch = s.open_channel("exec", command="x")
    recorder.flush()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        os.kill(recorder._writer.proc.pid, sig)
    time.sleep(0.3)
    ch.output(b"after-the-signals\n")
    ch.close(exit_status=0)
    s.close()
    recorder.flush()
    assert recorder.healthy()
    assert b"after-the-signals" in ch.path.read_bytes()
    [chan] = rows(tmp_path, "SELECT * FROM channels")
    assert chan["status"] == "closed" and chan["exit_status"] == 0 and chan["seq"]


def test_worker_gets_no_secrets_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("BASTION_VAULT_PASSPHRASE", "vault-passphrase-canary")
    monkeypatch.setenv("BASTION_TOKEN", "token-canary")
    rec = Recorder.open(tmp_path)
    try:
        environ = Path(f"/proc/{rec._writer.proc.pid}/environ").read_bytes()
    finally:
        rec.close()
    assert b"PYTHONPATH=" in environ                 # the worker's environment was read
    assert b"canary" not in environ


def test_close_waits_for_the_worker_and_frees_the_data_dir(tmp_path):
    rec = Recorder.open(tmp_path)
    pid = rec._writer.proc.pid
    s = rec.start_session(principal=AGENT, client="c", target="t", login="l")
    s.open_channel("shell").output(b"x" * 100_000)
    rec.close()
    assert rec._writer.proc.returncode == 0          # stopped, not killed
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    fd = os.open(tmp_path / "recorder.lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)   # free at once: nobody holds it
    finally:
        os.close(fd)


# -- masking in the recording worker (channels whose agent is not masked live) ----------

SECRET = b"ghp_" + b"Zq9" * 12                      # a GitHub token (40 bytes)


def _stdout(path) -> bytes:
    _, events = player.load(path)
    return player.stream_bytes(events, "stdout")


def test_worker_masks_a_secret_split_across_chunks(tmp_path, recorder):
    s = recorder.start_session(principal=AGENT, client="c", target="t", login="l")
    ch = s.open_channel("exec", command="cat .env", mask=BUILTIN)
    stream = b"GITHUB_TOKEN=" + SECRET + b"\nnext line\n" + b"AKIAIOSFODNN7EXAMPLE tail"
    for i in range(0, len(stream), 7):                 # 7-byte chunks: every secret is split
        ch.output(stream[i:i + 7])
    ch.input(b"echo " + SECRET[:20])
    ch.input(SECRET[20:] + b"\r")
    ch.close(exit_status=0)
    s.close()
    recorder.flush()
    raw = ch.path.read_bytes()
    assert SECRET not in raw and b"AKIAIOSFODNN7EXAMPLE" not in raw
    whole = Masker(BUILTIN)
    assert _stdout(ch.path) == whole.feed(stream) + whole.flush()   # as if masked in one piece
    assert _stdout(ch.path).startswith(b"GITHUB_TOKEN=[MASKED:")
    assert b"[MASKED:aws-access-key-id] tail" in _stdout(ch.path)   # the held-back tail at close
    _, events = player.load(ch.path)
    assert player.stream_bytes(events, "input") == b"echo [MASKED:github-token]\r"
    assert verify_index(tmp_path).ok


def test_held_back_bytes_are_written_once_decided_never_on_a_timer(tmp_path, recorder):
    """Issue 16 item 2: a secret printed in two parts a moment apart is stored masked whole.
    (Before, a masked stream quiet for 1 s had its held-back bytes written undecided.)"""
    s = recorder.start_session(principal=AGENT, client="c", target="t", login="l")
    ch = s.open_channel("shell", mask=BUILTIN)
    ch.output(b"$ export GITHUB_TOKEN=" + SECRET[:17])
    recorder.flush()                            # a barrier: the worker went through its idle path
    time.sleep(1.5)                             # longer than the old quiet flush (1 s)
    recorder.flush()
    raw = ch.path.read_bytes()
    assert SECRET[:17] not in raw and b"ghp_" not in raw          # undecided: not written
    listing = b"".join(b"file-%04d\r\n" % i for i in range(200))
    ch.output(SECRET[17:] + b"\r\n" + listing + b"$ ")
    recorder.flush()                            # more data decided it: masked whole
    stream = b"$ export GITHUB_TOKEN=" + SECRET + b"\r\n" + listing + b"$ "
    whole = Masker(BUILTIN)
    expected = whole.feed(stream) + whole.flush()
    assert expected.startswith(b"$ export GITHUB_TOKEN=[MASKED:")
    written = _stdout(ch.path)
    assert expected.startswith(written) and b"[MASKED:" in written and b"file-0000" in written
    assert 0 < len(expected) - len(written) <= DEFAULT_MAX_HOLDBACK   # the undecided tail only
    ch.close(exit_status=0)                     # the end decides what is still held
    s.close()
    recorder.flush()
    assert _stdout(ch.path) == expected
    assert SECRET[:17] not in ch.path.read_bytes()


def test_without_masks_the_worker_records_bytes_as_given(tmp_path, recorder):
    s = recorder.start_session(principal=AGENT, client="c", target="t", login="l")
    ch = s.open_channel("exec", command="x")          # the caller masked already (mask_live)
    ch.output(b"already masked upstream: " + SECRET)
    ch.close(exit_status=0)
    s.close()
    recorder.flush()
    assert _stdout(ch.path) == b"already masked upstream: " + SECRET
