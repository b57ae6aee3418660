"""The recording operations and the events that answer them: what the bastion process
queues (bastion.recording.recorder, channelrecording, transfers) and the recording worker
applies (bastion.recording.writer), and the capacity of that queue.

An operation is a tuple, its kind first (``OP_*``), the time already taken.

Queue capacity (bytes of recorded data not yet acknowledged, plus ~100 bytes per
operation), enforced in the bastion process:

* ``HIGH_WATER`` 16 MiB -- ``over_high_water()`` turns true; the SSH layer stops
  reading from the peer (``ChannelRecording.drain()``) until the queue falls
  under ``LOW_WATER`` 8 MiB.  When the disk is slower than the network, sessions
  slow down to disk speed instead of the bastion buffering without bound or
  dropping data.  The marks are sized to the pump's batches (supervisor.py: up to
  ``MAX_INFLIGHT_BATCHES`` of ``BATCH_BYTES``, 2 x 4 MiB, unacknowledged): output
  reaches the agent only once acknowledged (gate.py), so the queue is the whole
  pipeline.  At 8 / 2 MiB two batches in flight filled it, reading stopped until
  the worker had finished both, and the worker then waited for the SSH layer to
  fill it again: the two took turns.  Reading now resumes with a batch still
  queued behind the one being written (``bench.ab_bulk``, same rig, 8 / 2 ->
  16 / 8 MiB, two runs: text downloads +7-23 %, zeros -1-+9 %, uploads 0-+10 %;
  docs/BENCHMARKS.md).
* ``HARD_LIMIT`` 64 MiB -- only reached by a caller that ignores the water
  marks; ``put`` then raises RecordingError (the channel must stop: a
  session never runs unrecorded, and nothing is dropped silently).

Memory bound: HARD_LIMIT plus ``BUFFER_BYTES`` (256 KiB) per open recording
(in the worker).  Byte counters of open channels reach the index every
``FLUSH_INTERVAL`` (0.5 s).
"""

from __future__ import annotations

from typing import Any

Op = tuple[Any, ...]          # an operation, built by bastion.recording.recorder

HIGH_WATER = 16 * 1024 * 1024
LOW_WATER = 8 * 1024 * 1024
HARD_LIMIT = 64 * 1024 * 1024
OP_OVERHEAD = 100
FLUSH_INTERVAL = 0.5         # byte counters of open channels reach the index this often

(OP_SESSION_START, OP_REFUSED, OP_CHANNEL_OPEN, OP_DATA, OP_RESIZE, OP_MARKER, OP_COMMAND,
 OP_COMMAND_RESULT, OP_CHANNEL_CLOSE, OP_SESSION_CLOSE, OP_BARRIER, OP_STOP,
 OP_COMMAND_APPROVER, OP_MASKS, OP_PROBE, OP_REPLAY, OP_TRANSFER) = range(17)
OP_RESUME = 64      # apart from the range above, which may grow; replay only: Sink.resume

# Events the applier and the worker report to the bastion process (see supervisor.py):
#   ("ready",) / ("fatal", why)     the worker started (index open and writable) / could not
#   ("tails", {(cid, stream): tail or None})   before "done": what the maskers hold back
#                                   undecided now (sink.TailReport), kept by the bastion
#   ("done", seq)                   every operation up to ``seq`` is written and committed
#   ("opened", cid, error_or_None)  the recording file exists (or could not be created)
#   ("truncated", cid)              the recording reached its size cap
#   ("probe", why_or_None)          the answer to OP_PROBE (None: sessions can be recorded)
#   ("error", message)              the failure the worker stops on (it then exits)
#   ("stopped",)                    after OP_STOP: everything is closed
