"""The streaming masker over the corpus: secrets fully masked, ordinary output unchanged,
and the same result whatever the chunking (whole, byte by byte, split at every offset).

The corpus is tests/unit/mask_corpus/: secrets/<case> with secrets/<case>.secrets
(one secret per line, every one of which must disappear), and ordinary/<case>
(must come through byte for byte).  All secrets there are fake.
"""

from __future__ import annotations

import pickle
import random
from pathlib import Path

import pytest

from bastion.proto.masker import Masker, available_engines, mask_bytes

CORPUS = Path(__file__).parent / "mask_corpus"
SECRET_CASES = sorted(p for p in (CORPUS / "secrets").iterdir() if p.suffix != ".secrets")
ORDINARY_CASES = sorted((CORPUS / "ordinary").iterdir())
ENGINES = available_engines()


def secrets_of(case: Path) -> list[bytes]:
    lines = (case.parent / (case.name + ".secrets")).read_bytes().splitlines()
    return [s for s in lines if s]


def stream(data: bytes, sizes, engine=None, **kw) -> bytes:
    """Feed ``data`` in chunks of the given sizes (cycled), then flush."""
    m = Masker(engine=engine, **kw)
    out, i, sizes = [], 0, list(sizes)
    k = 0
    while i < len(data):
        n = sizes[k % len(sizes)]
        out.append(m.feed(data[i:i + n]))
        i += n
        k += 1
    out.append(m.flush())
    return b"".join(out)


def leaks(out: bytes, secrets: list[bytes]) -> list[bytes]:
    """Secrets (or 12-byte pieces of long ones) still present in ``out``."""
    found = []
    for s in secrets:
        pieces = [s] + ([s[i:i + 12] for i in range(0, len(s) - 11, 4)] if len(s) >= 16 else [])
        if any(p in out for p in pieces):
            found.append(s)
    return found


def test_corpus_is_there():
    assert len(SECRET_CASES) >= 15 and len(ORDINARY_CASES) >= 15
    for case in SECRET_CASES:
        assert secrets_of(case), case.name
        for s in secrets_of(case):
            assert s in case.read_bytes(), (case.name, s[:20])


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("case", SECRET_CASES, ids=lambda p: p.name)
def test_secrets_are_masked(case, engine):
    data = case.read_bytes()
    out = stream(data, [len(data)], engine)
    assert leaks(out, secrets_of(case)) == []
    assert b"[MASKED:" in out
    # nothing else is damaged: every output line without a mask is an input line
    inputs = set(data.splitlines())
    for line in out.splitlines():
        if b"[MASKED:" not in line:
            assert line in inputs, line[:80]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("case", ORDINARY_CASES, ids=lambda p: p.name)
def test_ordinary_output_is_unchanged(case, engine):
    data = case.read_bytes()
    assert stream(data, [len(data)], engine) == data


def test_rates_over_the_corpus():
    """The numbers docs/MASKING.md reports: 100 % detection, 0 false positives."""
    total = caught = 0
    for case in SECRET_CASES:
        out = mask_bytes(case.read_bytes())
        secrets = secrets_of(case)
        total += len(secrets)
        caught += len(secrets) - len(leaks(out, secrets))
    changed = sum(mask_bytes(c.read_bytes()) != c.read_bytes() for c in ORDINARY_CASES)
    assert (caught, changed) == (total, 0)


@pytest.mark.parametrize("case", SECRET_CASES + ORDINARY_CASES, ids=lambda p: p.parent.name + "/" + p.name)
def test_one_byte_at_a_time_equals_whole(case):
    data = case.read_bytes()
    assert stream(data, [1]) == mask_bytes(data)


@pytest.mark.parametrize("case", SECRET_CASES + ORDINARY_CASES, ids=lambda p: p.parent.name + "/" + p.name)
def test_random_chunkings_equal_whole(case):
    data = case.read_bytes()
    whole = mask_bytes(data)
    rnd = random.Random(case.name)
    for _ in range(8):
        sizes = [rnd.choice((1, 2, 3, 7, 64, 500, 1500, 4096)) for _ in range(16)]
        assert stream(data, sizes) == whole, sizes


def _snippets(case: Path) -> list[bytes]:
    """Small files whole; in larger ones, the lines around each secret."""
    data = case.read_bytes()
    if len(data) <= 2500:
        return [data]
    out = []
    lines = data.splitlines(keepends=True)
    for s in secrets_of(case):
        for i, line in enumerate(lines):
            if s[:40] in line:
                out.append(b"".join(lines[max(0, i - 1):i + 2]))
                break
    return out


@pytest.mark.parametrize("case", SECRET_CASES, ids=lambda p: p.name)
def test_split_at_every_offset(case):
    for snippet in _snippets(case):
        whole = mask_bytes(snippet)
        assert b"[MASKED:" in whole
        for k in range(len(snippet) + 1):
            m = Masker()
            first = m.feed(snippet[:k])
            out = first + m.feed(snippet[k:]) + m.flush()
            assert out == whole, k
            assert m.pending == 0


@pytest.mark.parametrize("case", SECRET_CASES + ORDINARY_CASES, ids=lambda p: p.parent.name + "/" + p.name)
def test_a_restored_snapshot_goes_on_as_the_masker_would(case):
    """What the recording worker hands its successor (pickled through a pipe): at any cut,
    a new masker restored from the snapshot gives the rest exactly as the first one would,
    also in the middle of a key block being dropped."""
    data = case.read_bytes()
    whole = mask_bytes(data)
    rnd = random.Random(case.name)
    for cut in sorted({0, len(data)} | {rnd.randrange(len(data) + 1) for _ in range(6)}):
        m = Masker()
        first = b"".join(m.feed(data[i:min(i + 97, cut)]) for i in range(0, cut, 97))
        state = pickle.loads(pickle.dumps(m.snapshot()))
        again = Masker()
        again.restore(state)
        assert first + again.feed(data[cut:]) + again.flush() == whole, cut


@pytest.mark.parametrize("engine", ENGINES)
def test_engines_agree_on_a_mixed_stream(engine):
    data = b"".join(c.read_bytes() for c in SECRET_CASES + ORDINARY_CASES)
    assert stream(data, [977], engine) == stream(data, [977], "re")


def test_masking_is_idempotent():
    for case in SECRET_CASES:
        once = mask_bytes(case.read_bytes())
        assert mask_bytes(once) == once, case.name


FRAGMENTS = [
    b"password", b"PASSWORD", b"_pass", b"token", b"secret", b"api_key", b"auth", b"=", b": ", b"\"", b"'",
    b" ", b"\n", b"\r\n", b"\t", b"/", b"$", b"-p", b"mysql ", b"curl -u ", b"sshpass ", b"://", b"u:p@",
    b"@", b"AKIA", b"ASIA", b"ghp_", b"glpat-", b"xoxb-", b"eyJ", b"LS0tLS1CRUdJTi", b"Bearer ",
    b"Authorization: ", b"Cookie: ", b"AccountKey=", b"&sig=", b"8Q~", b"4111", b"1111 ", b"0000",
    b"-----BEGIN RSA PRIVATE KEY-----", b"-----END RSA PRIVATE KEY-----", b"MIIEow", b"==",
    b"\x1b[31m", b"\x1b[0m", b"\x1b]0;t\x07", b"\x1b", b"\xc3\xa9", b"\xff", b"machine h login u ",
    b"ABCDEFGHIJKLMNOP", b"abcdefghij0123456789", b"+/+/", b"Q~", b"hooks.slack.com/services/",
]


@pytest.mark.parametrize("engine", [e for e in ENGINES if e != "re"])
def test_engines_agree_on_random_fragments(engine):
    """Every engine's triggers cover the precise patterns: same output as pure Python re."""
    rnd = random.Random(6)
    for _ in range(300):
        data = b"".join(rnd.choice(FRAGMENTS) for _ in range(rnd.randrange(1, 60)))
        sizes = [rnd.choice((1, 5, 50, 4096))]
        assert stream(data, sizes, engine) == stream(data, [len(data) or 1], "re"), data


def test_random_bytes_do_not_break_the_masker():
    rnd = random.Random(9)
    for engine in ENGINES:
        for _ in range(20):
            data = bytes(rnd.randrange(256) for _ in range(rnd.randrange(0, 3000)))
            assert stream(data, [rnd.choice((1, 7, 512))], engine) == stream(data, [len(data) or 1], engine)
