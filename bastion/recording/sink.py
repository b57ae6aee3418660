"""One open recording file in the recording worker: buffered whole-line writes, masking, the cap.

A :class:`Sink` owns one asciicast file.  Events are appended to a buffer of whole
lines and written with one ``os.write`` each time the worker ends a batch (and when
the buffer passes ``BUFFER_BYTES``), so a ``kill -9`` never leaves half an event,
short of a torn write by the OS.  A write that fails part-way (disk full) keeps the
unwritten rest in the buffer: written again after space was freed, the file gets each
byte once, and the running SHA-256 always matches what is in the file.

Masking: with ``detectors``, every stream is masked here (one streaming Masker per
stream) before it is encoded.  What a masker holds back (the last few hundred bytes,
which could still be the start of a secret) is written only once the masker has
decided it: when more data comes, or when the stream ends (:meth:`Sink.finish`: the
channel closes, the bastion process is gone, recording failed).  Never on a timer:
a secret printed in two parts a moment apart is masked whole.

Taking over undecided output: with each acknowledgement the worker tells the bastion
process what its maskers and encoders hold (:class:`TailReport`, :meth:`Sink.tails`: the
masker's whole state and the encoder's cut character, per stream).  The agent was shown
those bytes; when the worker dies, the next one gets them back (:meth:`Sink.resume`) and
decides them as this one would have -- all but what the file already holds past the size
reported with them (written by a worker killed before it could acknowledge that).

Adoption: a worker started after another one failed (crashed, disk full, index locked)
takes over the channels that were open in it: :meth:`Sink.adopt` opens the existing
file, cuts it after its last complete event (only a torn write could need it), hashes
what is there and goes on appending (``bastion.recording.recover`` does the same at
start-up for a dead process's recordings).

Not covered: the index (writer.py), the process around it (worker.py).
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any, Callable, Mapping

from bastion.private import make_private_dirs, open_private_file
from bastion.proto import asciicast
from bastion.proto.masker import Masker

log = logging.getLogger("bastion.recording")

BUFFER_BYTES = 256 * 1024
CAP_RESERVE = 512            # bytes kept under max_bytes for the truncation and end markers

Notify = Callable[[tuple[Any, ...]], None]     # events for the bastion process
Detectors = tuple[Any, ...]                     # bastion.proto.detectors.Detector
OnWrite = Callable[[int, int, bytes], None]     # (channel id, offset, bytes written there)
#: one stream's undecided output: the masker's snapshot (context, undecided bytes, the
#: secret being dropped), the encoder's carry (a cut UTF-8 character), the file's size then
Tail = tuple[bytes, bytes, Any, bytes, int]


class Sink:
    """One open recording file (see the module doc).  ``size``: bytes in file + buffer."""

    def __init__(self, cid: int, path: Path, fd: int, max_bytes: int, notify: Notify,
                 detectors: Detectors | None = None, on_write: OnWrite | None = None) -> None:
        self.cid = cid
        self.on_write = on_write         # (cid, offset, bytes) of each write: the shared store
        self.path = path
        self.fd = fd
        self.detectors = detectors
        self.maskers: dict[str, Masker] = {}
        self.notify = notify             # events for the bastion process ("truncated", cid)
        self.bytes_in = self.bytes_out = 0   # the channel's counters, as last sent with data
        self.max_bytes = max_bytes
        self.buf = bytearray()
        self.size = 0
        self.written = 0                 # bytes in the file
        self.hasher = hashlib.sha256()
        self.encoders = {s: asciicast.StreamEncoder(s) for s in asciicast.STREAMS}
        self.truncated = False
        self.last_t = 0.0

    # -- opening -------------------------------------------------------------------
    @classmethod
    def create(cls, cid: int, path: Path, header: bytes, max_bytes: int, notify: Notify,
               detectors: Detectors | None = None, on_write: OnWrite | None = None) -> "Sink":
        """A new recording file (0600 in 0700 dirs) starting with ``header``."""
        make_private_dirs(path.parent)
        fd = open_private_file(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND)
        sink = cls(cid, path, fd, max_bytes, notify, detectors, on_write)
        sink._append(header)
        try:
            sink.flush()
        except OSError:
            os.close(fd)
            raise
        return sink

    @classmethod
    def adopt(cls, cid: int, path: Path, header: bytes, max_bytes: int, notify: Notify,
              detectors: Detectors | None = None, on_write: OnWrite | None = None) -> "Sink":
        """Go on with a recording another worker had open (see the module doc).

        A missing file (its creation was what failed) is created with ``header``.
        """
        from bastion.recording.recover import _valid_prefix
        try:
            fd = os.open(path, os.O_RDWR | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0))
        except FileNotFoundError:
            return cls.create(cid, path, header, max_bytes, notify, detectors, on_write)
        try:
            size = os.fstat(fd).st_size
            keep, last_t, head = _valid_prefix(fd, size)
            if head is None:
                keep = 0
            if keep != size:
                log.warning("recording %s: cutting %d bytes of incomplete data left by the "
                            "previous recording worker", path, size - keep)
                os.ftruncate(fd, keep)
            sink = cls(cid, path, fd, max_bytes, notify, detectors, on_write)
            os.lseek(fd, 0, os.SEEK_SET)
            left = keep
            while left:
                chunk = os.read(fd, min(left, 1 << 20))
                if not chunk:
                    break
                sink.hasher.update(chunk)
                left -= len(chunk)
            sink.size = sink.written = keep
            sink.last_t = last_t or 0.0
            if keep == 0:
                sink._append(header)
                sink.flush()
        except BaseException:
            os.close(fd)
            raise
        return sink

    # -- writing -------------------------------------------------------------------
    def _append(self, line: bytes) -> None:
        self.buf += line
        self.size += len(line)
        if len(self.buf) >= BUFFER_BYTES:
            self.flush()

    def flush(self) -> None:
        """Write the buffer out.  On a failure the unwritten rest stays in the buffer."""
        if not self.buf:
            return
        view = memoryview(self.buf)
        done = 0
        try:
            while done < len(view):
                with view[done:] as rest:      # released even if the exception keeps it
                    n = os.write(self.fd, rest)
                    self.hasher.update(rest[:n])
                    if self.on_write is not None:
                        self.on_write(self.cid, self.written + done, bytes(rest[:n]))
                done += n
        finally:
            view.release()
            del self.buf[:done]
            self.written += done

    def _room(self, lines: list[bytes], *, reserve: int) -> bool:
        return self.size + sum(map(len, lines)) <= self.max_bytes - reserve

    def _truncate(self, t: float) -> None:
        self.truncated = True
        self.notify(("truncated", self.cid))
        label = (f"bastion: recording truncated at {self.size} bytes (cap {self.max_bytes}); "
                 "the channel went on, its further data is not recorded")
        self._append(asciicast.event_line(t, asciicast.MARKER, label))

    def data(self, stream: str, t: float, data: bytes) -> None:
        if self.truncated:
            return
        self.last_t = t
        if self.detectors is not None:
            masker = self.maskers.get(stream)
            if masker is None:
                masker = self.maskers[stream] = Masker(self.detectors)
            data = masker.feed(data)
            if not data:
                return
        else:
            data = bytes(data)          # (a view of the worker's receive buffer, frames.py)
        self._encoded(stream, t, data)

    @property
    def held(self) -> int:
        """Bytes the maskers and encoders hold back (not decided or not complete yet)."""
        return (sum(m.pending for m in self.maskers.values())
                + sum(e.pending for e in self.encoders.values()))

    def tails(self) -> dict[str, Tail]:
        """Per stream, what is not written because it is undecided or incomplete (streams
        holding nothing are left out; a truncated recording takes nothing more)."""
        if self.truncated:
            return {}
        out = {}
        for stream, enc in self.encoders.items():
            masker = self.maskers.get(stream)
            ctx, held, sup = masker.snapshot() if masker is not None else (b"", b"", None)
            if held or enc.pending:
                out[stream] = (ctx, held, sup, enc.carry, self.size)
        return out

    def resume(self, stream: str, tail: Tail) -> None:
        """Take over a stream's :meth:`tails` from a worker that is gone (before any new data
        of the stream): its bytes are written once decided, as that worker would have.

        That worker may have gone on after it reported the tail, deciding and writing part
        of it with data it never acknowledged: what the file holds of the stream past the
        size it reported is not written again.  When that is not the tail as it was (it
        masked a secret there, or was dropping one) its decision stands and nothing more
        of the tail is written.
        """
        if self.truncated:
            return
        ctx, held, sup, carry, at = tail
        skip = 0
        written = self._written_since(at, stream)
        if written:
            shown = carry + held
            if (sup is not None or len(written) < len(carry) or len(written) >= len(shown)
                    or not shown.startswith(written)):
                if not written.startswith(shown):
                    log.warning("recording %s: stream %s: the previous recording worker "
                                "decided its held-back bytes after its last acknowledgement; "
                                "its decision stands", self.path, stream)
                return
            skip, carry = len(written) - len(carry), b""
        self.encoders[stream].restore(carry)
        if self.detectors is not None:
            masker = self.maskers.get(stream)
            if masker is None:
                masker = self.maskers[stream] = Masker(self.detectors)
            masker.restore((ctx, held, sup))
            masker.skip(skip)
        elif held:                                  # (a stream without masks holds none)
            self._encoded(stream, self.last_t, held[skip:])

    def _written_since(self, at: int, stream: str) -> bytes:
        """The bytes of ``stream`` the file holds past offset ``at`` (written after it)."""
        if self.written <= at or at <= 0:
            return b""
        found = bytearray()
        try:
            for line in os.pread(self.fd, self.written - at, at).splitlines():
                event = asciicast.parse_event(line)
                if event.stream == stream:
                    found += event.payload()
        except asciicast.CastFormatError:       # (adopt left whole events only)
            return b""
        return bytes(found)

    def finish(self, t: float) -> None:
        """The streams end here: decide and write what the maskers and encoders hold."""
        t = max(t, self.last_t)
        for stream, masker in self.maskers.items():
            if masker.pending and not self.truncated:
                data = masker.flush()
                if data:
                    self._encoded(stream, t, data)
        if not self.truncated:
            tail = [line for enc in self.encoders.values() for line in enc.flush(t)]
            if not self._room(tail, reserve=CAP_RESERVE):
                self._truncate(t)
            else:
                for line in tail:
                    self._append(line)

    def _encoded(self, stream: str, t: float, data: bytes) -> None:
        lines = self.encoders[stream].encode(t, data)
        if not self._room(lines, reserve=CAP_RESERVE):
            self._truncate(t)
            return
        for line in lines:
            self._append(line)

    def event(self, t: float, code: str, text: str) -> None:
        if self.truncated:
            return
        self.last_t = t
        line = asciicast.event_line(t, code, text)
        if not self._room([line], reserve=CAP_RESERVE):
            self._truncate(t)
            return
        self._append(line)

    def end_marker(self, t: float, label: str) -> None:
        """A marker that may use the reserve under the cap (failure, exit status)."""
        line = asciicast.event_line(max(t, self.last_t), asciicast.MARKER, label)
        if self.size + len(line) <= self.max_bytes:
            self._append(line)

    def close(self, t: float, labels: tuple[str, ...] = ()) -> str:
        """Finish the streams, write ``labels`` as markers, fsync, close; return the SHA-256."""
        try:
            self.finish(t)
            for label in labels:
                self.end_marker(t, label)
            self.flush()
            os.fsync(self.fd)
        finally:
            self.release()
        return self.hasher.hexdigest()

    def release(self) -> None:
        """Close the file descriptor (what is still buffered is dropped)."""
        if self.fd >= 0:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = -1


class TailReport:
    """What the bastion process was told the sinks hold undecided, and the changes since.

    :meth:`touch` a channel whose streams may have changed (data, close); :meth:`changes`
    returns ``{(cid, stream): Tail}`` for what is held now and ``None`` for what was told
    and is written (or gone) since.  A stream taken over (:meth:`resumed`) counts as told.
    """

    def __init__(self) -> None:
        self._told: dict[int, frozenset[str]] = {}
        self._touched: set[int] = set()

    def touch(self, cid: int) -> None:
        self._touched.add(cid)

    def touch_all(self) -> None:
        self._touched.update(self._told)

    def resumed(self, cid: int, stream: str) -> None:
        self._told[cid] = self._told.get(cid, frozenset()) | {stream}
        self._touched.add(cid)

    def changes(self, sinks: Mapping[int, Sink]) -> dict[tuple[int, str], Tail | None]:
        out: dict[tuple[int, str], Tail | None] = {}
        for cid in self._touched:
            sink = sinks.get(cid)
            now = sink.tails() if sink is not None else {}
            for stream in self._told.get(cid, frozenset()) - now.keys():
                out[cid, stream] = None
            for stream, tail in now.items():
                out[cid, stream] = tail
            if now:
                self._told[cid] = frozenset(now)
            else:
                self._told.pop(cid, None)
        self._touched.clear()
        return out
