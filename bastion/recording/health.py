"""Whether recording can go on: disk headroom, the reserve, the probe a new worker must pass.

* **The reserve** (``DATA_DIR/recorder.reserve``, ``RESERVE_BYTES``): space set aside
  while all is well.  When a write fails for lack of space, the failing recording worker
  deletes it, so that what the agents already saw, the failure markers, the exit
  statuses and the closed rows can still be written (docs/RECORDINGS.md, "Faults").
* **Headroom**: a worker takes sessions only when, with the reserve in place, the data
  dir's file system still has ``HEADROOM_BYTES`` and ``HEADROOM_INODES`` free.
* **The probe** (:func:`probe`): the reserve, the headroom, a file written and fsync'ed
  in the recordings dir, and the index's write lock.  A respawned worker runs it after
  closing what its predecessor left open; sessions are accepted again once it passes.

Every function here runs in the recording worker, except :func:`headroom` (also read by
``bastion status``).  Not covered: when to probe and respawn (supervisor.py).
"""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path

from bastion.recording.ops import HIGH_WATER

RESERVE_NAME = "recorder.reserve"
RESERVE_BYTES = 4 * 1024 * 1024
HEADROOM_BYTES = HIGH_WATER          # the queue's high-water mark: what one burst may need
HEADROOM_INODES = 64

SPACE_ERRNOS = {errno.ENOSPC, errno.EDQUOT}


def is_space_error(exc: BaseException | None) -> bool:
    """A full disk or quota, as an OSError or as SQLite's SQLITE_FULL."""
    if isinstance(exc, OSError):
        return exc.errno in SPACE_ERRNOS
    if isinstance(exc, sqlite3.Error):
        return "full" in str(exc).lower()
    return False


def headroom(data_dir: Path) -> tuple[int, int | None]:
    """Free bytes and free inodes (None: the file system does not count them) for the data dir's
    user (statvfs ``f_bavail`` / ``f_favail``)."""
    st = os.statvfs(data_dir)
    inodes = st.f_favail if st.f_files else None
    return st.f_bavail * st.f_frsize, inodes


def reserve_path(data_dir: Path) -> Path:
    return Path(data_dir) / RESERVE_NAME


def ensure_reserve(data_dir: Path) -> None:
    """Create the reserve (or complete it).  Raises OSError when there is no room for it."""
    from bastion.private import open_private_file
    path = reserve_path(data_dir)
    fd = open_private_file(path, os.O_WRONLY | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0))
    try:
        if os.fstat(fd).st_blocks * 512 >= RESERVE_BYTES:
            return
        try:
            os.posix_fallocate(fd, 0, RESERVE_BYTES)
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, getattr(errno, "ENOTSUP", -1)):
                raise
            block = b"\0" * 65536                     # no fallocate here: real blocks
            os.lseek(fd, 0, os.SEEK_SET)
            for _ in range(RESERVE_BYTES // len(block)):
                os.write(fd, block)
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        fd = -1
        try:
            path.unlink()                          # a partial reserve would be counted as space
        except OSError:
            pass
        raise
    finally:
        if fd >= 0:
            os.close(fd)


def release_reserve(data_dir: Path) -> bool:
    """Delete the reserve; True if there was one."""
    try:
        reserve_path(data_dir).unlink()
        return True
    except FileNotFoundError:
        return False


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def index_writable(conn: sqlite3.Connection) -> str | None:
    """Take and release the index's write lock (waits up to the busy timeout).  None: free."""
    if conn.in_transaction:                        # ours already (or taken now, if the
        lock = getattr(conn, "lock_now", None)     # transaction was begun without it)
        if lock is not None:
            try:
                lock(wait=True)
            except sqlite3.Error as exc:
                return f"the session index is not writable: {exc}"
        return None
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
    except sqlite3.Error as exc:
        return f"the session index is not writable: {exc}"
    return None


def probe(data_dir: Path, conn: sqlite3.Connection) -> str | None:
    """Can sessions be recorded?  None, or why not (a sentence naming no server path)."""
    from bastion.private import open_private_file
    from bastion.recording.schema import RECORDINGS_DIR
    data_dir = Path(data_dir)
    try:
        ensure_reserve(data_dir)
    except OSError as exc:
        return f"no room for the recording reserve: {exc.strerror or exc}"
    try:
        free, inodes = headroom(data_dir)
    except OSError as exc:
        return f"cannot read the data dir's free space: {exc.strerror or exc}"
    if free < HEADROOM_BYTES:
        return (f"the data dir's disk is full: {_mb(free)} free besides the reserve, "
                f"{_mb(HEADROOM_BYTES)} needed")
    if inodes is not None and inodes < HEADROOM_INODES:
        return f"the data dir's disk is out of inodes: {inodes} free, {HEADROOM_INODES} needed"
    path = data_dir / RECORDINGS_DIR / f".probe-{os.getpid()}"
    try:
        fd = open_private_file(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        try:
            os.write(fd, b"probe\n")
            os.fsync(fd)
        finally:
            os.close(fd)
            path.unlink(missing_ok=True)
    except OSError as exc:
        return f"cannot write recordings: {exc.strerror or exc}"
    return index_writable(conn)
