"""The recording worker: the process that writes recordings and the index.

``bastion serve`` starts it (bastion.recording.supervisor, through process.py) with two
pipes: batches of ``(seq, operation)`` come in, events go back.  At start it opens the
index and takes its write lock once (waiting up to the busy timeout), then says
``ready``.  It runs :class:`bastion.recording.writer.Applier` on each batch, writes every
recording buffer out, commits, and acknowledges the batch (``("done", seq)``, after
``("tails", ...)``: what its maskers now hold back undecided, which the agent is shown
on that acknowledgement and the bastion process keeps for the next worker); between
batches it brings byte counters in the index up to date every ``FLUSH_INTERVAL``.

It ignores SIGINT, SIGTERM and SIGHUP: a Ctrl-C in a terminal or a service
manager signalling the whole group must not end it before ``bastion serve``
has closed its sessions; it ends on the ``stop`` operation, or when the
bastion process is gone (end of its input): then the maskers decide what they hold
(the streams end there), it writes out what it received, commits, and exits without
closing rows (the next start marks those sessions ``interrupted``).  It holds the data
dir's lock (inherited) until it exits, so a new ``bastion serve`` does not start
recording beside it.

On its first failure (disk full, I/O error, the index locked past the busy timeout,
a probe that did not pass) it writes out what it can (``Applier.fail_out``),
acknowledges what is on disk, reports the failure and exits: the bastion process
starts another worker (docs/RECORDINGS.md, "Faults").

Exit status: 0 after ``stop`` or the end of input, 71 after a failure it reported,
70 on an internal error (logged).

Not covered: the parent side (supervisor.py, process.py), applying operations (writer.py).
"""

from __future__ import annotations

import argparse
import logging
import os
import pickle
import select
import signal
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from bastion.errors import RecordingError
from bastion.recording import frames, health, schema
from bastion.recording.writer import FLUSH_INTERVAL, OP_STOP, Applier
from bastion.store import location as store_location

log = logging.getLogger("bastion.recording")

Event = tuple[Any, ...]

EXIT_INTERNAL = 70
EXIT_FAILED = 71


def serve(inp: Connection, out: Connection, data_dir: Path, max_bytes: int) -> int:
    """Apply batches from ``inp`` until stopped, failed or the input ends; events go to ``out``."""
    events: list[Event] = []
    try:
        conn = schema.connect(data_dir)
    except RecordingError as exc:
        _send(out, [("fatal", str(exc))])
        return EXIT_FAILED
    try:
        why = health.index_writable(conn)
        if why is not None:
            _send(out, [("fatal", why)])
            return EXIT_FAILED
        applier = Applier(conn, data_dir, max_bytes, events.append)
        ticker = None
        if store_location.current().postgres:   # heartbeat and peers' leases (recording.leases)
            from bastion.recording.leases import Ticker
            ticker = Ticker()
            ticker.tick(conn)
        _send(out, [("ready",)])
        return _loop(inp, out, applier, events, ticker)
    finally:
        conn.close()


# s: the index's WAL is copied into the main file this often (BASTION_INDEX_CHECKPOINT)
CHECKPOINT_INTERVAL = float(os.environ.get("BASTION_INDEX_CHECKPOINT", "") or 30.0)


def checkpoint(conn: Any, mode: str = "PASSIVE") -> None:
    """Copy the WAL into the index file, so that readers that ignore the WAL (``datasette
    --immutable``, a file copy) see what is committed.  PASSIVE never waits for readers;
    TRUNCATE (at the end) also empties the WAL.  A failure only delays it."""
    try:
        conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchall()
    except Exception as exc:  # noqa: BLE001 - busy or locked: the next one catches up
        log.debug("index checkpoint (%s) skipped: %s", mode, exc)


def _loop(inp: Connection, out: Connection, applier: Applier, events: list[Event],
          ticker: Any = None) -> int:
    last_checkpoint = time.monotonic()
    # one poll object for the worker's life (Connection.poll builds a selector per call)
    readable = select.poll()
    readable.register(inp.fileno(), select.POLLIN)
    while True:
        if ticker is not None:                # between transactions, idle or busy
            ticker.tick(applier.conn)
        wait = max(0.0, FLUSH_INTERVAL - (time.monotonic() - applier.last_counters))
        if not readable.poll(wait * 1000):
            if not (applier.update_counters() and applier.commit()):
                return _failed(out, applier, events, None)
            _send(out, events)
            if time.monotonic() - last_checkpoint >= CHECKPOINT_INTERVAL:
                checkpoint(applier.conn)
                last_checkpoint = time.monotonic()
            continue
        try:
            batch = frames.read_frame(inp.fileno())
        except EOFError:                      # the bastion process is gone
            log.warning("recording worker: bastion process gone; writing out what was "
                        "received (open sessions will be marked interrupted)")
            applier.finish_all()
            applier.commit()
            checkpoint(applier.conn, "TRUNCATE")
            return 0
        last_ok = stop = None
        for seq, op in batch:
            if op[0] == OP_STOP:
                stop = seq
                break
            if not applier.apply(op):
                break
            last_ok = seq
        ok = applier.error is None and applier.flush_files()
        if ok and (applier.counters_due
                   or time.monotonic() - applier.last_counters >= FLUSH_INTERVAL):
            ok = applier.update_counters()
        ok = ok and applier.commit()
        if not ok:
            return _failed(out, applier, events, last_ok)
        if stop is not None:
            applier.close_all_sinks()
            applier.commit()
            checkpoint(applier.conn, "TRUNCATE")
            events.append(("done", stop))
            events.append(("stopped",))
            _send(out, events)
            return 0
        if last_ok is not None:
            _tails(applier, events)
            events.append(("done", last_ok))
        _send(out, events)


def _tails(applier: Applier, events: list[Event], everything: bool = False) -> None:
    """Tell the bastion process what the maskers hold undecided now (what changed)."""
    if everything:
        applier.tails.touch_all()
    changes = applier.tail_changes()
    if changes:
        events.append(("tails", changes))


def _failed(out: Connection, applier: Applier, events: list[Event], last_ok: int | None) -> int:
    """Write out what can be, acknowledge what is on disk, report the failure; exit status."""
    if applier.fail_out():
        _tails(applier, events, everything=True)      # decided and written: nothing held
        if last_ok is not None:
            events.append(("done", last_ok))
    events.append(("error", applier.error))
    _send(out, events)
    log.error("recording worker: stopping after a failure: %s", applier.error)
    return EXIT_FAILED


def _send(out: Connection, events: list[Event]) -> None:
    if events:
        try:
            out.send_bytes(pickle.dumps(events, protocol=pickle.HIGHEST_PROTOCOL))
        except OSError:                           # the bastion process is gone
            pass
        events.clear()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bastion.recording.worker",
        description="The recording worker of bastion serve (started by it; not run by hand).")
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--max-bytes", type=int, required=True)
    parser.add_argument("--in-fd", type=int, required=True)
    parser.add_argument("--out-fd", type=int, required=True)
    parser.add_argument("--lock-fd", type=int, required=True, help="held until exit")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    # past a file size limit, a write fails with EFBIG (reported, sessions refused)
    # instead of the signal killing the worker
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    logging.basicConfig(level=getattr(logging, args.log_level.upper(), logging.INFO),
                        stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    inp = Connection(args.in_fd, writable=False)
    out = Connection(args.out_fd, readable=False)
    try:
        return serve(inp, out, args.data_dir, args.max_bytes)
    except Exception:
        log.exception("the recording worker failed")
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
