"""The bastion side of recording: the bounded queue, acknowledgements, and a worker that comes back.

The event loop calls :meth:`Supervisor.put` (append to a queue, never blocks, never
touches the disk; returns the operation's sequence number).  A *pump* thread ships
the queue in batches to the current recording worker (bastion.recording.process);
the worker acknowledges each batch once it is written and committed (``("done",
seq)``).  The queue and what acknowledgements release (queue capacity, barriers, the
agent's output held by :mod:`bastion.recording.gate`) are :class:`AckQueue`
(bastion.recording.acks), which ``Supervisor`` extends with the worker's life.

Faults.  When the worker reports a failure or dies, the recorder is *faulted* at once:
every open channel is marked lost (its recording calls raise, its agent channel is
ended with 255 by the gate and the SSH layer), held output is never shown, barriers
fail, ``start_session`` refuses.  Once the process has ended, what it did not
acknowledge is kept for a **replay**: data is dropped (it was never shown to anyone),
everything else (session and command rows, markers, results, channel and session
closes -- a close whose exit status the agent was not given is rewritten to 255 with a
failure marker) is sent again.  After a backoff (``BACKOFF`` 0.5 s doubling to 10 s)
a new worker is started; it gets, in one replay (``OP_REPLAY``): the mask sets, the
open operation of every channel whose close is not acknowledged yet (it adopts their
recordings), what the dead worker's maskers held back undecided of the output already
shown (``OP_RESUME``, kept as acks.py says), the kept operations; then ``OP_PROBE``
(bastion.recording.health).  When
the probe passes, sessions are accepted again; while it does not (disk still full,
index still locked) each attempt fails and the next one waits longer.  Operations
put meanwhile (closes, refused attempts) wait in the queue for the next worker.

An operation the index refuses for a reason of its own is kept aside by the worker in the
batch where it fails, or in the replay (bastion.recording.quarantine; ``("poisoned", ...)``,
not a failure): its channel stops, its session opens no more channels, every other channel
goes on.

Not covered: the public API (recorder.py), the queue (acks.py), the worker (worker.py,
writer.py).
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from bastion.errors import RecordingError
from bastion.recording import replay
from bastion.recording.acks import AckQueue, Barrier, Entry, Op, wake
from bastion.recording.process import START_TIMEOUT, WriterProcess, describe_exit
from bastion.recording.ops import OP_BARRIER, OP_PROBE, OP_STOP

__all__ = ["BACKOFF", "Barrier", "Supervisor"]

log = logging.getLogger("bastion.recording")

BACKOFF = (0.5, 10.0)        # first wait before a new worker, and the longest (doubling)
BATCH_BYTES = 4 * 1024 * 1024    # the most data one batch carries (the pipe takes it in pieces)
# Batches shipped and not yet acknowledged: the pump waits for an acknowledgement before it
# ships more.  Each batch costs both processes ~0.2 ms of CPU whatever it holds (waking the
# pump, the worker and the reader, the write, the commit, the tail report and its journal
# record, the acknowledgement); shipping whatever was queued the moment it was queued made
# ~30 batches per MB of bulk output instead of a few.  Two in flight keep the worker busy
# (the next batch waits in the pipe while it works on one); an idle worker gets the first
# operation at once, so nothing waits when little is recorded.
MAX_INFLIGHT_BATCHES = 2
STOP_TIMEOUT = 120.0         # closing every open recording (fsync) must be done by then


class Supervisor(AckQueue):
    """The queue to the recording worker, and the worker's respawn (see the module doc).

    States: ``ok`` (sessions are recorded), ``failed`` (faulted, waiting to try again),
    ``recovering`` (a new worker is replaying and probing), ``closed``.
    """

    def __init__(self, data_dir: Path, max_bytes: int, lock_fd: int, *,
                 backoff: tuple[float, float] = BACKOFF, tail_key: bytes | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.tail_key = tail_key         # the store's tail journal (bastion.recording.tailstore)
        self.max_bytes = max_bytes
        self.lock_fd = lock_fd
        self.backoff = backoff
        super().__init__()
        self._last_worker: WriterProcess | None = None
        self._accepting = False          # batches may be shipped to ``_worker``
        self._faulted_by: WriterProcess | None = None
        self._replay: list[Op] = []            # kept from workers that failed (their bytes:
                                               # ``_replay_cost``)
        self._probe: tuple[WriterProcess, str | None] | None = None
        self._closing = False
        self._stop_acked = False
        # what `bastion status` shows
        self.attempts = 0                # attempts to recover from the current fault
        self.failures = 0
        self.recoveries = 0
        self.fault_since: float | None = None     # wall time
        self.last_failure: tuple[float, str] | None = None
        self.last_recovery: tuple[float, float, int] | None = None   # when, seconds, attempts
        self.last_attempt_error: str | None = None
        self._next_attempt = 0.0                  # monotonic
        self._retry_asap = False                  # retry_now() was called
        self._fault_mono = 0.0
        self._pump_thread = threading.Thread(target=self._pump, name="bastion-recording-pump",
                                             daemon=True)
        self._pump_thread.start()
        self._recovery_thread: threading.Thread | None = None
        try:
            self._start_first()
        except BaseException:
            self._shutdown_threads()
            raise
        self._recovery_thread = threading.Thread(target=self._recover_loop,
                                                 name="bastion-recording-recovery", daemon=True)
        self._recovery_thread.start()

    # -- the loop's side -------------------------------------------------------------
    @property
    def healthy(self) -> bool:
        return self.state == "ok"

    @property
    def proc(self) -> Any:
        """The current (or last) worker process, for tests and the status."""
        worker = self._worker or self._last_worker
        return worker.proc if worker is not None else None

    # -- status ------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        now = time.monotonic()
        with self._cond:
            oldest = (self._inflight[0] if self._inflight else
                      self._queue[0] if self._queue else None)
            worker = self._worker
            return {
                "state": self.state,
                "error": self.error,
                "fault_since": self.fault_since,
                "attempts": self.attempts,
                "next_attempt_in": (round(max(0.0, self._next_attempt - now), 3)
                                    if self.state == "failed"
                                    and self._next_attempt != float("inf") else None),
                "last_attempt_error": self.last_attempt_error if self.state != "ok" else None,
                "failures": self.failures,
                "recoveries": self.recoveries,
                "last_failure": ({"at": self.last_failure[0], "error": self.last_failure[1]}
                                 if self.last_failure else None),
                "last_recovery": ({"at": self.last_recovery[0], "seconds": self.last_recovery[1],
                                   "attempts": self.last_recovery[2]}
                                  if self.last_recovery else None),
                "worker_pid": worker.pid if worker is not None and worker.alive else None,
                "queue_bytes": self.queued,
                "queue_ops": len(self._queue) + len(self._inflight),
                "index_lag_s": round(now - oldest.t, 3) if oldest is not None else 0.0,
                "last_ack": self.last_ack,
                "quarantined": self.quarantined,
            }

    def wait_state(self, *states: str, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.state not in states:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            return self.state

    def retry_now(self) -> None:
        """The cause is known to be gone: try again without waiting for the backoff."""
        with self._cond:
            self._next_attempt = 0.0
            self._retry_asap = True
            self._changed()

    # -- starting ----------------------------------------------------------------------
    def _spawn(self) -> WriterProcess:
        return WriterProcess(self.data_dir, self.max_bytes, self.lock_fd, self._on_events,
                             self._on_exit, tail_key=self.tail_key)

    def _start_first(self) -> None:
        worker = self._spawn()
        with self._cond:
            self._worker = self._last_worker = worker
            self._accepting = True
            self.state = "recovering"
            self._enqueue_front([(OP_PROBE,)])
            self._changed()
            deadline = time.monotonic() + START_TIMEOUT
            while self._probe is None and worker.alive and time.monotonic() < deadline:
                self._cond.wait(1.0)
            why = self._probe[1] if self._probe is not None else "the recording worker stopped"
        if why is not None:
            worker.kill()
            worker.join(10)
            raise RecordingError(f"session recording is not possible: {why}",
                                 hint="bastion refuses to run sessions it cannot record; "
                                      "free disk space or fix the data dir, then start again")

    def _recover_loop(self) -> None:
        while True:
            with self._cond:
                while not self._closing and not (
                        self.state == "failed" and self._worker is None
                        and time.monotonic() >= self._next_attempt):
                    wait = (self._next_attempt - time.monotonic()
                            if self.state == "failed" and self._worker is None else None)
                    self._cond.wait(min(3600.0, max(0.01, wait)) if wait is not None else None)
                if self._closing:
                    return
                self.state = "recovering"
                self.attempts += 1
                self._retry_asap = False
                attempt = self.attempts
                self._changed()
            log.info("recording: starting a new recording worker (attempt %d)", attempt)
            try:
                worker = self._spawn()
            except RecordingError as exc:
                self._attempt_failed(str(exc).removeprefix("the recording worker could not start: "))
                continue
            with self._cond:
                if self._closing:
                    worker.kill()
                    return
                self._worker = self._last_worker = worker
                self._probe = None
                self._enqueue_front(self._replay_ops())
                self._replay = []
                self._replay_cost = 0
                self._accepting = True
                self._changed()

    def _replay_ops(self) -> list[Op]:
        """What a new worker gets first (lock held)."""
        return replay.first_ops(self._replay, self._masks, self._open_ops, self._tails)

    def _attempt_failed(self, why: str) -> None:
        with self._cond:
            self.last_attempt_error = why
            delay = min(self.backoff[1], self.backoff[0] * 2 ** max(0, self.attempts - 1))
            if self._retry_asap:
                delay = 0.0
            self._next_attempt = time.monotonic() + delay
            if self.state != "closed":
                self.state = "failed"
            self._changed()
        log.warning("recording: attempt %d to recover failed: %s; next attempt in %.1f s "
                    "(sessions are refused meanwhile)", self.attempts, why, delay)

    # -- pump thread ---------------------------------------------------------------------
    def _pump(self) -> None:
        while True:
            with self._cond:
                while not (self._queue and self._accepting and self._may_ship()) \
                        and self.state != "closed":
                    self._work.wait()
                if self.state == "closed":
                    return
                worker = self._worker
                assert worker is not None           # _accepting implies a worker
                batch = []
                size = 0
                while self._queue and size < BATCH_BYTES:
                    entry = self._queue.popleft()
                    self._inflight.append(entry)
                    batch.append((entry.seq, entry.op))
                    size += entry.cost
                self._batch_ends.append(batch[-1][0])
                stop = any(op[0] == OP_STOP for _seq, op in batch)
                if stop:
                    self._accepting = False
            worker.send(batch)        # a failure is reported by the reader when the worker ends

    def _may_ship(self) -> bool:
        """Fewer than MAX_INFLIGHT_BATCHES batches wait for the current worker (lock held)."""
        if self._ends_worker is not self._worker:     # a new worker: none of its batches yet
            self._batch_ends.clear()
            self._ends_worker = self._worker
        return len(self._batch_ends) < MAX_INFLIGHT_BATCHES

    # -- reader threads ------------------------------------------------------------------
    def _on_events(self, worker: WriterProcess, events: list[Op]) -> None:
        for event in events:
            kind = event[0]
            if kind == "done":
                self._acked(worker, event[1])
            elif kind == "tails":
                self._tails_changed(worker, event[1])
            elif kind == "opened":
                chan = self._channels.get(event[1])
                if chan is not None:
                    chan._open_done(event[2])
            elif kind == "truncated":
                chan = self._channels.get(event[1])
                if chan is not None:
                    chan._truncated = True
            elif kind == "taken":             # a peer sealed it (bastion.recording.leases)
                self._stop_channel(event[1], event[2])
            elif kind == "poisoned":          # kept aside in a replay (recording.quarantine)
                self._poisoned(*event[1:])
            elif kind == "probe":
                self._probed(worker, event[1])
            elif kind == "error":
                self._fault(worker, event[1])
            elif kind == "stopped":
                with self._cond:
                    self._stop_acked = True

    def _probed(self, worker: WriterProcess, why: str | None) -> None:
        with self._cond:
            if worker is not self._worker:
                return
            self._probe = (worker, why)
            if why is not None or self.state != "recovering":
                self._changed()
                return
            first = self.fault_since is None
            self.state = "ok"
            self.error = None
            self._faulted_by = None
            if not first:
                seconds = time.monotonic() - self._fault_mono
                self.recoveries += 1
                self.last_recovery = (time.time(), seconds, self.attempts)
                attempts = self.attempts
            self.attempts = 0
            self.fault_since = None
            self.last_attempt_error = None
            self._changed()
        if not first:
            log.warning("recording recovered after %d attempt(s), %.1f s: sessions are accepted "
                        "again", attempts, seconds)

    def _fault(self, worker: WriterProcess, message: str) -> None:
        """The worker failed: stop everything that depends on it (see the module doc)."""
        with self._cond:
            if worker is not self._worker or self._faulted_by is worker:
                return
            self._faulted_by = worker
            self._accepting = False
            if self.state == "recovering" and self.fault_since is not None:
                # an attempt failed (replay or probe): the fault goes on
                self.state = "failed"
                self.last_attempt_error = message
                self._changed()
                return
            if self.state == "closed":
                return
            starting = self.fault_since is None and self.state == "recovering"
            self.state = "failed"
            self.error = message
            self._next_attempt = float("inf")     # scheduled once the worker has exited
            if not starting:
                self.failures += 1
                self.last_failure = (time.time(), message)
                self.fault_since = time.time()
                self._fault_mono = time.monotonic()
            channels = list(self._channels.values())
            gates = list(self._gates)
            waiters, self._waiters = self._waiters, []
            barriers = list(self._barriers.values())
            self._barriers.clear()
            self._changed()
        log.error("recording failed: %s; open channels are stopped and new sessions are refused "
                  "until it recovers", message)
        for chan in channels:
            chan._lost_by(message)
        for gate in gates:
            gate._fault_soon(message)
        for loop, fut in waiters:
            wake(loop, fut)
        for done in barriers:
            done.set()

    def _on_exit(self, worker: WriterProcess, rc: int) -> None:
        """The worker process ended (after its last events were handled)."""
        with self._cond:
            current = worker is self._worker
            stopped = self._stop_acked
        if not current:
            return
        if stopped:
            with self._cond:
                self._worker = None
                self.state = "closed"
                self._changed()
            return
        self._fault(worker, f"the recording worker process crashed ({describe_exit(rc)})")
        with self._cond:
            if worker is not self._worker:
                return
            kept = list(self._inflight) + list(self._queue)
            self._inflight.clear()
            self._queue.clear()
            self.queued = 0
            cause = self.error or "recording failed"
            barriers = [self._barriers.pop(e.op[1]) for e in kept
                        if e.op[0] == OP_BARRIER and e.op[1] in self._barriers]
            self._replay = replay.kept(self._replay + [e.op for e in kept], cause)
            self._replay_cost = sum(replay.cost(op) for op in self._replay)
            self._worker = None
            self._probe = None
            closing = self._closing
            self.state = "failed"
            first_attempt = self.attempts == 0
            self._changed()
        for done in barriers:                # flush() callers learn that it was not written
            done.set()
        if closing:
            return
        if first_attempt:
            self._schedule_first_attempt()
        else:
            self._attempt_failed(self.last_attempt_error or cause)

    def _schedule_first_attempt(self) -> None:
        with self._cond:
            self._next_attempt = time.monotonic() + (0.0 if self._retry_asap else self.backoff[0])
            self._changed()

    # -- stopping ------------------------------------------------------------------------
    def close(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop: a live worker writes out everything queued, closes its files and exits.

        While faulted, what could not be written is left: the next start marks those
        sessions ``interrupted``.
        """
        with self._cond:
            if self._closing:
                return
            self._closing = True
            worker = self._worker if self._accepting else None
            self._changed()
        if worker is not None:
            with self._cond:
                self._seq += 1
                self._queue.append(Entry(self._seq, (OP_STOP,), 0, time.monotonic()))
                self._changed()
            if not worker.join(timeout):
                log.error("the recording worker did not stop within %g s; killing it", timeout)
                worker.kill()
                worker.join(10)
        else:
            if self._recovery_thread is not None:
                self._recovery_thread.join(40)      # an attempt under way ends first
            if self._worker is not None:            # exiting after a failure
                self._worker.join(10)
            self._last_attempt(timeout)
        self._shutdown_threads()

    def _last_attempt(self, timeout: float) -> None:
        """Stopping while faulted: one more worker writes what is kept, if it can."""
        with self._cond:
            left = len(self._queue) + len(self._inflight) + len(self._replay)
            self._worker = None
        if not left:
            return
        try:
            worker = self._spawn()
        except RecordingError as exc:
            log.error("recording: %d operations could not be written before the stop (%s); "
                      "sessions left open are marked interrupted at the next start", left, exc)
            return
        with self._cond:
            self._worker = self._last_worker = worker
            kept = [e.op for e in list(self._inflight) + list(self._queue)]
            self._inflight.clear()
            self._queue.clear()
            self.queued = 0
            replay = self._replay_ops()[:-1]          # no probe: nothing new starts
            self._replay = []
            self._replay_cost = 0
            self._enqueue_front(replay + [op for op in kept if op[0] != OP_STOP] + [(OP_STOP,)])
            self._accepting = True
            self._changed()
        if not worker.join(timeout):
            worker.kill()
            worker.join(10)
        if not self._stop_acked:
            log.error("recording: what was kept after the failure could not be written before "
                      "the stop; sessions left open are marked interrupted at the next start")

    def _shutdown_threads(self) -> None:
        with self._cond:
            self.state = "closed"
            self._closing = True
            barriers = list(self._barriers.values())
            self._barriers.clear()
            waiters, self._waiters = self._waiters, []
            self._changed()
        for done in barriers:
            done.set()
        for loop, fut in waiters:
            wake(loop, fut)
        self._pump_thread.join(10)
        if self._recovery_thread is not None:
            self._recovery_thread.join(40)
