"""Applying recording operations: the recording files and the index, in the recording worker.

The event loop never touches the disk.  bastion.recording.recorder builds each
operation (a tuple, with the time already taken) and queues it;
bastion.recording.process ships queued operations in batches to a separate
process, the recording worker (bastion.recording.worker), which hands them to
:class:`Applier` in order: file writes go to a per-recording buffer written
with one ``os.write`` of whole lines (so a ``kill -9`` never leaves half an
event in a file, short of a torn write by the OS); index changes of one batch
are one SQLite transaction.  Escaping, hashing and writing thus run beside the
event loop, not under its GIL.

Queue capacity (bytes of recorded data not yet applied by the worker, plus
~100 bytes per operation), enforced in the bastion process:

* ``HIGH_WATER`` 8 MiB -- ``over_high_water()`` turns true; the SSH layer stops
  reading from the peer (``ChannelRecording.drain()``) until the queue falls
  under ``LOW_WATER`` 2 MiB.  At the ~110 MB/s a bastion forwards (issue 2),
  8 MiB is ~75 ms of traffic, far more than a disk needs to absorb a burst;
  when the disk is slower than the network, sessions slow down to disk speed
  instead of the bastion buffering without bound or dropping data.
* ``HARD_LIMIT`` 64 MiB -- only reached by a caller that ignores the water
  marks; ``put`` then raises RecordingError (the channel must stop: a
  session never runs unrecorded, and nothing is dropped silently).

Memory bound: HARD_LIMIT plus ``BUFFER_BYTES`` (256 KiB) per open recording
(in the worker).

Flushing: buffers are written when they pass BUFFER_BYTES and every
``FLUSH_INTERVAL`` (0.5 s, so "at least every second" holds with margin); a
crash of the worker loses at most that (a crash of the bastion process loses
less: the worker writes out what it received, see worker.py).  ``fsync``
happens when a recording closes (power loss may lose more than a crash;
SQLite runs WAL with synchronous=NORMAL).

Failures (disk full, permission, I/O error) set ``error`` and are reported to
the bastion process: the recorder reports unhealthy, new sessions are refused,
calls on open channels raise.  The applier keeps applying later operations it
still can (closing rows), logs every failure, and never fails silently.

Not covered: the public API (recorder.py), the process boundary (process.py,
worker.py), chain rules (chain.py), crash recovery (recover.py).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import time
from pathlib import Path
from typing import Callable

from bastion.private import make_private_dirs, open_private_file
from bastion.proto import asciicast
from bastion.proto.masker import Masker
from bastion.recording import chain

log = logging.getLogger("bastion.recording")

HIGH_WATER = 8 * 1024 * 1024
LOW_WATER = 2 * 1024 * 1024
HARD_LIMIT = 64 * 1024 * 1024
OP_OVERHEAD = 100
BUFFER_BYTES = 256 * 1024
FLUSH_INTERVAL = 0.5
WAKE_BYTES = 1024 * 1024     # queued data that is shipped to the worker before its interval
CAP_RESERVE = 512            # bytes kept under max_bytes for the truncation and exit markers

MASK_QUIET = 1.0             # a masked stream quiet this long has its held-back bytes written

(OP_SESSION_START, OP_REFUSED, OP_CHANNEL_OPEN, OP_DATA, OP_RESIZE, OP_MARKER, OP_COMMAND,
 OP_COMMAND_RESULT, OP_CHANNEL_CLOSE, OP_SESSION_CLOSE, OP_BARRIER, OP_STOP,
 OP_COMMAND_APPROVER, OP_MASKS) = range(14)

# Events the applier reports to the bastion process (see process.py):
#   ("opened", cid, error_or_None)  the recording file exists (or could not be created)
#   ("truncated", cid)              the recording reached its size cap
#   ("error", message)              the first failure; the recorder is unhealthy from now on


class _Sink:
    """One open recording file.

    With ``detectors``, every stream is masked here (one streaming Masker per
    stream) before it is encoded: the bastion sends such a channel's bytes as the
    agent and host exchanged them.  Without, the bastion already masked them (a
    channel whose agent sees masked output too: ``mask_live``).
    """

    def __init__(self, cid: int, path: Path, header: bytes, max_bytes: int, notify,
                 detectors: tuple | None = None) -> None:
        self.cid = cid
        self.detectors = detectors
        self.maskers: dict[str, Masker] = {}
        self.last_data = 0.0             # monotonic time of the last data (quiet flush)
        self.notify = notify             # events for the bastion process ("truncated", cid)
        self.bytes_in = self.bytes_out = 0   # the channel's counters, as last sent with data
        self.path = path
        self.max_bytes = max_bytes
        self.buf = bytearray()
        self.size = 0                    # bytes in file + buffer
        self.hasher = hashlib.sha256()
        self.encoders = {s: asciicast.StreamEncoder(s) for s in asciicast.STREAMS}
        self.truncated = False
        self.last_t = 0.0
        make_private_dirs(path.parent)                   # 0700 each, 0600 the file
        self.fd = open_private_file(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND)
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
        self.notify(("truncated", self.cid))
        label = (f"bastion: recording truncated at {self.size} bytes (cap {self.max_bytes}); "
                 "the channel went on, its further data is not recorded")
        self._append(asciicast.event_line(t, asciicast.MARKER, label))

    def data(self, stream: str, t: float, data: bytes) -> None:
        if self.truncated:
            return
        self.last_t = t
        if self.detectors is not None:
            masker = self.maskers.get(stream)
            if masker is None:
                masker = self.maskers[stream] = Masker(self.detectors)
            self.last_data = time.monotonic()
            data = masker.feed(data)
            if not data:
                return
        self._encoded(stream, t, data)

    @property
    def masks_pending(self) -> bool:
        return any(m.pending for m in self.maskers.values())

    def flush_masks(self, t: float) -> None:
        """Decide and write what the maskers hold back (quiet stream, or the end)."""
        for stream, masker in self.maskers.items():
            if masker.pending and not self.truncated:
                data = masker.flush()
                if data:
                    self._encoded(stream, t, data)

    def _encoded(self, stream: str, t: float, data: bytes) -> None:
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
            self.flush_masks(max(t, self.last_t))
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


class Applier:
    """Applies operations to recording files and the index, in order (see module doc).

    ``notify`` receives the events listed above; the worker sends them to the
    bastion process after each batch.
    """

    def __init__(self, conn: sqlite3.Connection, data_dir: Path, max_bytes: int,
                 notify: Callable[[tuple], None]) -> None:
        self.conn = conn
        self.data_dir = Path(data_dir)
        self.max_bytes = max_bytes
        self.notify = notify
        self.error: str | None = None
        self._sinks: dict[int, _Sink] = {}
        self._failed_channels: set[int] = set()
        self._in_txn = False
        self.last_flush = time.monotonic()
        self._counted: dict[int, tuple] = {}
        self._mask_sets: dict[int, tuple] = {}     # OP_MASKS key -> detectors

    def _fail(self, what: str, exc: BaseException, path: Path | None = None) -> str:
        """Log a failure (with the file, for the operator) and report it; returns the report.

        The report reaches agents (the refusal or end of their session quotes it), so it
        names what failed and why, never a path on this server: ``writing recording:
        No space left on device``.
        """
        message = f"{what}: {describe_error(exc)}"
        log.error("recording failure: %s%s", message, f" ({path})" if path else "")
        if self.error is None:
            self.error = message
            self.notify(("error", message))
        return message

    def apply(self, op: tuple) -> None:
        """Apply one operation; failures are recorded in ``error``, never raised."""
        try:
            self._apply(op)
        except (OSError, sqlite3.Error) as exc:
            message = self._fail(_OP_NAMES.get(op[0], "operation"), exc)
            if op[0] == OP_CHANNEL_OPEN:
                self.notify(("opened", op[1], message))
            if isinstance(exc, sqlite3.Error):
                self._rollback()
        except Exception as exc:  # a bug must not stop the worker silently
            log.exception("recording worker bug while applying %s", _OP_NAMES.get(op[0]))
            self._fail("internal error", exc)
            self._rollback()
            if op[0] == OP_CHANNEL_OPEN:
                self.notify(("opened", op[1], "internal error in the recording worker"))

    def _db(self) -> sqlite3.Connection:
        if not self._in_txn:
            self.conn.execute("BEGIN IMMEDIATE")
            self._in_txn = True
        return self.conn

    def commit(self) -> None:
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

    def flush_all(self) -> None:
        """Write every buffer out and bring the open channels' byte counters up to date."""
        self.last_flush = time.monotonic()
        self.flush_files()
        for cid, sink in list(self._sinks.items()):
            counters = (sink.bytes_in, sink.bytes_out, int(sink.truncated))
            if self._counted.get(cid) != counters:
                self._counted[cid] = counters
                try:
                    self._db().execute(
                        "UPDATE channels SET bytes_in = ?, bytes_out = ?, truncated = ? "
                        "WHERE id = ? AND seq IS NULL", (*counters, cid))
                except sqlite3.Error as exc:
                    self._fail("update byte counters", exc)
                    self._rollback()

    def flush_files(self) -> None:
        """Write every buffer out (and what masked streams quiet for MASK_QUIET hold back)."""
        now = time.monotonic()
        for cid, sink in list(self._sinks.items()):
            try:
                if sink.masks_pending and now - sink.last_data >= MASK_QUIET:
                    sink.flush_masks(sink.last_t)
                sink.flush()
            except OSError as exc:
                self._sink_failed(cid, exc)

    def _sink_failed(self, cid: int, exc: OSError) -> None:
        sink = self._sinks.pop(cid, None)
        self._failed_channels.add(cid)
        self._fail("writing recording", exc, sink.path if sink else None)
        if sink is not None and sink.fd >= 0:
            try:
                os.close(sink.fd)
            except OSError:
                pass

    def close_all_sinks(self) -> None:
        """Close the files of channels still open (their rows stay open: recovery marks them)."""
        for cid in list(self._sinks):
            sink = self._sinks.pop(cid)
            try:
                sink.close(sink.last_t, None)
            except OSError as exc:
                self._fail("closing recording", exc, sink.path)

    def _with_sink(self, cid: int, fn) -> None:
        sink = self._sinks.get(cid)
        if sink is None:
            return
        try:
            fn(sink)
        except OSError as exc:
            self._sink_failed(cid, exc)

    def _data(self, sink: _Sink, stream: str, t: float, data: bytes, bytes_in: int,
              bytes_out: int) -> None:
        sink.bytes_in, sink.bytes_out = bytes_in, bytes_out
        if data:
            sink.data(stream, t, data)

    def _apply(self, op: tuple) -> None:
        kind = op[0]
        if kind == OP_DATA:
            _, cid, stream, t, data, bytes_in, bytes_out = op
            self._with_sink(cid, lambda s: self._data(s, stream, t, data, bytes_in, bytes_out))
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
        elif kind == OP_MASKS:
            _, key, detectors = op
            self._mask_sets[key] = tuple(detectors)
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
                log.warning("command %s: exit status %r not recorded: %s", cmd_id, exit_status,
                            _why_not_updated(db, cmd_id))
        elif kind == OP_COMMAND_APPROVER:
            _, cmd_id, approver = op
            cur = self._db().execute("UPDATE commands SET approver = ? WHERE id = ? AND seq IS NULL",
                                     (approver, cmd_id))
            if cur.rowcount != 1:
                log.warning("command %s: approver not recorded: %s", cmd_id,
                            _why_not_updated(self.conn, cmd_id))
        elif kind == OP_CHANNEL_CLOSE:
            self._close_channel(op)
        elif kind == OP_SESSION_CLOSE:
            self._close_session(op)

    def _open_channel(self, op: tuple) -> None:
        (_, cid, sid, kind, command, term, width, height, env_json, started, rel_path,
         header, mask_key) = op
        self._db().execute(
            "INSERT INTO channels (id, session_id, kind, command, term, width, height, env, "
            "started, status, path) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'open', ?)",
            (cid, sid, kind, command, term, width, height, env_json, started, rel_path))
        try:
            detectors = None
            if mask_key is not None:
                detectors = self._mask_sets.get(mask_key)
                if detectors is None:       # never record unmasked what was meant to be masked
                    raise RuntimeError(f"unknown set of masks {mask_key}")
            self._sinks[cid] = _Sink(cid, self.data_dir / rel_path, header, self.max_bytes,
                                     self.notify, detectors)
        except OSError as exc:
            self._failed_channels.add(cid)
            message = self._fail("creating recording", exc, self.data_dir / rel_path)
            self.notify(("opened", cid, message))
            return
        self.notify(("opened", cid, None))

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
                self._fail("closing recording", exc, sink.path)
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
             OP_COMMAND_RESULT: "record command result", OP_COMMAND_APPROVER: "record approver",
             OP_CHANNEL_CLOSE: "close channel", OP_SESSION_CLOSE: "close session",
             OP_MASKS: "register masks"}


def describe_error(exc: BaseException) -> str:
    """What went wrong, without the file name an OSError carries (``[Errno 28] No space
    left on device: '/srv/bastion/data/...'`` becomes ``No space left on device``)."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _why_not_updated(db: sqlite3.Connection, cmd_id: int) -> str:
    row = db.execute("SELECT seq FROM commands WHERE id = ?", (cmd_id,)).fetchone()
    if row is None:
        return "no such command row (its insert failed)"
    return ("it arrived after the row was sealed (its channel was closed before the "
            "command ended)")


def _principal_columns(p: dict | None) -> tuple:
    if not p:
        return (None, None, None, None, None)
    return (p.get("subject"), p.get("app_id"), p.get("name"),
            json.dumps(list(p.get("roles") or ()), ensure_ascii=False),
            json.dumps(p, ensure_ascii=False, sort_keys=True))
