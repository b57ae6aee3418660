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


def test_pipeline_runs_the_workers_sink_masked_and_unmasked_and_leaves_no_file(tmp_path,
                                                                                monkeypatch):
    text = b"2024-05-01T00:00:00Z web1 app: password=hunter2hunter2 ok\n" * 3_000
    seen = []
    real_data = floor.Sink.data

    def data(sink, stream, t, chunk):
        seen.append((sink.detectors is not None, len(chunk)))
        real_data(sink, stream, t, chunk)
    monkeypatch.setattr(floor.Sink, "data", data)
    written = {}
    real_close = floor.Sink.close

    def close(sink, t, labels=()):
        sink.flush()
        written[sink.detectors is not None] = sink.path.read_bytes()
        return real_close(sink, t, labels)
    monkeypatch.setattr(floor.Sink, "close", close)
    result = floor.pipeline(text, tmp_path, reps=1)
    assert set(result) == {"masked", "unmasked"} and all(v >= 0 for v in result.values())
    for masked in (True, False):              # every byte went through each variant's sink
        assert sum(n for m, n in seen if m == masked) == len(text)
    assert b"hunter2hunter2" not in written[True] and b"[MASKED:password]" in written[True]
    assert b"hunter2hunter2" in written[False]
    assert list(tmp_path.iterdir()) == []


def test_trigger_costs_has_a_row_per_builtin_trigger():
    pytest.importorskip("hyperscan")
    from bastion.proto.masker import BUILTIN
    rows = floor.trigger_costs(b"4111 1111 1111 1111 and AKIAIOSFODNN7EXAMPLE\n" * 2_000, reps=1)
    assert rows[0]["trigger"] == "all"
    assert [r["trigger"].split(" ", 1)[1] for r in rows[1:]] == [d.name for d in BUILTIN]
    assert all(r["alone"] >= 0 for r in rows)
