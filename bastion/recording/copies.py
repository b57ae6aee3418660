"""A transfer's stored copy (bastion.recording.content) checked, put into the store, read back.

The ``transfers`` row links its copy with ``content`` JSON ``{path, bytes, truncated,
sha256}`` (sealed in the hash chain).  On SQLite the copy is only that file, in the data dir
of the node that relayed the transfer.  On a PostgreSQL store:

* the recording worker (bastion.recording.writer) puts it into the store
  (bastion.store.transfercopies) in the transaction that inserts the row, streaming the file
  in pieces and comparing what it inserted with the JSON (size, SHA-256):
  :func:`store_copy`.  The relay closed the file before it queued the row
  (bastion.ssh.sftprelay), so a file missing or changed by then was changed by someone
  else: the worker fails as for a failed write (fail closed: the row and the pieces are
  taken back, nothing is committed half).  The replay that follows keeps the row -- it is
  the audit record of the transfer -- with ``"lost": why`` added to its JSON
  (:func:`mark_lost`): a row never links a copy the store lacks without saying so;
* ``bastion store import`` checks every copy of a one-node source (:func:`check_source`)
  and puts each into the store under the transfer's id there, renumbered or not
  (:func:`upload_source`);
* readers (:func:`read_copy`: ``transfers show --content``) take this node's file when it
  is there and its SHA-256 is the row's, else the store's copy, checked the same way.

Not covered: making the copy (content.py), verify and prune (bastion.recording.verify).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any, Callable, Iterator

from bastion.errors import RecordingError


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


def _open(data_dir: Path, info: dict[str, Any]) -> io.BufferedReader:
    """The copy's file, open, if its size is the one recorded."""
    path = local_path(data_dir, info, "the transfer")
    try:
        fh = open(path, "rb")
    except OSError as exc:
        raise CopyError(f"the stored copy cannot be read: {exc.strerror or exc}") from exc
    size = os.fstat(fh.fileno()).st_size
    if size != info.get("bytes"):
        fh.close()
        raise CopyError(f"the stored copy changed after it was written: it has {size} bytes, "
                        f"not the {info.get('bytes')} recorded")
    return fh


def _compare(digest: str, size: int, info: dict[str, Any]) -> None:
    if size != info.get("bytes") or digest != info.get("sha256"):
        raise CopyError("the stored copy changed after it was written: its SHA-256 is not "
                        "the one recorded")


def check_copy(data_dir: Path, content: str | None) -> int | None:
    """Check the file a row's ``content`` links against it (size, SHA-256), read in pieces;
    its size (None: no copy is linked).  Raises CopyError saying what is wrong."""
    info = link({"content": content})
    if info is None:
        return None
    with _open(data_dir, info) as fh:       # its size checked
        try:
            digest = hashlib.file_digest(fh, "sha256").hexdigest()
        except OSError as exc:
            raise CopyError(f"the stored copy cannot be read: {exc.strerror or exc}") from exc
    _compare(digest, int(info["bytes"]), info)
    return int(info["bytes"])


def store_copy(conn: Any, data_dir: Path, transfer_id: int, content: str | None) -> int | None:
    """Put the file a row's ``content`` links into the store as transfer ``transfer_id``'s
    copy, inside the caller's transaction, in pieces; its size (None: no copy is linked).
    What was inserted is compared with the JSON: on CopyError the caller takes the pieces
    back (its transaction)."""
    from bastion.store import transfercopies
    info = link({"content": content})
    if info is None:
        return None
    with _open(data_dir, info) as fh:
        try:
            digest, size = transfercopies.upload(conn, transfer_id, fh)
        except OSError as exc:
            raise CopyError(f"the stored copy cannot be read: {exc.strerror or exc}") from exc
    _compare(digest, size, info)
    return size


def mark_lost(content: str, why: str) -> str:
    """A row's ``content`` JSON saying its copy never reached the store, and why."""
    info = json.loads(content)
    return json.dumps({**info, "lost": why}, sort_keys=True)


def _source_copies(conn: Any) -> Iterator[tuple[int, str]]:
    """``(transfer id, content JSON)`` of each row of the index ``conn`` that links a copy."""
    for row in conn.execute("SELECT id, content FROM transfers WHERE content IS NOT NULL "
                            "ORDER BY id"):
        yield int(row["id"]), str(row["content"])


def _import_error(transfer_id: int, data_dir: Path, exc: CopyError) -> RecordingError:
    return RecordingError(f"transfer {transfer_id} in {data_dir}: {exc}; nothing was imported",
                          hint="restore the file from a backup of the data dir, or run "
                               f"`bastion verify --data-dir {data_dir}`")


def check_source(src: Any, data_dir: Path) -> tuple[int, int]:
    """``bastion store import``: every copy the rows of a one-node index ``src`` link,
    checked in ``data_dir``; (how many, their bytes).  Raises RecordingError for one
    missing or changed: nothing is imported."""
    count = total = 0
    for tid, content in _source_copies(src):
        try:
            total += check_copy(data_dir, content) or 0
        except CopyError as exc:
            raise _import_error(tid, data_dir, exc) from exc
        count += 1
    return count, total


def upload_source(conn: Any, src: Any, data_dir: Path, new_id: Callable[[int], int]) -> None:
    """``bastion store import``: every copy of a one-node index ``src`` into the store, under
    its transfer's id there (``new_id``), inside the import's transaction."""
    for tid, content in _source_copies(src):
        try:
            store_copy(conn, data_dir, new_id(tid), content)
        except CopyError as exc:
            raise _import_error(tid, data_dir, exc) from exc


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
