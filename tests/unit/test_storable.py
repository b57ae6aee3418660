"""bastion.recording.storable: text any index can store, shown as a reviewer sees it."""

from __future__ import annotations

import pytest

from bastion.proto.sanitize import sanitize
from bastion.recording import storable

CASES = [
    ("uptime", "uptime"),
    ("", ""),
    ("echo naïve 日本 \U0001f600", "echo naïve 日本 \U0001f600"),   # any real character is kept
    ("echo a\x00b", "echo a\u2400b"),                              # NUL: its control picture
    ("\x00\x00", "\u2400\u2400"),
    ("/tmp/bad\udcffname", "/tmp/bad\\xffname"),                   # surrogateescape: the byte
    ("\udc80\udcc3\udca9", "\\x80\\xc3\\xa9"),
    ("x\ud800y", "x\\ud800y"),                                      # another lone surrogate
    ("\udfff", "\\udfff"),
    ("tab\tand\x1b[2Jescape", "tab\tand\x1b[2Jescape"),            # other controls: stored as sent
    ("\\x00 typed", "\\x00 typed"),
]


@pytest.mark.parametrize("raw, stored", CASES)
def test_text(raw, stored):
    assert storable.text(raw) == stored
    storable.text(raw).encode("utf-8")               # always encodable: both drivers take it
    assert "\x00" not in storable.text(raw)
    assert sanitize(storable.text(raw)) == sanitize(raw)    # a reviewer sees the same


def test_values_walks_containers_and_leaves_the_rest():
    op = (7, "a\x00", b"\x00raw", None, 1.5, ["\udcff", {"k\x00": "v\udcfe"}], ("ok",))
    assert storable.values(op) == (7, "a\u2400", b"\x00raw", None, 1.5,
                                   ["\\xff", {"k\u2400": "v\\xfe"}], ("ok",))


def test_clean_text_is_the_same_object():
    line = "ls -la /var/log"
    assert storable.text(line) is line
