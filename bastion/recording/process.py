"""The bastion side of the recording worker: a bounded queue shipped to another process.

:class:`WriterProcess` starts ``python -m bastion.recording.worker`` and talks
to it over two pipes.  The event loop calls :meth:`WriterProcess.put` (append
to a queue, never blocks, never touches the disk); a *pump* thread ships the
queue in batches (pickled, one write each: the GIL is released while the pipe
takes it); a *reader* thread takes the worker's events: what each batch
released from the queue (flow control: ``queued``, ``add_waiter``), barriers
passed (``Recorder.flush``), recording files created (``ChannelRecording.opened``),
size caps reached, and failures.

Why a process: escaping a stream into asciicast JSON, hashing and writing it
cost about as much CPU as relaying it; in a thread they held the GIL the event
loop needs (recording took ~24 % of relay throughput).  The worker runs beside
the loop on another core.

Batching: data operations do not wake the pump; it ships at most
``PUMP_INTERVAL`` after the first queued operation, at once for anything but
data, or when ``WAKE_BYTES`` of data are waiting.  Queue limits (HIGH_WATER,
LOW_WATER, HARD_LIMIT) are those documented in writer.py and count bytes until
the worker has applied them.

If the worker exits before it was told to stop (crash, killed), ``error`` and
``crashed`` are set, every waiter is released, and the recorder reports
unhealthy: sessions are refused, open channels end (fail closed).

Not covered: what the worker does with a batch (worker.py, writer.py).
"""

from __future__ import annotations

import collections
import fcntl
import itertools
import logging
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path

import bastion
from bastion.errors import RecordingError
from bastion.secret import SECRET_NAME
from bastion.recording.writer import (HARD_LIMIT, LOW_WATER, OP_BARRIER, OP_CHANNEL_CLOSE, OP_DATA,
                                      OP_OVERHEAD, OP_SESSION_CLOSE, OP_STOP, WAKE_BYTES)

log = logging.getLogger("bastion.recording")

PUMP_INTERVAL = 0.1          # longest a queued operation waits before it is shipped
START_TIMEOUT = 30.0         # the worker must have opened the index by then
STOP_TIMEOUT = 120.0         # closing every open recording (fsync) must be done by then
PIPE_BYTES = 1024 * 1024     # the data pipe's capacity (Linux F_SETPIPE_SZ; best effort)


class WriterProcess:
    """The recording worker process and the two threads that feed and hear it."""

    def __init__(self, data_dir: Path, max_bytes: int, lock_fd: int) -> None:
        self.error: str | None = None
        self.crashed = False
        self.queued = 0                  # bytes not yet applied (read by the loop without the lock)
        self._unsent = 0
        self._urgent = False
        self._queue: collections.deque = collections.deque()
        self._cond = threading.Condition()
        self._stopped = False            # no more puts
        self._stop_acked = False
        self._waiters: list = []         # (loop, future) of drain() callers
        self._barriers: dict[int, threading.Event] = {}
        self._barrier_ids = itertools.count(1)
        self._channels: dict = {}        # cid -> ChannelRecording (open futures, truncated flag)
        self._ready = threading.Event()
        self._fatal: str | None = None
        to_r, to_w = os.pipe()
        from_r, from_w = os.pipe()
        _grow_pipe(to_w)
        # the worker needs no secret: the vault passphrase, tokens... stay in this process
        env = {k: v for k, v in os.environ.items() if not SECRET_NAME.search(k)}
        root = str(Path(bastion.__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        level = logging.getLevelName(log.getEffectiveLevel())
        argv = [sys.executable, "-m", "bastion.recording.worker", "--data-dir", str(data_dir),
                "--max-bytes", str(max_bytes), "--in-fd", str(to_r), "--out-fd", str(from_w),
                "--lock-fd", str(lock_fd), "--log-level", str(level)]
        try:
            self.proc = subprocess.Popen(argv, pass_fds=(to_r, from_w, lock_fd), env=env,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        except OSError as exc:
            for fd in (to_r, to_w, from_r, from_w):
                os.close(fd)
            raise RecordingError(f"cannot start the recording worker: {exc}",
                                 hint="bastion refuses to run sessions it cannot record") from exc
        os.close(to_r)
        os.close(from_w)
        self._out = Connection(to_w, readable=False)
        self._in = Connection(from_r, writable=False)
        self._reader = threading.Thread(target=self._read, name="bastion-recording-reader",
                                        daemon=True)
        self._pump_thread = threading.Thread(target=self._pump, name="bastion-recording-pump",
                                             daemon=True)
        self._reader.start()
        self._pump_thread.start()
        if not self._ready.wait(START_TIMEOUT) or self._fatal is not None:
            why = self._fatal or self.error or f"it did not start within {START_TIMEOUT:g} s"
            self._abandon()
            raise RecordingError(f"the recording worker could not start: {why}",
                                 hint="bastion refuses to run sessions it cannot record; "
                                      "check the data dir and the log above")

    # -- loop side -----------------------------------------------------------
    def put(self, op: tuple, nbytes: int = 0) -> None:
        cost = nbytes + OP_OVERHEAD
        with self._cond:
            if self._stopped:
                raise RecordingError("the recorder is closed" if not self.crashed
                                     else f"session recording is not possible: {self.error}")
            if self.queued + cost > HARD_LIMIT and op[0] not in (OP_CHANNEL_CLOSE, OP_SESSION_CLOSE):
                log.error("recording queue full: %d bytes not yet applied, %d not yet shipped "
                          "(%d operations), %d drain() callers waiting", self.queued, self._unsent,
                          len(self._queue), len(self._waiters))
                raise RecordingError(
                    "the recording queue is full: the disk is not keeping up with this session",
                    hint="callers must pause reading while over_high_water() and await drain()")
            was_empty = not self._queue
            self._queue.append((op, cost))
            self.queued += cost
            self._unsent += cost
            # Data is batched: waking the pump for every chunk costs more (thread
            # switches, GIL hand-overs) than shipping it.
            if op[0] != OP_DATA or self._unsent >= WAKE_BYTES:
                self._urgent = True
                self._cond.notify()
            elif was_empty:
                self._cond.notify()

    def track(self, cid: int, chan) -> None:
        """Route the worker's events about channel ``cid`` to ``chan`` (until :meth:`untrack`)."""
        self._channels[cid] = chan
        if self._stopped and self.crashed:
            chan._open_done(self.error)

    def untrack(self, cid: int) -> None:
        self._channels.pop(cid, None)

    def barrier(self) -> threading.Event:
        """An event set once everything queued before it is written and committed."""
        done = threading.Event()
        bid = next(self._barrier_ids)
        self._barriers[bid] = done
        try:
            self.put((OP_BARRIER, bid))
        except RecordingError:
            self._barriers.pop(bid, None)
            raise
        return done

    def add_waiter(self, loop, fut) -> bool:
        """Register a drain() future; False if the queue is already low enough."""
        with self._cond:
            if self.queued <= LOW_WATER or self.error is not None or self._stopped:
                return False
            self._waiters.append((loop, fut))
            return True

    def is_alive(self) -> bool:
        return self._reader.is_alive()

    def stop(self) -> None:
        with self._cond:
            if self._stopped:
                return
            self._queue.append(((OP_STOP,), 0))
            self._stopped = True
            self._urgent = True
            self._cond.notify()

    def join(self, timeout: float = STOP_TIMEOUT) -> None:
        """Wait for the worker to finish (after :meth:`stop`); kill it past ``timeout``."""
        self._reader.join(timeout)
        if self._reader.is_alive():
            log.error("the recording worker did not stop within %g s; killing it", timeout)
            self._abandon()
            self._reader.join(10)
        self._pump_thread.join(10)

    # -- pump thread ---------------------------------------------------------
    def _pump(self) -> None:
        while True:
            with self._cond:
                while not self._queue:
                    if self._stopped:            # STOP was shipped, or the worker crashed
                        return
                    self._cond.wait()
                deadline = time.monotonic() + PUMP_INTERVAL
                while not self._urgent:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                batch = list(self._queue)
                self._queue.clear()
                self._unsent = 0
                self._urgent = False
            try:
                self._out.send_bytes(pickle.dumps(batch, protocol=pickle.HIGHEST_PROTOCOL))
            except (OSError, ValueError) as exc:   # the worker is gone: the reader reports it
                log.debug("recording pump: %s", exc)
                return
            except Exception:                       # a bug (an op that does not pickle)
                log.exception("recording pump: a batch could not be sent")
                self._set_error("internal error: a recording batch could not be sent")
                self._abandon()
                return
            if any(op[0] == OP_STOP for op, _cost in batch):
                return

    # -- reader thread -------------------------------------------------------
    def _read(self) -> None:
        try:
            while True:
                try:
                    events = pickle.loads(self._in.recv_bytes())
                except (EOFError, OSError):
                    break
                for event in events:
                    self._event(event)
        except Exception:                           # never leave waiters hanging
            log.exception("recording reader failed")
            self._abandon()
        finally:
            rc = self.proc.wait()
            for conn in (self._in, self._out):
                try:
                    conn.close()
                except OSError:
                    pass
            if not self._stop_acked:
                self._crashed(rc)

    def _event(self, event: tuple) -> None:
        kind = event[0]
        if kind == "done":
            _, released, barriers = event
            with self._cond:
                self.queued -= released
                wake = self.queued <= LOW_WATER or self.error is not None or self._stopped
                waiters = self._waiters if wake else []
                if wake:
                    self._waiters = []
            for loop, fut in waiters:
                _wake(loop, fut)
            for bid in barriers:
                done = self._barriers.pop(bid, None)
                if done is not None:
                    done.set()
        elif kind == "opened":
            chan = self._channels.get(event[1])
            if chan is not None:
                chan._open_done(event[2])
        elif kind == "truncated":
            chan = self._channels.get(event[1])
            if chan is not None:
                chan._truncated = True
        elif kind == "error":
            self._set_error(event[1])
        elif kind == "ready":
            self._ready.set()
        elif kind == "fatal":
            self._fatal = event[1]
            self._ready.set()
        elif kind == "stopped":
            self._stop_acked = True

    def _set_error(self, message: str) -> None:
        if self.error is None:
            self.error = message

    def _crashed(self, rc: int) -> None:
        how = f"killed by signal {-rc}" if rc < 0 else f"exit status {rc}"
        self._set_error(f"the recording worker process crashed ({how})")
        self.crashed = True
        log.error("recording failure: %s", self.error)
        with self._cond:
            self._stopped = True
            waiters, self._waiters = self._waiters, []
            self._queue.clear()
            self._cond.notify_all()
        for loop, fut in waiters:
            _wake(loop, fut)
        for done in list(self._barriers.values()):
            done.set()
        self._barriers.clear()
        for chan in list(self._channels.values()):
            chan._open_done(self.error)
        self._ready.set()

    def _abandon(self) -> None:
        """Kill the worker (start failed, a bug, or it would not stop)."""
        try:
            self.proc.send_signal(signal.SIGKILL)
        except OSError:
            pass


def _grow_pipe(fd: int) -> None:
    try:
        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), PIPE_BYTES)
    except OSError:
        pass                             # a smaller pipe only means more, smaller writes


def _wake(loop, fut) -> None:
    def _set() -> None:
        if not fut.done():
            fut.set_result(None)
    try:
        loop.call_soon_threadsafe(_set)
    except RuntimeError:          # loop closed
        pass
