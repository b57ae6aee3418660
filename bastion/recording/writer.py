"""Applying recording operations: the recording files and the index, in the recording worker.

The event loop never touches the disk.  bastion.recording.recorder builds each
operation (a tuple, with the time already taken) and queues it;
bastion.recording.supervisor ships queued operations in batches to a separate
process, the recording worker (bastion.recording.worker), which hands them to
:class:`Applier` in order: file writes go to a per-recording buffer of whole
lines (bastion.recording.sink); at the end of every batch each buffer is written
with one ``os.write`` and the batch's index changes are committed as one SQLite
transaction, and only then does the worker acknowledge the batch.  Escaping,
hashing and writing thus run beside the event loop, not under its GIL.

What an acknowledgement means: every operation up to it is in the files (written
with ``write(2)``: it survives a crash of any process, not a power loss -- files
are fsync'ed when they close) and committed in the index (WAL, ``synchronous=NORMAL``).
The SSH layer shows the agent a byte only after the operation that recorded it was
acknowledged (bastion.recording.gate); what a masker still holds back of it undecided
(sink.py) is reported with the acknowledgement and kept by the bastion process until
written, so a worker that dies does not lose it (``OP_RESUME``, bastion.recording.acks).

An operation the index refuses for its own values is kept aside instead
(bastion.recording.quarantine: each row-writing one runs in a savepoint), not a failure.
Failures (disk full, permission, I/O error, the index locked past its busy
timeout): the applier stops at the first one (``error``); the worker then writes out
what it can (:meth:`Applier.fail_out`: after deleting the space reserve when space
ran out, so that what agents saw is on disk), reports it and exits.  The bastion
process stops the open channels, refuses sessions and starts another worker, which
*replays* what was not acknowledged (``OP_REPLAY``: rows are inserted only if missing,
recordings of open channels are adopted, see sink.py) and must pass a probe
(bastion.recording.health) before sessions are accepted again.

Not covered: the operations and the queue's capacity (ops.py), the public API (recorder.py), the process boundary (supervisor.py,
process.py, worker.py), chain rules (chain.py), crash recovery at start (recover.py).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from pathlib import Path
from typing import Any, Callable

from bastion.errors import RecordingError
from bastion.proto import asciicast
from bastion.recording import (chain, channelfiles, copies, health, leases, quarantine,
                               storable)
from bastion.recording.channelfiles import Reported, describe_error
from bastion.recording.ops import (OP_BARRIER, OP_CHANNEL_CLOSE, OP_CHANNEL_OPEN, OP_COMMAND,
                                   OP_COMMAND_APPROVER, OP_COMMAND_RESULT, OP_DATA, OP_MARKER,
                                   OP_MASKS, OP_PROBE, OP_REFUSED, OP_REPLAY, OP_RESIZE,
                                   OP_RESUME, OP_SESSION_CLOSE, OP_SESSION_START, OP_TRANSFER, Op)
from bastion.recording.sink import BUFFER_BYTES, CAP_RESERVE, Sink  # noqa: F401 - re-exported
from bastion.recording.sink import TailReport
from bastion.store import chunks, location as store_location

log = logging.getLogger("bastion.recording")

# On a PostgreSQL store the pieces a batch wrote are sent to the store as soon as this much
# is pending, inside the batch's transaction (the worker's connection pipelines them: no
# wait), so the server stores them while the worker applies the rest of the batch instead
# of all at the commit (docs/SCALING.md, "Recordings on any node").
EARLY_CHUNK_BYTES = 256 * 1024     # one piece (a sink buffer)

TRANSFER_COLUMNS = ("uid, session_id, channel_id, time, op, path, path2, bytes, sha256, result, "
                    "action, rule, reason, duration, content")
# path and path2: cut to what an index entry may hold (storable.path)
_PATH_AT = frozenset(TRANSFER_COLUMNS.split(", ").index(c) for c in ("path", "path2"))


class Applier:
    """Applies operations to recording files and the index, in order (see module doc).

    ``notify`` receives the events listed above; the worker sends them to the
    bastion process after each batch.
    """

    def __init__(self, conn: sqlite3.Connection, data_dir: Path, max_bytes: int,
                 notify: Callable[[Op], None]) -> None:
        self.conn = conn
        self.data_dir = Path(data_dir)
        self.max_bytes = max_bytes
        self.notify = notify
        self.error: str | None = None
        self.error_exc: BaseException | None = None
        self.replaying = False
        # what a normal batch runs in a savepoint (quarantine.py; another set only to measure
        # them: bench.savepoints), and how many a transaction may still take (None: no limit)
        self.savepoints = quarantine.GUARDED
        self.apart_left: int | None = None if not hasattr(conn, "pipelined") else 0
        # a pipelined PostgreSQL batch takes the chain's lock at its end (_lock_late); off
        # only to measure the difference (bench.chain_lock)
        self.late_lock = True
        if self.apart_left is None:       # SQLite: a savepoint's journal in memory (~8 us
            conn.execute("PRAGMA temp_store = MEMORY")   # less per operation than a file)
        self._sinks: dict[int, Sink] = {}
        self._failed_channels: set[int] = set()
        # rows kept aside (bastion.recording.quarantine): ("channel", id)... -> their file
        self.kept_aside: dict[tuple[str, int], Path] = {}
        self._in_txn = False
        self.last_counters = time.monotonic()
        self.counters_due = False        # a barrier asks for them before its acknowledgement
        self._counted: dict[int, tuple[int, int, int]] = {}
        self._mask_sets: dict[int, tuple[Any, ...]] = {}     # OP_MASKS key -> detectors
        self.tails = TailReport()        # what the bastion was told the sinks hold undecided
        # a shared store keeps the recordings' bytes too: what was written since the last
        # commit, inserted by the commit (bastion.store.chunks)
        self._chunks = chunks.Pending() if store_location.current().postgres else None
        # this node's channels a peer sealed, as the last commit's transaction saw them
        # (bastion.recording.leases): the worker stops them before acknowledging the batch
        self.taken: list[Any] = []

    # -- failures ------------------------------------------------------------------
    def _fail(self, what: str, exc: BaseException, path: Path | None = None) -> str:
        """Log a failure (with the file, for the operator) and keep the first; returns the report.

        The report reaches agents (the refusal or end of their session quotes it), so it
        names what failed and why, never a path on this server: ``writing recording:
        No space left on device``.
        """
        message = f"{what}: {describe_error(exc)}"
        log.error("recording failure: %s%s", message, f" ({path})" if path else "")
        if self.error is None:
            self.error = message
            self.error_exc = exc
        return message

    def apply(self, op: Op) -> bool:
        """Apply one operation.  False on a failure (kept in ``error``; the worker stops).
        One that writes index rows runs in a savepoint; when it fails for a reason of its
        own it is kept aside instead (bastion.recording.quarantine) and True is returned."""
        if self.kept_aside and op[0] in quarantine.ROW_OPS:
            kept = quarantine.follows_kept(self, op)
            if kept is not None:
                try:
                    quarantine.add_to(self, kept, op)
                    return True
                except OSError as exc:
                    self._failed(op, exc)
                    return False
        apart = quarantine.runs_apart(self, op)
        try:
            if apart:
                self._db().execute(f"SAVEPOINT {quarantine.SAVEPOINT}")
            self._apply(op)
            if apart:
                quarantine.release(self.conn)
            if self._chunks is not None and self._chunks.bytes >= EARLY_CHUNK_BYTES:
                self._insert_chunks()
            return True
        except Reported:
            return False
        except _ProbeFailed as exc:
            if self.error is None:
                self.error = str(exc)
            return False
        except Exception as exc:
            if apart and quarantine.own_fault(exc) and quarantine.set_apart(self, op, exc):
                return True
            message = self._failed(op, exc)
        if op[0] == OP_CHANNEL_OPEN and not self.replaying:
            self.notify(("opened", op[1], message))
        return False

    def _failed(self, op: Op, exc: Exception) -> str:
        if isinstance(exc, (OSError, sqlite3.Error)):
            return self._fail(_OP_NAMES.get(op[0], "operation"), exc, _op_path(self, op))
        # a bug must not stop the worker silently
        log.error("recording worker bug while applying %s", _OP_NAMES.get(op[0]), exc_info=exc)
        return self._fail("internal error", exc)

    def fail_out(self) -> bool:
        """After the first failure: write out what can be written, then stop.

        When space ran out, the reserve is deleted first.  The maskers decide what they
        hold (the channels end here), every buffer is written, the open transaction is
        committed.  True if everything applied before the failure is on disk.
        """
        if health.is_space_error(self.error_exc) and health.release_reserve(self.data_dir):
            log.warning("recording: the space reserve was released to write out what agents "
                        "already saw and to close their channels")
        ok = True
        for sink in list(self._sinks.values()):
            try:
                sink.finish(sink.last_t)
                sink.flush()
            except OSError as exc:
                ok = False
                log.error("recording failure: writing out recording: %s (%s)",
                          describe_error(exc), sink.path)
        if self._in_txn:
            if self.conn.in_transaction:
                try:
                    self._insert_chunks()
                    chain.seal_deferred(self.conn)
                    self.conn.execute("COMMIT")
                except (sqlite3.Error, RecordingError, ValueError) as exc:
                    ok = False
                    log.error("recording failure: commit after the failure: %s", exc)
                    self._rollback()
            else:                                   # SQLite rolled it back itself
                ok = False
            self._in_txn = False
        for sink in self._sinks.values():
            sink.release()
        self._sinks.clear()
        return ok

    # -- the index ---------------------------------------------------------------------
    def _db(self) -> sqlite3.Connection:
        if not self._in_txn:
            if self._lock_late():
                self.conn.begin_late()                  # type: ignore[attr-defined]
            else:
                self.conn.execute("BEGIN IMMEDIATE")
                chain.prefetch_head(self.conn)
            self._in_txn = True
        return self.conn

    def _lock_late(self) -> bool:
        """Whether this batch's transaction takes the chain's lock at its end, not at BEGIN:
        on a pipelined PostgreSQL connection, outside a replay (see :meth:`_locked_db`)."""
        return (self.late_lock and getattr(self.conn, "pipelined", False)
                and not self.replaying and hasattr(self.conn, "begin_late"))

    def _locked_db(self) -> sqlite3.Connection:
        """The open transaction, holding the chain's lock from now on.

        On PostgreSQL the lock is one for every node's writers (docs/SCALING.md, "The hash
        chain").  A batch's own rows (inserted, or updated while unsealed) need no lock, so
        a late-locked batch (:meth:`_lock_late`) takes it only here: before what a peer
        taking this node's sessions over reads or seals -- the recording's pieces, the
        tails -- and before the seals and the check for such a takeover at the commit.
        The unsealed children its closes asked for are read first, without the lock."""
        db = self._db()
        if getattr(db, "deferred_seals", None) is not None:
            chain.resolve_deferred(db)
            db.lock_now()                              # type: ignore[attr-defined]
        return db

    def _on_write(self) -> Callable[[int, int, bytes], None] | None:
        return None if self._chunks is None else self._chunks.on_write

    def _insert_chunks(self) -> None:
        if self._chunks is not None and self._chunks.rows:
            self._chunks.insert(self._locked_db())

    def commit(self) -> bool:
        if self._chunks is not None and self._chunks.rows:
            try:
                self._insert_chunks()
            except sqlite3.Error as exc:
                self._fail("commit to the session index", exc)
                return False
        if self._in_txn:
            taken = None
            try:
                self._locked_db()
                chain.seal_deferred(self.conn)
                if self._chunks is not None:
                    # read with the commit (pipeline mode: no round trip of its own), under
                    # the chain's lock: a takeover committed before this batch shows here
                    taken = self.conn.execute(leases.LOST)
                self.conn.execute("COMMIT")
                self.taken = list(taken.fetchall()) if taken is not None else []
            except (sqlite3.Error, RecordingError, ValueError) as exc:
                # (ValueError: a sealed row the chain's JSON cannot hold; the transaction
                # was rolled back, as for any failure of the commit)
                self._fail("commit to the session index", exc)
                return False
            self._in_txn = False
        return True

    def _rollback(self) -> None:
        if self._in_txn:
            try:
                self.conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            self._in_txn = False

    # -- files -------------------------------------------------------------------------
    def flush_files(self) -> bool:
        """Write every buffer out (the end of a batch).  False on a failure."""
        for sink in list(self._sinks.values()):
            try:
                sink.flush()
            except OSError as exc:
                self._fail("writing recording", exc, sink.path)
                return False
        return True

    def finish_all(self) -> None:
        """The bastion process is gone: decide what the maskers hold, write everything out."""
        for sink in list(self._sinks.values()):
            try:
                sink.finish(sink.last_t)
                sink.flush()
            except OSError as exc:
                self._fail("writing recording", exc, sink.path)

    def update_counters(self) -> bool:
        """Bring the open channels' byte counters in the index up to date."""
        self.last_counters = time.monotonic()
        self.counters_due = False
        for cid, sink in list(self._sinks.items()):
            counters = (sink.bytes_in, sink.bytes_out, int(sink.truncated))
            if self._counted.get(cid) != counters:
                try:
                    self._db().execute(
                        "UPDATE channels SET bytes_in = ?, bytes_out = ?, truncated = ? "
                        "WHERE id = ? AND seq IS NULL", (*counters, cid))
                except sqlite3.Error as exc:
                    self._fail("update byte counters", exc)
                    return False
                self._counted[cid] = counters
        return True

    def close_all_sinks(self) -> None:
        """Close the files of channels still open (their rows stay open: recovery marks them)."""
        for cid in list(self._sinks):
            sink = self._sinks.pop(cid)
            try:
                sink.close(sink.last_t)
            except OSError as exc:
                self._fail("closing recording", exc, sink.path)

    def tail_changes(self) -> dict[tuple[int, str], Any]:
        """What the sinks hold undecided, as far as changed since the last call."""
        return self.tails.changes(self._sinks)

    def _with_sink(self, cid: int, fn: Callable[[Sink], None]) -> None:
        sink = self._sinks.get(cid)
        if sink is not None:
            fn(sink)

    def _data(self, sink: Sink, stream: str, t: float, data: bytes, bytes_in: int,
              bytes_out: int) -> None:
        sink.bytes_in, sink.bytes_out = bytes_in, bytes_out
        if data:
            self.tails.touch(sink.cid)
            sink.data(stream, t, data)

    def _insert(self) -> str:
        """Rows replayed by a new worker may be there already (committed, not acknowledged)."""
        return "INSERT OR IGNORE" if self.replaying else "INSERT"

    def _apply(self, op: Op) -> None:
        kind = op[0]
        if kind not in _NO_TEXT:          # agent text: stored even with NUL or non-UTF-8 bytes
            op = storable.values(op)
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
                f"{self._insert()} INTO sessions (id, started, status, principal_subject, "
                "principal_app_id, principal_name, principal_roles, principal_json, client, "
                "target, login) VALUES (?, ?, 'active', ?, ?, ?, ?, ?, ?, ?, ?)",
                (sid, started, *_principal_columns(p), client, target, login))
        elif kind == OP_REFUSED:
            _, sid, started, p, client, target, login, reason = op
            db = self._db()
            db.execute(
                f"{self._insert()} INTO sessions (id, started, ended, status, reason, "
                "principal_subject, principal_app_id, principal_name, principal_roles, "
                "principal_json, client, target, login) "
                "VALUES (?, ?, ?, 'refused', ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (sid, started, started, reason, *_principal_columns(p), client, target, login))
            chain.seal(db, "sessions", sid)
        elif kind == OP_CHANNEL_OPEN:
            channelfiles.open_channel(self, op)
        elif kind == OP_MASKS:
            _, key, detectors = op
            self._mask_sets[key] = tuple(detectors)
        elif kind == OP_COMMAND:
            (_, cmd_id, sid, cid, wall, t, line, commands_json, action, rule, reason,
             approver, label) = op
            self._db().execute(
                f'{self._insert()} INTO commands (id, session_id, channel_id, time, "offset", '
                "line, commands, action, rule, reason, approver) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (cmd_id, sid, cid, wall, t, line, commands_json, action, rule, reason, approver))
            self._with_sink(cid, lambda s: s.event(t, asciicast.MARKER, label))
        elif kind == OP_COMMAND_RESULT:
            _, cmd_id, exit_status = op
            db = self._db()
            db.execute("UPDATE commands SET exit_status = ? WHERE id = ? AND seq IS NULL",
                       (exit_status, cmd_id))
            # the seal finds the row the update did, if any (same condition): no read of the
            # update's row count, which costs a round trip on PostgreSQL
            chain.seal(db, "commands", cmd_id, unsealed=None if self.replaying else (
                lambda: log.warning("command %s: exit status %r not recorded: %s", cmd_id,
                                    exit_status, _why_not_updated(db, cmd_id))))
        elif kind == OP_COMMAND_APPROVER:
            _, cmd_id, approver = op
            cur = self._db().execute("UPDATE commands SET approver = ? WHERE id = ? AND seq IS NULL",
                                     (approver, cmd_id))
            if cur.rowcount != 1 and not self.replaying:
                log.warning("command %s: approver not recorded: %s", cmd_id,
                            _why_not_updated(self.conn, cmd_id))
        elif kind == OP_TRANSFER:                 # bastion.recording.transfers builds it
            # path and path2 cut to what an index entry may hold (storable.path)
            self._transfer([storable.path(v) if i in _PATH_AT else v
                            for i, v in enumerate(op[1])])
        elif kind == OP_CHANNEL_CLOSE:
            channelfiles.close_channel(self, op)
        elif kind == OP_SESSION_CLOSE:
            self._close_session(op)
        elif kind == OP_BARRIER:
            self.counters_due = True
        elif kind == OP_REPLAY:
            self._replay(op[1])
        elif kind == OP_RESUME:
            _, cid, stream, tail = op
            self.tails.resumed(cid, stream)
            self._with_sink(cid, lambda s: s.resume(stream, tail))
        elif kind == OP_PROBE:
            why = health.probe(self.data_dir, self.conn)
            self.notify(("probe", why))
            if why is not None:
                raise _ProbeFailed(why)

    def _transfer(self, values: list[Any]) -> None:
        """A transfers row, sealed at once (final).  On a PostgreSQL store the stored copy
        its ``content`` links goes into the store with it, in this transaction, checked
        against the row (bastion.recording.copies)."""
        db = self._db()
        cols = TRANSFER_COLUMNS.split(", ")[:len(values)]           # older journals: fewer
        cur = db.execute(f"INSERT OR IGNORE INTO transfers ({', '.join(cols)}) VALUES "
                         f"({', '.join('?' * len(values))})", values)
        if cur.rowcount != 1 or cur.lastrowid is None:
            return                          # replayed: committed with its copy before
        tid = cur.lastrowid
        if self._chunks is not None and "content" in cols and values[cols.index("content")]:
            self._transfer_copy(db, tid, values[cols.index("content")])
        chain.seal(db, "transfers", tid)

    def _transfer_copy(self, db: sqlite3.Connection, tid: int, content_json: str) -> None:
        """A copy missing or changed since the relay closed it is a recording failure: the
        row and the pieces are taken back and the worker stops (fail closed).  In the replay
        that follows the row goes in saying its copy was lost and why (it is the transfer's
        audit record; failing again would only stop the next worker)."""
        try:
            copies.store_copy(db, self.data_dir, tid, content_json)
            return
        except copies.CopyError as exc:
            db.execute("DELETE FROM transfer_copies WHERE transfer_id = ?", (tid,))
            if not self.replaying:
                db.execute("DELETE FROM transfers WHERE id = ? AND seq IS NULL", (tid,))
                self._fail("storing transfer content", exc)
                raise Reported() from exc
            log.error("recording failure: transfer %s: its stored copy is not in the store: %s",
                      tid, exc)
            db.execute("UPDATE transfers SET content = ? WHERE id = ? AND seq IS NULL",
                       (copies.mark_lost(content_json, str(exc)), tid))

    def _replay(self, on: bool) -> None:
        """Start or end the replay a new worker gets (see the module doc)."""
        self.replaying = on
        if hasattr(self.conn, "pipelined"):    # PostgreSQL: a replayed operation's error at
            if on:                             # the operation (quarantine.py), not the commit
                self._pipelined, self.conn.pipelined = self.conn.pipelined, False
            else:
                self.conn.pipelined = getattr(self, "_pipelined", self.conn.pipelined)
        if not on:
            return
        try:
            free, _ = health.headroom(self.data_dir)
        except OSError:
            free = 0
        if free < health.RESERVE_BYTES and health.release_reserve(self.data_dir):
            log.warning("recording: the disk is full; the space reserve was released to close "
                        "the channels the previous worker left open")

    def _masks(self, mask_key: int | None) -> tuple[Any, ...] | None:
        if mask_key is None:
            return None
        detectors = self._mask_sets.get(mask_key)
        if detectors is None:       # never record unmasked what was meant to be masked
            raise RuntimeError(f"unknown set of masks {mask_key}")
        return detectors

    def _close_session(self, op: Op) -> None:
        _, sid, ended, status = op
        db = self._db()
        # the totals of its channels and the last exit status, summed by the store in the
        # update itself: nothing to read (a round trip less on a pipelined store)
        children = chain.lookup_unsealed_children(db, session_id=sid)   # (the update below
        db.execute(                                                      # changes none of them)
            "UPDATE sessions SET ended = ?, status = ?, "
            "bytes_in = (SELECT COALESCE(SUM(bytes_in), 0) FROM channels WHERE session_id = ?), "
            "bytes_out = (SELECT COALESCE(SUM(bytes_out), 0) FROM channels WHERE session_id = ?), "
            "truncated = (SELECT COALESCE(MAX(truncated), 0) FROM channels WHERE session_id = ?), "
            "exit_status = (SELECT exit_status FROM channels WHERE session_id = ? AND exit_status "
            "IS NOT NULL ORDER BY id DESC LIMIT 1) WHERE id = ? AND seq IS NULL",
            (ended, status, sid, sid, sid, sid, sid))
        chain.seal_unsealed_children(db, found=children)
        chain.seal(db, "sessions", sid)


class _ProbeFailed(Exception):
    """OP_PROBE found that sessions cannot be recorded (the reason is in the message)."""


def _op_path(applier: Applier, op: Op) -> Path | None:
    if op[0] in (OP_DATA, OP_RESIZE, OP_MARKER):
        sink = applier._sinks.get(op[1])
        return sink.path if sink else None
    return None


# Operations that carry no text for a column or an event (data and its bookkeeping).
_NO_TEXT = frozenset({OP_DATA, OP_RESIZE, OP_MASKS, OP_RESUME, OP_REPLAY, OP_PROBE, OP_BARRIER,
                      OP_COMMAND_RESULT})

_OP_NAMES = {OP_SESSION_START: "start session", OP_REFUSED: "record refused attempt",
             OP_CHANNEL_OPEN: "open channel recording", OP_DATA: "writing recording",
             OP_RESIZE: "write resize", OP_MARKER: "write marker", OP_COMMAND: "record command",
             OP_COMMAND_RESULT: "record command result", OP_COMMAND_APPROVER: "record approver",
             OP_CHANNEL_CLOSE: "close channel", OP_SESSION_CLOSE: "close session",
             OP_MASKS: "register masks", OP_REPLAY: "replay", OP_PROBE: "probe",
             OP_TRANSFER: "record transfer", OP_RESUME: "take over undecided output"}


def _why_not_updated(db: sqlite3.Connection, cmd_id: int) -> str:
    row = db.execute("SELECT seq FROM commands WHERE id = ?", (cmd_id,)).fetchone()
    if row is None:
        return "no such command row (its insert failed)"
    return ("it arrived after the row was sealed (its channel was closed before the "
            "command ended)")


def _principal_columns(p: dict[str, Any] | None) -> tuple[Any, ...]:
    if not p:
        return (None, None, None, None, None)
    return (p.get("subject"), p.get("app_id"), p.get("name"),
            json.dumps(list(p.get("roles") or ()), ensure_ascii=False),
            json.dumps(p, ensure_ascii=False, sort_keys=True))
