"""bench.floor: each step runs the product's code over the input; the bound's arithmetic."""

from __future__ import annotations

import pytest

from bench import floor


def test_measure_reports_every_step_and_leaves_no_file(tmp_path):
    text = b"2024-05-01T00:00:00Z web1 nginx: \"GET / HTTP/1.1\" 200\n" * 20_000
    result = floor.measure(text, tmp_path, reps=1)
    assert set(result) == {"mask", "encode", "hash", "write", "total"}
    assert all(v >= 0 for v in result.values())
    assert result["total"] == pytest.approx(sum(v for k, v in result.items() if k != "total"),
                                            abs=0.005)
    assert list(tmp_path.iterdir()) == []


def test_write_step_writes_every_line(tmp_path, monkeypatch):
    written = []
    real_write = floor.os.write
    monkeypatch.setattr(floor.os, "write", lambda fd, b: written.append(len(b)) or real_write(fd, b))
    lines = [b"x" * 100_000, b"y" * 200_000, b"z" * 5]
    floor._writer(tmp_path)(lines)
    assert sum(written) == 300_005
    assert all(n >= floor.WRITE_BUFFER for n in written[:-1])


@pytest.mark.parametrize("jump, bare, total, expected", [
    (10.0, 9.0, 1.0, 1.0),          # the floor exactly fills the relay's lead
    (10.5, 9.2, 4.6, 10.5 / 13.8),  # session 4's text run
    (12.0, 6.0, 0.0, 2.0),          # no recording work: the relay's own ratio
    (0.0, 9.0, 4.0, None),          # ProxyJump not measured
])
def test_bound(jump, bare, total, expected):
    got = floor.bound(jump, bare, total)
    assert got == (None if expected is None else pytest.approx(expected))
