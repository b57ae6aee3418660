"""The host loop's directory listing for Tab completion (the L frame), in bash and dash, on a
real pty: names with any byte come back exact; directories end with '/'; a frame only lists,
it never runs anything; the loop goes on afterwards."""

from __future__ import annotations

import os

import pytest

from bastion.proto import completion, shellstart
from tests.integration.test_shell_loop_signals import SHELLS, Loop


@pytest.fixture(params=SHELLS)
def loop(request, tmp_path):
    lp = Loop(tmp_path, request.param)
    lp.expect_mark("P")
    yield lp
    lp.close()


def _list(loop, directory) -> list[str]:
    os.write(loop.fifo, shellstart.list_frame(str(directory)))
    names = completion.parse_listing(loop.expect_mark("L").lstrip(b";").decode())
    assert names is not None
    return sorted(names)


def test_names_come_back_exact(loop, tmp_path):
    d = tmp_path / "listed"
    d.mkdir()
    odd = ["plain.log", "with space", "quote'd", "dollar$(x)", "caf\u00e9", ".hidden",
           "star*", "tab\tname"]
    for name in odd:
        (d / name).write_text("x")
    (d / "sub").mkdir()
    os.symlink("/nonexistent", d / "dangling")
    assert _list(loop, d) == sorted(odd + ["sub/", "dangling"])
    assert _list(loop, tmp_path / "missing") == []
    # the loop goes on: a command still runs
    loop.send(f"echo after > {tmp_path}/after")
    loop.expect_mark("C")
    assert loop.expect_mark("P").startswith(b";0;")
    assert (tmp_path / "after").read_text() == "after\n"


def test_a_directory_name_is_data_not_code(loop, tmp_path):
    canary = tmp_path / "canary"
    for attack in (f"$(touch {canary})", f"`touch {canary}`", f"x; touch {canary}",
                   f"*/../$(touch {canary})"):
        assert _list(loop, attack) == []
    assert not canary.exists()


def test_at_most_256_names(loop, tmp_path):
    d = tmp_path / "many"
    d.mkdir()
    for i in range(300):
        (d / f"f{i:03d}").write_text("")
    assert len(_list(loop, d)) == 256
