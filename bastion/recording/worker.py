"""The recording worker: the process that writes recordings and the index.

``bastion serve`` starts it (bastion.recording.supervisor, through process.py) with two
pipes: batches of ``(seq, operation)`` come in, events go back.  At start it opens the
index and takes its write lock once (waiting up to the busy timeout), then says
``ready``.  It runs :class:`bastion.recording.writer.Applier` on each batch, writes every
recording buffer out, commits, and acknowledges the batch (``("done", seq)``, after
``("tails", ...)``: what its maskers now hold back undecided, which the agent is shown
on that acknowledgement and the bastion process keeps for the next worker); between
batches it brings byte counters in the index up to date every ``FLUSH_INTERVAL``.  On a
shared store (PostgreSQL) those tails are also written, sealed, into the store in the
transaction that commits the batch (bastion.recording.tailstore), for a peer that takes over this
node's sessions when it stops answering (bastion.recording.leases, which this worker also
runs for its peers: ``Ticker``).  When a peer took over this node's channels (it was slow,
not dead), the worker stops writing them and reports ``("taken", cid, why)``: the bastion
process stops those channels.  It learns of it at its next heartbeat, or from the commit of
a batch that holds output for such a channel (the store refused that output): then
``taken`` goes out before the batch's ``done``, so the agent is never shown it.

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
import sqlite3
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from bastion.errors import RecordingError
from bastion.recording import frames, health, schema
from bastion.recording.ops import FLUSH_INTERVAL, OP_STOP
from bastion.recording.writer import Applier
from bastion.store import location as store_location

log = logging.getLogger("bastion.recording")

Event = tuple[Any, ...]

EXIT_INTERNAL = 70
EXIT_FAILED = 71


def serve(inp: Connection, out: Connection, data_dir: Path, max_bytes: int,
          tail_key: bytes | None = None) -> int:
    """Apply batches from ``inp`` until stopped, failed or the input ends; events go to ``out``.

    ``tail_key``: seals the tails written into a shared store (bastion.recording.tailstore)."""
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
        store_key = None
        if store_location.current().postgres:   # heartbeat and peers' leases (recording.leases)
            from bastion.recording.leases import TailTaker, Ticker
            # a batch's statements: one round trip per read, not each (bastion.store.pipeline;
            # BASTION_STORE_PIPELINE=0 turns it off, to measure)
            conn.pipelined = (  # type: ignore[attr-defined]
                os.environ.get("BASTION_STORE_PIPELINE", "1") != "0")
            store_key = tail_key
            ticker = Ticker(taker=TailTaker(tail_key, data_dir, max_bytes,
                                            lambda: applier._mask_sets.values()))
            ticker.tick(conn)
        _send(out, [("ready",)])
        return _loop(inp, out, applier, events, ticker, store_key)
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
          ticker: Any = None, store_key: bytes | None = None) -> int:
    last_checkpoint = time.monotonic()
    # one poll object for the worker's life (Connection.poll builds a selector per call)
    readable = select.poll()
    readable.register(inp.fileno(), select.POLLIN)
    while True:
        if ticker is not None:                # between transactions, idle or busy
            ticker.tick(applier.conn)
            if ticker.lost:
                _taken_by_peer(applier, ticker, events)
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
            _stage_tails(applier, store_key, everything=True)
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
        changes: dict[Any, Any] = {}
        if ok and last_ok is not None and stop is None:
            changes, ok = _stage_tails(applier, store_key)    # committed with the batch
        ok = ok and applier.commit()
        if not ok:
            return _failed(out, applier, events, last_ok, store_key)
        if applier.taken and ticker is not None:   # sealed by a peer before this batch: its
            ticker.lost, applier.taken = applier.taken, []   # channel stops before the "done"
            _taken_by_peer(applier, ticker, events)
        if stop is not None:
            applier.close_all_sinks()
            _stage_tails(applier, store_key, everything=True)
            applier.commit()
            checkpoint(applier.conn, "TRUNCATE")
            events.append(("done", stop))
            events.append(("stopped",))
            _send(out, events)
            return 0
        if last_ok is not None:
            if changes:                   # what the maskers hold undecided now (changed)
                events.append(("tails", changes))
            events.append(("done", last_ok))
        _send(out, events)


TAKEN = ("another node closed this session while this one was not answering (its lease ran "
         "out): the channel is stopped")


def _taken_by_peer(applier: Applier, ticker: Any, events: list[Event]) -> None:
    """Channels of this node a peer sealed (bastion.recording.leases: this node was slow,
    not dead): no more writing, the file becomes the sealed copy, the bastion process stops
    the channel."""
    from bastion.recording.leases import restore_taken
    rows, ticker.lost = ticker.lost, []
    for cid, _, _ in rows:
        sink = applier._sinks.pop(cid, None)
        if sink is not None:
            sink.release()
            applier.tails.touch(cid)
            events.append(("taken", cid, TAKEN))
            log.error("recording: channel %s: %s", cid, TAKEN)
    try:
        restore_taken(applier.conn, applier.data_dir, rows)
    except (OSError, sqlite3.Error) as exc:       # at the next heartbeat, or the next start
        log.warning("recording: the copy a peer sealed is not in place yet: %s", exc)


def _stage_tails(applier: Applier, store_key: bytes | None,
                 everything: bool = False) -> tuple[dict[Any, Any], bool]:
    """What the maskers hold undecided now, as far as changed, for the bastion process; on a
    shared store also written into the open transaction (bastion.recording.tailstore), with every
    tail of a channel no longer open dropped.  False if that write failed (``error``)."""
    if everything:
        applier.tails.touch_all()
    changes = applier.tail_changes()
    if changes and store_key is not None:
        from bastion.recording import tailstore as store_tails
        closed = {cid for cid, _ in changes if cid not in applier._sinks}
        try:
            store_tails.write(applier._locked_db(), store_key, changes, closed)
        except sqlite3.Error as exc:
            applier._fail("commit to the session index", exc)
            return changes, False
    return changes, True


def _failed(out: Connection, applier: Applier, events: list[Event], last_ok: int | None,
            store_key: bytes | None = None) -> int:
    """Write out what can be, acknowledge what is on disk, report the failure; exit status."""
    if applier.fail_out():
        # decided and written: nothing held (in the store too, best effort: it may be what
        # failed; a peer taking over decides stale tails as Sink.resume does)
        changes, staged = _stage_tails(applier, store_key, everything=True)
        if not (staged and applier.commit()):
            applier._rollback()
        if changes:
            events.append(("tails", changes))
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
    parser.add_argument("--tail-key-fd", type=int, default=-1,
                        help="a pipe with the key of the store's tail journal")
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
    tail_key = None
    if args.tail_key_fd >= 0:
        with os.fdopen(args.tail_key_fd, "rb") as fh:
            tail_key = fh.read(64) or None
    try:
        return serve(inp, out, args.data_dir, args.max_bytes, tail_key)
    except Exception:
        log.exception("the recording worker failed")
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
