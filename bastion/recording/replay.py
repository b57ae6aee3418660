"""What a recording worker that failed did not acknowledge, as the next worker gets it.

When a worker fails (bastion.recording.supervisor), the operations it had not
acknowledged are *kept* (:func:`kept`): data is dropped -- the gate never showed it to
anyone, and the channel it belonged to is stopped -- and so are barriers (their callers
are told it failed), probes and the mask sets and channel opens the next replay sends
anyway.  Everything else is kept as it was: session and command rows, markers, resizes,
results, approvers, refused attempts, session closes.  A channel close that was not
acknowledged had its exit status held back from the agent, who is told 255 instead: it
is rewritten so (exit status 255, the failure and what the agent was not given).

The next worker gets first (:func:`first_ops`), inside ``OP_REPLAY`` (rows inserted only
if missing, channels adopted: bastion.recording.writer): every mask set, the kept
session starts, the open operation of every channel whose close is not acknowledged
yet (it takes over their recordings), the undecided tails of those channels' streams
(``OP_RESUME``: acknowledged, so shown to the agent, but still held back by the dead
worker's maskers; bastion.recording.acks keeps them), the rest of what was kept; then
``OP_PROBE``.  The tails come before anything kept: every kept operation was put after
the acknowledged data they belong to.  They stay with the bastion process until a worker
reports them written, so a worker that dies during its replay loses none of them: the
next replay sends them again (an ``OP_RESUME`` left unacknowledged is dropped).

Not covered: when this happens (supervisor.py), applying it (writer.py, sink.py).
"""

from __future__ import annotations

from typing import Any

from bastion.recording.ops import (OP_BARRIER, OP_CHANNEL_CLOSE, OP_CHANNEL_OPEN, OP_DATA,
                                   OP_MASKS, OP_OVERHEAD, OP_PROBE, OP_REPLAY, OP_RESUME,
                                   OP_SESSION_START, OP_STOP)

DROPPED = (OP_DATA, OP_BARRIER, OP_PROBE, OP_REPLAY, OP_MASKS, OP_CHANNEL_OPEN, OP_STOP,
           OP_RESUME)


Op = tuple[Any, ...]


def for_replay(op: Op, cause: str) -> Op | None:
    """One operation a failed worker did not acknowledge, as the next one gets it (or None)."""
    kind = op[0]
    if kind in DROPPED:
        return None
    if kind == OP_CHANNEL_CLOSE and op[8] is None:
        # its exit status was held back from the agent, who is told 255 instead
        _, cid, t, ended, status, signal, bytes_in, bytes_out, _ = op
        given = f"exit signal {signal}" if signal else (
            f"exit status {status}" if status is not None else "its end")
        return (OP_CHANNEL_CLOSE, cid, t, ended, 255, None, bytes_in, bytes_out,
                f"{cause}; the agent was not given {given}")
    return op


def kept(ops: list[Op], cause: str) -> list[Op]:
    """What is kept of ``ops`` (in order) for the next worker."""
    return [op for op in (for_replay(op, cause) for op in ops) if op is not None]


def first_ops(kept_ops: list[Op], masks: list[Op], open_ops: dict[int, Op],
              tails: dict[int, dict[str, Any]] | None = None) -> list[Op]:
    """What a new worker gets before anything else (see the module doc).  ``tails``: per
    channel, per stream, what the maskers of the workers before held back undecided."""
    starts = [op for op in kept_ops if op[0] == OP_SESSION_START]
    rest = [op for op in kept_ops if op[0] != OP_SESSION_START]
    opens = [open_ops[cid] for cid in sorted(open_ops)]
    resumes = [(OP_RESUME, cid, stream, tail)
               for cid, streams in sorted((tails or {}).items()) if cid in open_ops
               for stream, tail in sorted(streams.items())]
    return ([(OP_REPLAY, True)] + list(masks) + starts + opens + resumes + rest
            + [(OP_REPLAY, False), (OP_PROBE,)])


def cost(op: Op) -> int:
    """About what a kept operation holds (its strings), plus the overhead, for the queue's bound."""
    return OP_OVERHEAD + sum(len(x) for x in op if isinstance(x, (str, bytes)))
