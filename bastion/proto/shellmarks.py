"""Finding the mediated shell's marks in host output, and taking them out.

``MarkScanner(nonce).feed(data) -> (clean, marks)``: ``clean`` is the output without the
marks that carry this session's nonce (what the agent sees and the recording keeps); ``marks``
are :class:`Mark` values in order, each with the number of clean bytes before it in this chunk
(``at``), so a caller can tell output before a prompt from output after it.  A mark split
across chunks is found whole: up to :data:`MAX_MARK` bytes of a possible mark are held back
until the rest arrives (and released unchanged if it is not one of ours).  OSC sequences with
another nonce, or other codes, pass through untouched (a program may print them; to the
bastion they mean nothing).  Pure, no IO; see :mod:`bastion.proto.shellstart` for the format.
"""

from __future__ import annotations

from dataclasses import dataclass

from bastion.proto.shellstart import MARK_CODE

MAX_MARK = 64 * 1024              # an L mark (a directory listing) is the longest


@dataclass(frozen=True)
class Mark:
    kind: str                     # "C" command started, "P" prompt, "T" type-ahead, "L" listing
    status: int | None = None     # P: the last command's exit status (None before the first)
    cwd: str = ""                 # P: the shell's working directory
    data: bytes = b""             # T: what was left unread on the terminal; L: hh.hh. bytes
    at: int = 0                   # clean bytes of this chunk before the mark


class MarkScanner:
    def __init__(self, nonce: str) -> None:
        self._prefix = f"\x1b]{MARK_CODE};{nonce};".encode()
        self._held = b""

    def feed(self, data: bytes) -> tuple[bytes, list[Mark]]:
        buf = self._held + data
        self._held = b""
        out = bytearray()
        marks: list[Mark] = []
        pos = 0
        prefix = self._prefix
        while True:
            i = buf.find(b"\x1b", pos)
            if i < 0:
                out += buf[pos:]
                break
            out += buf[pos:i]
            rest = buf[i:i + len(prefix)]
            if not prefix.startswith(rest) and not rest.startswith(prefix):
                out += buf[i:i + 1]
                pos = i + 1
                continue
            if len(rest) < len(prefix):            # a possible mark cut by the chunk's end
                self._held = buf[i:]
                break
            end = buf.find(b"\x07", i + len(prefix))
            if end < 0:
                if len(buf) - i > MAX_MARK:         # not a mark of ours after all
                    out += buf[i:i + 1]
                    pos = i + 1
                    continue
                self._held = buf[i:]
                break
            mark = _parse(buf[i + len(prefix):end], len(out))
            if mark is None:
                out += buf[i:end + 1]
            else:
                marks.append(mark)
            pos = end + 1
        return bytes(out), marks

    def flush(self) -> bytes:
        """Bytes held back at the end of the stream (an unfinished possible mark)."""
        held, self._held = self._held, b""
        return held


def _parse(body: bytes, at: int) -> Mark | None:
    text = body.decode("utf-8", "replace")
    if text == "C":
        return Mark("C", at=at)
    if text.startswith("L;"):
        listing = text[2:]
        if listing.strip("0123456789abcdef."):
            return None
        return Mark("L", data=listing.encode(), at=at)
    if text.startswith("T;"):
        try:
            return Mark("T", data=bytes.fromhex(text[2:]), at=at)
        except ValueError:
            return None
    if text.startswith("P;"):
        status_text, _, cwd = text[2:].partition(";")
        if status_text == "":
            return Mark("P", None, cwd, at=at)
        if status_text.isdigit() and len(status_text) <= 3:
            return Mark("P", int(status_text), cwd, at=at)
    return None
