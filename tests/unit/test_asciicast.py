"""asciicast v2 encoding: header/events, lossless UTF-8/binary split, parsing."""

from __future__ import annotations

import json
import random

import pytest

from bastion.proto import asciicast
from bastion.proto.asciicast import CastFormatError, Event, Reassembler, StreamEncoder


def decode_lines(lines: list[bytes]) -> list[list]:
    return [json.loads(line) for line in lines]


def roundtrip(stream: str, chunks: list[bytes]) -> tuple[bytes, list[list]]:
    enc = StreamEncoder(stream)
    lines = []
    for i, chunk in enumerate(chunks):
        lines += enc.encode(float(i), chunk)
    lines += enc.flush(float(len(chunks)))
    assembler = Reassembler()
    for line in lines:
        assert line.endswith(b"\n") and line.count(b"\n") == 1     # one event per line
        assembler.feed(asciicast.parse_event(line))
    return assembler.bytes(stream), decode_lines(lines)


def test_header_line_is_asciicast_v2():
    line = asciicast.header_line(width=120, height=40, timestamp=1700000000, title="a → b@c",
                                 term="xterm-256color", command="ls", extra={"session": 3})
    assert line.endswith(b"\n")
    header = asciicast.parse_header(line)
    assert header == {"version": 2, "width": 120, "height": 40, "timestamp": 1700000000,
                      "title": "a → b@c", "command": "ls", "env": {"TERM": "xterm-256color"},
                      "bastion": {"session": 3}}


@pytest.mark.parametrize("t, code, data, expected", [
    (0.0, "o", "hi", [0.0, "o", "hi"]),
    (1.2345678, "o", "x", [1.234568, "o", "x"]),           # microsecond rounding
    (-0.5, "m", "", [0.0, "m", ""]),                         # never negative
    (2.0, "o", "\x1b[31mred\x00\n", [2.0, "o", "\x1b[31mred\x00\n"]),
    (3.0, "r", "80x24", [3.0, "r", "80x24"]),
    (4.0, "o", "line\u2028sep", [4.0, "o", "line\u2028sep"]),
])
def test_event_line(t, code, data, expected):
    line = asciicast.event_line(t, code, data)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(line) == expected


@pytest.mark.parametrize("chunks, events", [
    ([b"hello"], [[0.0, "o", "hello"]]),
    ([b"caf\xc3\xa9"], [[0.0, "o", "café"]]),
    # a multi-byte character split across chunks is held back and joined
    ([b"caf\xc3", b"\xa9!"], [[0.0, "o", "caf"], [1.0, "o", "é!"]]),
    ([b"\xe2", b"\x82", b"\xac"], [[2.0, "o", "€"]]),
    # invalid bytes become a base64 event between text events
    ([b"a\xffb"], [[0.0, "o", "a"], [0.0, "ob", "/w=="], [0.0, "o", "b"]]),
    ([b"\xff\xfe"], [[0.0, "ob", "//4="]]),
    # incomplete character at the very end of the stream is flushed as binary
    ([b"x\xe2\x82"], [[0.0, "o", "x"], [1.0, "ob", "4oI="]]),
    # an interrupted sequence in the middle is invalid, not held back
    ([b"\xe2\x82A"], [[0.0, "ob", "4oI="], [0.0, "o", "A"]]),
    ([b""], []),
])
def test_stream_encoder_cases(chunks, events):
    data, decoded = roundtrip("o", chunks)
    assert data == b"".join(chunks)
    assert decoded == events


def test_many_invalid_runs_become_one_binary_event():
    chunk = b"".join(bytes([0x41 + i, 0xFF]) for i in range(20))      # 40 runs
    data, decoded = roundtrip("o", [chunk])
    assert data == chunk
    assert [e[1] for e in decoded] == ["ob"]


@pytest.mark.parametrize("stream, text_code, bin_code", [("o", "o", "ob"), ("e", "e", "eb"), ("i", "i", "ib")])
def test_stream_codes(stream, text_code, bin_code):
    _, decoded = roundtrip(stream, [b"ok", b"\x80"])
    assert [e[1] for e in decoded] == [text_code, bin_code]


@pytest.mark.parametrize("seed", range(25))
def test_random_bytes_roundtrip_with_random_chunking(seed):
    rng = random.Random(seed)
    pieces = []
    for _ in range(rng.randint(1, 40)):
        kind = rng.random()
        if kind < 0.4:
            pieces.append(bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 300))))
        elif kind < 0.8:
            pieces.append("".join(chr(rng.choice([rng.randint(32, 126), rng.randint(0xA0, 0x2FFF),
                                                  rng.randint(0x1F300, 0x1F64F), rng.randint(0, 31)]))
                                  for _ in range(rng.randint(0, 100))).encode("utf-8"))
        else:
            pieces.append(b"\x1b[1;31m\x00\r\n")
    blob = b"".join(pieces)
    cuts = sorted(rng.sample(range(len(blob) + 1), k=min(len(blob) + 1, rng.randint(0, 30))))
    chunks = [blob[a:b] for a, b in zip([0] + cuts, cuts + [len(blob)])]
    data, decoded = roundtrip("o", chunks)
    assert data == blob
    for t, code, payload in decoded:
        assert code in ("o", "ob")


def test_byte_at_a_time_matches_whole():
    blob = "héllo wörld €\n".encode() + b"\xff\x00tail"
    whole, _ = roundtrip("o", [blob])
    single, _ = roundtrip("o", [blob[i:i + 1] for i in range(len(blob))])
    assert whole == single == blob


@pytest.mark.parametrize("line, message", [
    (b"not json", "not JSON"),
    (b'{"version": 1, "width": 1, "height": 1}', "version"),
    (b'{"version": 2, "width": "80", "height": 24}', "width"),
    (b"[1, 2]", "version"),
])
def test_parse_header_errors(line, message):
    with pytest.raises(CastFormatError, match=message):
        asciicast.parse_header(line)


@pytest.mark.parametrize("line", [b"[1.0, \"o\"]", b"{}", b"[\"1\", \"o\", \"x\"]", b"[1, \"o\", 3]",
                                  b"[true, \"o\", \"x\"]", b"[1.0, \"o\", \"x\""])
def test_parse_event_errors(line):
    with pytest.raises(CastFormatError):
        asciicast.parse_event(line)


def test_event_payload_and_text():
    assert Event(0.0, "ob", "/w==").payload() == b"\xff"
    assert Event(0.0, "ob", "/w==").text() == "\ufffd"
    assert Event(0.0, "o", "é").payload() == "é".encode()
    assert Event(0.0, "e", "x").stream == "e"
    assert Event(0.0, "m", "x").stream is None
    with pytest.raises(CastFormatError):
        Event(0.0, "ob", "not base64!").payload()


def test_iter_cast_partial_tail():
    header = asciicast.header_line(width=80, height=24, timestamp=0)
    good = asciicast.event_line(0.5, "o", "a")
    lines = [header, good, b'[0.6, "o", "unfinish']
    _, events = asciicast.iter_cast(lines, allow_partial_tail=True)
    assert [e.data for e in events] == ["a"]
    _, events = asciicast.iter_cast(lines)
    with pytest.raises(CastFormatError, match="line 3"):
        list(events)


def test_iter_cast_empty():
    with pytest.raises(CastFormatError, match="empty"):
        asciicast.iter_cast([])


@pytest.mark.parametrize("data, code", [
    (b"x" + bytes(4096), "ob"),                            # mostly NUL: base64, not \u0000 x 4096
    (bytes(asciicast.HEAVY_MIN - 1), "o"),                  # short chunks stay text
    ("plain text\n".encode("utf-16-le") * 40, "ob"),        # UTF-16: every other byte NUL
    (b"\x1b[2J\x1b[H\x07\x08" * 200, "o"),                  # terminal control stays text
    ((b"x" * 99 + b"\x00") * 40, "o"),                      # a NUL in 100: escaping is cheaper
    ((b"x" * 10 + b"\x01") * 100, "ob"),                    # one in 11: base64 is cheaper
    (b"\r\n" * 300 + b"\x01" * 42, "o"),                    # line ends never count: 42 * 15 <= 642
    (b"\r\n" * 300 + b"\x01" * 43, "ob"),                   # 43 * 15 > 643
])
def test_escape_heavy_chunks_are_written_as_base64(data, code):
    lines = asciicast.StreamEncoder("o").encode(1.0, data)
    assert [json.loads(line)[1] for line in lines] == [code]
    out, _ = roundtrip("o", [data])
    assert out == data
    if code == "ob":
        assert len(lines[0]) < len(data) * 4 // 3 + 40


@pytest.mark.parametrize("stream, chunks, events", [
    # a chunk NUL from end to end is one NUL-run event: its length, not its bytes
    ("o", [bytes(32768)], [[1.0, "oz", "32768"]]),
    ("e", [bytes(asciicast.HEAVY_MIN)], [[1.0, "ez", "256"]]),
    ("i", [bytes(1000)], [[1.0, "iz", "1000"]]),
    ("o", [bytes((1 << 18) + 1)], [[1.0, "oz", str((1 << 18) + 1)]]),     # past the zero buffer
    ("o", [bytes(1 << 18) + b"\x01"], None),
    # shorter runs stay text; mixed chunks are not split
    ("o", [bytes(asciicast.HEAVY_MIN - 1)], [[1.0, "o", "\x00" * 255]]),
    ("o", [bytes(300) + b"x"], None),
    ("o", [b"x" + bytes(300)], None),
    # runs between text chunks, and a cut character carried across a NUL run
    ("o", [b"ab\xc3", b"\xa9", bytes(512), b"cd"],
     [[1.0, "o", "ab"], [2.0, "o", "\u00e9"], [3.0, "oz", "512"], [4.0, "o", "cd"]]),
])
def test_nul_runs_are_written_as_their_length(stream, chunks, events):
    enc = asciicast.StreamEncoder(stream)
    lines = [line for i, c in enumerate(chunks, 1) for line in enc.encode(float(i), c)]
    lines += enc.flush(9.0)
    decoded = [json.loads(line) for line in lines]
    if events is None:
        assert all(not e[1].endswith("z") for e in decoded)
    else:
        assert decoded == events
    assembler = asciicast.Reassembler()
    for line in lines:
        assembler.feed(asciicast.parse_event(line))
    assert assembler.bytes(stream) == b"".join(chunks)


@pytest.mark.parametrize("data", ["-1", "1e3", "0x10", " 5", "", "\u0665",
                                  str(asciicast.ZERO_RUN_MAX + 1)])
def test_forged_nul_run_lengths_are_refused(data):
    with pytest.raises(CastFormatError, match="NUL-run"):
        Event(0.0, "oz", data).payload()


def test_nul_run_payload_and_text():
    assert Event(0.0, "oz", "3").payload() == b"\0\0\0"
    assert Event(0.0, "ez", "0").payload() == b""
    assert Event(0.0, "oz", "2").text() == "\0\0"
    assert Event(0.0, "oz", "2").stream == "o" and Event(0.0, "iz", "2").stream == "i"
