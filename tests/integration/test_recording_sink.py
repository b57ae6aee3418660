"""bastion.recording.sink on real files: adoption after a failed worker, partial writes,
held-back bytes decided only with more data or at the end; and the replay's rewriting."""

from __future__ import annotations

import hashlib
import os

from bastion.proto import asciicast
from bastion.proto.masker import BUILTIN
from bastion.recording import player
from bastion.recording.sink import Sink
from bastion.recording.replay import for_replay as _for_replay
from bastion.recording.ops import (OP_BARRIER, OP_CHANNEL_CLOSE, OP_CHANNEL_OPEN, OP_COMMAND,
                                   OP_DATA, OP_MARKER, OP_PROBE, OP_SESSION_START)

HEADER = asciicast.header_line(width=80, height=24, timestamp=1, title="t",
                               extra={"session": 1, "channel": 2})


def _events(path):
    with open(path, "rb") as fh:
        _, events = asciicast.iter_cast(fh)
        return list(events)


def test_adopt_cuts_a_torn_line_hashes_what_is_there_and_goes_on(tmp_path):
    path = tmp_path / "s1-c2.cast"
    sink = Sink.create(2, path, HEADER, 1 << 20, lambda e: None)
    sink.data("o", 0.5, b"before\r\n")
    sink.flush()
    sink.release()                                 # the worker died here...
    with open(path, "ab") as fh:
        fh.write(b'[0.7, "o", "torn wri')         # ...in the middle of a write
    adopted = Sink.adopt(2, path, HEADER, 1 << 20, lambda e: None)
    assert adopted.last_t == 0.5
    adopted.data("o", 0.9, b"after\r\n")
    digest = adopted.close(1.0, ("bastion: recording failed (x); the channel was stopped",
                                 "exit status 255"))
    raw = path.read_bytes()
    assert digest == hashlib.sha256(raw).hexdigest()
    assert [e.data for e in _events(path)] == [
        "before\r\n", "after\r\n", "bastion: recording failed (x); the channel was stopped",
        "exit status 255"]


def test_adopt_creates_a_recording_that_was_never_created(tmp_path):
    path = tmp_path / "day" / "s1-c2.cast"
    sink = Sink.adopt(2, path, HEADER, 1 << 20, lambda e: None)
    sink.close(0.0, ("exit status 255",))
    assert [e.data for e in _events(path)] == ["exit status 255"]
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_a_write_cut_short_keeps_the_rest_for_the_next_one(tmp_path):
    """A full disk: os.write takes part of the buffer, then fails.  The rest stays buffered and
    a later flush writes each byte once; the hash matches the file throughout."""
    path = tmp_path / "s1-c2.cast"
    sink = Sink.create(2, path, HEADER, 1 << 20, lambda e: None)
    sink.data("o", 0.1, b"x" * 1000 + b"\r\n")
    real_write, calls = os.write, []

    def short_then_full(fd, data):              # a seam for this one syscall only
        calls.append(len(data))
        if len(calls) == 1:
            return real_write(fd, bytes(data)[:100])
        raise OSError(28, "No space left on device")

    os.write = short_then_full
    try:
        try:
            sink.flush()
        except OSError:
            pass
    finally:
        os.write = real_write
    assert sink.buf and path.stat().st_size == sink.written
    assert sink.hasher.hexdigest() == hashlib.sha256(path.read_bytes()).hexdigest()
    sink.flush()                                 # space is back (the reserve was released)
    assert not sink.buf
    digest = sink.close(0.2, ("exit status 0",))
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    assert [e.data for e in _events(path)][0] == "x" * 1000 + "\r\n"


def test_held_back_bytes_wait_for_more_data_or_the_end(tmp_path):
    path = tmp_path / "s1-c2.cast"
    sink = Sink.create(2, path, HEADER, 1 << 20, lambda e: None, tuple(BUILTIN))
    sink.data("o", 0.1, b"token ghp_a1B2c3D4e5F6")
    sink.flush()
    assert sink.held > 0 and b"ghp_" not in path.read_bytes()
    sink.data("o", 5.0, b"g7H8i9J0k1L2m3N4o5P6q7R8 done\n")
    sink.finish(5.0)                             # the stream ends: decided
    sink.close(5.0)
    _, events = player.load(path)
    assert player.stream_bytes(events, "stdout") == b"token [MASKED:github-token] done\n"


def test_the_replay_drops_data_and_tells_the_truth_about_held_exit_statuses():
    cause = "writing recording: No space left on device"
    assert _for_replay((OP_DATA, 2, "o", 0.1, b"x", 0, 1), cause) is None
    assert _for_replay((OP_BARRIER, 1), cause) is None
    assert _for_replay((OP_PROBE,), cause) is None
    assert _for_replay((OP_CHANNEL_OPEN, 2) + (None,) * 11, cause) is None   # re-sent whole
    start = (OP_SESSION_START, 1, 0.0, None, "c", "t", "l")
    assert _for_replay(start, cause) == start
    command = (OP_COMMAND, 5, 1, 2, 0.0, 0.1, "ls", None, "allow", "r", "ok", None, "m")
    assert _for_replay(command, cause) == command
    marker = (OP_MARKER, 2, 0.1, "note")
    assert _for_replay(marker, cause) == marker
    held = (OP_CHANNEL_CLOSE, 2, 1.0, 10.0, 0, None, 3, 4, None)
    assert _for_replay(held, cause) == (
        OP_CHANNEL_CLOSE, 2, 1.0, 10.0, 255, None, 3, 4,
        f"{cause}; the agent was not given exit status 0")
    lost = (OP_CHANNEL_CLOSE, 2, 1.0, 10.0, 255, None, 3, 4, cause)
    assert _for_replay(lost, cause) == lost                   # closed after the failure: as is
