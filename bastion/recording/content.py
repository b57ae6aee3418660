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

Where the copy lives: on SQLite only in that file; on a PostgreSQL store in the store too,
checked and put there by the recording worker, and read back on any node
(bastion.recording.copies).

Not covered: rsync (its protocol stream is the exec channel's recording), a reader that
reads the same file twice (only the first ordered pass is stored).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from pathlib import Path
from typing import Any, Sequence

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

