"""bench.floor_ab: both revisions' masker and encoder run side by side; a byte of difference is an error."""

from __future__ import annotations

import shutil

import pytest

from bench import floor_ab


def _tree(tmp_path, name):
    tree = tmp_path / name
    (tree / "bastion/proto").mkdir(parents=True)
    for module in ("masker.py", "asciicast.py"):
        shutil.copy(floor_ab.HERE / "bastion/proto" / module, tree / "bastion/proto" / module)
    return tree


def test_the_same_revision_twice_reports_every_step_and_input(tmp_path):
    base = floor_ab.load(_tree(tmp_path, "base"), "t1")
    this = floor_ab.load(floor_ab.HERE, "t1this")
    text = b'2024-05-01T00:00:00Z web1 nginx: "GET / HTTP/1.1" 200 password=hunter2x\n' * 2000
    result = floor_ab.compare(base, this, {"text": text,
                                           "terminal": floor_ab.terminal_text(100_000)}, runs=1)
    assert set(result) == {"text/mask", "text/encode", "terminal/mask", "terminal/encode"}
    assert all(r["base"] > 0 and r["this"] > 0 for r in result.values())


def test_a_revision_that_writes_other_bytes_is_an_error(tmp_path):
    tree = _tree(tmp_path, "other")
    source = tree / "bastion/proto/asciicast.py"
    changed = source.read_text().replace('0x09: b"\\\\t"', '0x09: b"\\\\u0009"')
    assert changed != source.read_text()          # \t escaped the long way: same JSON, other bytes
    source.write_text(changed)
    base = floor_ab.load(tree, "t2")
    this = floor_ab.load(floor_ab.HERE, "t2this")
    with pytest.raises(floor_ab.Differs, match="encode of the terminal input"):
        floor_ab.compare(base, this, {"terminal": floor_ab.terminal_text(50_000)}, runs=1)


def test_terminal_text_is_the_same_every_time_and_coloured():
    a, b = floor_ab.terminal_text(10_000), floor_ab.terminal_text(10_000)
    assert a == b and len(a) == 10_000 and b"\x1b[" in a and b"\r\n" in a
