"""A channel's recording file, in the recording worker (:class:`bastion.recording.writer.Applier`).

``open_channel``: the channel's row and a new file (its :class:`bastion.recording.sink.Sink`);
``adopt_channel``: on replay by a new worker, the row if missing and the file as the last
worker left it; ``close_channel``: the streams' last bytes, the closing markers, the SHA-256
sealed in the row, the row closed and the hash chain extended.  A file that cannot be
created or closed is reported once (``Reported``) and its row closes as failed.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from bastion.recording import chain, health
from bastion.recording.ops import Op
from bastion.recording.sink import Sink
from bastion.store import chunks

if TYPE_CHECKING:
    from bastion.recording.writer import Applier

log = logging.getLogger("bastion.recording")


def failure_label(failure: str) -> str:
    """The marker a channel stopped by a recording failure gets (also read by tests)."""
    return f"bastion: recording failed ({failure}); the channel was stopped"


class Reported(Exception):
    """A failure already reported with ``Applier._fail`` (apply() only stops)."""


def describe_error(exc: BaseException) -> str:
    """What went wrong, without the file name an OSError carries (``[Errno 28] No space
    left on device: '/srv/bastion/data/...'`` becomes ``No space left on device``)."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def open_channel(a: Applier, op: Op) -> None:
    (_, cid, sid, kind, command, term, width, height, env_json, started, rel_path,
     header, mask_key) = op
    if a.replaying:
        adopt_channel(a, op)
        return
    a._db().execute(
        "INSERT INTO channels (id, session_id, kind, command, term, width, height, env, "
        "started, status, path) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'open', ?)",
        (cid, sid, kind, command, term, width, height, env_json, started, rel_path))
    detectors = a._masks(mask_key)
    try:
        a._sinks[cid] = Sink.create(cid, a.data_dir / rel_path, header, a.max_bytes,
                                       a.notify, detectors, a._on_write())
    except OSError as exc:
        a._failed_channels.add(cid)
        message = a._fail("creating recording", exc, a.data_dir / rel_path)
        a.notify(("opened", cid, message))
        raise Reported() from exc
    a.notify(("opened", cid, None))

def adopt_channel(a: Applier, op: Op) -> None:
    """Replay: the channel's row (if missing) and its recording, as the last worker left it."""
    (_, cid, sid, kind, command, term, width, height, env_json, started, rel_path,
     header, mask_key) = op
    if cid in a._sinks:
        return
    db = a._db()
    db.execute(
        "INSERT OR IGNORE INTO channels (id, session_id, kind, command, term, width, height, "
        "env, started, status, path) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'open', ?)",
        (cid, sid, kind, command, term, width, height, env_json, started, rel_path))
    row = db.execute("SELECT seq FROM channels WHERE id = ?", (cid,)).fetchone()
    if row is not None and row[0] is not None:
        return                                  # closed and sealed already: leave it be
    path = a.data_dir / rel_path
    try:
        a._sinks[cid] = Sink.adopt(cid, path, header, a.max_bytes, a.notify,
                                      a._masks(mask_key), a._on_write())
        if a._chunks is not None:      # the store's copy catches up with the file
            chunks.resync_tail(db, cid, path, a._sinks[cid].written)
    except OSError as exc:
        if health.is_space_error(exc):
            raise
        # this one file cannot be opened (not the disk): its row closes as failed, without
        # a digest; the other channels and new sessions go on
        a._failed_channels.add(cid)
        log.error("recording failure: channel %s: its recording cannot be taken over: %s (%s)",
                  cid, describe_error(exc), path)

def close_channel(a: Applier, op: Op) -> None:
    _, cid, t, ended, exit_status, exit_signal, bytes_in, bytes_out, failure = op
    sink = a._sinks.pop(cid, None)
    a.tails.touch(cid)
    db = a._db()
    if sink is None:
        row = db.execute("SELECT seq FROM channels WHERE id = ?", (cid,)).fetchone()
        if row is not None and row[0] is not None:
            return                              # closed and sealed already (replayed)
    digest = None
    truncated = 0
    status = "failed" if failure or cid in a._failed_channels else "closed"
    if sink is not None:
        labels = [failure_label(failure)] if failure else []
        if exit_signal:
            labels.append(f"exit signal {exit_signal}")
        elif exit_status is not None:
            labels.append(f"exit status {exit_status}")
        truncated = int(sink.truncated)
        try:
            # the streams' last bytes first: what the maskers held back undecided may
            # have been shown already; if this write fails, the sink stays open so that
            # fail_out writes the rest with the reserve's space (not dropped by close)
            sink.finish(t)
            sink.flush()
        except OSError as exc:
            a._sinks[cid] = sink
            a._failed_channels.add(cid)
            a._fail("closing recording", exc, sink.path)
            raise Reported() from exc
        try:
            digest = sink.close(t, tuple(labels))
        except OSError as exc:
            a._failed_channels.add(cid)
            a._fail("closing recording", exc, sink.path)
            raise Reported() from exc
    a._counted.pop(cid, None)
    db.execute(
        "UPDATE channels SET ended = ?, status = ?, exit_status = ?, exit_signal = ?, "
        "bytes_in = ?, bytes_out = ?, truncated = ?, sha256 = ? WHERE id = ? AND seq IS NULL",
        (ended, status, exit_status, exit_signal, bytes_in, bytes_out, truncated, digest, cid))
    chain.seal_unsealed_children(db, channel_id=cid)
    chain.seal(db, "channels", cid)
