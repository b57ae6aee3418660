"""The queue to the recording worker, and what the worker's acknowledgements release.

The event loop calls :meth:`AckQueue.put` (append, never blocks, never touches the disk;
returns the operation's sequence number).  The pump (bastion.recording.supervisor) ships
the queue in batches to the current worker, which acknowledges each batch once it is
written and committed (``("done", seq)``, :meth:`AckQueue._acked`).  Acknowledgements
release, in order: queue capacity (``queued``, drain waiters), barriers
(``Recorder.flush``), and the agent's output held by :mod:`bastion.recording.gate`
(:meth:`AckQueue.frontier`).  Every method takes the one lock, or says that it is held.

Undecided tails.  An acknowledgement releases output the worker's masker may still hold
back undecided (bastion.recording.sink: written only once decided, never on a timer).
So before each ``done`` the worker reports what it holds per stream (``("tails",
...)``: the masker's state and the undecided bytes, :meth:`AckQueue._tails_changed`)
and this queue keeps it until the worker reports it written, or the channel's close is
acknowledged.  When the worker dies, the next one gets these tails back in its replay
(bastion.recording.replay) and decides them, so what the agent was shown is recorded.
They are also written, encrypted, to the tail journal before the ``done`` that shows them
(bastion.recording.tailjournal), so a ``kill -9`` of the bastion and its worker together
loses none of them either: the next start writes them (bastion.recording.recover).
Bound on what is kept: per open stream, the masker's hold-back (``max_holdback``, 1,024
visible bytes, plus the terminal escape sequences among them) and 256 bytes of look-behind
context, plus a cut UTF-8 character; counted with the queue against ``HARD_LIMIT``.

Not covered: which worker runs, its faults, the replay, recovery and stopping
(supervisor.py, whose ``Supervisor`` is this class with the worker's life added).
"""

from __future__ import annotations

import collections
import itertools
import logging
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any

from bastion.errors import RecordingError
from bastion.metrics import METRICS
from bastion.recording.ops import (HARD_LIMIT, LOW_WATER, OP_BARRIER, OP_CHANNEL_CLOSE,
                                   OP_CHANNEL_OPEN, OP_DATA, OP_MASKS, OP_OVERHEAD,
                                   OP_SESSION_CLOSE)

if TYPE_CHECKING:  # pragma: no cover
    from bastion.recording.channelrecording import ChannelRecording
    from bastion.recording.gate import AgentGate
    from bastion.recording.process import WriterProcess
    from bastion.recording.tailjournal import TailJournal

log = logging.getLogger("bastion.recording")

Op = tuple[Any, ...]
Loop = Any                   # an asyncio event loop (or anything with call_soon_threadsafe)


class Entry:
    __slots__ = ("seq", "op", "cost", "t")

    def __init__(self, seq: int, op: Op, cost: int, t: float) -> None:
        self.seq, self.op, self.cost, self.t = seq, op, cost, t


class Barrier(threading.Event):
    """Set once everything queued before it is written (``ok``) or recording failed."""

    ok = False



class AckQueue:
    """Operations in sequence: queued, in flight (shipped, not acknowledged), acknowledged.

    ``state``/``error`` and ``_worker`` are the supervisor's; they are here because what
    the queue takes (data only while ``ok``) and which acknowledgements count (the current
    worker's) depend on them.
    """

    def __init__(self) -> None:
        lock = threading.Lock()
        self._cond = threading.Condition(lock)    # state changes
        self._work = threading.Condition(lock)    # the pump: something to ship
        self._seq = 0
        self._queue: collections.deque[Entry] = collections.deque()
        self._inflight: collections.deque[Entry] = collections.deque()
        # the last sequence number of each batch shipped to ``_ends_worker`` and not yet
        # acknowledged: the pump keeps at most MAX_INFLIGHT_BATCHES of them (supervisor.py)
        self._batch_ends: collections.deque[int] = collections.deque()
        self._ends_worker: WriterProcess | None = None
        self.queued = 0                  # bytes queued or in flight (read by the loop unlocked)
        self._worker: WriterProcess | None = None
        self.state = "starting"
        self.error: str | None = None    # why sessions are refused now (None: recording)
        self._open_ops: dict[int, Op] = {}     # cid -> its OP_CHANNEL_OPEN, until closed
        self._masks: list[Op] = []             # every OP_MASKS, for every new worker
        self._replay_cost = 0                  # bytes kept for a replay, bounded with the queue's
        self._tails: dict[int, dict[str, Any]] = {}   # cid -> stream -> undecided tail
        self._tails_cost = 0                   # their bytes, bounded with the queue's too
        self.journal: TailJournal | None = None   # the tails on disk too (Recorder.open)
        self._channels: dict[int, ChannelRecording] = {}
        self._gates: weakref.WeakSet[AgentGate] = weakref.WeakSet()
        self.quarantined = 0                      # operations kept aside (quarantine.py)
        self.poisoned_sessions: set[int] = set()  # sessions with one: no new channels
        self._gate_waiting: dict[Loop, set[AgentGate]] = {}   # gates waiting for an ack
        self._gate_scheduled: set[Loop] = set()   # loops with a release already scheduled
        self._waiters: list[tuple[Loop, Any]] = []   # (loop, future) of drain() callers
        self._barriers: dict[int, Barrier] = {}
        self._barrier_ids = itertools.count(1)
        self.last_ack = time.time()          # wall time of the last acknowledgement

    def put(self, op: Op, nbytes: int = 0) -> int:
        """Queue ``op``; returns its sequence number.  Raises RecordingError when it cannot
        be taken: data while faulted (it would never be written), or a full queue."""
        cost = nbytes + OP_OVERHEAD
        kind = op[0]
        with self._cond:
            if self.state == "closed":
                raise RecordingError("the recorder is closed")
            if kind == OP_DATA and self.state != "ok":
                raise RecordingError(f"session recording is not possible: {self.error}")
            if (self.queued + self._replay_cost + self._tails_cost + cost > HARD_LIMIT
                    and kind not in (OP_CHANNEL_CLOSE, OP_SESSION_CLOSE)):
                log.error("recording queue full: %d bytes not yet written (%d operations), "
                          "%d drain() callers waiting", self.queued,
                          len(self._queue) + len(self._inflight), len(self._waiters))
                raise RecordingError(
                    "the recording queue is full: the disk is not keeping up with this session",
                    hint="callers must pause reading while over_high_water() and await drain()")
            self._seq += 1
            entry = Entry(self._seq, op, cost, time.monotonic())
            if kind == OP_CHANNEL_OPEN:
                self._open_ops[op[1]] = op
            elif kind == OP_MASKS:
                self._masks.append(op)
            self._queue.append(entry)
            self.queued += cost
            if len(self._queue) == 1:
                self._work.notify()
            return entry.seq

    @property
    def last_seq(self) -> int:
        return self._seq

    def frontier(self) -> float:
        """The oldest sequence number not acknowledged yet (infinity: none)."""
        with self._cond:
            return self._frontier()

    def _frontier(self) -> float:
        if self._inflight:
            return self._inflight[0].seq
        if self._queue:
            return self._queue[0].seq
        return float("inf")

    def track(self, cid: int, chan: "ChannelRecording") -> None:
        """Route the worker's events about channel ``cid`` to ``chan`` (until :meth:`untrack`)."""
        with self._cond:
            self._channels[cid] = chan
            faulted = self.state != "ok"
        if faulted:
            chan._lost_by(self.error or "recording failed")

    def untrack(self, cid: int) -> None:
        with self._cond:
            self._channels.pop(cid, None)

    def barrier(self) -> Barrier:
        done = Barrier()
        bid = next(self._barrier_ids)
        with self._cond:
            self._barriers[bid] = done
        try:
            self.put((OP_BARRIER, bid))
        except RecordingError:
            with self._cond:
                self._barriers.pop(bid, None)
            raise
        return done

    def add_waiter(self, loop: Loop, fut: Any) -> bool:
        """Register a drain() future; False if the queue is already low enough."""
        with self._cond:
            if self.queued <= LOW_WATER or self.state != "ok":
                return False
            self._waiters.append((loop, fut))
            return True

    def register_gate(self, gate: "AgentGate") -> None:
        with self._cond:
            self._gates.add(gate)

    def gate_waits(self, gate: "AgentGate", ticket: int) -> None:
        """``gate`` holds output put up to ``ticket``: call its ``_release`` once that is
        acknowledged (at once if it is by now)."""
        with self._cond:
            self._gate_waiting.setdefault(gate.loop, set()).add(gate)
            if ticket < self._frontier():
                self._schedule_gates(gate.loop)

    def _stop_channel(self, cid: int, message: str) -> None:
        """One channel cannot be recorded any more (the others go on): stop it."""
        with self._cond:
            chan = self._channels.get(cid)
            gates = [g for g in self._gates if chan is not None and g._rec is chan]
        if chan is not None:
            chan._lost_by(message)
        for gate in gates:
            gate._fault_soon(message)

    def _poisoned(self, sid: int | None, cid: int | None, message: str) -> None:
        """An operation was kept aside: its channel stops, its session opens no more."""
        METRICS.inc("bastion_recording_quarantined_total")
        with self._cond:
            self.quarantined += 1
            if sid is not None:
                self.poisoned_sessions.add(sid)
        if cid is not None:
            self._stop_channel(cid, message)

    def _changed(self) -> None:
        """Wake whoever waits on the state (lock held)."""
        self._cond.notify_all()
        self._work.notify_all()

    def _enqueue_front(self, ops: list[Op]) -> None:
        """Put ``ops`` before everything queued (fresh sequence numbers; lock held)."""
        now = time.monotonic()
        entries = []
        for op in ops:
            self._seq += 1
            entries.append(Entry(self._seq, op, OP_OVERHEAD, now))
        self._queue.extendleft(reversed(entries))
        self.queued += OP_OVERHEAD * len(entries)

    def _acked(self, worker: WriterProcess, seq: int) -> None:
        barriers = []
        with self._cond:
            if worker is not self._worker:
                return
            while self._inflight and self._inflight[0].seq != seq:
                barriers += self._retire(self._inflight.popleft())
            if self._inflight:
                barriers += self._retire(self._inflight.popleft())
            if self._batch_ends and self._batch_ends[0] <= seq:
                while self._batch_ends and self._batch_ends[0] <= seq:
                    self._batch_ends.popleft()
                self._work.notify()                 # the pump may ship what queued meanwhile
            self.last_ack = time.time()
            waiters = []
            if self.queued <= LOW_WATER and self._waiters:
                waiters, self._waiters = self._waiters, []
            for loop in list(self._gate_waiting):
                self._schedule_gates(loop)
        for done in barriers:
            done.ok = True
            done.set()
        for loop, fut in waiters:
            wake(loop, fut)

    def _retire(self, entry: Entry) -> list[Barrier]:
        """An acknowledged entry leaves the queue (lock held)."""
        self.queued -= entry.cost
        kind = entry.op[0]
        if kind == OP_CHANNEL_CLOSE:
            self._open_ops.pop(entry.op[1], None)
            tails = self._tails.pop(entry.op[1], {})
            for tail in tails.values():                    # written at the close
                self._tails_cost -= tail_cost(tail)
            if tails and self.journal is not None:
                self.journal.drop_channel(entry.op[1])
        elif kind == OP_BARRIER:
            done = self._barriers.pop(entry.op[1], None)
            return [done] if done is not None else []
        return []

    def _tails_changed(self, worker: WriterProcess,
                       changes: dict[tuple[int, str], Any]) -> None:
        """The worker's report of what its maskers hold undecided (before its ``done``)."""
        with self._cond:
            if worker is not self._worker:
                return
            for (cid, stream), tail in changes.items():
                streams = self._tails.get(cid)
                old = streams.pop(stream, None) if streams is not None else None
                if old is not None:
                    self._tails_cost -= tail_cost(old)
                if tail is not None:
                    self._tails.setdefault(cid, {})[stream] = tail
                    self._tails_cost += tail_cost(tail)
                elif streams is not None and not streams:
                    del self._tails[cid]
            if self.journal is not None:      # on disk before the "done" that shows them
                self.journal.record(changes)

    def _schedule_gates(self, loop: Loop) -> None:
        if loop in self._gate_scheduled:
            return
        self._gate_scheduled.add(loop)
        try:
            loop.call_soon_threadsafe(self._release_gates, loop)
        except RuntimeError:                # the loop is closed
            self._gate_scheduled.discard(loop)
            self._gate_waiting.pop(loop, None)

    def _release_gates(self, loop: Loop) -> None:
        """On ``loop``: let the gates waiting there show what is now recorded."""
        with self._cond:
            self._gate_scheduled.discard(loop)
            gates = self._gate_waiting.pop(loop, set())
            frontier = self._frontier()
        for gate in gates:
            gate._release(frontier)


def tail_cost(tail: Any) -> int:
    """The bytes one kept tail holds (its context, undecided bytes and cut character)."""
    ctx, held, _sup, carry, _at = tail
    return len(ctx) + len(held) + len(carry) + OP_OVERHEAD


def wake(loop: Loop, fut: Any) -> None:
    def _set() -> None:
        if not fut.done():
            fut.set_result(None)
    try:
        loop.call_soon_threadsafe(_set)
    except RuntimeError:          # loop closed
        pass
