"""kill -9 mid-session and a disk that refuses writes, with real processes and files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from bastion.proto import asciicast
from bastion.recording import Recorder, query
from bastion.recording.recover import INTERRUPTED_MARKER
from bastion.recording.verify import file_sha256, verify_index

ASCIINEMA = Path(sys.executable).with_name("asciinema")

CHILD = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from bastion.identity.principal import Principal
    from bastion.policy import Action, Decision
    from bastion.recording import Recorder

    rec = Recorder.open(Path(sys.argv[1]))
    s = rec.start_session(principal=Principal(subject="oid-crash", name="crashy"),
                          client="127.0.0.1:1", target="web1", login="deploy")
    ch = s.open_channel("shell", term="xterm", width=100, height=30)
    ch.output(b"before-flush\\r\\n")
    cmd = ch.command("ls /etc", Decision(Action.ALLOW, "read-only", "listing"))
    rec.flush()
    print(json.dumps({"session": s.id, "channel": ch.id, "path": str(ch.path), "command": cmd,
                      "worker": rec._writer.proc.pid}), flush=True)
    i = 0
    while True:                                   # keep the writer busy until killed
        ch.output(b"line %d \\xe2\\x82\\xac \\xff\\r\\n" % i * 20)
        i += 1
        if ch.over_high_water():
            rec.flush()
""")


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def test_kill_9_leaves_valid_recording_and_interrupted_row(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        info = json.loads(proc.stdout.readline() or "{}")
        assert info, proc.stderr.read().decode()
        path = Path(info["path"])
        flushed = path.stat().st_size
        deadline = time.monotonic() + 30
        while path.stat().st_size < flushed + 200_000:      # the writer is appending right now
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.01)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    # the recording worker sees its input end, writes out what it had, and exits
    deadline = time.monotonic() + 30
    while _running(info["worker"]):
        assert time.monotonic() < deadline, "the recording worker outlived the bastion process"
        time.sleep(0.05)

    raw = path.read_bytes()
    assert raw.endswith(b"\n")
    with open(path, "rb") as fh:
        header, events = asciicast.iter_cast(fh)             # strict: every line parses
        events = list(events)
    assert header["width"] == 100
    assert events[0].data == "before-flush\r\n"
    assert any(e.code == "m" and "ls /etc" in e.data for e in events)

    rec = Recorder.open(tmp_path)
    try:
        assert rec.recovered == [info["session"]]
    finally:
        rec.close()
    record = query.get_session(query.open_index(tmp_path), info["session"])
    assert record["status"] == "interrupted"
    assert "without closing" in record["reason"]
    [chan] = record["channels"]
    assert chan["status"] == "interrupted"
    assert chan["sha256"] == file_sha256(path)
    assert chan["bytes_out"] > 0
    [cmd] = record["commands"]
    assert cmd["id"] == info["command"] and cmd["seq"] is not None
    with open(path, "rb") as fh:
        _, events = asciicast.iter_cast(fh)
        events = list(events)
    assert events[-1].code == "m" and events[-1].data == INTERRUPTED_MARKER
    assert record["ended"] >= record["started"]
    assert verify_index(tmp_path).ok
    if ASCIINEMA.exists():
        out = subprocess.run([str(ASCIINEMA), "cat", str(path)], capture_output=True,
                             start_new_session=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert b"before-flush" in out.stdout


def test_torn_last_line_is_cut_at_recovery(tmp_path):
    rec = Recorder.open(tmp_path)
    s = rec.start_session(principal=None, client="c", target="t", login="l")
    ch = s.open_channel("shell")
    ch.output(b"complete\r\n")
    rec.flush()
    # simulate a crash: stop the writer without closing rows, then tear the file
    rec._writer.close()                      # the worker closes its files, the rows stay open
    os.close(rec._lock_fd)
    with open(ch.path, "ab") as fh:
        fh.write(b'[9.5, "o", "torn wri')
    rec2 = Recorder.open(tmp_path)
    rec2.close()
    with open(ch.path, "rb") as fh:
        _, events = asciicast.iter_cast(fh)
        events = list(events)
    assert [e.data for e in events] == ["complete\r\n", INTERRUPTED_MARKER]
    assert verify_index(tmp_path).ok


DISK_CHILD = textwrap.dedent("""
    import json, resource, signal, sys
    from pathlib import Path
    from bastion.errors import RecordingError
    from bastion.identity.principal import Principal
    from bastion.recording import Recorder

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)     # get EFBIG instead of being killed
    rec = Recorder.open(Path(sys.argv[1]), backoff=(3600, 3600))   # retry only when told
    p = Principal(subject="oid-disk")
    s = rec.start_session(principal=p, client="c", target="t", login="l")
    ch = s.open_channel("exec", command="cat /dev/urandom")
    rec.flush()
    # the "disk" is now full, for the recording worker process that writes the files
    resource.prlimit(rec._writer.proc.pid, resource.RLIMIT_FSIZE, (400_000, 400_000))
    for _ in range(100):
        ch.output(b"y" * 10_000)
    try:
        rec.flush()
        result = {"flush": "ok"}
    except RecordingError as exc:
        result = {"flush": str(exc)}
    rec.wait_state("failed")
    result.update(healthy=rec.healthy(), error=rec.error)
    try:
        rec.start_session(principal=p, client="c", target="t", login="l")
        result["second_session"] = "started"
    except RecordingError as exc:
        result["second_session"] = str(exc)
    try:
        ch.output(b"more")
        result["output"] = "accepted"
    except RecordingError as exc:
        result["output"] = str(exc)
    ch.close(exit_status=255)
    # the limit was the failed worker's: a new one records again
    rec.retry_now()
    result["after_retry"] = rec.wait_state("ok")
    s2 = rec.start_session(principal=p, client="c", target="t", login="l")
    ch2 = s2.open_channel("exec", command="echo again")
    ch2.output(b"recorded again\\n")
    ch2.close(exit_status=0)
    s2.close()
    s.close()
    rec.flush()
    result["paths"] = [str(ch.path), str(ch2.path)]
    rec.close()
    print(json.dumps(result), flush=True)
""")


def test_write_failure_refuses_new_sessions(tmp_path):
    out = subprocess.run([sys.executable, "-c", DISK_CHILD, str(tmp_path)], capture_output=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr.decode()
    result = json.loads(out.stdout.decode().strip().splitlines()[-1])
    assert "File too large" in result["flush"]
    assert result["healthy"] is False
    assert "File too large" in result["error"]
    assert result["second_session"].startswith("session recording is not possible")
    assert result["output"].startswith("session recording is not possible")
    assert result["after_retry"] == "ok"
    assert verify_index(tmp_path).ok
    failed, again = (Path(p) for p in result["paths"])
    assert b"recorded again" in again.read_bytes()
    with open(failed, "rb") as fh:
        _, events = asciicast.iter_cast(fh)
        events = list(events)
    assert "File too large" in events[-2].data and events[-1].data == "exit status 255"


def test_recover_is_idempotent(tmp_path):
    rec = Recorder.open(tmp_path)
    rec.close()
    for _ in range(2):
        rec = Recorder.open(tmp_path)
        assert rec.recovered == []
        rec.close()
