"""The live follower's pure parts (bastion.recording.follow): bytes from store rows without a
gap, events cut at line ends whatever the pieces, a session that ended refused with a hint."""

from __future__ import annotations

import json

import pytest

from bastion.errors import RecordingError
from bastion.recording.follow import (ROWS_MAX, ROWS_MIN, Follower, check_live, contiguous,
                                      live_channel, rows_for)

HEADER = json.dumps({"version": 2, "width": 100, "height": 30, "timestamp": 1}).encode() + b"\n"
EVENTS = [json.dumps([0.5 * i, "o", f"line {i}\r\n"]).encode() + b"\n" for i in range(1, 6)]
CAST = HEADER + b"".join(EVENTS)


@pytest.mark.parametrize("rows,pos,size,expected", [
    ([], 0, 100, b""),
    ([(0, b"abc"), (3, b"def")], 0, 100, b"abcdef"),
    ([(0, b"abc"), (3, b"def")], 3, 100, b"def"),
    ([(0, b"abc"), (3, b"def")], 4, 100, b"ef"),              # inside a row
    ([(0, b"abc"), (3, b"def")], 6, 100, b""),                # at the end
    ([(0, b"abc"), (6, b"ghi")], 0, 100, b"abc"),             # a hole stops it
    ([(6, b"ghi")], 3, 100, b""),                             # nothing at pos yet
    ([(0, b"abc"), (3, b"def"), (6, b"ghi")], 0, 4, b"abcdef"),  # whole rows past the size
    ([(0, b"abcdef"), (6, b"ghi")], 2, 100, b"cdefghi"),      # rows re-cut: found by offset
])
def test_contiguous(rows, pos, size, expected):
    assert contiguous(rows, pos, size) == expected


@pytest.mark.parametrize("sizes,current,expected", [
    ([], 16, 16),                                   # nothing read: as before
    ([256 * 1024] * 4, 16, 4),                      # bulk rows: 4 make 1 MiB
    ([100] * 16, 16, ROWS_MAX),                     # small rows: as many as allowed
    ([4096] * 16, 16, 256),
    ([3 << 20], 16, ROWS_MIN),                      # a row larger than a read
])
def test_rows_for_asks_for_about_a_read_of_rows(sizes, current, expected):
    rows = [(0, b"x" * n) for n in sizes]
    assert rows_for(rows, 1 << 20, current) == expected


class GrowingBytes:
    """A recording that grows by the pieces a test appends (a seam the follower owns)."""
    name = "test"

    def __init__(self) -> None:
        self.data = b""

    def read(self, pos: int, size: int) -> bytes:
        return self.data[pos:pos + size]


def _texts(events):
    return [ev.text() for ev in events]


@pytest.mark.parametrize("piece", [len(CAST), 1, 7, 64])
def test_follower_returns_complete_events_whatever_the_pieces(piece):
    src = GrowingBytes()
    follower = Follower(src)
    seen = []
    for at in range(0, len(CAST), piece):
        src.data += CAST[at:at + piece]
        seen += follower.read()
    assert follower.header is not None and follower.header["width"] == 100
    assert _texts(seen) == [f"line {i}\r\n" for i in range(1, 6)]
    assert follower.read() == []
    assert follower.pos == len(CAST)


def test_a_line_being_written_waits_for_its_end():
    src = GrowingBytes()
    follower = Follower(src)
    src.data = HEADER + EVENTS[0] + EVENTS[1][:5]
    assert _texts(follower.read()) == ["line 1\r\n"]
    src.data += EVENTS[1][5:]
    assert _texts(follower.read()) == ["line 2\r\n"]


def test_a_bad_line_is_an_error_that_says_what_to_do():
    src = GrowingBytes()
    src.data = HEADER + b"not json\n"
    with pytest.raises(RecordingError) as exc:
        Follower(src).read()
    assert "not valid asciicast" in str(exc.value) and "verify" in exc.value.hint


@pytest.mark.parametrize("status,words", [("closed", "has ended"),
                                          ("interrupted", "was interrupted"),
                                          ("refused", "was refused")])
def test_a_session_that_ended_is_refused_with_the_replay_command(status, words):
    with pytest.raises(RecordingError) as exc:
        check_live({"id": 42, "status": status})
    assert f"session 42 {words}" in str(exc.value)
    assert "bastion sessions play 42" in exc.value.hint


def test_an_active_session_may_be_followed():
    check_live({"id": 42, "status": "active"})


def test_live_channel_prefers_the_newest_open_one():
    session = {"id": 1, "channels": [{"id": 1, "path": "a", "ended": None},
                                     {"id": 2, "path": "b", "ended": None},
                                     {"id": 3, "path": "c", "ended": 5.0},
                                     {"id": 4, "path": None, "ended": None}]}
    assert live_channel(session)["id"] == 2
    assert live_channel(session, 3)["id"] == 3
    with pytest.raises(RecordingError):
        live_channel(session, 4)                      # no recording
    with pytest.raises(RecordingError) as exc:
        live_channel({"id": 1, "channels": []})
    assert "no recorded channel yet" in str(exc.value)
