"""The stored copy of a transferred file (``[settings] store_transfers = true``).

:class:`ContentCapture` receives a file's bytes in offset order (from
:class:`bastion.transfer.digest.Stream`, the same bytes the row's SHA-256 is of), masks
them like recorded output (:class:`bastion.proto.masker.Masker`, the bastion's detectors)
and writes them beside the channel's recording, ``s<S>-c<C>-t<N>.bin``, mode 0600.  Past
``limit`` bytes of the file it keeps nothing more: the row's hash still covers the whole
file; the stored copy ends with a marker line saying where it was cut and why.  A
transfer that was not one ordered stream (a resumed or out-of-order write) is marked
incomplete the same way.

:meth:`ContentCapture.close` returns the JSON the ``transfers`` row keeps in ``content``:
``{"path": relative to the data dir, "bytes": stored, "truncated": bool, "sha256": of the
stored file}``.  ``bastion transfers show ID`` prints it back.  File errors raise
RecordingError (the channel stops, as for any recording failure); after one, ``close``
raises too, so no row links a file that is not what its SHA-256 says.

Where the copy lives: on SQLite only in that file.  On a PostgreSQL store the recording
worker also writes it into the store (bastion.store.transfercopies) in the transaction
that inserts the row, after :func:`copy_for_store` has checked the file against the row's
JSON; a file missing or changed by then fails the worker as a write failure does, and the
replay that follows records the row with ``"lost": why`` added to its JSON (the row is the
audit of the transfer and is kept; it never links a copy the store lacks without saying
so).  :func:`read_copy` reads a copy back: this node's file when it is there and matches,
else the store's, each checked against the row's SHA-256.

Not covered: rsync (its protocol stream is the exec channel's recording), a reader that
reads the same file twice (only the first ordered pass is stored).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from bastion.errors import RecordingError
from bastion.private import open_private_file

_serial = itertools.count(1)


def marker(kept: int, why: str) -> bytes:
    return (f"\n[bastion: stored content ends here after {kept} bytes of the file: {why}; "
            "the transfer row's sha256 is of the bytes transferred]\n").encode()


class ContentCapture:
    """One file's stored copy (see the module doc)."""

    def __init__(self, data_dir: Path, cast_path: Path, detectors: Sequence[Any],
                 limit: int) -> None:
        from bastion.proto.masker import Masker
        stem = cast_path.name.rsplit(".", 1)[0]
        path = cast_path.with_name(f"{stem}-t{next(_serial)}.bin")
        self.rel = str(path.relative_to(data_dir))
        self.limit = limit
        self.fed = 0                       # file bytes received
        self.kept = 0                      # file bytes passed to the masker
        self.written = 0
        self.sha = hashlib.sha256()
        self.masker = Masker(detectors)
        try:
            self.fd = open_private_file(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        except OSError as exc:
            raise RecordingError(f"cannot store transfer content in {path}: "
                                 f"{exc.strerror or exc}") from exc
        self.closed = False
        self.broken = False

    def feed(self, data: bytes) -> None:
        """The next bytes of the file, in order."""
        self.fed += len(data)
        room = self.limit - self.kept
        if room <= 0 or self.closed:
            return
        part = data[:room]
        self.kept += len(part)
        self._write(self.masker.feed(part))

    def close(self, *, complete: bool) -> str:
        """Finish the stored copy; ``complete``: the stream was the whole transfer, in order.
        Returns the JSON for the row's ``content`` column."""
        if self.closed:
            raise RecordingError("transfer content closed twice")
        if self.broken:                 # a write failed: the file is not what was hashed,
            self.closed = True          # so no row links it
            try:
                os.close(self.fd)
            except OSError:
                pass
            raise RecordingError("transfer content could not be written whole")
        self._write(self.masker.flush())
        truncated = self.fed > self.kept
        if truncated:
            self._write(marker(self.kept, f"store_transfers_max is {self.limit} bytes, the "
                                          f"file had at least {self.fed}"))
        elif not complete:
            self._write(marker(self.kept, "the transfer was not one stream from offset 0 "
                                          "(resumed, rewritten or out of order)"))
            truncated = True
        self.closed = True
        try:
            os.close(self.fd)
        except OSError as exc:
            raise RecordingError(f"cannot store transfer content: {exc}") from exc
        return json.dumps({"path": self.rel, "bytes": self.written, "truncated": truncated,
                           "sha256": self.sha.hexdigest()}, sort_keys=True)

    def _write(self, data: bytes) -> None:
        if not data:
            return
        self.sha.update(data)
        self.written += len(data)
        view = memoryview(data)
        try:
            while view:
                n = os.write(self.fd, view)
                view = view[n:]
        except OSError as exc:
            self.broken = True
            raise RecordingError(f"cannot store transfer content: {exc.strerror or exc}") from exc


# -- reading a copy back ---------------------------------------------------------------------

class CopyError(RecordingError):
    """A stored copy that cannot be used: missing, changed, or its link is not one."""


def link(row: dict[str, Any]) -> dict[str, Any] | None:
    """The ``content`` JSON of a transfers row as a dict (None: no copy was stored)."""
    try:
        info = json.loads(row.get("content") or "null")
    except ValueError:
        return None
    return info if isinstance(info, dict) and isinstance(info.get("path"), str) else None


def local_path(data_dir: Path, info: dict[str, Any], what: str) -> Path:
    """Where the copy ``info`` names is in ``data_dir``; refused when the path leaves the
    recordings dir (the index was changed)."""
    from bastion.recording.schema import RECORDINGS_DIR
    base = (Path(data_dir) / RECORDINGS_DIR).resolve()
    path = (Path(data_dir) / str(info["path"])).resolve()
    if base not in path.parents:
        raise CopyError(f"{what}: its content path leaves the recordings dir; the index was "
                        "changed", hint="run bastion verify")
    return path


def _read_file(path: Path, info: dict[str, Any]) -> bytes:
    """The file, read only when its size is the copy's (a bigger one is not read whole)."""
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if size != info.get("bytes"):
            raise CopyError(f"it has {size} bytes, not the {info.get('bytes')} recorded")
        return fh.read()


def copy_for_store(data_dir: Path, content: str) -> tuple[bytes, dict[str, Any]] | None:
    """The bytes of the copy a new row's ``content`` links, read from this node's file and
    checked against the JSON (size, SHA-256): what the recording worker puts in the store.
    None: the JSON links no copy.  Raises CopyError saying what is wrong."""
    info = link({"content": content})
    if info is None:
        return None
    path = local_path(data_dir, info, "the transfer")
    try:
        data = _read_file(path, info)
    except OSError as exc:
        raise CopyError(f"the stored copy cannot be read: {exc.strerror or exc}") from exc
    except CopyError as exc:
        raise CopyError(f"the stored copy changed after it was written: {exc}") from exc
    if hashlib.sha256(data).hexdigest() != info.get("sha256"):
        raise CopyError("the stored copy changed after it was written: its SHA-256 is not "
                        "the one recorded")
    return data, info


def mark_lost(content: str, why: str) -> str:
    """A row's ``content`` JSON saying its copy never reached the store, and why."""
    info = json.loads(content)
    return json.dumps({**info, "lost": why}, sort_keys=True)


def read_copy(data_dir: Path, row: dict[str, Any], *,
              store_copy: Callable[[], bytes | None] | None = None
              ) -> tuple[bytes, dict[str, Any]]:
    """The stored copy of transfer ``row`` and its ``content`` record: this node's file when
    it is there and its SHA-256 is the row's; else (``store_copy``: a callable giving the
    store's bytes or None, on a PostgreSQL store) the store's copy, checked the same way.
    Raises CopyError when none was stored, none is left, or what is left was changed."""
    what = f"transfer {row.get('id')}"
    info = link(row)
    if info is None:
        raise CopyError(f"{what} has no stored content",
                        hint="contents are kept only with [settings] store_transfers = "
                             "true, for sftp get and put")
    path = local_path(data_dir, info, what)
    sha = info.get("sha256")
    local_error: str | None = None
    try:
        data = path.read_bytes()
    except OSError as exc:
        local_error = f"the stored content {path} cannot be read: {exc.strerror or exc}"
    else:
        if hashlib.sha256(data).hexdigest() == sha:
            return data, info
        local_error = (f"the stored content {path} was modified: its SHA-256 does not match "
                       "the one recorded with the transfer")
    stored = store_copy() if store_copy is not None else None
    if stored is not None:
        if hashlib.sha256(stored).hexdigest() == sha:
            return stored, info
        raise CopyError(f"the store's copy of {what}'s content was modified: its SHA-256 does "
                        "not match the one recorded with the transfer", hint="run bastion verify")
    if store_copy is not None:
        if info.get("lost"):
            raise CopyError(f"the stored content of {what} never reached the store: "
                            f"{info['lost']}; only the node that relayed it had the file")
        local_error = (f"{local_error}; the store has no copy of it (stored on the relaying "
                       "node only, before the store kept copies)")
    raise CopyError(local_error, hint="run bastion verify")


def checked_copies(conn: Any, data_dir: Path) -> Iterator[tuple[int, bytes]]:
    """Each stored copy the transfers rows of the index ``conn`` link: (transfer id, its bytes),
    read from ``data_dir`` and checked against the row (``bastion store import`` of a one-node
    data dir).  Raises RecordingError for one missing or changed: nothing is imported."""
    for row in conn.execute("SELECT id, content FROM transfers WHERE content IS NOT NULL "
                            "ORDER BY id"):
        try:
            found = copy_for_store(data_dir, row["content"])
        except CopyError as exc:
            raise RecordingError(
                f"transfer {row['id']} in {data_dir}: {exc}; nothing was imported",
                hint="restore the file from a backup of the data dir, or run `bastion verify "
                     f"--data-dir {data_dir}`") from exc
        if found is not None:
            yield int(row["id"]), found[0]
