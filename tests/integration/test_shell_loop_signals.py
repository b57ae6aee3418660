"""The host side of a mediated shell (bastion/proto/shellstart.py LOOP) under ^C, on a real pty.

The loop runs as the bastion starts it (``terminal_command``), in bash and in dash, with a real
FIFO and a pseudo-terminal as its controlling terminal, so ^C written to the terminal is turned
into SIGINT by the kernel as it would be by sshd's pty.  No ssh here: these pin the loop's own
signal handling, which the e2e suites only reach by timing.
"""

from __future__ import annotations

import os
import pty
import re
import select
import shutil
import signal
import time

import pytest

from bastion.proto import shellstart

SHELLS = [s for s in ("bash", "dash") if shutil.which(s)]


class Loop:
    def __init__(self, tmp_path, shell: str) -> None:
        self.nonce = shellstart.new_nonce()
        fifo_dir = tmp_path / "fifo"
        fifo_dir.mkdir()
        os.mkfifo(fifo_dir / "c")
        command = shellstart.terminal_command(str(fifo_dir), shutil.which(shell), self.nonce)
        self.pid, self.fd = pty.fork()
        if self.pid == 0:                                   # child: the pty is its terminal
            # as sshd starts a session's shell: ^C and ^\ at their defaults, whatever this
            # run inherited (a job started in the background by a non-interactive shell
            # has both ignored, and a shell cannot take back a signal ignored on entry)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            signal.signal(signal.SIGQUIT, signal.SIG_DFL)
            os.chdir(tmp_path)
            os.execv("/bin/sh", ["/bin/sh", "-c", command])
        self.fifo = os.open(fifo_dir / "c", os.O_WRONLY)
        self.out = b""
        self.mark_rx = re.compile(rb"\x1b\]6973;" + self.nonce.encode() + rb";([CPTL])([^\x07]*)\x07")
        self.pos = 0
        # after its C mark the loop waits for the bastion's word: 0 runs the command, 130 or
        # 131 (a ^C or ^\\ typed before it started) does not; this rig answers each C mark
        # it reads with ``word``, as the bastion does (bastion.proto.mediated.Go)
        self.word: int | None = 0      # None: the test answers itself

    def send(self, command: str) -> None:
        os.write(self.fifo, shellstart.frame(command))

    def type(self, data: bytes) -> None:
        os.write(self.fd, data)

    def expect_mark(self, kind: str, timeout: float = 10.0) -> bytes:
        deadline = time.monotonic() + timeout
        while True:
            for m in self.mark_rx.finditer(self.out, self.pos):
                self.pos = m.end()
                if m.group(1) == b"C" and self.word is not None:
                    os.write(self.fifo, b"%d\n" % self.word)
                if m.group(1).decode() == kind:
                    return m.group(2)
            self._read_more(deadline, f"no {kind} mark within {timeout:g}s")

    def expect_output(self, needle: bytes, timeout: float = 10.0) -> None:
        """Wait until the terminal output (from the start) holds ``needle``."""
        deadline = time.monotonic() + timeout
        while needle not in self.out:
            self._read_more(deadline, f"{needle!r} not seen within {timeout:g}s")

    def _read_more(self, deadline: float, late: str) -> None:
        """Add what the terminal has to ``out`` (waiting until ``deadline`` at most)."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"{late}; output: {self.out[-400:]!r}")
        if select.select([self.fd], [], [], left)[0]:
            try:
                chunk = os.read(self.fd, 4096)
            except OSError:
                chunk = b""
            if not chunk:
                raise AssertionError(f"the loop ended; output: {self.out[-400:]!r}")
            self.out += chunk

    def alive(self) -> bool:
        return os.waitpid(self.pid, os.WNOHANG) == (0, 0)

    def close(self) -> None:
        for closer in (lambda: os.close(self.fifo), lambda: os.close(self.fd)):
            try:
                closer()
            except OSError:
                pass
        try:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


@pytest.fixture(params=SHELLS)
def loop(request, tmp_path):
    lp = Loop(tmp_path, request.param)
    lp.expect_mark("P")                                      # the first prompt mark
    yield lp
    lp.close()


def test_a_late_ctrl_c_between_commands_does_not_end_the_shell(loop, tmp_path):
    # (the bastion sends ^C while it still thinks a command runs; the command has ended and
    # the loop waits for the next frame: the ^C must not end the loop)
    loop.send("true")
    loop.expect_mark("C")
    assert loop.expect_mark("P").startswith(b";0;")
    loop.type(b"\x03")
    time.sleep(0.3)
    loop.type(b"\x1c")
    time.sleep(0.3)
    assert loop.alive()
    loop.send(f"echo survived > {tmp_path}/after")
    loop.expect_mark("C")
    assert loop.expect_mark("P").startswith(b";0;")
    assert (tmp_path / "after").read_text() == "survived\n"


def test_ctrl_c_after_the_start_mark_interrupts_the_command_and_the_loop_goes_on(loop, tmp_path):
    loop.send(f"sleep 30; echo not-interrupted > {tmp_path}/canary")
    loop.expect_mark("C")
    time.sleep(0.2)
    loop.type(b"\x03")
    assert loop.expect_mark("P").startswith(b";130;")        # (within 10 s: not the sleep's 30)
    assert not (tmp_path / "canary").exists()
    loop.send(f"echo next > {tmp_path}/next")
    loop.expect_mark("C")
    assert loop.expect_mark("P").startswith(b";0;")
    assert (tmp_path / "next").read_text() == "next\n"


def test_a_command_gets_ctrl_c_at_its_default(loop, tmp_path):
    # (the loop ignores INT between commands; an ignored signal would be inherited by what
    # it runs, so a program could not be interrupted)
    loop.send(f"grep SigIgn /proc/self/status > {tmp_path}/ign")
    loop.expect_mark("C")
    loop.expect_mark("P")
    ignored = int((tmp_path / "ign").read_text().split()[1], 16)
    assert not ignored & (1 << (signal.SIGINT - 1)), "SIGINT ignored in the command"
    assert not ignored & (1 << (signal.SIGQUIT - 1)), "SIGQUIT ignored in the command"


@pytest.mark.parametrize("word,key", [(130, b"\x03"), (131, b"\x1c")])
def test_a_ctrl_c_held_until_the_start_mark_is_a_word_and_the_command_never_runs(
        loop, tmp_path, word, key):
    # (the bastion holds a ^C typed before the command started and answers the C mark with
    # it; typed as a signal instead it could reach the shell before the command's process
    # existed, and bash defers it until that process has ended: `sleep 30` ran on)
    loop.word = word
    loop.send(f"echo ran > {tmp_path}/canary; sleep 30")
    loop.expect_mark("C")
    assert loop.expect_mark("P").startswith(b";%d;" % word)
    assert not (tmp_path / "canary").exists()
    loop.word = 0
    loop.send(f"echo next > {tmp_path}/next")                # the loop goes on
    assert loop.expect_mark("P").startswith(b";0;")
    assert (tmp_path / "next").read_text() == "next\n"
    assert loop.alive()


def test_a_ctrl_c_between_the_start_mark_and_the_word_cancels_the_command(loop, tmp_path):
    # (the agent's ^C reached the terminal after the bastion saw the C mark, before the shell
    # read the word "run": the shell keeps it, the command does not run, the loop goes on)
    loop.word = None
    loop.send(f"echo ran > {tmp_path}/canary")
    loop.expect_mark("C")
    before = len(loop.out)
    loop.type(b"\x03")
    loop.expect_output(b"^C")                # the terminal took it: the signal was sent
    assert b"^C" in loop.out[before:]
    os.write(loop.fifo, b"0\n")
    assert loop.expect_mark("P").startswith(b";130;")
    assert not (tmp_path / "canary").exists()
    loop.word = 0
    loop.send(f"echo next > {tmp_path}/next")
    assert loop.expect_mark("P").startswith(b";0;")
    assert (tmp_path / "next").read_text() == "next\n"
