"""The masker's escape view against the one it replaced (kept here as the oracle).

``_View`` (bastion/proto/masker.py) now splits out terminal escape sequences with one
``re.split`` and builds its offset maps in C loops instead of a Python loop per escape
(docs/BENCHMARKS.md, "the recording floor on text").  Everything the masker reads from a
view -- the escape-free bytes, where the view's raw part ends, the segment maps, the
escapes, and every offset mapped either way -- must be what the old view gave, so what
the masker emits (and a recording holds) is unchanged: seeded random output dense with
escapes of every kind (CSI, OSC, DCS, two-byte, cut-off ones at the end, a lone ESC),
final or not, and the masking corpus.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from bastion.proto.masker import _ESC, _ESC_OPEN, _View

CORPUS = Path(__file__).parent / "mask_corpus"


class OracleView:
    """The view as it was built before (session 14's code), with the same mapping methods."""

    def __init__(self, raw: bytes, final: bool) -> None:
        self.raw = raw
        self.limit = len(raw)
        if b"\x1b" not in raw:
            self.v, self.seg_v, self.seg_r, self.escapes = raw, None, None, ()
            return
        if not final:
            last = raw.rfind(b"\x1b")
            if _ESC_OPEN.match(raw, last):
                self.limit = last
        seg_v, seg_r, pieces, escapes = [], [], [], []
        r = vlen = 0
        for m in _ESC.finditer(raw, 0, self.limit):
            if m.start() > r:
                seg_v.append(vlen), seg_r.append(r), pieces.append(raw[r:m.start()])
                vlen += m.start() - r
            escapes.append((m.start(), m.end()))
            r = m.end()
        if self.limit > r:
            seg_v.append(vlen), seg_r.append(r), pieces.append(raw[r:self.limit])
        self.v = b"".join(pieces)
        self.seg_v, self.seg_r, self.escapes = seg_v, seg_r, escapes

    to_raw = _View.to_raw
    to_raw_end = _View.to_raw_end
    to_view = _View.to_view
    escapes_in = _View.escapes_in


def _same(raw: bytes, final: bool) -> None:
    new, old = _View(raw, final), OracleView(raw, final)
    assert (new.v, new.limit, new.seg_v, new.seg_r) == (old.v, old.limit, old.seg_v, old.seg_r)
    assert list(new.escapes) == list(old.escapes)
    for v in range(len(old.v) + 2):
        assert new.to_raw(v) == old.to_raw(v) and new.to_raw_end(v) == old.to_raw_end(v)
    for r in range(len(raw) + 2):
        assert new.to_view(r) == old.to_view(r)
    ends = sorted({0, len(raw)} | {e for span in old.escapes for e in span})
    for i, a in enumerate(ends):
        for b in ends[i:i + 4]:
            assert new.escapes_in(a, b) == old.escapes_in(a, b)


_ESCAPES = [b"\x1b[0m", b"\x1b[01;34m", b"\x1b[2J", b"\x1b[?25l", b"\x1b]0;title\x07",
            b"\x1b]8;;http://x\x1b\\", b"\x1bP1$r0m\x1b\\", b"\x1b(B", b"\x1b=", b"\x1b7",
            b"\x1b", b"\x1b[", b"\x1b]0;cut", b"\x1bP", b"\x1b\x1b[m", b"\x1b[31"]
_TEXT = [b"a", b"password=hunter2", b" ", b"\r\n", b"\t", b"caf\xc3\xa9", b"\x07", b"4111"]


@pytest.mark.parametrize("seed", range(60))
def test_random_escape_dense_output_gives_the_old_view(seed):
    rng = random.Random(seed)
    for _ in range(20):
        n = rng.randint(0, 120)
        raw = b"".join(rng.choice(_ESCAPES) if rng.random() < rng.choice([0.1, 0.5, 0.9])
                       else rng.choice(_TEXT) for _ in range(n))
        for final in (False, True):
            _same(raw, final)


def test_edges_give_the_old_view():
    for raw in (b"\x1b", b"\x1b[", b"\x1b[0m", b"x\x1b", b"\x1b\x01", b"\x1b[0mx", b"x\x1b[0m",
                b"\x1b[0m\x1b[1m", b"ab" * 10, b"\x1b]" + b"x" * 600, b"\x1b[0m" * 50 + b"\x1b"):
        for final in (False, True):
            _same(raw, final)


def test_the_corpus_gives_the_old_view():
    files = sorted(p for p in CORPUS.glob("*/*") if p.suffix != ".secrets")
    with_escapes = [p for p in files if b"\x1b" in p.read_bytes()]
    assert with_escapes                       # the corpus has coloured output
    for path in with_escapes:
        data = path.read_bytes()
        inside = {m.start() + k for m in list(_ESC.finditer(data))[:30] for k in (1, 2, 3)}
        for cut in sorted({0, len(data), len(data) // 2, len(data) // 3} | inside):
            for final in (False, True):
                _same(data[:cut], final)
