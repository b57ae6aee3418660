"""Operations the recording worker cannot store however often it tries: kept aside, not retried.

Why.  After a failure the next worker replays every operation the failed one did not
acknowledge (bastion.recording.replay).  An operation whose *values* the index refuses --
a hole nobody has found yet, like the NUL, the non-UTF-8 byte and the 2 KiB path that
bastion.recording.storable now stores -- failed that replay too, and every one after it:
recording stopped for every session on the node until a restart.

What.  During a replay (``Applier.replaying``) each operation that writes index rows runs
inside a savepoint (on PostgreSQL outside pipeline mode, so that its error surfaces at the
operation, not at the commit).  When it fails for a reason of its own (:func:`own_fault`:
not the disk, not a lock, not the store's connection -- those are the node's and are
retried as before), the savepoint is rolled back and the operation is *kept aside*: written
to ``DATA_DIR/quarantine/`` (directory 0700, file 0600: it holds what the agent sent, as
the index would have), logged as an error, counted, and reported to the bastion process
(``("poisoned", session, channel, message)``), which stops that channel and refuses new
channels of that session.  The replay goes on, the probe follows, and every other
session is recorded again.  So one operation that cannot be stored costs the node one
failure and one replay (its open channels are stopped once, as for any failure), never
more.  The first failure is not kept aside: outside a replay the batch's failure may well
be the node's (a full disk fails whichever operation comes first).

Not covered: storing such an operation after all (an operator reads the file; the
session's row says nothing of it: ``bastion verify`` cannot know).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

from bastion.private import make_private_dirs, open_private_file
from bastion.recording.ops import (OP_CHANNEL_CLOSE, OP_CHANNEL_OPEN, OP_COMMAND,
                                   OP_COMMAND_APPROVER, OP_COMMAND_RESULT, OP_REFUSED,
                                   OP_SESSION_CLOSE, OP_SESSION_START, OP_TRANSFER, Op)

log = logging.getLogger("bastion.recording")

DIR = "quarantine"
SAVEPOINT = "bastion_op"

#: operations that write index rows: each runs apart (in a savepoint) during a replay
ROW_OPS = frozenset({OP_SESSION_START, OP_REFUSED, OP_CHANNEL_OPEN, OP_COMMAND,
                     OP_COMMAND_RESULT, OP_COMMAND_APPROVER, OP_TRANSFER, OP_CHANNEL_CLOSE,
                     OP_SESSION_CLOSE})
#: those that carry values from outside (the agent's text, the target's answers, sizes):
#: each runs apart in every batch.  A command's exit status is a number the bastion checked
#: (SSH's uint32) for a row the bastion numbered: left out, it costs no savepoint per
#: command (bench.savepoints); should it ever fail, the batch fails as any failure does
#: and the replay keeps it aside.
GUARDED = ROW_OPS - {OP_COMMAND_RESULT}


def own_fault(exc: BaseException) -> bool:
    """Whether ``exc`` is the operation's own (its values: a type, a range, a size, a
    constraint, or a bug on them), not the node's (the disk, a lock, the connection)."""
    return not isinstance(exc, (OSError, sqlite3.OperationalError, MemoryError))


def owner(op: Op) -> tuple[int | None, int | None]:
    """The session and channel an operation belongs to, as far as it says."""
    kind = op[0]
    if kind in (OP_SESSION_START, OP_REFUSED, OP_SESSION_CLOSE):
        return op[1], None
    if kind == OP_CHANNEL_OPEN:
        return op[2], op[1]
    if kind == OP_COMMAND:
        return op[2], op[3]
    if kind == OP_CHANNEL_CLOSE:
        return None, op[1]
    if kind == OP_TRANSFER:
        return op[1][1], op[1][2]
    return None, None


def keep(data_dir: Path, op: Op, why: str) -> Path:
    """Write ``op`` and why it failed to a new private file under ``DATA_DIR/quarantine``."""
    folder = Path(data_dir) / DIR
    make_private_dirs(folder)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    for n in range(1000):
        path = folder / f"{stamp}-{os.getpid()}-{n}.txt"
        try:
            fd = open_private_file(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        except FileExistsError:
            continue
        with os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace") as fh:
            fh.write(f"# kept aside by the recording worker: {why}\n{op!r}\n")
            fh.flush()
            os.fsync(fh.fileno())
        return path
    raise OSError(f"no free name in {folder}")


def release(db: Any) -> None:
    """End an operation's savepoint.  On a pipelined store (bastion.store.pipeline) this
    collects every result sent so far: an error of the operation's own statements surfaces
    here, at the operation, not at a later one's read or at the commit."""
    db.execute(f"RELEASE SAVEPOINT {SAVEPOINT}").rowcount


def set_apart(applier: Any, op: Op, exc: BaseException) -> bool:
    """After ``op`` failed in its savepoint: roll it back, keep it, tell the bastion.
    False if that could not be done (the caller then fails as for any failure)."""
    db = applier.conn
    why = f"{type(exc).__name__}: {exc}"
    try:
        db.execute(f"ROLLBACK TO SAVEPOINT {SAVEPOINT}")
        db.execute(f"RELEASE SAVEPOINT {SAVEPOINT}")
        path = keep(applier.data_dir, op, why)
    except (OSError, sqlite3.Error) as again:
        log.error("recording failure: an operation that cannot be stored (%s) could not be "
                  "kept aside either: %s", why, again)
        return False
    sid, cid = owner(op)
    log.error("recording: an operation of session %s channel %s cannot be stored%s (%s); it "
              "is kept aside in %s, its channel is stopped and recording goes on for everyone "
              "else", sid, cid, " even in a replay" if applier.replaying else "", why, path)
    applier.notify(("poisoned", sid, cid, f"recording failed for this session ({why}); "
                                          "the channel was stopped"))
    return True
