"""Loopback ports for the tests' servers, safe when pytest-xdist runs several test processes.

``bind(port 0)`` then close (bastion.demo.sshd.free_port) leaves a window in which another
process can take the port: the kernel hands out the same ephemeral range to every socket,
and the ssh clients' own outgoing connections take source ports from it too.  With several
test processes at once that window became a real race, so the tests pick their servers'
ports here instead: below the ephemeral range (never a source port of a connection), each
xdist worker in its own slice (never another worker's), cycling through the slice from a
random start (a port a test just released is not handed out again soon, and two runs of
the suite side by side rarely meet).  A port found in use is skipped.
"""

from __future__ import annotations

import os
import random
import socket

FIRST = 15000                 # below net.ipv4.ip_local_port_range's usual 32768
SLICE = 1700                  # ports per worker: 10 workers fit below 32768
_next: int | None = None


def _worker() -> int:
    name = os.environ.get("PYTEST_XDIST_WORKER", "gw0")           # "gw3"; unset: not under xdist
    digits = name[2:]
    return int(digits) % 10 if digits.isdigit() else 0


def free_port() -> int:
    """A loopback TCP port nobody listens on, from this test process's own slice."""
    global _next
    base = FIRST + _worker() * SLICE
    if _next is None:
        _next = random.randrange(SLICE)
    for _ in range(SLICE):
        port = base + _next
        _next = (_next + 1) % SLICE
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free loopback port in {base}-{base + SLICE - 1}")
