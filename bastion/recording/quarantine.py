"""Operations the recording worker cannot store: kept aside, not retried, shown by verify.

Why.  An operation whose *values* the index refuses -- a hole nobody has found yet, like
the NUL, the non-UTF-8 byte and the 2 KiB path that bastion.recording.storable now stores
-- used to fail its batch: the worker stopped, every open channel on the node was stopped
(~0.5 s of refused sessions), and before this module the replay that follows a failure
failed on it again, and every one after it: recording stopped for every session on the
node until a restart.

What.  Each operation that writes index rows and carries values from outside
(:data:`GUARDED`; in a replay every row-writing one, :data:`ROW_OPS`) runs inside a
savepoint; on PostgreSQL its release collects the pipeline's results (:func:`release`), so
that its error surfaces at the operation, not at a later one or at the commit.  When it
fails for a reason of its own (:func:`own_fault`: not the disk, not a lock, not the store's
connection -- those are the node's: the batch fails and is replayed as before), the
savepoint is rolled back and the operation is *kept aside*: written to
``DATA_DIR/quarantine/`` (directory 0700, file 0600: it holds what the agent sent, as the
index would have), logged as an error, counted, and reported to the bastion process
(``("poisoned", session, channel, message)``), which stops that channel and refuses new
channels of that session.  The batch goes on: no other channel on the node is stopped.
The operations that build on the kept one and were queued before the bastion knew (the
channel's command, its close: :func:`follows_kept`) are appended to the same file, not
tried in the index.
On PostgreSQL a normal batch seals its rows at its commit (bastion.recording.chain,
``seal_deferred``): the seals an operation asked for go with its savepoint when it is
rolled back, and a seal the store itself refuses fails the batch; the replay seals in each
operation's savepoint, so there the operation is kept aside as above.
What it costs a normal batch is measured by ``bench.savepoints`` (docs/BENCHMARKS.md).

Review.  ``bastion verify`` lists the files still in ``DATA_DIR/quarantine/`` (:func:`listing`)
and exits 4 while there are any; ``bastion quarantine ack`` moves reviewed ones to
``quarantine/reviewed/`` (:func:`acknowledge`), where they stay.

Not covered: storing such an operation after all (an operator reads the file; the
session's row says nothing of it).
"""

from __future__ import annotations

import logging
import os
import re
import sqlite3
import time
from dataclasses import dataclass
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
#: PostgreSQL keeps the ids of 64 subtransactions per transaction in shared memory; past
#: that, every other session's snapshot is "suboverflowed" (its visibility checks read
#: pg_subtrans) while the transaction lasts.  A normal batch runs at most this many
#: savepoints per transaction; the rest of a bigger batch runs without (one refused there
#: fails the batch as any failure does, and the replay keeps it aside).  A replay takes one
#: per row-writing operation, unbounded: it is rare, and without them it could fail for ever.
PG_SAVEPOINTS = 60


NAMES = {OP_SESSION_START: "session-start", OP_REFUSED: "refused", OP_CHANNEL_OPEN: "channel-open",
         OP_COMMAND: "command", OP_COMMAND_RESULT: "command-result",
         OP_COMMAND_APPROVER: "command-approver", OP_TRANSFER: "transfer",
         OP_CHANNEL_CLOSE: "channel-close", OP_SESSION_CLOSE: "session-close"}
HEAD = "# kept aside by the recording worker: "
REVIEWED = "reviewed"


def own_fault(exc: BaseException) -> bool:
    """Whether ``exc`` is the operation's own (its values: a type, a range, a size, a
    constraint, or a bug on them), not the node's (the disk, a lock, the connection)."""
    return not isinstance(exc, (OSError, sqlite3.OperationalError, MemoryError))


def owner(op: Op) -> tuple[int | None, int | None]:
    """The session and channel an operation belongs to, as far as it says (read from the
    rows it builds on and makes: :func:`_entities`)."""
    needs, made = _entities(op)
    ids = dict(needs + ((made,) if made is not None else ()))
    return ids.get("session"), ids.get("channel")


def _entities(op: Op) -> tuple[tuple[tuple[str, int], ...], tuple[str, int] | None]:
    """The index rows ``op`` builds on, and the one it makes (None: none)."""
    kind = op[0]
    if kind in (OP_SESSION_START, OP_REFUSED):
        return (), ("session", op[1])
    if kind == OP_CHANNEL_OPEN:
        return (("session", op[2]),), ("channel", op[1])
    if kind == OP_COMMAND:
        return (("session", op[2]), ("channel", op[3])), ("command", op[1])
    if kind in (OP_COMMAND_RESULT, OP_COMMAND_APPROVER):
        return (("command", op[1]),), None
    if kind == OP_TRANSFER:
        return (("session", op[1][1]), ("channel", op[1][2])), None
    if kind == OP_CHANNEL_CLOSE:
        return (("channel", op[1]),), None
    if kind == OP_SESSION_CLOSE:
        return (("session", op[1]),), None
    return (), None


def follows_kept(applier: Any, op: Op) -> Path | None:
    """The file of the operation kept aside that ``op`` builds on (its channel's opening, its
    session's start, its command), if any.  The bastion learns of a kept operation only
    after the worker has it, so the channel's next operations (its command, its close) may
    already be queued: in the store they would fail on the missing row (a second file and a
    second report for one fault on PostgreSQL) or, where nothing checks the reference
    (SQLite), point at a row that is not there."""
    needs, _ = _entities(op)
    for key in needs:
        path: Path | None = applier.kept_aside.get(key)
        if path is not None:
            return path
    return None


def add_to(applier: Any, path: Path, op: Op) -> None:
    """Append ``op`` to the kept file ``path`` (what it makes follows it there too)."""
    fd = open_private_file(path, os.O_WRONLY | os.O_APPEND)
    with os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace") as fh:
        fh.write(f"{op!r}\n")
        fh.flush()
        os.fsync(fh.fileno())
    _remember(applier, op, path)


def _remember(applier: Any, op: Op, path: Path) -> None:
    """What ``op`` makes is in ``path`` now: what builds on it follows it there.  A channel's
    or session's close is the last of it: forgotten then (a command's row is too small to
    track)."""
    _, made = _entities(op)
    if made is not None:
        applier.kept_aside[made] = path
    if op[0] == OP_CHANNEL_CLOSE:
        applier.kept_aside.pop(("channel", op[1]), None)
    elif op[0] == OP_SESSION_CLOSE:
        applier.kept_aside.pop(("session", op[1]), None)


def keep(data_dir: Path, op: Op, why: str) -> Path:
    """Write ``op`` and why it failed to a new private file under ``DATA_DIR/quarantine``:
    a line with why, a line with whose it is (:func:`listing` reads both), then the
    operation."""
    folder = Path(data_dir) / DIR
    make_private_dirs(folder)
    sid, cid = owner(op)
    whose = f"# session {sid} channel {cid} operation {NAMES.get(op[0], op[0])}"
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    for n in range(1000):
        path = folder / f"{stamp}-{os.getpid()}-{n}.txt"
        try:
            fd = open_private_file(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        except FileExistsError:
            continue
        with os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace") as fh:
            fh.write(f"{HEAD}{_one_line(why)}\n{whose}\n{op!r}\n")
            fh.flush()
            os.fsync(fh.fileno())
        return path
    raise OSError(f"no free name in {folder}")


def runs_apart(applier: Any, op: Op) -> bool:
    """Whether ``op`` runs in a savepoint: in a replay every row-writing one, else those in
    ``applier.savepoints`` while ``applier.apart_left`` (None: no limit) allows."""
    if applier.replaying:
        return op[0] in ROW_OPS
    if op[0] not in applier.savepoints:
        return False
    if applier.apart_left is None:
        return True
    if not applier._in_txn:                 # a transaction not begun yet: a full allowance
        applier.apart_left = PG_SAVEPOINTS
    if applier.apart_left <= 0:
        return False
    applier.apart_left -= 1
    return True


def release(db: Any) -> None:
    """End an operation's savepoint.  On a pipelined store (bastion.store.pipeline) this
    collects every result sent so far: an error of the operation's own statements surfaces
    here, at the operation, not at a later one's read or at the commit."""
    _ = db.execute(f"RELEASE SAVEPOINT {SAVEPOINT}").rowcount    # read: the results collected


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
    _remember(applier, op, path)
    sid, cid = owner(op)
    if op[0] == OP_CHANNEL_OPEN and not applier.replaying:
        _unmade(applier, op[1])
    log.error("recording: an operation of session %s channel %s cannot be stored%s (%s); it "
              "is kept aside in %s, its channel is stopped and recording goes on for everyone "
              "else", sid, cid, " even in a replay" if applier.replaying else "", why, path)
    applier.notify(("poisoned", sid, cid, f"recording failed for this session ({why}); "
                                          "the channel was stopped"))
    return True


def _unmade(applier: Any, cid: int) -> None:
    """A channel whose row was refused has no recording either.  On PostgreSQL the error
    surfaces after its file was created (at the release): the file, which holds only its
    header (in the kept file too), goes, with the store's copy of it not yet inserted."""
    sink = applier._sinks.pop(cid, None)
    if sink is None:
        return
    sink.release()
    if applier._chunks is not None:
        applier._chunks.rows[:] = [r for r in applier._chunks.rows if r[0] != cid]
        applier._chunks.bytes = sum(len(r[2]) for r in applier._chunks.rows)
    try:
        os.unlink(sink.path)
    except OSError as exc:
        log.warning("recording: channel %s: its recording without a row stays: %s (%s)",
                    cid, exc, sink.path)


def _one_line(text: str) -> str:
    return " ".join(text.split())


@dataclass(frozen=True)
class Kept:
    """One file in ``DATA_DIR/quarantine/`` (as written by :func:`keep`)."""

    path: Path
    at: float                     # when it was written (the file's mtime)
    why: str | None               # None: not a file keep() wrote (still reported)
    session: str | None
    channel: str | None
    operation: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "at": self.at, "why": self.why,
                "session": self.session, "channel": self.channel, "operation": self.operation}


_WHOSE = re.compile(r"# session (\S+) channel (\S+) operation (\S+)")


def _read_kept(path: Path) -> Kept:
    at = path.stat().st_mtime
    why = whose = None
    with path.open("r", encoding="utf-8", errors="replace") as fh:
        first, second = fh.readline(4096), fh.readline(4096)
    if first.startswith(HEAD):
        why = first[len(HEAD):].rstrip("\n")
        whose = _WHOSE.match(second)
    return Kept(path, at, why, *(whose.groups() if whose else (None, None, None)))


def listing(data_dir: Path, reviewed: bool = False) -> list[Kept]:
    """The files kept aside and not acknowledged yet (``reviewed``: those acknowledged),
    oldest first.  No directory: none."""
    folder = Path(data_dir) / DIR
    if reviewed:
        folder = folder / REVIEWED
    try:
        entries = [e for e in os.scandir(folder)
                   if not (e.name == REVIEWED and not reviewed and e.is_dir(follow_symlinks=False))]
    except FileNotFoundError:
        return []
    kept = [_read_kept(Path(e.path)) if e.is_file(follow_symlinks=False)       # anything else
            else Kept(Path(e.path), e.stat(follow_symlinks=False).st_mtime,     # is reported,
                      None, None, None, None) for e in entries]                 # never opened
    return sorted(kept, key=lambda k: (k.at, k.path.name))


def acknowledge(data_dir: Path, names: list[str]) -> list[Path]:
    """Move the named files (their names in ``DATA_DIR/quarantine/``; every one if
    ``names`` is empty) to ``quarantine/reviewed/``; returns where they went.  A name that
    is not such a file raises FileNotFoundError before anything is moved."""
    folder = Path(data_dir) / DIR
    present = {k.path.name: k.path for k in listing(data_dir)}
    for name in names:
        if name not in present:       # a bare name of a file there: no path, no other dir
            raise FileNotFoundError(f"no file {name!r} kept aside in {folder}")
    chosen = [present[n] for n in dict.fromkeys(names)] if names else list(present.values())
    target = folder / REVIEWED
    make_private_dirs(target)
    moved = []
    for path in chosen:
        dest = target / path.name
        if dest.exists():
            raise FileExistsError(f"{dest} exists already")
        os.rename(path, dest)
        moved.append(dest)
    return moved
