"""asciicast v2 encoding and decoding for bastion recordings.  Pure: no IO, no clock.

A recording is one asciicast v2 file per SSH channel: a JSON header line, then
one ``[time, code, data]`` JSON array per line, ``time`` in seconds since the
channel opened (callers pass it in).  Files are plain asciicast v2 and play in
``asciinema play`` / ``asciinema cat`` and asciinema-player; the v2 format
declares its list of event codes "open to extension", and those players skip
codes they don't know (checked for asciinema 2.4 in the tests).

Event codes
-----------
``"o"``   stdout (or pty output) as UTF-8 text -- what every player shows.
``"e"``   **stderr** of exec channels as UTF-8 text.  A separate code keeps it
          distinguishable from stdout.  Foreign players skip it; ``bastion
          sessions play`` shows it interleaved as the agent saw it, and
          ``bastion sessions export --merge-stderr`` rewrites it to ``"o"``.
``"i"``   input from the agent (keystrokes, exec stdin) as UTF-8 text.
``"ob"``, ``"eb"``, ``"ib"``
          the same three streams for bytes that are **not valid UTF-8**, data
          base64-encoded (RFC 4648, with padding).  Foreign players skip them.
``"oz"``, ``"ez"``, ``"iz"``
          a run of **NUL bytes** in the same three streams, data its length in
          decimal (``"32768"``).  Foreign players skip them.
``"r"``   resize, ``"COLSxROWS"``.
``"m"``   marker: commands and their decisions, approvals, exit, truncation.

Lossless binary (how export reproduces the exact bytes)
-------------------------------------------------------
:class:`StreamEncoder` keeps one stream's bytes.  Each chunk is split into
runs of valid UTF-8 (written as text events) and runs of invalid bytes
(written as base64 events); a multi-byte character cut at a chunk boundary is
held back and joined to the next chunk.  When a chunk would need more than
``MAX_RUNS`` events (typical of tar streams, images, compressed data) the
whole chunk is written as one base64 event instead, so binary data costs
base64's 4/3 and not a JSON array per byte.  Concatenating, per stream, the
UTF-8 encoding of text events and the decoded base64 events gives back the
exact bytes (:class:`Reassembler`).  Text that *is* valid UTF-8 -- including
NUL and escape sequences -- is kept as text (JSON escapes the controls), unless
a chunk of at least ``HEAVY_MIN`` bytes has so many controls that escaping them
(six bytes each for NUL and most others) would cost more than base64: runs of
NULs (``head -c N /dev/zero``, sparse files, UTF-16) are written as base64
events then, 4/3 of their size instead of up to 6x.  ESC, BEL and the controls
with two-byte escapes do not count, so terminal output stays text for every player.
A chunk of at least ``HEAVY_MIN`` bytes that is NUL from end to end (``head -c N
/dev/zero``, ``dd``, the holes of a sparse file or disk image read whole) is one
NUL-run event: its length, not its bytes, so it costs neither base64 nor disk.
NUL runs inside a mixed chunk are not split out (base64 or escapes as above).

Not covered here: files, flushing, size caps (bastion.recording.writer) and
filtering what a replay shows (bastion.proto.sanitize).
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

VERSION = 2

STDOUT, STDERR, INPUT = "o", "e", "i"
RESIZE, MARKER = "r", "m"
BINARY_SUFFIX = "b"
ZERO_SUFFIX = "z"
STREAMS = (STDOUT, STDERR, INPUT)
BINARY_CODES = {s: s + BINARY_SUFFIX for s in STREAMS}
ZERO_CODES = {s: s + ZERO_SUFFIX for s in STREAMS}
CODE_STREAM = {**{s: s for s in STREAMS}, **{b: s for s, b in BINARY_CODES.items()},
               **{z: s for s, z in ZERO_CODES.items()}}
OUTPUT_CODES = frozenset({STDOUT, STDERR, BINARY_CODES[STDOUT], BINARY_CODES[STDERR],
                          ZERO_CODES[STDOUT], ZERO_CODES[STDERR]})
ZERO_RUN_MAX = 1 << 26  # a NUL-run event longer than this is refused when read (a forged file)

MAX_RUNS = 8          # more text/binary runs than this in one chunk: whole chunk as base64

__all__ = [
    "VERSION", "STDOUT", "STDERR", "INPUT", "RESIZE", "MARKER", "BINARY_CODES", "ZERO_CODES",
    "OUTPUT_CODES",
    "CastFormatError", "Event", "header_line", "event_line", "StreamEncoder",
    "parse_header", "parse_event", "iter_cast", "Reassembler",
]


class CastFormatError(ValueError):
    """A line is not valid asciicast v2 (message says which line and why)."""


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False)


def header_line(*, width: int, height: int, timestamp: int, title: str | None = None,
                term: str | None = None, command: str | None = None,
                extra: dict[str, Any] | None = None) -> bytes:
    """The header line (with trailing newline).  ``extra`` goes under ``"bastion"``."""
    header: dict[str, Any] = {"version": VERSION, "width": int(width), "height": int(height),
                    "timestamp": int(timestamp)}
    if title is not None:
        header["title"] = title
    if command is not None:
        header["command"] = command
    header["env"] = {"TERM": term} if term else {}
    if extra:
        header["bastion"] = extra
    return (_dumps(header) + "\n").encode("utf-8")


_encode_str = json.encoder.encode_basestring     # the C encoder json.dumps uses for a str


def event_line(t: float, code: str, data: str) -> bytes:
    """One event line (with trailing newline).  ``t`` is rounded to microseconds."""
    if t < 0:
        t = 0.0
    return ('[%.6f, "%s", %s]\n' % (t, code, _encode_str(data))).encode("utf-8")


# Bytes under 0x20 are what JSON escapes besides \\ and " (json's encoder, ensure_ascii off);
# five have short forms, the rest are written as six bytes (``\u001b``).
_NOT_CONTROL = bytes(range(0x20, 0x100))
# Line ends are found with ``in`` (memchr) instead: a byte a deleting ``translate`` keeps
# costs it a mispredicted branch, and text has one every line.
_NOT_RARE_CONTROL = _NOT_CONTROL + b"\n\r"
_SHORT = {0x08: b"\\b", 0x09: b"\\t", 0x0a: b"\\n", 0x0c: b"\\f", 0x0d: b"\\r"}
# Controls that do not count towards "escape-heavy": the short forms and what terminals
# live on (ESC, BEL), so that screen output stays text for every player.
_TERMINAL = b"\b\t\n\f\r\x07\x1b"
HEAVY_MIN = 256       # shorter chunks always stay text


def _escaped(data: bytes, controls: bytes) -> bytes:
    """Valid UTF-8 ``data`` as the inside of a JSON string, escaped as bytes.

    The same bytes as json's encoder writes for ``data.decode()`` (multi-byte UTF-8
    sequences contain no byte under 0x80, so they pass unchanged).  ``controls`` are
    the bytes of ``data`` under 0x20; one ``replace`` per distinct one.
    """
    out = data.replace(b"\\", b"\\\\").replace(b'"', b'\\"')
    while controls:           # each distinct one (a set() of every byte costs more than
        c = controls[0]       # the few passes over ``controls`` this takes)
        out = out.replace(controls[:1], _SHORT.get(c) or b"\\u%04x" % c)
        controls = controls.translate(None, controls[:1])
    return out


_NULS = bytes(1 << 18)


def _all_nul(data: bytes) -> bool:
    """True if every byte is NUL (a memcmp against a zero buffer: ~0.03 ms/MB)."""
    if len(data) <= len(_NULS):
        return _NULS.startswith(data)
    return data.count(0) == len(data)


def _b64_line(t: float, code: str, data: bytes) -> bytes:
    """A base64 event line; the same bytes as ``event_line`` (base64 needs no JSON escape)."""
    if t < 0:
        t = 0.0
    return b'[%.6f, "%s", "%s"]\n' % (t, code.encode("ascii"), base64.b64encode(data))


class StreamEncoder:
    """Turn one stream's byte chunks into event lines, losslessly (see module doc)."""

    def __init__(self, stream: str) -> None:
        if stream not in STREAMS:
            raise ValueError(f"unknown stream {stream!r}")
        self.stream = stream
        self._code = stream.encode("ascii")
        self._binary = BINARY_CODES[stream]
        self._zero = ZERO_CODES[stream].encode("ascii")
        self._carry = b""

    @property
    def pending(self) -> int:
        """Bytes held back (an incomplete UTF-8 sequence at the end of the last chunk)."""
        return len(self._carry)

    @property
    def carry(self) -> bytes:
        """The bytes held back (see :attr:`pending`)."""
        return self._carry

    def restore(self, carry: bytes) -> None:
        """Take over the :attr:`carry` of another encoder of the same stream."""
        self._carry = bytes(carry)

    def encode(self, t: float, data: bytes) -> list[bytes]:
        """Event lines for ``data`` received at time ``t``."""
        if self._carry:
            data = self._carry + data
            self._carry = b""
        if not data:
            return []
        if len(data) >= HEAVY_MIN and not data[0] and _all_nul(data):
            return [b'[%.6f, "%s", "%d"]\n' % (max(t, 0.0), self._zero, len(data))]
        valid = data.isascii()
        if not valid:
            try:
                data.decode("utf-8")
                valid = True
            except UnicodeDecodeError as exc:
                if exc.reason == "unexpected end of data" and exc.end == len(data) and exc.start:
                    # the first error is a character cut at the end: all before it is
                    # valid; hold the cut character back for the next chunk
                    self._carry = data[exc.start:]
                    data = data[:exc.start]
                    valid = True
        if valid:
            # valid UTF-8 (the common case): escaped as bytes, no str round trip; a
            # chunk whose controls cost more escaped than base64 is written as base64
            controls = data.translate(None, _NOT_RARE_CONTROL)      # (\n and \r are terminal:
            if len(data) >= HEAVY_MIN and len(controls.translate(None, _TERMINAL)) * 15 > len(data):
                return [_b64_line(t, self._binary, data)]             # never count as heavy)
            if b"\n" in data:
                controls += b"\n"
            if b"\r" in data:
                controls += b"\r"
            if t < 0:
                t = 0.0
            return [b'[%.6f, "%s", "%s"]\n' % (t, self._code, _escaped(data, controls))]
        runs: list[tuple[bool, bytes]] = []       # (is_text, bytes)
        pos = 0
        n = len(data)
        while pos < n:
            try:
                data[pos:].decode("utf-8")
                runs.append((True, data[pos:]))
                pos = n
                break
            except UnicodeDecodeError as exc:
                start, end = pos + exc.start, pos + exc.end
                if exc.reason == "unexpected end of data" and end == n:
                    # incomplete character at the end of the chunk: hold it back
                    if start > pos:
                        runs.append((True, data[pos:start]))
                    self._carry = data[start:]
                    pos = n
                    break
                if start > pos:
                    runs.append((True, data[pos:start]))
                runs.append((False, data[start:end]))
                pos = end
            if len(runs) > MAX_RUNS:
                self._carry = b""
                return [_b64_line(t, self._binary, data)]
        merged: list[tuple[bool, bytearray]] = []
        for is_text, chunk in runs:
            if merged and merged[-1][0] == is_text:
                merged[-1][1].extend(chunk)
            else:
                merged.append((is_text, bytearray(chunk)))
        if len(merged) > MAX_RUNS:
            whole = data[:n - len(self._carry)]
            return [_b64_line(t, self._binary, bytes(whole))]
        return [event_line(t, self.stream, bytes(chunk).decode("utf-8")) if is_text
                else _b64_line(t, self._binary, bytes(chunk))
                for is_text, chunk in merged]

    def flush(self, t: float) -> list[bytes]:
        """Lines for bytes still held back (call when the stream ends)."""
        if not self._carry:
            return []
        data, self._carry = self._carry, b""
        return [_b64_line(t, self._binary, data)]


@dataclass(frozen=True)
class Event:
    """One decoded event.  ``data`` is the JSON string as stored."""

    time: float
    code: str
    data: str

    @property
    def stream(self) -> str | None:
        """``"o"``, ``"e"`` or ``"i"`` for data events, else None."""
        return CODE_STREAM.get(self.code)

    @property
    def is_binary(self) -> bool:
        return self.code in CODE_STREAM and self.code not in STREAMS

    def payload(self) -> bytes:
        """The exact bytes of a data event."""
        if self.code.endswith(ZERO_SUFFIX) and self.code in CODE_STREAM:
            data = self.data
            if not (data.isascii() and data.isdigit()) or int(data) > ZERO_RUN_MAX:
                raise CastFormatError(f"bad NUL-run length in {self.code!r} event at {self.time}")
            return bytes(int(data))
        if self.is_binary:
            try:
                return base64.b64decode(self.data, validate=True)
            except binascii.Error as exc:
                raise CastFormatError(f"bad base64 in {self.code!r} event at {self.time}") from exc
        return self.data.encode("utf-8")

    def text(self) -> str:
        """Data as text; binary payloads decoded with U+FFFD for invalid bytes."""
        if self.is_binary:
            return self.payload().decode("utf-8", errors="replace")
        return self.data


def parse_header(line: str | bytes) -> dict[str, Any]:
    """Decode and check a header line."""
    try:
        header = json.loads(line)
    except ValueError as exc:
        raise CastFormatError(f"header is not JSON: {exc}") from exc
    if not isinstance(header, dict) or header.get("version") != VERSION:
        raise CastFormatError("not an asciicast v2 header (version must be 2)")
    for key in ("width", "height"):
        if not isinstance(header.get(key), int):
            raise CastFormatError(f"header {key!r} must be an integer")
    return header


def parse_event(line: str | bytes) -> Event:
    """Decode one event line."""
    try:
        value = json.loads(line)
    except ValueError as exc:
        raise CastFormatError(f"event is not JSON: {exc}") from exc
    if (not isinstance(value, list) or len(value) != 3
            or not isinstance(value[0], (int, float)) or isinstance(value[0], bool)
            or not isinstance(value[1], str) or not isinstance(value[2], str)):
        raise CastFormatError("event must be [time, code, data]")
    return Event(float(value[0]), value[1], value[2])


def iter_cast(lines: Iterable[bytes | str], *, allow_partial_tail: bool = False
              ) -> tuple[dict[str, Any], Iterator[Event]]:
    """Header and an iterator of events from the lines of a cast file.

    With ``allow_partial_tail`` a last line without its newline (a recording
    still being written) is ignored instead of raising.
    """
    it = iter(lines)
    try:
        first = next(it)
    except StopIteration:
        raise CastFormatError("empty recording (no header)") from None
    header = parse_header(first)

    def events() -> Iterator[Event]:
        lineno = 1
        for line in it:
            lineno += 1
            ends = line.endswith(b"\n") if isinstance(line, bytes) else line.endswith("\n")
            if not line.strip():
                continue
            try:
                yield parse_event(line)
            except CastFormatError as exc:
                if allow_partial_tail and not ends:
                    return
                raise CastFormatError(f"line {lineno}: {exc}") from exc

    return header, events()


class Reassembler:
    """Collect the exact bytes of each stream from decoded events."""

    def __init__(self) -> None:
        self.streams: dict[str, bytearray] = {s: bytearray() for s in STREAMS}

    def feed(self, event: Event) -> None:
        stream = event.stream
        if stream is not None:
            self.streams[stream] += event.payload()

    def bytes(self, stream: str = STDOUT) -> bytes:
        return bytes(self.streams[stream])
