"""Crash recovery at ``Recorder.open``: sessions a dead process left ``active`` become ``interrupted``.

For each such session, each channel still ``open``:

1. what the dead process's maskers held back undecided, kept in the encrypted tail journal
   (bastion.recording.tailjournal), is decided and appended, as its worker would have
   written it (the agent was shown those bytes); then
   its recording is cut after the last complete, parseable event line (the
   writer only writes whole lines, so normally nothing is cut; a torn write
   by the OS would be), then a marker
   ``bastion: recording interrupted (bastion stopped without closing it)``
   is appended at the time of the last event -- the file stays valid
   asciicast v2 that ``asciinema play`` accepts;
2. its SHA-256 is taken and the row sealed with status ``interrupted``
   (bytes are the last counts the writer stored, at most ~1 s old);
3. the session gets ``ended`` = the latest event time seen, status
   ``interrupted``, a reason, and is sealed (chain.py).

Runs synchronously before the recording worker starts, while the data dir lock is held, so
no live process owns these sessions. On a shared PostgreSQL store the tails come from this
node's journal as on one node (the store's copy of them, bastion.recording.tailstore, is for
a peer taking over a node that does not come back; it is dropped here), and only this node's
sessions (``sessions.node``, bastion.store) are taken: another node's are its own. Not
covered: the lock (recorder.py) and what counts as "active" for approvals (approvals/).
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
from pathlib import Path
from typing import Any

from bastion import store
from bastion.proto import asciicast
from bastion.recording import chain

log = logging.getLogger("bastion.recording")

INTERRUPTED_MARKER = "bastion: recording interrupted (bastion stopped without closing it)"
INTERRUPTED_REASON = "bastion stopped without closing the session (found at the next start)"
_TAIL_WINDOW = 1 << 20


def repair_recording(path: Path) -> tuple[str | None, float | None]:
    """Cut a recording to its last valid line, append the interrupted marker.

    Returns ``(sha256, wall time of the last event)``; ``(None, None)`` if the file is missing.
    """
    try:
        fd = os.open(path, os.O_RDWR | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        return None, None
    try:
        size = os.fstat(fd).st_size
        keep, last_t, header = _valid_prefix(fd, size)
        if keep != size:
            log.warning("recording %s: cutting %d bytes of incomplete data after a crash",
                        path, size - keep)
            os.ftruncate(fd, keep)
        if header is not None:
            os.lseek(fd, keep, os.SEEK_SET)
            os.write(fd, asciicast.event_line(last_t or 0.0, asciicast.MARKER, INTERRUPTED_MARKER))
        os.fsync(fd)
        os.lseek(fd, 0, os.SEEK_SET)
        hasher = hashlib.sha256()
        while chunk := os.read(fd, 1 << 20):
            hasher.update(chunk)
    finally:
        os.close(fd)
    start = header.get("timestamp") if header else None
    ended = (float((header.get("bastion") or {}).get("started") or start) + (last_t or 0.0)
             if start is not None else None)
    return hasher.hexdigest(), ended


def _valid_prefix(fd: int, size: int) -> tuple[int, float | None, dict | None]:
    """Length of the file up to its last parseable line, that line's time, the header."""
    os.lseek(fd, 0, os.SEEK_SET)
    first = b""
    while b"\n" not in first and len(first) < size:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        first += chunk
    if b"\n" not in first:
        return 0, None, None
    head_line = first[:first.index(b"\n") + 1]
    try:
        header = asciicast.parse_header(head_line)
    except asciicast.CastFormatError:
        return 0, None, None
    header_end = len(head_line)
    # read the tail, walk back over lines until one parses
    start = max(header_end, size - _TAIL_WINDOW)
    os.lseek(fd, start, os.SEEK_SET)
    tail = b""
    while len(tail) < size - start:
        chunk = os.read(fd, size - start - len(tail))
        if not chunk:
            break
        tail += chunk
    end = len(tail)
    while end > 0:
        nl = tail.rfind(b"\n", 0, end)
        if nl < 0:
            break
        line_start = tail.rfind(b"\n", 0, nl) + 1
        if line_start == 0 and start > header_end:
            break                                   # line longer than the window: keep as is
        line = tail[line_start:nl + 1]
        try:
            event = asciicast.parse_event(line)
            return start + nl + 1, event.time, header
        except asciicast.CastFormatError:
            end = line_start
    if start == header_end:
        return header_end, 0.0, header
    return start + (tail.rfind(b"\n") + 1 if b"\n" in tail else 0), None, header


def write_tails(path: Path, cid: int, tails: dict[str, Any], detectors: Any,
                max_bytes: int) -> int:
    """Decide and append what the dead process's maskers held undecided for a channel (its
    streams' tails from the tail journal), as its worker would have; returns bytes added."""
    from bastion.proto.masker import BUILTIN
    from bastion.recording.sink import Sink
    try:
        if os.stat(path).st_size == 0:
            return 0
    except FileNotFoundError:
        return 0
    sink = Sink.adopt(cid, path, b"", max_bytes, lambda _event: None,
                      tuple(detectors) if detectors else tuple(BUILTIN))   # never unmasked
    try:
        before = sink.size
        for stream, tail in sorted(tails.items()):
            sink.resume(stream, tail)
        sink.finish(sink.last_t)
        sink.flush()
        return sink.size - before
    finally:
        sink.release()


def recover_interrupted(conn: sqlite3.Connection, data_dir: Path, *,
                        tails: dict[tuple[int, str], Any] | None = None,
                        detectors: Any = None, max_bytes: int = 1 << 62,
                        only: str = "") -> list[int]:
    """Mark sessions left active as interrupted (see module doc).  Returns their ids.

    ``tails``: what the tail journal kept of the dead process's undecided output, per
    channel and stream; written into the recordings (masked with ``detectors``) first.
    ``only``: SQL ANDed into the sessions query (a restarted worker's own sessions:
    bastion.recording.shares)."""
    if store.current().postgres:       # recordings a peer sealed while this node was gone
        from bastion.recording.leases import restore_taken
        restore_taken(conn, Path(data_dir))
    by_channel: dict[int, dict[str, Any]] = {}
    for (cid, stream), tail in (tails or {}).items():
        by_channel.setdefault(cid, {})[stream] = tail
    # on a shared store, only this node's sessions: another node's active ones are live
    sessions = [tuple(r) for r in conn.execute(
        "SELECT id, started FROM sessions WHERE status = 'active'"
        f"{store.own_sessions_clause()}{only} ORDER BY id")]
    done = []
    for sid, started in sessions:
        ended = started
        chain.begin(conn)
        try:
            channels = conn.execute(
                "SELECT id, path FROM channels WHERE session_id = ? AND seq IS NULL ORDER BY id",
                (sid,)).fetchall()
            for cid, rel_path in channels:
                if rel_path and cid in by_channel:
                    added = write_tails(Path(data_dir) / rel_path, cid, by_channel[cid],
                                        detectors, max_bytes)
                    log.info("channel %s: %d B of undecided output written from the tail "
                             "journal", cid, added)
                digest, last = (repair_recording(Path(data_dir) / rel_path) if rel_path
                                else (None, None))
                if store.current().postgres:    # the store's copy: the file now; its tails
                    from bastion.recording import tailstore  # are written
                    from bastion.store import chunks
                    if rel_path:
                        chunks.replace_all(conn, cid, Path(data_dir) / rel_path)
                    tailstore.clear(conn, cid)
                if last is not None:
                    ended = max(ended, last)
                conn.execute("UPDATE channels SET status = 'interrupted', sha256 = ?, "
                             "ended = COALESCE(ended, ?) WHERE id = ?", (digest, last, cid))
                chain.seal_unsealed_children(conn, channel_id=cid)
                chain.seal(conn, "channels", cid)
            bin_, bout, trunc = conn.execute(
                "SELECT COALESCE(SUM(bytes_in), 0), COALESCE(SUM(bytes_out), 0), "
                "COALESCE(MAX(truncated), 0) FROM channels WHERE session_id = ?", (sid,)).fetchone()
            conn.execute("UPDATE sessions SET status = 'interrupted', ended = ?, reason = ?, "
                         "bytes_in = ?, bytes_out = ?, truncated = ? WHERE id = ?",
                         (ended, INTERRUPTED_REASON, bin_, bout, trunc, sid))
            chain.seal_unsealed_children(conn, session_id=sid)
            chain.seal(conn, "sessions", sid)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        log.warning("session %s was left active by a previous process: marked interrupted", sid)
        done.append(sid)
    return done
