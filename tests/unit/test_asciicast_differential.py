"""StreamEncoder's text path against the one it replaced (kept here as the oracle).

The text path finds line ends with ``in`` rather than in the ``translate`` that finds the
control bytes, and walks the distinct control bytes instead of a ``set()`` of them
(docs/BENCHMARKS.md, "the recording floor on text").  A recording's bytes and sealed
SHA-256 depend on every line, so each chunk here must give exactly the oracle's line:
the masking corpus cut at every offset of a few chunk sizes, and seeded random chunks
of every control byte, quotes, backslashes and UTF-8, around the escape-heavy threshold.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from bastion.proto.asciicast import HEAVY_MIN, StreamEncoder, _b64_line

CORPUS = Path(__file__).parent / "mask_corpus"
_NOT_CONTROL = bytes(range(0x20, 0x100))
_TERMINAL = b"\b\t\n\f\r\x07\x1b"
_SHORT = {0x08: b"\\b", 0x09: b"\\t", 0x0a: b"\\n", 0x0c: b"\\f", 0x0d: b"\\r"}


def oracle_line(t: float, stream: str, data: bytes) -> bytes:
    """The line the text path wrote for valid UTF-8 ``data`` before (session 14's code)."""
    controls = data.translate(None, _NOT_CONTROL)
    if len(data) >= HEAVY_MIN and len(controls.translate(None, _TERMINAL)) * 15 > len(data):
        return _b64_line(t, stream + "b", data)
    out = data.replace(b"\\", b"\\\\").replace(b'"', b'\\"')
    for c in set(controls):
        out = out.replace(bytes((c,)), _SHORT.get(c) or b"\\u%04x" % c)
    return b'[%.6f, "%s", "%s"]\n' % (max(t, 0.0), stream.encode(), out)


def _valid_text(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return not (len(data) >= HEAVY_MIN and data.count(0) == len(data))   # (a NUL run event)


def _check(chunks: list[bytes], stream: str = "o") -> int:
    checked = 0
    for i, chunk in enumerate(chunks):
        if not chunk or not _valid_text(chunk):
            continue
        t = 0.25 * i
        assert StreamEncoder(stream).encode(t, chunk) == [oracle_line(t, stream, chunk)], chunk[:80]
        checked += 1
    return checked


def _corpus_files() -> list[Path]:
    return sorted(p for p in CORPUS.glob("*/*") if p.suffix != ".secrets" and p.is_file())


@pytest.mark.parametrize("size", [1, 7, 64, 255, 256, 257, 4096, 32768])
def test_the_corpus_cut_every_way_encodes_as_before(size):
    checked, files = 0, _corpus_files()
    for path in files:
        data = path.read_bytes()
        offsets = range(0, min(size, len(data))) if size <= 257 else (0, size // 3, size - 1)
        for first in offsets:              # the first cut at every offset, then every ``size``
            cuts = [0, first] + list(range(first + size, len(data), size)) + [len(data)]
            checked += _check([data[a:b] for a, b in zip(cuts, cuts[1:], strict=False)])
    assert len(files) > 30 and checked > len(files)     # the corpus is there, mostly text


_PIECES = ([bytes((c,)) for c in range(0x20)] + [b'"', b"\\", b"\\\\\"", b"\r\n", b"\n", b"\x7f",
           "é".encode(), "€".encode(), "🙂".encode(), "\u2028".encode(), b"\x1b[31m"]
           + [bytes((c,)) for c in range(0x20, 0x7f)] * 4)


@pytest.mark.parametrize("seed", range(40))
def test_random_chunks_of_every_control_encode_as_before(seed):
    rng = random.Random(seed)
    chunks = []
    for _ in range(60):
        # lengths around HEAVY_MIN, and heavy-control densities around the 1-in-15 threshold
        n = rng.choice([rng.randint(1, 300), rng.randint(240, 700), rng.randint(1000, 9000)])
        weights = [rng.choice([0.0, 0.01, 0.07, 0.3]) if len(p) == 1 and p[0] < 0x20 else 1.0
                   for p in _PIECES]
        pieces = rng.choices(_PIECES, weights=weights, k=n)
        chunks.append(b"".join(pieces))
    assert _check(chunks) == len(chunks)
    assert _check(chunks, "i") == len(chunks)
