"""The host loop (bastion/proto/shellstart.py LOOP) when a command takes bash out of POSIX mode.

Outside POSIX mode a function may shadow a special builtin, so ``function unset { true; }``
would stop the loop from removing a shadowing ``read``, and ``read() { ...; }`` would then
hand the loop its next "command" (found by the red-team pass: every line of that chain was
allowed by a policy that allows ``unset`` and ``true``).  The policy now refuses those lines;
this pins the second wall: the loop itself ends the shell, before it calls any command, as
soon as a command leaves POSIX mode.  Frames are written as if decided (an approver said
yes); the payload only aims at a canary in the test's temp dir.
"""

from __future__ import annotations

import shutil
import time

import pytest

from tests.integration.test_shell_loop_signals import Loop

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")

LEAVE_POSIX = ["unset POSIXLY_CORRECT", "set +o posix", "shopt -u -o posix"]


@pytest.fixture
def bash_loop(tmp_path):
    lp = Loop(tmp_path, "bash")
    lp.expect_mark("P")
    yield lp
    lp.close()


def ended(loop: Loop) -> bool:
    try:
        return not loop.alive()
    except ChildProcessError:           # already reaped
        return True


def wait_exit(loop: Loop, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ended(loop):
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("leave", LEAVE_POSIX)
def test_leaving_posix_mode_ends_the_shell_before_a_shadowing_read_can_feed_it(
        bash_loop, tmp_path, leave):
    pwned = tmp_path / "pwned"
    chain = [leave, "function unset { true; }",
             f"read() {{ __bastion_n=1 __bastion_l='touch {pwned}'; }}", "true"]
    bash_loop.send(chain[0])
    bash_loop.expect_mark("C")
    for command in chain[1:]:           # queued in the FIFO, as an agent typing fast would
        try:
            bash_loop.send(command)
        except BrokenPipeError:
            break
    assert wait_exit(bash_loop), "the loop kept running outside POSIX mode"
    time.sleep(0.2)
    assert not pwned.exists(), "a shadowing read fed the loop a command"


def test_posix_mode_kept_the_loop_goes_on(bash_loop, tmp_path):
    bash_loop.send("set -o posix; f() { true; }; f")
    bash_loop.expect_mark("C")
    assert bash_loop.expect_mark("P").startswith(b";0;")
    bash_loop.send(f"echo next > {tmp_path}/next")
    bash_loop.expect_mark("C")
    assert bash_loop.expect_mark("P").startswith(b";0;")
    assert (tmp_path / "next").read_text() == "next\n"
