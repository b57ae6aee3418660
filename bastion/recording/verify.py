"""``bastion verify`` and ``bastion prune``: check and cut the tamper-evidence chain.

verify (read-only):

* walks every sealed row of sessions, channels, commands and transfers in ``seq`` order
  from the latest checkpoint (or the genesis), recomputing each hash
  (chain.py); a changed row, a missing or duplicated ``seq`` (deleted or
  inserted row), or a head that does not match the last row is a problem;
* recomputes the SHA-256 of every sealed channel's recording file; a changed
  or missing file is a problem;
* on a PostgreSQL store, recomputes the SHA-256 of every stored copy of a transferred
  file the store has (``transfer_copies``) against its sealed row's ``content``; one the
  store lacks is checked in the data dir of its session's node (SQLite: copies are not
  checked, only their links, which are in the chain);
* reports rows of finished sessions that are not sealed, and rows older than
  the checkpoint that prune should have removed;
* lists the operations the recording worker kept aside in this data dir and nobody has
  acknowledged yet (bastion.recording.quarantine): rows the index does not have, which the
  chain cannot show.  They are not a break (``ok`` is about the chain and the files); the
  CLI exits 4 for them.

Problems are sorted by chain position; the first is "the first break".
The report carries the head ``(seq, hash)``: keep it elsewhere to detect a
later rewrite of the whole chain (see chain.py for what the chain can't prove).

prune (read-write): deletes whole sessions (rows, FTS entries, recording
files, stored copies of transfers and, on PostgreSQL, the store's copies of both) that ended before a cutoff, but only as a *prefix of the chain*: it
walks the chain from the start and stops at the first row belonging to a
session that is not prunable (still active, or newer), so the chain that
remains is contiguous.  Each step is a short transaction (at most
``PRUNE_BATCH`` rows) that deletes rows up to a session boundary and records a
checkpoint ``(seq, hash)`` of the last deleted row: verify starts from it.
Files are unlinked after the commit (a crash in between leaves orphan files,
never a broken chain).  Safe to run while ``bastion serve`` records.

Not covered: sealing (chain.py, writer.py).
"""

from __future__ import annotations

import heapq
import os
import sqlite3
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bastion import store
from bastion.errors import RecordingError
from bastion.store.chunks import file_sha256 as file_sha256  # one file hasher, re-exported
from bastion.recording import chain, quarantine, schema

PRUNE_BATCH = 5000


@dataclass
class Problem:
    kind: str                 # modified | gap | duplicate | head | file-modified | file-missing | unsealed | stale
    message: str
    table: str | None = None
    row_id: int | None = None
    seq: int | None = None
    session_id: int | None = None
    path: str | None = None


@dataclass
class VerifyReport:
    head_seq: int
    head_hash: str
    start_seq: int
    rows: int = 0
    files: int = 0
    files_elsewhere: int = 0      # recordings of another node's sessions (shared store): not here
    copies: int = 0               # stored copies of transferred files checked (shared store)
    copies_elsewhere: int = 0     # another node's, not in the store: checked on its node
    active_sessions: int = 0
    checkpoint: dict | None = None
    problems: list[Problem] = field(default_factory=list)
    # operations the recording worker kept aside, not acknowledged (bastion.recording.quarantine):
    # not a break of the chain (``ok`` says nothing of them), rows the index does not have
    kept_aside: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first(self) -> Problem | None:
        return self.problems[0] if self.problems else None

    def to_dict(self) -> dict:
        return {"ok": self.ok, "head": {"seq": self.head_seq, "hash": self.head_hash},
                "start_seq": self.start_seq, "rows_checked": self.rows, "files_checked": self.files,
                "files_elsewhere": self.files_elsewhere, "copies_checked": self.copies,
                "copies_elsewhere": self.copies_elsewhere,
                "active_sessions": self.active_sessions, "checkpoint": self.checkpoint,
                "first_break": asdict(self.first) if self.first else None,
                "problems": [asdict(p) for p in self.problems],
                "kept_aside": self.kept_aside}


def _local_sessions(conn: sqlite3.Connection) -> set[int] | None:
    """Sessions whose recordings are in this data dir; None: all of them (one node)."""
    clause = store.own_sessions_clause()
    if not clause:
        return None
    return {r[0] for r in conn.execute(f"SELECT id FROM sessions WHERE TRUE{clause}")}


def _session_of(table: str, row: dict) -> int:
    return row["id"] if table == "sessions" else row["session_id"]


def _label(table: str, row_id, seq) -> str:
    return f"{table} row {row_id} (chain seq {seq})"


def latest_checkpoint(conn: sqlite3.Connection) -> dict | None:
    row = conn.execute("SELECT * FROM checkpoints ORDER BY seq DESC LIMIT 1").fetchone()
    return dict(row) if row else None


def verify_index(data_dir: Path, *, check_files: bool = True) -> VerifyReport:
    """Check the chain and the recordings (see module doc)."""
    data_dir = Path(data_dir)
    conn = schema.connect(data_dir, readonly=True)
    try:
        conn.execute("BEGIN")                       # one consistent snapshot
        report = _verify(conn, data_dir, check_files)
    except sqlite3.Error as exc:
        raise RecordingError(f"reading the session index failed: {exc}") from exc
    finally:
        conn.close()
    try:
        report.kept_aside = [k.to_dict() for k in quarantine.listing(data_dir)]
    except OSError as exc:
        raise RecordingError(f"reading {data_dir / quarantine.DIR} failed: {exc}") from exc
    return report


def verify_source(conn: sqlite3.Connection, data_dir: Path) -> VerifyReport:
    """Check a one-node SQLite index opened by the caller (``bastion store import``), in the
    caller's read transaction, with every sealed recording read from ``data_dir`` -- whatever
    store this process is configured for."""
    return _verify(conn, data_dir, True, one_node=True)


def _verify(conn: sqlite3.Connection, data_dir: Path, check_files: bool, *,
            one_node: bool = False) -> VerifyReport:
    head_seq, head_hash = chain.head(conn)
    cp = latest_checkpoint(conn)
    start_seq, prev = (cp["seq"], cp["hash"]) if cp else (0, schema.GENESIS)
    report = VerifyReport(head_seq=head_seq, head_hash=head_hash, start_seq=start_seq, checkpoint=cp)
    problems = report.problems
    expected = start_seq + 1
    last_seq, last_hash = start_seq, prev
    files: list[tuple[int, dict]] = []
    copies: list[tuple[int, dict[str, Any]]] = []
    for seq, table, row in chain.iter_chain(conn, after=start_seq):
        report.rows += 1
        sid = _session_of(table, row)
        if seq < expected:
            problems.append(Problem("duplicate", f"{_label(table, row['id'], seq)}: seq {seq} "
                                    "appears twice (a row was inserted or copied)",
                                    table, row["id"], seq, sid))
        elif seq > expected:
            missing = f"seq {expected}" if seq == expected + 1 else f"seq {expected}..{seq - 1}"
            problems.append(Problem("gap", f"chain broken before {_label(table, row['id'], seq)}: "
                                    f"{missing} missing (a row was deleted or its seq changed)",
                                    table, row["id"], expected, sid))
        digest = chain.row_hash(prev, table, row)
        if digest != row.get("hash"):
            problems.append(Problem("modified", f"{_label(table, row['id'], seq)} of session {sid} "
                                    "does not match its hash: the row was changed",
                                    table, row["id"], seq, sid))
        prev = row.get("hash") or digest
        expected = max(expected, seq + 1)
        last_seq, last_hash = seq, prev
        if table == "channels" and row.get("path") and row.get("sha256"):
            files.append((seq, row))
        elif table == "transfers" and row.get("content"):
            copies.append((seq, row))
    if (last_seq, last_hash) != (head_seq, head_hash):
        problems.append(Problem("head", f"the chain head says seq {head_seq} but the last sealed row "
                                f"is seq {last_seq} (rows at the end were deleted, or the head edited)",
                                seq=last_seq + 1))
    if check_files:
        local = None if one_node else _local_sessions(conn)
        for seq, row in files:
            where = f"recording {row['path']} (channel {row['id']} of session {row['session_id']})"
            if local is not None and row["session_id"] not in local:
                from bastion.store import chunks      # another node's: the store's copy
                stored = chunks.sha256_of(conn, row["id"])
                if stored is None:
                    report.files_elsewhere += 1     # not in the store: checked on its node
                    continue
                report.files += 1
                if stored != row["sha256"]:
                    problems.append(Problem("file-modified", f"{where} in the store was "
                                            "modified: its SHA-256 does not match the one "
                                            "sealed at close", "channels", row["id"], seq,
                                            row["session_id"], row["path"]))
                continue
            report.files += 1
            path = data_dir / row["path"]
            try:
                digest = file_sha256(path)
            except FileNotFoundError:
                problems.append(Problem("file-missing", f"{where} is missing", "channels", row["id"],
                                        seq, row["session_id"], row["path"]))
                continue
            except OSError as exc:
                problems.append(Problem("file-missing", f"{where} cannot be read: {exc}", "channels",
                                        row["id"], seq, row["session_id"], row["path"]))
                continue
            if digest != row["sha256"]:
                problems.append(Problem("file-modified", f"{where} was modified: its SHA-256 does not "
                                        "match the one sealed at close", "channels", row["id"], seq,
                                        row["session_id"], row["path"]))
        if local is not None:                    # a shared store: it keeps the copies
            _check_copies(conn, data_dir, copies, local, report)
    for table in chain.CHAINED_TABLES:
        sid_col = "id" if table == "sessions" else "session_id"
        for row in conn.execute(
                f"SELECT t.id, t.{sid_col} AS sid FROM {table} t JOIN sessions s ON s.id = t.{sid_col} "
                "WHERE t.seq IS NULL AND s.status != 'active'"):
            problems.append(Problem("unsealed", f"{table} row {row['id']} of finished session "
                                    f"{row['sid']} is not in the chain (its seq was removed?)",
                                    table, row["id"], None, row["sid"]))
        for row in conn.execute(f"SELECT id, seq, {sid_col} AS sid FROM {table} WHERE seq <= ?",
                                (start_seq,)):
            problems.append(Problem("stale", f"{_label(table, row['id'], row['seq'])} is older than "
                                    f"the prune checkpoint (seq {start_seq}) but still present",
                                    table, row["id"], row["seq"], row["sid"]))
    report.active_sessions = conn.execute(
        "SELECT COUNT(*) FROM sessions WHERE status = 'active'").fetchone()[0]
    problems.sort(key=lambda p: (p.seq is None, p.seq or 0))
    return report


def _check_copies(conn: sqlite3.Connection, data_dir: Path,
                  copies: list[tuple[int, dict[str, Any]]],
                  local: set[int], report: VerifyReport) -> None:
    """The stored copies of transferred files (``store_transfers``) on a shared store: each
    one the store has must have the SHA-256 its sealed row records (bastion.store.
    transfercopies).  One the store lacks (linked before the store kept copies, or whose
    row says it was lost) is checked in this data dir if its session is this node's, else
    left to its node, as recordings are."""
    from bastion.recording.copies import link
    from bastion.store import transfercopies
    for seq, row in copies:
        info = link(row)
        if info is None:
            continue
        stored = transfercopies.sha256_of(conn, row["id"])
        if stored is None and row["session_id"] not in local:
            report.copies_elsewhere += 1
            continue
        report.copies += 1
        found = _copy_problem(data_dir, info, stored)
        if found is not None:
            kind, message = found
            report.problems.append(Problem(
                kind, f"the stored copy of transfer {row['id']} (session {row['session_id']}, "
                      f"{info['path']}) {message}", "transfers", row["id"], seq,
                row["session_id"], info["path"]))


def _copy_problem(data_dir: Path, info: dict[str, Any],
                  stored: str | None) -> tuple[str, str] | None:
    """(kind, message) if the copy ``info`` links is not the one recorded: the store's
    (``stored``: its SHA-256), else this data dir's file."""
    from bastion.recording.copies import local_path
    changed = "was modified: its SHA-256 does not match the one recorded with the transfer"
    if stored is not None:
        return None if stored == info.get("sha256") else ("file-modified", f"in the store {changed}")
    try:
        digest = file_sha256(local_path(data_dir, info, "the copy"))
    except (OSError, RecordingError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return "file-missing", f"is in neither the store nor this data dir ({why})"
    return None if digest == info.get("sha256") else ("file-modified", changed)


# --------------------------------------------------------------------------- prune

@dataclass
class PruneReport:
    cutoff: float
    dry_run: bool
    sessions: int = 0
    rows: int = 0
    files_deleted: int = 0
    files_missing: int = 0
    checkpoint_seq: int | None = None
    blocked_by: int | None = None       # first session that stopped the prefix

    def to_dict(self) -> dict:
        return asdict(self)


def _prefix_boundaries(conn: sqlite3.Connection, after: int, prunable: set[int]):
    """Yield ``(seq, rows_so_far, sessions)`` at each chain position ending a prunable prefix."""
    def stream(table: str):
        sid_col = "id" if table == "sessions" else "session_id"
        for seq, rid, sid in conn.execute(
                f"SELECT seq, id, {sid_col} FROM {table} WHERE seq > ? ORDER BY seq", (after,)):
            yield seq, table, rid, sid

    open_sessions: set[int] = set()
    done: list[int] = []
    rows = 0
    for seq, table, _rid, sid in heapq.merge(*(stream(t) for t in chain.CHAINED_TABLES)):
        if sid not in prunable:
            yield None, rows, sid
            return
        rows += 1
        if table == "sessions":
            open_sessions.discard(sid)
            done.append(sid)
        else:
            open_sessions.add(sid)
        if not open_sessions:
            yield seq, rows, list(done)
            done = []
    yield None, rows, None


def prune(data_dir: Path, *, older_than: float, now: float | None = None,
          dry_run: bool = False) -> PruneReport:
    """Delete sessions that ended more than ``older_than`` seconds ago (see module doc)."""
    if older_than <= 0:
        raise RecordingError("--older-than must be a positive duration")
    data_dir = Path(data_dir)
    now = time.time() if now is None else now
    report = PruneReport(cutoff=now - older_than, dry_run=dry_run)
    conn = schema.connect(data_dir)
    try:
        cp = latest_checkpoint(conn)
        after = cp["seq"] if cp else 0
        prunable = {r[0] for r in conn.execute(
            "SELECT id FROM sessions WHERE seq IS NOT NULL AND status != 'active' "
            "AND COALESCE(ended, started) < ?", (report.cutoff,))}
        batches: list[tuple[int, list[int]]] = []
        pending: list[int] = []
        batch_rows = 0
        last_rows = 0
        for seq, rows, sessions in _prefix_boundaries(conn, after, prunable):
            if seq is None:
                report.blocked_by = sessions
                break
            pending.extend(sessions)
            batch_rows += rows - last_rows
            last_rows = rows
            if batch_rows >= PRUNE_BATCH:
                batches.append((seq, pending))
                pending, batch_rows = [], 0
        if pending:
            batches.append((_last_seq(conn, pending), pending))
        for seq, sessions in batches:
            report.sessions += len(sessions)
            if dry_run:
                report.rows += _count_rows(conn, sessions)
                continue
            paths = _delete_batch(conn, seq, sessions, report)
            report.checkpoint_seq = seq
            for rel in paths:
                try:
                    os.unlink(data_dir / rel)
                    report.files_deleted += 1
                except FileNotFoundError:
                    report.files_missing += 1
                _remove_empty_dirs((data_dir / rel).parent, data_dir / schema.RECORDINGS_DIR)
    except sqlite3.Error as exc:
        raise RecordingError(f"pruning the session index failed: {exc}",
                             hint="nothing past the last completed step was deleted; run it again") from exc
    finally:
        conn.close()
    return report


def _last_seq(conn: sqlite3.Connection, sessions: list[int]) -> int:
    marks = ",".join("?" * len(sessions))
    return conn.execute(f"SELECT MAX(seq) FROM sessions WHERE id IN ({marks})", sessions).fetchone()[0]


def _count_rows(conn: sqlite3.Connection, sessions: list[int]) -> int:
    total = len(sessions)
    for table in ("channels", "commands", "transfers"):
        for i in range(0, len(sessions), 500):
            part = sessions[i:i + 500]
            total += conn.execute(f"SELECT COUNT(*) FROM {table} WHERE session_id IN "
                                  f"({','.join('?' * len(part))})", part).fetchone()[0]
    return total


def _delete_batch(conn: sqlite3.Connection, seq: int, sessions: list[int], report: PruneReport) -> list[str]:
    chain.begin(conn)
    try:
        cp = latest_checkpoint(conn)
        if cp and cp["seq"] >= seq:
            raise RecordingError("another prune ran meanwhile", hint="run bastion prune again")
        row = None
        for table in chain.CHAINED_TABLES:
            row = row or conn.execute(f"SELECT hash FROM {table} WHERE seq = ?", (seq,)).fetchone()
        if row is None:
            raise RecordingError(f"chain seq {seq} vanished during prune", hint="run bastion verify")
        paths: list[str] = []
        rows = 0
        for i in range(0, len(sessions), 500):
            part = sessions[i:i + 500]
            marks = ",".join("?" * len(part))
            paths += [r[0] for r in conn.execute(
                f"SELECT path FROM channels WHERE session_id IN ({marks}) AND path IS NOT NULL", part)]
            if store.current().postgres:         # the store's copies of their recordings
                conn.execute("DELETE FROM recording_chunks WHERE channel_id IN (SELECT id FROM "
                             f"channels WHERE session_id IN ({marks}))", part)
                conn.execute("DELETE FROM transfer_copies WHERE transfer_id IN (SELECT id FROM "
                             f"transfers WHERE session_id IN ({marks}))", part)
            paths += [r[0] for r in conn.execute(       # stored copies (store_transfers)
                f"SELECT json_extract(content, '$.path') FROM transfers WHERE session_id IN "
                f"({marks}) AND content IS NOT NULL", part) if r[0]]
            for table in ("transfers", "commands", "channels"):
                rows += conn.execute(f"DELETE FROM {table} WHERE session_id IN ({marks}) AND seq <= ?",
                                     (*part, seq)).rowcount
            rows += conn.execute(f"DELETE FROM sessions WHERE id IN ({marks}) AND seq <= ?",
                                 (*part, seq)).rowcount
        left = sum(conn.execute(f"SELECT COUNT(*) FROM {t} WHERE seq <= ?", (seq,)).fetchone()[0]
                   for t in chain.CHAINED_TABLES)
        if left:
            raise RecordingError(f"prune would leave {left} rows before seq {seq}; nothing deleted",
                                 hint="run bastion verify; the chain may be damaged")
        conn.execute("INSERT INTO checkpoints (seq, hash, created, cutoff, sessions, rows) "
                     "VALUES (?, ?, ?, ?, ?, ?)",
                     (seq, row[0], time.time(), report.cutoff, len(sessions), rows))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    report.rows += rows
    return paths


def _remove_empty_dirs(path: Path, stop: Path) -> None:
    try:
        while path != stop and stop in path.parents:
            path.rmdir()
            path = path.parent
    except OSError:
        pass
