"""The printable-ASCII fast path of StreamEncoder writes exactly what the general path writes."""

from __future__ import annotations

import json
import random

import pytest

from bastion.proto.asciicast import StreamEncoder, event_line

ALPHABET = bytes(range(0x20, 0x7f)) + b"\n\r\t"


@pytest.mark.parametrize("seed", range(20))
def test_fast_path_equals_the_general_encoding(seed):
    rng = random.Random(seed)
    data = bytes(rng.choice(ALPHABET) for _ in range(rng.randint(1, 5000)))
    [line] = StreamEncoder("o").encode(3.5, data)
    assert line == event_line(3.5, "o", data.decode("ascii"))
    assert json.loads(line) == [3.5, "o", data.decode("ascii")]


@pytest.mark.parametrize("data", [b"\x00", b"a\x1bb", b"\x7f", b"caf\xc3\xa9"])
def test_other_bytes_take_the_general_path_and_round_trip(data):
    lines = StreamEncoder("o").encode(1.0, data)
    assert lines and all(json.loads(line) for line in lines)


@pytest.mark.parametrize("data", [b"\xff", bytes(range(256)) * 3, bytes(4096), b"\x80abc\xfe" * 50])
def test_base64_lines_equal_the_general_encoding(data):
    import base64
    from bastion.proto.asciicast import _b64_line
    for t in (0.0, 3.25, -1.0):
        expected = event_line(t, "eb", base64.b64encode(data).decode("ascii"))
        assert _b64_line(t, "eb", data) == expected


@pytest.mark.parametrize("seed", range(30))
def test_valid_utf8_with_controls_is_escaped_as_json_would(seed):
    rng = random.Random(seed)
    chars = [chr(rng.choice([rng.randint(0, 0x1f), rng.randint(0x20, 0x7f), ord("\\"), ord('"'),
                             rng.randint(0xa0, 0x2fff), rng.randint(0x1f300, 0x1f64f),
                             0x2028, 0x1b]))
             for _ in range(rng.randint(1, 3000))]
    text = "".join(chars)
    data = text.encode("utf-8")
    lines = StreamEncoder("o").encode(2.5, data)
    assert len(lines) == 1
    if json.loads(lines[0])[1] == "o":
        assert lines[0] == event_line(2.5, "o", text)
    assert json.loads(lines[0])[2] == text or json.loads(lines[0])[1] == "ob"


@pytest.mark.parametrize("order", ["ascending", "descending", "repeated"])
def test_every_distinct_control_is_escaped_once_whatever_the_order(order):
    """Each distinct control byte of a text chunk is escaped (_escaped walks them one by one)."""
    controls = bytes(range(0x20))
    if order == "descending":
        controls = controls[::-1]
    elif order == "repeated":
        controls = b"\n\x1b\n\r\x1b\t\x00\n" * 3
    data = b'a"b\\c' + b"x".join(bytes((c,)) for c in controls) + b"\n"   # under HEAVY_MIN
    [line] = StreamEncoder("o").encode(1.5, data)
    assert line == event_line(1.5, "o", data.decode("ascii"))
    assert json.loads(line)[2].encode("ascii") == data
