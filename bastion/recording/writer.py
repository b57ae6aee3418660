"""The recording writer: one thread that owns the recording files and the index connection.

The event loop never touches the disk.  :class:`Writer.put` appends an
operation (a tuple, built by bastion.recording.recorder at call time, with the
time already taken) to a queue; the thread takes everything queued at once and
applies it in order: file writes go to a per-recording buffer written with
one ``os.write`` of whole lines (so a ``kill -9`` never leaves half an event
in a file, short of a torn write by the OS); index changes of one batch are
one SQLite transaction.

Queue capacity (bytes of recorded data waiting for the disk, plus ~100 bytes
per operation):

* ``HIGH_WATER`` 8 MiB -- ``over_high_water()`` turns true; the SSH layer stops
  reading from the peer (``ChannelRecording.drain()``) until the queue falls
  under ``LOW_WATER`` 2 MiB.  At the ~110 MB/s a bastion forwards (issue 2),
  8 MiB is ~75 ms of traffic, far more than a disk needs to absorb a burst;
  when the disk is slower than the network, sessions slow down to disk speed
  instead of the bastion buffering without bound or dropping data.
* ``HARD_LIMIT`` 64 MiB -- only reached by a caller that ignores the water
  marks; ``put`` then raises RecordingError (the channel must stop: a
  session never runs unrecorded, and nothing is dropped silently).

Memory bound: HARD_LIMIT plus ``BUFFER_BYTES`` (256 KiB) per open recording.

Flushing: buffers are written when they pass BUFFER_BYTES and every
``FLUSH_INTERVAL`` (0.5 s, so "at least every second" holds with margin); a
process crash loses at most that.  ``fsync`` happens when a recording closes
(power loss may lose more than a crash; SQLite runs WAL with synchronous=NORMAL).

Failures (disk full, permission, I/O error) set ``error``: the recorder
reports unhealthy, new sessions are refused, calls on open channels raise.
The writer keeps applying later operations it still can (closing rows), logs
every failure, and never dies silently.

Not covered: the public API (recorder.py), chain rules (chain.py), crash
recovery (recover.py).
"""

from __future__ import annotations

import collections
import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
from pathlib import Path

from bastion.errors import RecordingError
from bastion.proto import asciicast
from bastion.recording import chain

log = logging.getLogger("bastion.recording")

HIGH_WATER = 8 * 1024 * 1024
LOW_WATER = 2 * 1024 * 1024
HARD_LIMIT = 64 * 1024 * 1024
OP_OVERHEAD = 100
BUFFER_BYTES = 256 * 1024
FLUSH_INTERVAL = 0.5
WAKE_BYTES = 1024 * 1024     # queued data that wakes the writer before its interval
CAP_RESERVE = 512            # bytes kept under max_bytes for the truncation and exit markers

(OP_SESSION_START, OP_REFUSED, OP_CHANNEL_OPEN, OP_DATA, OP_RESIZE, OP_MARKER, OP_COMMAND,
 OP_COMMAND_RESULT, OP_CHANNEL_CLOSE, OP_SESSION_CLOSE, OP_BARRIER, OP_STOP,
 OP_COMMAND_APPROVER) = range(13)


class _Sink:
    """One open recording file."""

    def __init__(self, chan, path: Path, header: bytes, max_bytes: int) -> None:
        self.chan = chan                 # the loop-side ChannelRecording (counters, truncated flag)
        self.path = path
        self.max_bytes = max_bytes
        self.buf = bytearray()
        self.size = 0                    # bytes in file + buffer
        self.hasher = hashlib.sha256()
        self.encoders = {s: asciicast.StreamEncoder(s) for s in asciicast.STREAMS}
        self.truncated = False
        self.last_t = 0.0
        path.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | getattr(os, "O_CLOEXEC", 0) \
            | getattr(os, "O_NOFOLLOW", 0)
        self.fd = os.open(path, flags, 0o640)
        self._append(header)
        self.flush()

    def _append(self, line: bytes) -> None:
        self.buf += line
        self.size += len(line)
        if len(self.buf) >= BUFFER_BYTES:
            self.flush()

    def flush(self) -> None:
        if not self.buf:
            return
        view = memoryview(self.buf)
        while view:
            n = os.write(self.fd, view)
            self.hasher.update(view[:n])
            view = view[n:]
        view.release()
        self.buf.clear()

    def _room(self, lines: list[bytes], *, reserve: int) -> bool:
        return self.size + sum(map(len, lines)) <= self.max_bytes - reserve

    def _truncate(self, t: float) -> None:
        self.truncated = True
        self.chan._truncated = True
        label = (f"bastion: recording truncated at {self.size} bytes (cap {self.max_bytes}); "
                 "the channel went on, its further data is not recorded")
        self._append(asciicast.event_line(t, asciicast.MARKER, label))

    def data(self, stream: str, t: float, data: bytes) -> None:
        if self.truncated:
            return
        self.last_t = t
        lines = self.encoders[stream].encode(t, data)
        if not self._room(lines, reserve=CAP_RESERVE):
            self._truncate(t)
            return
        for line in lines:
            self._append(line)

    def event(self, t: float, code: str, text: str) -> None:
        if self.truncated:
            return
        self.last_t = t
        line = asciicast.event_line(t, code, text)
        if not self._room([line], reserve=CAP_RESERVE):
            self._truncate(t)
            return
        self._append(line)

    def close(self, t: float, label: str | None) -> str:
        """Flush held-back bytes, write the exit marker, fsync, close; return the SHA-256."""
        try:
            if not self.truncated:
                tail = [line for enc in self.encoders.values() for line in enc.flush(t)]
                if not self._room(tail, reserve=CAP_RESERVE):
                    self._truncate(t)
                else:
                    for line in tail:
                        self._append(line)
            if label:
                line = asciicast.event_line(t, asciicast.MARKER, label)
                if self.size + len(line) <= self.max_bytes:
                    self._append(line)
            self.flush()
            os.fsync(self.fd)
        finally:
            os.close(self.fd)
            self.fd = -1
        return self.hasher.hexdigest()


class Writer(threading.Thread):
    """Applies queued operations to files and the index (see module doc)."""

    def __init__(self, conn: sqlite3.Connection, data_dir: Path, max_bytes: int) -> None:
        super().__init__(name="bastion-recording-writer", daemon=True)
        self.conn = conn
        self.data_dir = Path(data_dir)
        self.max_bytes = max_bytes
        self.error: str | None = None
        self._queue: collections.deque = collections.deque()
        self._cond = threading.Condition()
        self.queued = 0                  # bytes waiting (read by the loop without the lock)
        self._waiters: list = []         # (loop, future) of drain() callers
        self._sinks: dict[int, _Sink] = {}
        self._failed_channels: set[int] = set()
        self._stopped = False
        self.crashed = False
        self._batch: list = []           # the batch being applied (for the crash handler)
        self._in_txn = False
        self._last_flush = time.monotonic()
        self._counted: dict[int, tuple] = {}

    # -- loop side -----------------------------------------------------------
    def put(self, op: tuple, nbytes: int = 0) -> None:
        cost = nbytes + OP_OVERHEAD
        with self._cond:
            if self._stopped:
                raise RecordingError("the recorder is closed")
            if self.queued + cost > HARD_LIMIT and op[0] not in (OP_CHANNEL_CLOSE, OP_SESSION_CLOSE):
                raise RecordingError(
                    "the recording queue is full: the disk is not keeping up with this session",
                    hint="callers must pause reading while over_high_water() and await drain()")
            self._queue.append((op, cost))
            self.queued += cost
            # Data is batched: waking the thread for every chunk costs more (thread
            # switches, GIL hand-overs) than writing it.  The thread wakes by itself at
            # least every FLUSH_INTERVAL; anything else (opens, commands, closes) and a
            # full batch wake it now.
            if op[0] != OP_DATA or self.queued >= WAKE_BYTES:
                self._cond.notify()

    def add_waiter(self, loop, fut) -> bool:
        """Register a drain() future; False if the queue is already low enough."""
        with self._cond:
            if self.queued <= LOW_WATER or self.error is not None or self._stopped:
                return False
            self._waiters.append((loop, fut))
            return True

    def stop(self) -> None:
        with self._cond:
            if self._stopped:
                return
            self._queue.append(((OP_STOP,), 0))
            self._stopped = True
            self._cond.notify()

    # -- thread side ---------------------------------------------------------
    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # never leave drain()/flush() callers waiting
            log.exception("recording writer thread crashed")
            self._fail("the recording writer thread crashed", exc)
            self.crashed = True
            with self._cond:
                self._stopped = True
                waiters, self._waiters = self._waiters, []
                pending = self._batch + list(self._queue)
                self._queue.clear()
            for loop, fut in waiters:
                _wake(loop, fut)
            for op, _cost in pending:
                if op[0] == OP_BARRIER:
                    op[1].set()

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._queue:
                    self._cond.wait(FLUSH_INTERVAL)     # data may be queued unannounced
                batch = self._batch = list(self._queue)
                self._queue.clear()
            stop = force = False
            for op, _cost in batch:
                if op[0] == OP_STOP:
                    stop = True
                elif op[0] == OP_BARRIER:
                    force = True
                else:
                    self._apply_safely(op)
            if stop or force or time.monotonic() - self._last_flush >= FLUSH_INTERVAL:
                self._flush_all()
            self._commit()
            released = sum(cost for _op, cost in batch)
            with self._cond:
                self.queued -= released
                wake = self.queued <= LOW_WATER or self.error is not None or stop
                waiters = self._waiters if wake else []
                if wake:
                    self._waiters = []
            for loop, fut in waiters:
                _wake(loop, fut)
            for op, _cost in batch:
                if op[0] == OP_BARRIER:
                    op[1].set()
            if stop:
                self._close_all_sinks()
                return

    def _dirty(self) -> bool:
        return any(s.buf for s in self._sinks.values())

    def _fail(self, what: str, exc: BaseException) -> None:
        message = f"{what}: {exc}"
        log.error("recording failure: %s", message)
        if self.error is None:
            self.error = message

    def _apply_safely(self, op: tuple) -> None:
        try:
            self._apply(op)
        except (OSError, sqlite3.Error) as exc:
            self._fail(_OP_NAMES.get(op[0], "operation"), exc)
            if op[0] == OP_CHANNEL_OPEN:
                op[-1]._open_done(f"{_OP_NAMES[OP_CHANNEL_OPEN]}: {exc}")
            if isinstance(exc, sqlite3.Error):
                self._rollback()
        except Exception as exc:  # a bug must not kill the writer silently
            log.exception("recording writer bug while applying %s", _OP_NAMES.get(op[0]))
            self._fail("internal error", exc)
            self._rollback()
            if op[0] == OP_CHANNEL_OPEN:
                op[-1]._open_done("internal error in the recording writer")

    def _db(self) -> sqlite3.Connection:
        if not self._in_txn:
            self.conn.execute("BEGIN IMMEDIATE")
            self._in_txn = True
        return self.conn

    def _commit(self) -> None:
        if self._in_txn:
            try:
                self.conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self._fail("commit to the session index", exc)
                self._rollback()
            self._in_txn = False

    def _rollback(self) -> None:
        if self._in_txn:
            try:
                self.conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            self._in_txn = False

    def _flush_all(self) -> None:
        self._last_flush = time.monotonic()
        for cid, sink in list(self._sinks.items()):
            try:
                sink.flush()
            except OSError as exc:
                self._sink_failed(cid, exc)
            counters = (sink.chan.bytes_in, sink.chan.bytes_out, int(sink.truncated))
            if self._counted.get(cid) != counters:
                self._counted[cid] = counters
                try:
                    self._db().execute(
                        "UPDATE channels SET bytes_in = ?, bytes_out = ?, truncated = ? "
                        "WHERE id = ? AND seq IS NULL", (*counters, cid))
                except sqlite3.Error as exc:
                    self._fail("update byte counters", exc)
                    self._rollback()

    def _sink_failed(self, cid: int, exc: OSError) -> None:
        sink = self._sinks.pop(cid, None)
        self._failed_channels.add(cid)
        self._fail(f"writing recording {sink.path if sink else cid}", exc)
        if sink is not None and sink.fd >= 0:
            try:
                os.close(sink.fd)
            except OSError:
                pass

    def _close_all_sinks(self) -> None:
        for cid in list(self._sinks):
            sink = self._sinks.pop(cid)
            try:
                sink.close(sink.last_t, None)
            except OSError as exc:
                self._fail(f"closing recording {sink.path}", exc)

    def _with_sink(self, cid: int, fn) -> None:
        sink = self._sinks.get(cid)
        if sink is None:
            return
        try:
            fn(sink)
        except OSError as exc:
            self._sink_failed(cid, exc)

    def _apply(self, op: tuple) -> None:
        kind = op[0]
        if kind == OP_DATA:
            _, cid, stream, t, data = op
            self._with_sink(cid, lambda s: s.data(stream, t, data))
        elif kind == OP_RESIZE:
            _, cid, t, width, height = op
            self._with_sink(cid, lambda s: s.event(t, asciicast.RESIZE, f"{width}x{height}"))
        elif kind == OP_MARKER:
            _, cid, t, label = op
            self._with_sink(cid, lambda s: s.event(t, asciicast.MARKER, label))
        elif kind == OP_SESSION_START:
            _, sid, started, p, client, target, login = op
            self._db().execute(
                "INSERT INTO sessions (id, started, status, principal_subject, principal_app_id, "
                "principal_name, principal_roles, principal_json, client, target, login) "
                "VALUES (?, ?, 'active', ?, ?, ?, ?, ?, ?, ?, ?)",
                (sid, started, *_principal_columns(p), client, target, login))
        elif kind == OP_REFUSED:
            _, sid, started, p, client, target, login, reason = op
            db = self._db()
            db.execute(
                "INSERT INTO sessions (id, started, ended, status, reason, principal_subject, "
                "principal_app_id, principal_name, principal_roles, principal_json, client, target, login) "
                "VALUES (?, ?, ?, 'refused', ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (sid, started, started, reason, *_principal_columns(p), client, target, login))
            chain.seal(db, "sessions", sid)
        elif kind == OP_CHANNEL_OPEN:
            self._open_channel(op)
        elif kind == OP_COMMAND:
            (_, cmd_id, sid, cid, wall, t, line, commands_json, action, rule, reason,
             approver, label) = op
            self._db().execute(
                'INSERT INTO commands (id, session_id, channel_id, time, "offset", line, commands, '
                "action, rule, reason, approver) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (cmd_id, sid, cid, wall, t, line, commands_json, action, rule, reason, approver))
            self._with_sink(cid, lambda s: s.event(t, asciicast.MARKER, label))
        elif kind == OP_COMMAND_RESULT:
            _, cmd_id, exit_status = op
            db = self._db()
            cur = db.execute("UPDATE commands SET exit_status = ? WHERE id = ? AND seq IS NULL",
                             (exit_status, cmd_id))
            if cur.rowcount == 1:
                chain.seal(db, "commands", cmd_id)
            else:
                log.warning("command %s: exit status %r arrived after the row was sealed; not recorded",
                            cmd_id, exit_status)
        elif kind == OP_COMMAND_APPROVER:
            _, cmd_id, approver = op
            cur = self._db().execute("UPDATE commands SET approver = ? WHERE id = ? AND seq IS NULL",
                                     (approver, cmd_id))
            if cur.rowcount != 1:
                log.warning("command %s: approver arrived after the row was sealed; not recorded",
                            cmd_id)
        elif kind == OP_CHANNEL_CLOSE:
            self._close_channel(op)
        elif kind == OP_SESSION_CLOSE:
            self._close_session(op)

    def _open_channel(self, op: tuple) -> None:
        (_, cid, sid, kind, command, term, width, height, env_json, started, rel_path,
         header, chan) = op
        self._db().execute(
            "INSERT INTO channels (id, session_id, kind, command, term, width, height, env, "
            "started, status, path) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'open', ?)",
            (cid, sid, kind, command, term, width, height, env_json, started, rel_path))
        try:
            self._sinks[cid] = _Sink(chan, self.data_dir / rel_path, header, self.max_bytes)
        except OSError as exc:
            self._failed_channels.add(cid)
            self._fail(f"creating recording {rel_path}", exc)
            chan._open_done(f"creating recording {rel_path}: {exc}")
            return
        chan._open_done(None)

    def _close_channel(self, op: tuple) -> None:
        _, cid, t, ended, exit_status, exit_signal, bytes_in, bytes_out = op
        sink = self._sinks.pop(cid, None)
        digest = None
        truncated = 0
        status = "failed" if cid in self._failed_channels else "closed"
        if sink is not None:
            if exit_signal:
                label = f"exit signal {exit_signal}"
            elif exit_status is not None:
                label = f"exit status {exit_status}"
            else:
                label = None
            truncated = int(sink.truncated)
            try:
                digest = sink.close(t, label)
            except OSError as exc:
                self._failed_channels.add(cid)
                self._fail(f"closing recording {sink.path}", exc)
                status = "failed"
        self._counted.pop(cid, None)
        db = self._db()
        db.execute(
            "UPDATE channels SET ended = ?, status = ?, exit_status = ?, exit_signal = ?, "
            "bytes_in = ?, bytes_out = ?, truncated = ?, sha256 = ? WHERE id = ? AND seq IS NULL",
            (ended, status, exit_status, exit_signal, bytes_in, bytes_out, truncated, digest, cid))
        chain.seal_unsealed_children(db, channel_id=cid)
        chain.seal(db, "channels", cid)

    def _close_session(self, op: tuple) -> None:
        _, sid, ended, status = op
        db = self._db()
        bin_, bout, trunc = db.execute(
            "SELECT COALESCE(SUM(bytes_in), 0), COALESCE(SUM(bytes_out), 0), "
            "COALESCE(MAX(truncated), 0) FROM channels WHERE session_id = ?", (sid,)).fetchone()
        row = db.execute("SELECT exit_status FROM channels WHERE session_id = ? AND exit_status "
                         "IS NOT NULL ORDER BY id DESC LIMIT 1", (sid,)).fetchone()
        db.execute("UPDATE sessions SET ended = ?, status = ?, bytes_in = ?, bytes_out = ?, "
                   "truncated = ?, exit_status = ? WHERE id = ? AND seq IS NULL",
                   (ended, status, bin_, bout, trunc, row[0] if row else None, sid))
        chain.seal_unsealed_children(db, session_id=sid)
        chain.seal(db, "sessions", sid)


_OP_NAMES = {OP_SESSION_START: "start session", OP_REFUSED: "record refused attempt",
             OP_CHANNEL_OPEN: "open channel recording", OP_DATA: "write recording",
             OP_RESIZE: "write resize", OP_MARKER: "write marker", OP_COMMAND: "record command",
             OP_COMMAND_RESULT: "record command result", OP_COMMAND_APPROVER: "record approver", OP_CHANNEL_CLOSE: "close channel",
             OP_SESSION_CLOSE: "close session"}


def _principal_columns(p: dict | None) -> tuple:
    if not p:
        return (None, None, None, None, None)
    return (p.get("subject"), p.get("app_id"), p.get("name"),
            json.dumps(list(p.get("roles") or ()), ensure_ascii=False),
            json.dumps(p, ensure_ascii=False, sort_keys=True))


def _wake(loop, fut) -> None:
    def _set() -> None:
        if not fut.done():
            fut.set_result(None)
    try:
        loop.call_soon_threadsafe(_set)
    except RuntimeError:          # loop closed
        pass
