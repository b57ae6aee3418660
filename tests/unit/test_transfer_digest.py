"""bastion.transfer.digest: a file's SHA-256 from pieces at offsets, or none."""

from __future__ import annotations

import hashlib
import os

from bastion.transfer import digest
from bastion.transfer.digest import Stream

DATA = os.urandom(100_000)
WHOLE = hashlib.sha256(DATA).hexdigest()


def pieces(size: int) -> list[tuple[int, bytes]]:
    return [(i, DATA[i:i + size]) for i in range(0, len(DATA), size)]


def test_in_order_pieces_of_any_size_give_the_file_digest():
    for size in (1, 7, 4096, 32768, len(DATA)):
        s = Stream()
        for off, piece in pieces(size):
            s.feed(off, piece)
        s.at_eof(len(DATA))
        assert (s.digest(need_eof=True), s.moved) == (WHOLE, len(DATA))


def test_pieces_out_of_order_are_put_back_in_order():
    s = Stream()
    order = pieces(1000)
    order[3], order[7] = order[7], order[3]
    for off, piece in reversed(order[:10]):
        s.feed(off, piece)
    for off, piece in order[10:]:
        s.feed(off, piece)
    assert s.digest(need_eof=False) == WHOLE


def test_a_read_needs_eof_where_the_hashed_bytes_end():
    s = Stream()
    for off, piece in pieces(4096)[:5]:
        s.feed(off, piece)
    assert s.digest(need_eof=True) is None            # stopped before the end
    s.at_eof(5 * 4096 + 99)                           # an EOF past a gap is not the end
    assert s.digest(need_eof=True) is None


def test_a_gap_left_open_a_rewrite_or_an_overflow_gives_no_digest():
    s = Stream()
    s.feed(0, DATA[:10])
    s.feed(20, DATA[20:30])                           # 10..20 never comes
    assert s.digest(need_eof=False) is None
    s = Stream()
    s.feed(0, DATA[:10])
    s.feed(5, DATA[5:15])                             # overlaps what was hashed
    s.feed(15, DATA[15:20])
    assert s.digest(need_eof=False) is None and s.moved == 25
    s = Stream()
    s.feed(1, b"x" * (digest.HASH_WINDOW + 1))        # more ahead than the window keeps
    s.feed(0, b"y")
    assert s.digest(need_eof=False) is None
