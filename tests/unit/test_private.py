"""bastion.private: private directory chains, refusal wording, tightening, -o files."""

from __future__ import annotations

import os
import stat

import pytest

from bastion.private import (OutputExists, describe_open, make_private_dirs, new_output_file,
                             open_mode, tighten_tree)


def mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture(autouse=True)
def open_umask():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_every_missing_level_is_made_0700_and_existing_ones_are_left(tmp_path):
    (tmp_path / "a").mkdir(mode=0o755)
    make_private_dirs(tmp_path / "a" / "b" / "c")
    assert mode(tmp_path / "a") == 0o755
    assert mode(tmp_path / "a" / "b") == 0o700 and mode(tmp_path / "a" / "b" / "c") == 0o700
    make_private_dirs(tmp_path / "a" / "b" / "c")          # idempotent


@pytest.mark.parametrize("bits, words", [
    (0o755, "read"), (0o750, "read"), (0o740, "read"), (0o704, "read"),
    (0o720, "written"), (0o702, "written"), (0o777, "read and written"),
    (0o711, "entered"), (0o710, "entered"), (0o733, "written"),
])
def test_describe_open(bits, words):
    assert describe_open(bits) == words


def test_open_mode(tmp_path):
    assert open_mode(tmp_path / "missing") is None
    d = tmp_path / "d"
    d.mkdir(mode=0o700)
    assert open_mode(d) is None
    d.chmod(0o750)
    assert open_mode(d) == 0o750


def test_tighten_tree_strips_group_and_other_bits_except_what_is_skipped(tmp_path):
    (tmp_path / "recordings" / "2020").mkdir(parents=True)
    (tmp_path / "recordings").chmod(0o755)
    (tmp_path / "recordings" / "2020").chmod(0o775)
    (tmp_path / "recordings" / "2020" / "s1.cast").write_text("x")
    (tmp_path / "recordings" / "2020" / "s1.cast").chmod(0o640)
    (tmp_path / "index.sqlite").write_text("")
    (tmp_path / "index.sqlite").chmod(0o644)
    (tmp_path / "hostkeys").mkdir(mode=0o700)
    (tmp_path / "hostkeys" / "host_ca").write_text("")
    (tmp_path / "hostkeys" / "host_ca").chmod(0o644)
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.write_text("")
    outside.chmod(0o644)
    (tmp_path / "link").symlink_to(outside)
    done = tighten_tree(tmp_path, skip=("hostkeys",))
    assert (done.dirs, done.files) == (2, 2)
    assert mode(tmp_path / "recordings") == 0o700 and mode(tmp_path / "recordings" / "2020") == 0o700
    assert mode(tmp_path / "recordings" / "2020" / "s1.cast") == 0o600
    assert mode(tmp_path / "index.sqlite") == 0o600
    assert mode(tmp_path / "hostkeys" / "host_ca") == 0o644     # skipped: refused elsewhere
    assert mode(outside) == 0o644                               # a symlink is not followed
    assert tighten_tree(tmp_path, skip=("hostkeys",)).count == 0


def test_new_output_file_is_0600_and_refuses_an_existing_name(tmp_path):
    out = tmp_path / "out"
    with new_output_file(out) as fh:
        fh.write(b"one")
    assert out.read_bytes() == b"one" and mode(out) == 0o600
    with pytest.raises(OutputExists) as info:
        with new_output_file(out):
            pytest.fail("must not be reached")
    assert not info.value.symlink
    assert out.read_bytes() == b"one"
    with new_output_file(out, overwrite=True) as fh:
        fh.write(b"two")
    assert out.read_bytes() == b"two" and mode(out) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.parametrize("dangling", [False, True])
def test_new_output_file_never_writes_through_a_symlink(tmp_path, dangling):
    target = tmp_path / "target"
    if not dangling:
        target.write_bytes(b"keep")
    link = tmp_path / "link"
    link.symlink_to(target)
    with pytest.raises(OutputExists) as info:
        with new_output_file(link):
            pass
    assert info.value.symlink
    with new_output_file(link, overwrite=True) as fh:
        fh.write(b"new")
    assert not link.is_symlink() and link.read_bytes() == b"new"
    assert (target.read_bytes() == b"keep") if not dangling else not target.exists()


def test_new_output_file_leaves_nothing_on_error(tmp_path):
    (tmp_path / "existing").write_bytes(b"old")
    for name, overwrite in (("fresh", False), ("existing", True)):
        with pytest.raises(RuntimeError):
            with new_output_file(tmp_path / name, overwrite=overwrite) as fh:
                fh.write(b"partial")
                raise RuntimeError("export failed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing"]
    assert (tmp_path / "existing").read_bytes() == b"old"


def test_new_output_file_does_not_replace_a_directory(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(IsADirectoryError):
        with new_output_file(tmp_path / "d", overwrite=True):
            pass
