"""The recording worker: the process that writes recordings and the index.

``bastion serve`` starts it (bastion.recording.process) with two pipes: batches
of operations come in, events go back.  It runs
:class:`bastion.recording.writer.Applier` on each batch, then reports what the
batch released from the queue, the barriers it passed and any events (file
created, truncated, failure).  Between batches it flushes the recording
buffers every ``FLUSH_INTERVAL``.

It ignores SIGINT, SIGTERM and SIGHUP: a Ctrl-C in a terminal or a service
manager signalling the whole group must not end it before ``bastion serve``
has closed its sessions; it ends on the ``stop`` operation, or when the
bastion process is gone (end of its input): then it writes out what it
received, commits, and exits without closing rows (the next start marks those
sessions ``interrupted``).  It holds the data dir's lock (inherited) until it
exits, so a new ``bastion serve`` does not start recording beside it.

Exit status: 0 after ``stop`` or the end of input, 70 on an internal error
(logged).  The bastion process treats any exit before ``stop`` as a failure of
recording: sessions are refused until it restarts.

Not covered: the parent side (process.py), applying operations (writer.py).
"""

from __future__ import annotations

import argparse
import logging
import pickle
import signal
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path

from bastion.errors import RecordingError
from bastion.recording import schema
from bastion.recording.writer import FLUSH_INTERVAL, OP_BARRIER, OP_STOP, Applier

log = logging.getLogger("bastion.recording")

EXIT_INTERNAL = 70


def serve(inp: Connection, out: Connection, data_dir: Path, max_bytes: int) -> int:
    """Apply batches from ``inp`` until stopped or the input ends; events go to ``out``."""
    events: list[tuple] = []
    try:
        conn = schema.connect(data_dir)
    except RecordingError as exc:
        _send(out, [("fatal", str(exc))])
        return EXIT_INTERNAL
    applier = Applier(conn, data_dir, max_bytes, events.append)
    _send(out, [("ready",)])
    try:
        while True:
            wait = max(0.0, FLUSH_INTERVAL - (time.monotonic() - applier.last_flush))
            if not inp.poll(wait):
                applier.flush_all()
                applier.commit()
                _send(out, events)
                continue
            try:
                batch = pickle.loads(inp.recv_bytes())
            except EOFError:                      # the bastion process is gone
                log.warning("recording worker: bastion process gone; writing out what was "
                            "received (open sessions will be marked interrupted)")
                applier.flush_files()
                applier.commit()
                return 0
            released, barriers, stop, force = 0, [], False, False
            for op, cost in batch:
                released += cost
                kind = op[0]
                if kind == OP_STOP:
                    stop = True
                elif kind == OP_BARRIER:
                    barriers.append(op[1])
                    force = True
                else:
                    applier.apply(op)
            if stop or force or time.monotonic() - applier.last_flush >= FLUSH_INTERVAL:
                applier.flush_all()
            applier.commit()
            events.append(("done", released, barriers))
            if stop:
                applier.close_all_sinks()
                events.append(("stopped",))
            _send(out, events)
            if stop:
                return 0
    finally:
        conn.close()


def _send(out: Connection, events: list[tuple]) -> None:
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
