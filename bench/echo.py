"""Keystroke echo latency in an interactive pty shell, per path, interleaved.

The real ssh client runs with ``-tt`` on a real pseudo-terminal (``os.openpty``;
ssh puts it in raw mode as it would a person's terminal).  Once the remote shell
answers, the bench writes one byte (``x``) to the pty and times until the echo
of that byte comes back from the remote line editor, then erases it with DEL
(untimed) and waits a little before the next key, as a typist would.  The paths
take turns key by key so drift hits all alike.

Through the bastion every keystroke reaches the bastion's own line editor
(:mod:`bastion.proto.lineeditor`, a mediated shell), which echoes it; OpenSSH's
path echoes from bash's readline on the host.  No line is submitted during the
measurement.
If a path cannot open a shell, it is reported as ``n/a`` with the reason and the
others are still measured.

Not covered: output-heavy interactive sessions (see :mod:`bench.bulk`), the
time to run a submitted line (policy evaluation: see the components section).
"""

from __future__ import annotations

import fcntl
import os
import select
import struct
import subprocess
import termios
import time

from bench.rig import PATHS, BenchRig
from bench.stats import rotated, summary

FULL_KEYS = 500
QUICK_KEYS = 20
KEY_GAP_S = 0.01
READY_WORD = b"BENCHREADY"


class ShellFailed(Exception):
    pass


class PtyShell:
    """One ``ssh -tt`` client on a pty; ``keystroke()`` returns one echo latency in seconds."""

    def __init__(self, rig: BenchRig, path: str) -> None:
        self.path = path
        self.master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        self.proc = subprocess.Popen(rig.argv(path, None, args=("-tt",)), env=rig.client_env(),
                                     stdin=slave, stdout=slave, stderr=slave,
                                     start_new_session=True)
        os.close(slave)
        self.seen = b""

    def _read(self, timeout: float) -> bytes:
        ready, _, _ = select.select([self.master], [], [], max(timeout, 0))
        if not ready:
            return b""
        try:
            data = os.read(self.master, 65536)
        except OSError:              # EIO: the client exited and closed the pty
            data = b""
        if not data:
            raise ShellFailed(f"the ssh client exited: {self._tail()}")
        return data

    def _tail(self) -> str:
        text = self.seen.decode(errors="replace").replace("\r", "").strip()
        return text.splitlines()[-1][:300] if text else f"exit status {self.proc.poll()}"

    def read_until(self, needle: bytes, timeout: float) -> bytes:
        deadline = time.perf_counter() + timeout
        buf = b""
        while needle not in buf:
            left = deadline - time.perf_counter()
            if left <= 0:
                raise ShellFailed(f"no {needle!r} within {timeout:g}s: {self._tail()}")
            data = self._read(left)
            buf += data
            self.seen = (self.seen + data)[-4000:]
        return buf

    def drain(self) -> None:
        while True:
            data = self._read(0)
            if not data:
                return
            self.seen = (self.seen + data)[-4000:]

    def wait_ready(self, timeout: float = 45) -> None:
        # the quotes keep the typed command's own echo from matching READY_WORD
        time.sleep(0.3)
        os.write(self.master, b'echo BENCH""READY\r')
        self.read_until(READY_WORD, timeout)
        time.sleep(0.3)
        self.drain()

    def keystroke(self) -> float:
        self.drain()
        t0 = time.perf_counter()
        os.write(self.master, b"x")
        self.read_until(b"x", 10)
        dt = time.perf_counter() - t0
        os.write(self.master, b"\x7f")
        self.read_until(b"\x08", 10)
        return dt

    def close(self) -> None:
        try:
            if self.proc.poll() is None:
                os.write(self.master, b"\x03exit\r")
                self.proc.wait(5)
        except (OSError, subprocess.TimeoutExpired):
            pass
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            os.close(self.master)


def run(rig: BenchRig, *, quick: bool = False, keys: int | None = None,
        paths: tuple[str, ...] = PATHS, log=print) -> dict:
    keys = keys or (QUICK_KEYS if quick else FULL_KEYS)
    shells: dict[str, PtyShell] = {}
    failures: dict[str, str] = {}
    times: dict[str, list[float]] = {p: [] for p in paths}
    try:
        for path in paths:
            shell = PtyShell(rig, path)
            try:
                shell.wait_ready()
                shells[path] = shell
            except ShellFailed as exc:
                failures[path] = f"error: {exc}"[:300]
                log(f"  echo {path}: n/a ({failures[path]})")
                shell.close()
        for i in range(keys):
            for path in rotated(list(shells), i):
                if path in failures:
                    continue
                try:
                    times[path].append(shells[path].keystroke())
                except ShellFailed as exc:
                    failures[path] = f"error after {len(times[path])} keys: {exc}"[:300]
                    log(f"  echo {path}: n/a ({failures[path]})")
                time.sleep(KEY_GAP_S)
    finally:
        for shell in shells.values():
            shell.close()
    out: dict = {"keys": keys, "unit": "ms", "paths": {}}
    for path in paths:
        out["paths"][path] = ({"na": failures[path]} if path in failures
                              else summary(times[path], scale=1000, digits=3))
    med = {p: out["paths"][p].get("median") for p in paths}
    out["added_vs_jump_ms"] = (None if med.get("bastion") is None or med.get("jump") is None
                               else round(med["bastion"] - med["jump"], 3))
    out["added_vs_direct_ms"] = (None if med.get("bastion") is None or med.get("direct") is None
                                 else round(med["bastion"] - med["direct"], 3))
    return out
