"""Network faults for the reliability tier, all on 127.0.0.1: a listener that accepts and never
speaks, a relay that adds latency in front of a real sshd, and counters read from /proc.

These are seams the tests own (a TCP socket in front of the real sshd), never fakes of bastion
code: the bastion still speaks real SSH to a real OpenSSH server through them.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path


class Blackhole:
    """A TCP listener on 127.0.0.1 that accepts every connection and never sends a byte.

    ``accepted``: how many connections it took, with their monotonic times in ``accept_times``.
    """

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self.accept_times: list[float] = []
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @property
    def accepted(self) -> int:
        return len(self.accept_times)

    def _run(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)          # kept open, never written, never read
            self.accept_times.append(time.monotonic())

    def open_connections(self) -> int:
        """Accepted connections whose peer has not closed them (a read would not block on EOF)."""
        alive = 0
        for conn in self.conns:
            try:
                data = conn.recv(65536, socket.MSG_DONTWAIT | socket.MSG_PEEK)
            except BlockingIOError:
                alive += 1                   # nothing to read: still open
                continue
            except OSError:
                continue
            if data:
                # the peer sent its version line and waits; drain it and look again
                try:
                    while conn.recv(65536, socket.MSG_DONTWAIT):
                        pass
                except BlockingIOError:
                    alive += 1
                except OSError:
                    pass
        return alive

    def close(self) -> None:
        self._stop = True
        self.sock.close()
        for conn in self.conns:
            conn.close()


class SlowRelay:
    """A TCP relay on 127.0.0.1 in front of ``port`` that holds each chunk the server sends for
    ``delay`` seconds before passing it on (the client's bytes go through at once).

    Every SSH round trip through it then costs ``delay``: an upstream connect takes several,
    opening a session channel two or three, so a test can abort agents while the bastion is
    in the middle of either.  ``open``: relayed connections both of whose sides are still up;
    ``accepted``: all it took; ``client_chunks``: chunks received from clients so far.
    """

    def __init__(self, port: int, delay: float) -> None:
        self.target = port
        self.delay = delay
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(256)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.client_chunks = 0
        self._open = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @property
    def open(self) -> int:
        with self._lock:
            return self._open

    def _run(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                client.close()
                continue
            with self._lock:
                self.accepted += 1
                self._open += 1
            done = threading.Event()
            threading.Thread(target=self._pump, args=(client, server, 0.0, done, True),
                             daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, self.delay, done, False),
                             daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, delay: float,
              done: threading.Event, from_client: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if from_client:
                    with self._lock:
                        self.client_chunks += 1
                if delay:
                    time.sleep(delay)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            first = not done.is_set()
            done.set()
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            if first:
                with self._lock:
                    self._open -= 1
            else:
                src.close()
                dst.close()

    def close(self) -> None:
        self.sock.close()


class HeldRelay(SlowRelay):
    """A relay (no delay) in front of ``port`` that holds the first connections it accepts
    until ``count`` of them are there, then connects them all to the server at once.

    So ``count`` connects reach the server in the same instant, however the clients were
    spread in time (``released``: whether that happened; after ``max_hold`` seconds it lets
    the held ones through anyway, with ``released`` False).  Later connections pass at once.
    """

    def __init__(self, port: int, count: int, max_hold: float = 60.0) -> None:
        self.count, self.max_hold = count, max_hold
        self.released = False
        self._held: list[socket.socket] = []
        self._passing = False
        super().__init__(port, 0.0)

    def _run(self) -> None:
        self.sock.settimeout(0.05)
        first = None
        while True:
            try:
                client, _ = self.sock.accept()
            except TimeoutError:
                client = None
            except OSError:
                return
            if client is not None:
                client.settimeout(None)
                if self._passing:
                    self._connect([client])
                    continue
                self._held.append(client)
                first = first or time.monotonic()
            if not self._passing and self._held and (
                    len(self._held) >= self.count or time.monotonic() - first > self.max_hold):
                self.released = len(self._held) >= self.count
                self._passing = True
                held, self._held = self._held, []
                self._connect(held)

    def _connect(self, clients: list[socket.socket]) -> None:
        pairs = []
        for client in clients:
            try:
                pairs.append((client, socket.create_connection(("127.0.0.1", self.target))))
            except OSError:
                client.close()
        for client, server in pairs:
            with self._lock:
                self.accepted += 1
                self._open += 1
            done = threading.Event()
            threading.Thread(target=self._pump, args=(client, server, 0.0, done, True),
                             daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, 0.0, done, False),
                             daemon=True).start()


def children(pid: int) -> list[tuple[int, str]]:
    """Every descendant of ``pid`` as (pid, command line), read from /proc."""
    parents: dict[int, int] = {}
    cmdlines: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents[int(entry.name)] = ppid
        cmdlines[int(entry.name)] = cmd.strip()
    found, frontier = [], {pid}
    while frontier:
        nxt = {p for p, pp in parents.items() if pp in frontier}
        found += [(p, cmdlines[p]) for p in sorted(nxt)]
        frontier = nxt
    return found


def established(port: int) -> int:
    """TCP connections in ESTABLISHED state whose local port is ``port`` (IPv4, /proc/net/tcp)."""
    count = 0
    try:
        lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return 0
    for line in lines:
        fields = line.split()
        local, state = fields[1], fields[3]
        if state == "01" and int(local.split(":")[1], 16) == port:
            count += 1
    return count


def wait_until(predicate, timeout: float, step: float = 0.05) -> float | None:
    """Seconds until ``predicate()`` held, or None if it did not within ``timeout``."""
    t0 = time.monotonic()
    while True:
        if predicate():
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            return None
        time.sleep(step)


def kill_group(proc) -> None:
    """SIGKILL a client started with ``start_new_session=True`` (no goodbye to the bastion)."""
    import signal
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
