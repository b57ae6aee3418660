"""Recording file operations (the ``transfers`` table): one row per sftp operation.

:func:`record_transfer` queues the row through the channel's recorder like a command
row; the recording worker inserts it (bastion.recording.writer, ``OP_TRANSFER``).  A
row carries the decision (action, rule, reason) and, for a whole-file read or write,
the SHA-256 of the bytes transferred; the content itself only with ``store_transfers``
(``content``: bastion.recording.content).  Raises
RecordingError like any recording call: the caller stops the channel.

Rows are sealed into the hash chain when inserted.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from bastion.proto.sanitize import sanitize
from bastion.recording.ops import OP_MARKER, OP_TRANSFER


@dataclass(frozen=True)
class TransferRow:
    """One file operation, as the index keeps it."""

    op: str                      # open-read, open-write, mkdir, remove, rename, ...
    path: str | None
    result: str                  # "ok" | "denied" | "error: ..."
    action: str
    rule: str | None
    reason: str | None
    path2: str | None = None
    nbytes: int = 0
    sha256: str | None = None
    started: float = 0.0         # time.time() the operation began
    duration: float | None = None
    content: str | None = None   # the stored copy (bastion.recording.content), JSON


def record_transfer(rec: Any, row: TransferRow) -> None:
    """Queue ``row`` for the channel recording ``rec`` (a ChannelRecording), with a marker
    in its recording so the row shows up in playback too."""
    rec._check()
    if rec.closed:
        return
    values = (uuid.uuid4().hex, rec.session.id, rec.id, row.started or time.time(), row.op,
              row.path, row.path2, int(row.nbytes), row.sha256, row.result, row.action,
              row.rule, row.reason, row.duration, row.content)
    label = f"{'' if row.op.startswith('rsync') else 'sftp '}{row.op} {row.path or ''}"
    if row.path2:
        label += f" -> {row.path2}"
    label = sanitize(f"{label}: {row.result} [{row.rule or '-'}]")
    size = sum(len(v) for v in values if isinstance(v, str))
    rec._rec._put((OP_TRANSFER, values), size)
    rec._rec._put((OP_MARKER, rec.id, rec._now(), label), len(label))
