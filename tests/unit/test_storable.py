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


def test_a_path_longer_than_an_index_entry_is_cut_and_says_so():
    import hashlib
    assert storable.path(None) is None
    short = "/srv/" + "a" * (storable.PATH_BYTES - 5)          # exactly the limit: kept
    assert storable.path(short) is short
    long = "/srv/" + "b" * 5000
    digest = hashlib.sha256(long.encode()).hexdigest()
    assert storable.path(long) == (long[:storable.PATH_BYTES]
                                   + f"...[{len(long) - storable.PATH_BYTES} more bytes; "
                                     f"sha256 {digest}]")
    # never half a character: 3-byte characters across the cut
    wide = "/" + "日" * 1000                                      # 3001 bytes
    cut = storable.path(wide)
    kept = cut.split("...[")[0]
    assert kept == "/" + "日" * 682 and len(kept.encode()) == 2047
    assert f"...[{3001 - 2047} more bytes; " in cut
    assert len(cut.encode()) < 2704                             # PostgreSQL's btree entry
