"""The tail journal (bastion.recording.tailjournal): sealed records of undecided output."""

from __future__ import annotations

import os
import stat

import pytest

from bastion.proto.masker import Masker
from bastion.recording import tailjournal
from bastion.recording.tailjournal import TailJournal, decode, encode

KEY = bytes(range(32))
GH = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"
KEY_LINES = b"\n".join([b"b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW"] * 30)


def _masker_tail(data: bytes, at: int = 100, carry: bytes = b"") -> tuple:
    m = Masker()
    m.feed(data)
    ctx, held, sup = m.snapshot()
    return (ctx, held, sup, carry, at)


def _same(a: tuple, b: tuple) -> bool:
    """Tails equal, the suppressor compared by what it drops."""
    sa, sb = a[2], b[2]
    same_sup = (sa is None and sb is None) or (
        type(sa) is type(sb) and getattr(sa, "unit", None) == getattr(sb, "unit", None))
    return a[:2] == b[:2] and a[3:] == b[3:] and same_sup


@pytest.mark.parametrize("data", [
    b"plain text without a newline",
    b"token " + GH.encode(),                                         # a token, still growing
    b"k:\n-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAA",  # undecided
    b"k:\n-----BEGIN OPENSSH PRIVATE KEY-----\n" + KEY_LINES,        # a key block being dropped
    b"TOKEN=" + b"Z" * 3000,                                         # a long value being dropped
    "naïve ✓ \x1b[31mred".encode(),
])
def test_a_record_decodes_to_the_masker_state_it_encoded(data):
    tail = _masker_tail(data, carry=b"\xe2\x9c")
    if b"Z" * 100 in data or KEY_LINES in data:
        assert tail[2] is not None                 # (the cases that carry a suppressor)
    key, back = decode(encode(7, "stdout", tail))
    assert key == (7, "stdout") and _same(back, tail)
    # a masker restored from it goes on exactly as one restored from the original
    a, b = Masker(), Masker()
    a.restore(tail[:3])
    b.restore(back[:3])
    assert a.feed(b" more\n") + a.flush() == b.feed(b" more\n") + b.flush()


def test_a_cleared_stream_is_a_record_without_a_tail():
    assert decode(encode(3, "stderr", None)) == ((3, "stderr"), None)


def test_a_malformed_record_is_refused():
    with pytest.raises(ValueError):
        decode(encode(7, "stdout", _masker_tail(b"abc"))[:-3] + b"\xff" * 2)


def test_the_journal_keeps_the_last_state_of_each_stream_and_is_sealed(tmp_path):
    j = TailJournal(tmp_path, KEY)
    j.start()
    j.record({(1, "stdout"): _masker_tail(b"first " + GH.encode())})
    j.record({(1, "stdout"): _masker_tail(b"second " + GH.encode()),
              (2, "stderr"): _masker_tail(b"other")})
    j.record({(2, "stderr"): None})
    j.close()
    raw = (tmp_path / ".tails").read_bytes()
    assert GH.encode()[4:] not in raw and b"other" not in raw
    assert stat.S_IMODE(os.stat(tmp_path / ".tails").st_mode) == 0o600
    held = tailjournal.read(tmp_path, KEY)
    assert list(held) == [(1, "stdout")]
    assert held[1, "stdout"][1].endswith(GH.encode()) and b"second" in held[1, "stdout"][0] + held[1, "stdout"][1]


def test_drop_channel_clears_every_stream_of_it(tmp_path):
    j = TailJournal(tmp_path, KEY)
    j.start()
    j.record({(1, "stdout"): _masker_tail(b"a"), (1, "stderr"): _masker_tail(b"b"),
              (2, "stdout"): _masker_tail(b"c")})
    j.drop_channel(1)
    j.close()
    assert list(tailjournal.read(tmp_path, KEY)) == [(2, "stdout")]


def test_another_key_or_a_torn_end_reads_only_what_authenticates(tmp_path):
    j = TailJournal(tmp_path, KEY)
    j.start()
    j.record({(1, "stdout"): _masker_tail(b"one")})
    j.record({(2, "stdout"): _masker_tail(b"two")})
    j.close()
    path = tmp_path / ".tails"
    assert tailjournal.read(tmp_path, bytes(32)) == {}              # another passphrase
    whole = path.read_bytes()
    path.write_bytes(whole[:-5])                                    # killed during a write
    assert list(tailjournal.read(tmp_path, KEY)) == [(1, "stdout")]
    path.write_bytes(whole[:40] + bytes([whole[40] ^ 1]) + whole[41:])   # damaged
    assert tailjournal.read(tmp_path, KEY) == {}
    path.unlink()
    assert tailjournal.read(tmp_path, KEY) == {}


def test_the_journal_is_compacted_to_what_is_held(tmp_path, monkeypatch):
    monkeypatch.setattr(tailjournal, "COMPACT_BYTES", 4096)
    j = TailJournal(tmp_path, KEY)
    j.start()
    for i in range(500):
        j.record({(1, "stdout"): _masker_tail(b"x" * 200 + str(i).encode()), (i + 10, "stdout"): None})
    j.close()
    assert (tmp_path / ".tails").stat().st_size < 4096 + 1024
    held = tailjournal.read(tmp_path, KEY)
    assert list(held) == [(1, "stdout")] and held[1, "stdout"][1].endswith(b"499")
    assert [p.name for p in tmp_path.iterdir()] == [".tails"]       # no file left beside it


def test_start_empties_what_an_earlier_process_left(tmp_path):
    j = TailJournal(tmp_path, KEY)
    j.start()
    j.record({(1, "stdout"): _masker_tail(b"old")})
    j.close()
    TailJournal(tmp_path, KEY).start()
    assert tailjournal.read(tmp_path, KEY) == {}
