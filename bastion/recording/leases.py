"""Leases: a node that stops answering has its open sessions marked interrupted by a peer.

Every node's recording worker writes a heartbeat into ``nodes`` (its name, the time) every
``LEASE / 6`` seconds, at its start and between batches.  Every ``LEASE / 2`` seconds it
also looks for nodes whose heartbeat is older than ``LEASE`` (``BASTION_STORE_LEASE``,
default 60 s) and that still have ``active`` sessions, and closes those sessions as the dead
node's own restart would (bastion.recording.recover), from the store's copy of the
recordings (bastion.store.chunks): each open channel's copy gets the marker
``bastion: recording interrupted (node N stopped answering; marked by node M)`` after its last
event, its SHA-256 is sealed with the row, then the session, in one transaction under the
chain's lock (re-checked there: two peers never both take a session).  The session's approval
requests still pending end ``expired`` (``via="node-gone"``) in the same transaction: the
command each held never runs, so no approver should be asked to answer it.

When the dead node starts again, recovery brings its files in line with the sealed copies
(:func:`restore_taken`, through the ``taken`` table): what it had written but never got
committed (so never showed an agent) is dropped. A node that was only slow or cut off from
the store, not dead, cannot add to a recording its peer sealed (``chunks.insert`` refuses
it) nor change sealed rows (every update of the writer is ``WHERE seq IS NULL``); its
recording worker finds out at its next heartbeat (:attr:`Ticker.lost`), or at once if it
commits a batch first: each batch's transaction (under the chain's lock, so before or after
the peer's, never beside it) also reads this node's taken channels, and a channel found there
is reported ``taken`` before the batch's acknowledgement, so what the batch held for it (which
the store refused) is never shown to its agent. Either way it stops writing the
channel, makes its file the sealed copy (so its ``verify`` passes at once, not only after
its next start; its own file, when different, is kept as ``NAME.after-takeover``) and tells
its bastion process, which stops the channel (its agent must not go on unrecorded).

What the dead node's maskers held back undecided (shown to its agents, not yet written) is
in the store too, sealed (bastion.recording.tailstore, committed with the batch that the
store's copy ends with): before the marker, the peer opens each stream's tail with the
store's tail key and decides it through a masker (:class:`TailTaker`) as the dead node's
restart would from its own journal (bastion.recording.recover): with the masks its own
bastion process registered (the same policy on every node) and the built-in ones, never
written unmasked. A tail that does not open (another vault passphrase) is not written: a
marker says so. The dead node's restart writes nothing more into a recording a peer sealed.

Not covered: SQLite (one node), the recording worker's loop (worker.py calls ``Ticker.tick``).
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from pathlib import Path
from typing import Any, Callable, Iterable

from bastion.proto import asciicast
from bastion.recording import tailstore as store_tails
from bastion.store import chunks

log = logging.getLogger("bastion.store")

LEASE = float(os.environ.get("BASTION_STORE_LEASE", "") or 60.0)
REASON_PREFIX = "node "
REASON = ("node {node} stopped answering (no heartbeat for {lease:.0f} s): marked interrupted "
          "by node {me}")
MARKER = "bastion: recording interrupted (node {node} stopped answering; marked by node {me})"
AFTER_TAKEOVER = ".after-takeover"
APPROVAL_REASON = ("node {node} stopped answering: its session was marked interrupted by node "
                   "{me}; the held command never ran")
UNREAD = ("bastion: output node {node} held back undecided ({streams}) could not be {why} "
          "by node {me}: not recorded")


class Ticker:
    """When the worker's next heartbeat and takeover check are due (monotonic clock)."""

    def __init__(self, lease: float = LEASE, taker: "TailTaker | None" = None) -> None:
        self.lease = lease
        self.taker = taker
        self.lost: list[Any] = []       # this node's channels a peer sealed (:func:`lost`)
        self.next_beat = 0.0
        self.next_check = time.monotonic() + lease / 2

    def tick(self, conn: Any) -> list[int]:
        """Beat and check if due (outside any transaction); the sessions taken over."""
        now = time.monotonic()
        taken: list[int] = []
        try:
            if now >= self.next_beat:
                beat(conn)
                self.lost = lost(conn)
                self.next_beat = now + self.lease / 6
            if now >= self.next_check:
                self.next_check = now + self.lease / 2
                taken = take_over(conn, self.lease, taker=self.taker)
        except sqlite3.Error as exc:          # the store is away: the writes will say so
            log.warning("leases: %s", exc)
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
        return taken


def beat(conn: Any, now: float | None = None) -> None:
    conn.execute("INSERT INTO nodes (name, seen) VALUES (current_setting('bastion.node', true), "
                 "?) ON CONFLICT (name) DO UPDATE SET seen = EXCLUDED.seen",
                 (time.time() if now is None else now,))


def take_over(conn: Any, lease: float, now: float | None = None,
              taker: "TailTaker | None" = None) -> list[int]:
    """Mark the active sessions of every node silent for ``lease`` seconds interrupted."""
    now = time.time() if now is None else now
    me = conn.execute("SELECT current_setting('bastion.node', true)").fetchone()[0]
    dead = conn.execute("SELECT n.name, s.id FROM nodes n JOIN sessions s ON s.node = n.name "
                        "WHERE n.seen < ? AND n.name != ? AND s.status = 'active' "
                        "ORDER BY s.id", (now - lease, me)).fetchall()
    taken = []
    for node, sid in dead:
        conn.execute("BEGIN IMMEDIATE")
        try:
            row = conn.execute("SELECT s.status, n.seen FROM sessions s JOIN nodes n ON "
                               "n.name = s.node WHERE s.id = ?", (sid,)).fetchone()
            if row is None or row[0] != "active" or row[1] >= now - lease:
                conn.execute("ROLLBACK")
                continue
            _interrupt(conn, sid, node, me, lease, taker)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        log.warning("session %s of node %s marked interrupted: the node stopped answering "
                    "(no heartbeat for %.0f s)", sid, node, lease)
        taken.append(sid)
    return taken


def _interrupt(conn: Any, sid: int, node: str, me: str, lease: float,
               taker: "TailTaker | None" = None) -> None:
    from bastion.recording import chain
    (started,) = conn.execute("SELECT started FROM sessions WHERE id = ?", (sid,)).fetchone()
    ended = started
    channels = conn.execute("SELECT id FROM channels WHERE session_id = ? AND seq IS NULL "
                            "ORDER BY id", (sid,)).fetchall()
    for (cid,) in channels:
        (taker or TailTaker(None)).take(conn, cid, node, me)
        last = _append_marker(conn, cid, MARKER.format(node=node, me=me))
        if last is not None:
            ended = max(ended, last)
        conn.execute("UPDATE channels SET status = 'interrupted', sha256 = ?, "
                     "ended = COALESCE(ended, ?) WHERE id = ?",
                     (chunks.sha256_of(conn, cid), last, cid))
        chain.seal_unsealed_children(conn, channel_id=cid)
        chain.seal(conn, "channels", cid)
        conn.execute("INSERT OR IGNORE INTO taken (channel_id, node) VALUES (?, ?)", (cid, node))
    bin_, bout, trunc = conn.execute(
        "SELECT COALESCE(SUM(bytes_in), 0), COALESCE(SUM(bytes_out), 0), "
        "COALESCE(MAX(truncated), 0) FROM channels WHERE session_id = ?", (sid,)).fetchone()
    conn.execute("UPDATE sessions SET status = 'interrupted', ended = ?, reason = ?, "
                 "bytes_in = ?, bytes_out = ?, truncated = ? WHERE id = ?",
                 (ended, REASON.format(node=node, lease=lease, me=me), bin_, bout, trunc, sid))
    chain.seal_unsealed_children(conn, session_id=sid)
    chain.seal(conn, "sessions", sid)
    # what the session waited for can no longer run: an approver must not answer it (the
    # approvals' trigger moves their clock and notifies every node's CLI and brokers)
    # (bastion.approvals.model's EXPIRED and VIA_NODE_GONE: the approvals layer sits above
    # this one, so its values are written out here; tests/integration/test_store_pg.py
    # reads the row back through the approvals store)
    conn.execute("UPDATE approvals SET status = 'expired', via = 'node-gone', answered = ?, "
                 "answer_reason = ? WHERE status = 'pending' AND session_id = ?",
                 (time.time(), APPROVAL_REASON.format(node=node, me=me), sid))


def _append_marker(conn: Any, cid: int, label: str) -> float | None:
    """Append the marker to the store's copy after its last event; that event's wall time."""
    first = conn.execute('SELECT data FROM recording_chunks WHERE channel_id = ? AND '
                         '"offset" = 0', (cid,)).fetchone()
    last = conn.execute('SELECT "offset", data FROM recording_chunks WHERE channel_id = ? '
                        'ORDER BY "offset" DESC LIMIT 1', (cid,)).fetchone()
    if first is None or last is None:
        return None
    try:
        header = json.loads(bytes(first[0]).split(b"\n", 1)[0])
        base = float(header.get("timestamp") or 0)
    except (ValueError, AttributeError):
        return None
    t = 0.0
    for line in reversed(bytes(last[1]).rstrip(b"\n").split(b"\n")):
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, list) and event and isinstance(event[0], (int, float)):
            t = float(event[0])
            break
    end = chunks.stored_end(conn, cid)
    chunks.insert(conn, [(cid, end, asciicast.event_line(t, asciicast.MARKER, label))])
    return base + t


class TailTaker:
    """Writes a dead node's undecided tails into the store's copy of its recordings (see
    the module doc).  ``mask_sets``: the sets of masks this worker was given (OP_MASKS)."""

    def __init__(self, key: bytes | None, data_dir: Path | None = None,
                 max_bytes: int = 1 << 62, mask_sets: Callable[[], Iterable[Any]] = tuple,
                 ) -> None:
        self.key = key
        self.data_dir = Path(data_dir) if data_dir is not None else None
        self.max_bytes = max_bytes
        self.mask_sets = mask_sets

    def detectors(self) -> tuple[Any, ...]:
        """The built-in masks and every set this worker was given, each once."""
        from bastion.proto.masker import BUILTIN
        every: dict[tuple[str, Any], Any] = {}
        for d in [*BUILTIN, *(d for s in list(self.mask_sets()) for d in s)]:
            every.setdefault((d.name, getattr(d.pattern, "pattern", d.pattern)), d)
        return tuple(every.values())

    def take(self, conn: Any, cid: int, node: str, me: str) -> None:
        """Inside the takeover's transaction: the channel's tails decided and appended (or a
        marker saying they could not be), then forgotten."""
        tails, unreadable = store_tails.read(conn, self.key, cid)
        if unreadable:
            _append_marker(conn, cid, UNREAD.format(node=node, me=me, why="opened",
                                                    streams=", ".join(unreadable)))
        if tails and self._write(conn, cid, tails) is not None:
            _append_marker(conn, cid, UNREAD.format(node=node, me=me, why="written",
                                                    streams=", ".join(sorted(tails))))
        store_tails.clear(conn, cid)

    def _write(self, conn: Any, cid: int, tails: dict[str, Any]) -> str | None:
        """Append the decided tails to the store's copy (through a scratch file: the masker
        and encoder are the recording worker's own, bastion.recording.recover.write_tails).
        None when written; else why not."""
        from bastion.recording.recover import write_tails
        from bastion.recording.schema import RECORDINGS_DIR
        if self.data_dir is None:
            return "no data dir"
        scratch = self.data_dir / RECORDINGS_DIR / f".takeover-{cid}-{os.getpid()}"
        try:
            end = chunks.stored_end(conn, cid)
            if chunks.materialize(conn, cid, scratch, None) is None \
                    or scratch.stat().st_size != end:
                return "the store's copy has a gap"
            added = write_tails(scratch, cid, tails, self.detectors(), self.max_bytes)
            chunks.resync_tail(conn, cid, scratch, scratch.stat().st_size)
            log.warning("channel %s: %d B of output its node held back undecided written "
                        "from the store", cid, added)
            return None
        except OSError as exc:
            log.error("channel %s: the undecided output of its node cannot be written: %s",
                      cid, exc.strerror or exc)
            return exc.strerror or str(exc)
        finally:
            scratch.unlink(missing_ok=True)


LOST = ("SELECT c.id, c.path, c.sha256 FROM taken t JOIN channels c ON c.id = t.channel_id "
        "WHERE t.node = current_setting('bastion.node', true) AND t.restored IS NULL "
        "ORDER BY c.id")


def lost(conn: Any) -> list[Any]:
    """``(channel id, path, sha256)`` of this node's recordings a peer sealed that it has not
    made the sealed copy yet."""
    rows: list[Any] = conn.execute(LOST).fetchall()
    return rows


def restore_taken(conn: Any, data_dir: Path, rows: list[Any] | None = None) -> int:
    """At this node's start (or when its worker finds them, ``rows``): its recordings a peer
    sealed while it was gone are made the sealed copy again (see the module doc).  Returns
    how many files were rewritten."""
    done = 0
    for cid, rel, digest in lost(conn) if rows is None else rows:
        if rel and _restore(conn, cid, Path(data_dir) / rel, digest):
            log.warning("recording %s: made the copy a peer sealed while this node was gone",
                        rel)
            done += 1
        conn.execute("UPDATE taken SET restored = ? WHERE channel_id = ?", (time.time(), cid))
    return done


def _restore(conn: Any, cid: int, path: Path, digest: str | None) -> bool:
    """The sealed copy in ``path``; this node's own file, when it differs, is kept beside it
    as ``NAME.after-takeover`` (a slow node's may hold output its agent was shown after the
    takeover: not in the sealed recording, kept for an investigation, never verified)."""
    aside = path.with_name(path.name + AFTER_TAKEOVER)
    moved = False
    if path.exists() and chunks.file_sha256(path) != digest:
        os.replace(path, aside)
        moved = True
    if chunks.materialize(conn, cid, path, digest) is None:
        if moved:
            os.replace(aside, path)
        return False
    if moved:
        log.warning("recording %s: this node's own copy (not the sealed one) kept as %s",
                    path.name, aside.name)
    return True
