"""``bastion serve --workers N``: N processes accept on one port, the parent supervises them.

The parent takes the data dir's lock (``DATA_DIR/recorder.lock``: a second independent
``bastion serve`` on the same data dir is refused as before) and reserves the port with a
socket bound with ``SO_REUSEPORT`` that never listens (so ``--listen 127.0.0.1:0`` works);
each worker is the same ``bastion serve`` command run again with ``BASTION_WORKER`` set
(``index:count:port:recover``), listens on that port with ``SO_REUSEPORT`` (the kernel
spreads connections over the listening sockets) and records with its own lock, journal,
status socket and ids (bastion.recording.shares).

Worker 1 starts first and alone recovers every session a previous run left ``active``;
the others start once it listens.  SIGHUP and SIGTERM/SIGINT are passed to every worker.
A worker is sent SIGTERM if the parent dies (``PR_SET_PDEATHSIG``).  A worker that
exits on its own (crash, kill -9) is started again after a backoff (0.5 s,
doubling up to 30 s, back to 0.5 s after a minute up) and then marks interrupted only its
own sessions.  Only worker 1 serves ``--api-listen`` (one /metrics, one web UI); its
/metrics sums every worker's counters (bastion.workermetrics; the parent clears their
snapshots at start).

Not covered: what a worker does (bastion.cli.serve, bastion.ssh.server).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bastion.errors import ConfigError

log = logging.getLogger("bastion.serve")

ENV_WORKER = "BASTION_WORKER"                   # internal: set by the parent for a worker
ENV_READY_FD = "BASTION_WORKER_READY_FD"         # internal: the worker writes a byte when listening
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 30.0
STABLE_AFTER = 60.0
STOP_WAIT = 30.0
#: a worker that exits this many times within START_LIMIT_WINDOW seconds without ever having
#: listened is not started again: the parent stops the others and exits 1 (systemd's start limit)
START_LIMIT_BURST = 5
START_LIMIT_WINDOW = 60.0


@dataclass(frozen=True)
class WorkerRole:
    """What a worker process was told by its parent."""
    index: int
    count: int
    port: int
    recover_all: bool

    @classmethod
    def from_env(cls) -> "WorkerRole | None":
        raw = os.environ.get(ENV_WORKER)
        if not raw:
            return None
        try:
            index, count, port, recover = (int(x) for x in raw.split(":"))
        except ValueError:
            raise ConfigError(f"{ENV_WORKER}={raw!r} is not index:count:port:recover",
                              hint=f"{ENV_WORKER} is set by `bastion serve --workers`; "
                                   "unset it") from None
        return cls(index, count, port, bool(recover))

    def env(self) -> str:
        return f"{self.index}:{self.count}:{self.port}:{int(self.recover_all)}"


def tell_ready() -> None:
    """In a worker: tell the parent it listens (once)."""
    fd = os.environ.pop(ENV_READY_FD, None)
    if fd is None:
        return
    try:
        os.write(int(fd), b"1")
        os.close(int(fd))
    except (OSError, ValueError):
        pass


def default_workers() -> int:
    """The number of cores this process may run on (at most MAX_WORKERS)."""
    from bastion.recording.shares import MAX_WORKERS
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(cores, MAX_WORKERS))


def check_count(n: int) -> int:
    from bastion.recording.shares import MAX_WORKERS
    if not 1 <= n <= MAX_WORKERS:
        raise ConfigError(f"--workers must be 1-{MAX_WORKERS}, got {n}",
                          hint="pass --workers 1 for one process, or the number of cores")
    return n


def reserve_port(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` with SO_REUSEPORT that never listens: the workers bind
    beside it; it only holds the port (and picks one for port 0)."""
    from bastion.ssh.server import listen_error
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, _, _, _, addr = infos[0]
        # first without SO_REUSEPORT: a port another process (another `serve --workers` of
        # the same user included) listens on is refused, not silently shared
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(addr)
            addr = (addr[0], probe.getsockname()[1], *addr[2:])
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(addr)
        except BaseException:
            sock.close()
            raise
    except OSError as exc:
        raise listen_error(host, port, exc) from exc
    return sock


def worker_argv() -> list[str]:
    """This same ``bastion serve`` command line, to run again as a worker."""
    exe = sys.argv[0]
    if os.path.basename(exe).startswith("bastion") and os.access(exe, os.X_OK):
        return [exe, *sys.argv[1:]]
    return [sys.executable, "-c", "from bastion.cli.main import main; main()", *sys.argv[1:]]


def _die_with_parent() -> None:
    """In the forked child: SIGTERM when the parent dies (a kill -9 of the parent must not
    leave workers accepting on the port with nobody supervising them).  Linux only."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)        # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


@dataclass
class Worker:
    index: int
    proc: "subprocess.Popen[bytes] | None" = None
    ready_fd: int = -1
    ready: bool = False
    started: float = 0.0
    delay: float = BACKOFF_FIRST
    restart_at: float | None = None
    restarts: int = 0
    argv: list[str] = field(default_factory=list)
    failed_starts: list[float] = field(default_factory=list)   # exits before listening

    def spawn(self, count: int, port: int, recover_all: bool) -> None:
        r, w = os.pipe()
        os.set_blocking(r, False)
        env = dict(os.environ)
        env[ENV_WORKER] = WorkerRole(self.index, count, port, recover_all).env()
        env[ENV_READY_FD] = str(w)
        try:
            self.proc = subprocess.Popen(self.argv, env=env, pass_fds=(w,),
                                         preexec_fn=_die_with_parent)
        finally:
            os.close(w)
        self.ready_fd, self.ready, self.started = r, False, time.monotonic()
        self.restart_at = None

    def poll_ready(self) -> bool:
        if not self.ready and self.ready_fd >= 0:
            try:
                if os.read(self.ready_fd, 1):
                    self.ready = True
            except BlockingIOError:
                pass
            if self.ready:
                os.close(self.ready_fd)
                self.ready_fd = -1
        return self.ready

    def exited(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.send_signal(sig)
            except ProcessLookupError:
                pass


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with status {code}"


class Parent:
    """The supervising parent (see the module doc)."""

    def __init__(self, count: int, host: str, port: int, policy: Path, data_dir: Path) -> None:
        self.count, self.host, self.port = count, host, port
        self.policy, self.data_dir = policy, data_dir
        argv = worker_argv()
        self.workers = [Worker(i, argv=argv) for i in range(1, count + 1)]
        self._stop: str | None = None
        self._hup = False
        self.gave_up: str | None = None      # why the parent stopped on its own

    def _on_signal(self, signum: int, _frame: object) -> None:
        if signum == signal.SIGHUP:
            self._hup = True
        else:
            self._stop = signal.Signals(signum).name

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        try:
            code = self._start()
            if code is not None:
                return code
            log.info("bastion listening on %s:%d with %d workers (policy %s, data %s)",
                     self.host, self.port, self.count, self.policy, self.data_dir)
            self._supervise()
            return 1 if self.gave_up else 0
        finally:
            self._stop_all()

    def _start(self) -> int | None:
        """Worker 1 (recovering everything), then the others; an exit code if one failed."""
        for group in (self.workers[:1], self.workers[1:]):
            for w in group:
                w.spawn(self.count, self.port, recover_all=(w.index == 1))
            while not all(w.poll_ready() for w in group):
                for w in group:
                    code = w.exited()
                    if code is not None:
                        log.error("worker %d %s while starting", w.index, describe_exit(code))
                        return code if code > 0 else 1
                if self._stop:
                    return 0
                time.sleep(0.05)
        return None

    def _supervise(self) -> None:
        while not self._stop:
            time.sleep(0.1)
            if self._hup:
                self._hup = False
                log.info("received SIGHUP: passing it to %d workers", self.count)
                for w in self.workers:
                    w.signal(signal.SIGHUP)
            now = time.monotonic()
            for w in self.workers:
                w.poll_ready()
                code = w.exited()
                if code is not None and w.restart_at is None and not self._stop:
                    if not w.ready:
                        w.failed_starts = [t for t in w.failed_starts
                                           if now - t < START_LIMIT_WINDOW] + [now]
                        if len(w.failed_starts) >= START_LIMIT_BURST:
                            self.gave_up = (
                                f"worker {w.index} failed to start {len(w.failed_starts)} times "
                                f"within {START_LIMIT_WINDOW:.0f} s (last: pid "
                                f"{w.proc.pid if w.proc else 0} {describe_exit(code)} before "
                                "listening; see its messages above): giving up")
                            log.error("%s; stopping the other workers", self.gave_up)
                            self._stop = "start limit"
                            break
                    w.delay = (BACKOFF_FIRST if now - w.started >= STABLE_AFTER
                               else min(BACKOFF_MAX, w.delay * 2 if w.restarts else w.delay))
                    w.restart_at = now + w.delay
                    log.warning("worker %d (pid %d) %s: starting it again in %.1f s",
                                w.index, w.proc.pid if w.proc else 0, describe_exit(code),
                                w.delay)
                if w.restart_at is not None and now >= w.restart_at and not self._stop:
                    w.restarts += 1
                    w.spawn(self.count, self.port, recover_all=False)
        if not self.gave_up:
            log.info("received %s: stopping %d workers", self._stop, self.count)

    def _stop_all(self) -> None:
        for w in self.workers:
            w.signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_WAIT
        for w in self.workers:
            if w.proc is None:
                continue
            try:
                w.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("worker %d did not stop within %.0f s: killing it", w.index, STOP_WAIT)
                w.proc.kill()
                w.proc.wait()
            if w.ready_fd >= 0:
                os.close(w.ready_fd)
                w.ready_fd = -1
        log.info("bastion stopped")


def run_parent(count: int, host: str, port: int, policy: Path, data_dir: Path) -> int:
    """Hold the data dir and the port, run ``count`` workers until SIGTERM; the exit code."""
    from bastion.private import make_private_dirs
    from bastion.recording.recorder import _lock
    make_private_dirs(data_dir)
    lock_fd = _lock(data_dir)             # another `bastion serve` on this data dir: refused
    try:
        from bastion import workermetrics
        workermetrics.clear(data_dir)     # this run's counters start at 0
        reserved = reserve_port(host, port)
        try:
            parent = Parent(count, host, reserved.getsockname()[1], policy, data_dir)
            return parent.run()
        finally:
            reserved.close()
    finally:
        os.close(lock_fd)
