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
            os.chdir(tmp_path)
            os.execv("/bin/sh", ["/bin/sh", "-c", command])
        self.fifo = os.open(fifo_dir / "c", os.O_WRONLY)
        self.out = b""
        self.mark_rx = re.compile(rb"\x1b\]6973;" + self.nonce.encode() + rb";([CPTL])([^\x07]*)\x07")
        self.pos = 0

    def send(self, command: str) -> None:
        os.write(self.fifo, shellstart.frame(command))

    def type(self, data: bytes) -> None:
        os.write(self.fd, data)

    def expect_mark(self, kind: str, timeout: float = 10.0) -> bytes:
        deadline = time.monotonic() + timeout
        while True:
            for m in self.mark_rx.finditer(self.out, self.pos):
                self.pos = m.end()
                if m.group(1).decode() == kind:
                    return m.group(2)
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {kind} mark within {timeout:g}s; output: {self.out[-400:]!r}")
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
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
