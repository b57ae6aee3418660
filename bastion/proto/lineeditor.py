"""The bastion's own line editor for mediated shells: keys in, screen bytes and lines out.

At a mediated shell's prompt the host runs nothing and reads nothing: this editor is the
command line.  It keeps the text, the cursor, a per-session history and a kill buffer, and
returns the bytes that draw it on the agent's terminal.  Keys (emacs-style, as bash's
defaults): printable text and UTF-8; Backspace (DEL, ^H); Delete (``ESC[3~``), ^D on a
non-empty line; Left/Right, ^B/^F; Home/End, ^A/^E; Ctrl/Alt-Left/Right and ``ESC b``/``ESC f``
by word; ^K ^U ^W kill, ^Y yank; Up/Down, ^P/^N through history; ^R searches it backwards
(typing narrows, ^R again goes further back, Backspace widens, ^G gives the line back, Enter
runs the match, any other key keeps it for editing); ^L clears the screen;
bracketed paste (``ESC[200~ ... ESC[201~``; a newline in it is an Enter); Enter (CR, LF,
CR LF) submits; ^C abandons the line; ^D on an empty line ends input.  Tab is an event
(:class:`TabPressed`, with the text before the cursor): the editor pauses, keys queue, and
:meth:`LineEditor.complete` resumes it with what to insert and, if asked, the choices to
list (bastion.proto.completion decides them; the host's own completion functions never run).
Every other key or escape sequence is ignored -- none of them can run anything, because
nothing here runs.

``feed(data)`` queues bytes; while the editor is *active* it consumes them up to the first
event (:class:`Submitted`, :class:`Interrupted`, :class:`EndOfInput`), then goes inactive
and keeps the rest queued (type-ahead for the next prompt).  ``begin(prompt)`` activates it
with a fresh line and processes what is queued.  Both return ``(screen_bytes, event | None)``.
Pure: no IO, no clock.  A lone ESC at the end of a chunk waits for the next byte.
"""

from __future__ import annotations

import codecs
import re
import unicodedata
from dataclasses import dataclass

MAX_LINE = 65536
MAX_QUEUE = 1 << 20
HISTORY = 1000
PASTE_START = b"\x1b[200~"
PASTE_END = b"\x1b[201~"
_CSI = re.compile(rb"\x1b\[([0-9;?]*)([\x20-\x2f]*)([\x40-\x7e])")
_SS3 = re.compile(rb"\x1bO([\x20-\x7e])")


@dataclass(frozen=True, repr=False)
class Submitted:
    line: str

    def __repr__(self) -> str:            # never show typed text
        return f"Submitted(<{len(self.line)} chars>)"


@dataclass(frozen=True)
class Interrupted:
    pass


@dataclass(frozen=True)
class EndOfInput:
    pass


@dataclass(frozen=True, repr=False)
class TabPressed:
    before: str                       # the line up to the cursor

    def __repr__(self) -> str:
        return f"TabPressed(<{len(self.before)} chars>)"


Event = Submitted | Interrupted | EndOfInput | TabPressed


def char_width(ch: str) -> int:
    if unicodedata.combining(ch):
        return 0
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


def shown(ch: str) -> str:
    """How a character of the line is drawn (controls and undecodable bytes as ``?``)."""
    if ch < " " or ch == "\x7f" or "\ud800" <= ch <= "\udfff" or "\x80" <= ch < "\xa0":
        return "?"
    return ch


class LineEditor:
    def __init__(self, *, width: int = 80) -> None:
        self.width = max(width, 2)
        self.text: list[str] = []
        self.cursor = 0
        self.prompt = ""
        self.active = False
        self.history: list[str] = []
        self._hist_pos = 0
        self._draft: list[str] = []
        self._kill = ""
        self._queue = b""
        self._row = 0                      # terminal row of the cursor, relative to the prompt's
        self._paste = False
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._search: str | None = None    # ^R: the query while searching the history
        self._found = 0                    # history index of the match (len: none yet)
        self._before: tuple[str, list[str], int] = ("", [], 0)   # prompt, text, cursor

    # -- driving ---------------------------------------------------------------
    @property
    def pasting(self) -> bool:
        """Inside a bracketed paste (its end marker not seen yet)."""
        return self._paste or self._queue.startswith(PASTE_START)

    @property
    def queued(self) -> int:
        return len(self._queue)

    def feed(self, data: bytes) -> tuple[bytes, Event | None]:
        if len(self._queue) + len(data) > MAX_QUEUE:
            data = data[:max(0, MAX_QUEUE - len(self._queue))]
        self._queue += data
        if not self.active:
            return b"", None
        return self._run()

    def begin(self, prompt: str) -> tuple[bytes, Event | None]:
        self.prompt = prompt
        self.text, self.cursor, self._row = [], 0, 0
        self._hist_pos = len(self.history)
        self._draft = []
        self._search = None
        self.active = True
        draw = self._draw_full()
        screen, event = self._run()
        return draw + screen, event

    def complete(self, insert: str = "", choices: list[str] | None = None,
                 bell: bool = False) -> tuple[bytes, Event | None]:
        """Resume after :class:`TabPressed`: insert ``insert`` at the cursor; list
        ``choices`` under the line (then draw the prompt and line again); ring the bell."""
        self.active = True
        out = b"\x07" if bell else b""
        if choices:
            cursor = self.cursor
            out += self._end_screen() + b"\r\n" + _columns(choices, self.width)
            self.cursor = cursor
            out += self._draw_full()
        if insert:
            out += self._insert(insert.encode("utf-8"))
        screen, event = self._run()
        return out + screen, event

    def unshift(self, data: bytes) -> None:
        """Put ``data`` in front of the queue (type-ahead recovered from the host)."""
        self._queue = data + self._queue

    def queued_bytes(self) -> bytes:
        return self._queue

    def take_queue(self) -> bytes:
        """Remove and return what is queued (type-ahead handed to a starting program)."""
        queued, self._queue = self._queue, b""
        return queued

    def drop_queue(self) -> None:
        """Forget type-ahead (after ^C during an approval wait, say)."""
        self._queue = b""
        self._paste = False

    def resize(self, width: int) -> None:
        self.width = max(width, 2)

    def line(self) -> str:
        return "".join(self.text)

    def remember(self, line: str) -> None:
        if line.strip() and (not self.history or self.history[-1] != line):
            self.history.append(line)
            del self.history[:-HISTORY]

    # -- the key loop ------------------------------------------------------------
    def _run(self) -> tuple[bytes, Event | None]:
        out: list[bytes] = []
        q = self._queue
        i = 0
        event: Event | None = None
        while i < len(q) and event is None:
            b = q[i]
            if self._paste:
                if q.startswith(PASTE_END, i):
                    self._paste = False
                    i += len(PASTE_END)
                    continue
                if b == 0x1b and PASTE_END.startswith(q[i:]):
                    break                                  # maybe the end marker, cut
                if b in (0x0d, 0x0a):
                    i += 2 if q[i:i + 2] == b"\r\n" else 1
                    out.append(self._enter())
                    event = Submitted(self.line())
                    continue
                if b == 0x1b or (b < 0x20 and b != 0x09):
                    i += 1                                  # controls in a paste: dropped
                    continue
                j = i
                while j < len(q) and (q[j] >= 0x20 or q[j] == 0x09) and q[j] not in (0x1b, 0x7f):
                    j += 1
                if j == i:
                    i += 1                                  # DEL in a paste: dropped
                    continue
                out.append(self._insert(q[i:j]))
                i = j
                continue
            if self._search is not None:
                n, screen = self._search_key(q, i)
                out.append(screen)
                if n < 0:
                    break                                  # incomplete: wait for more
                i += n
                if n:
                    continue                               # else: the key edits the line
            if b == 0x1b:
                n, key = self._escape(q, i)
                if n == 0:
                    break                                  # incomplete: wait for more
                i += n
                if key == "paste":
                    self._paste = True
                elif key:
                    out.append(self._key(key))
                continue
            if b in (0x0d, 0x0a):
                i += 2 if q[i:i + 2] == b"\r\n" else 1
                out.append(self._enter())
                event = Submitted(self.line())
            elif b == 0x03:
                i += 1
                out.append(self._end_screen() + b"^C\r\n")
                event = Interrupted()
            elif b == 0x04 and not self.text:
                i += 1
                out.append(b"\r\n")
                event = EndOfInput()
            elif b == 0x09:
                i += 1
                event = TabPressed("".join(self.text[:self.cursor]))
            elif b < 0x20 or b == 0x7f:
                i += 1
                out.append(self._key(_CONTROL.get(b, "")))
            else:
                j = i + 1
                while j < len(q) and q[j] >= 0x20 and q[j] not in (0x7f, 0x1b):
                    j += 1
                out.append(self._insert(q[i:j]))
                i = j
        self._queue = q[i:]
        if event is not None:
            self.active = False
            if isinstance(event, Submitted):
                self.remember(event.line)
        return b"".join(out), event

    def _escape(self, q: bytes, i: int) -> tuple[int, str]:
        """(bytes used, key name) for the escape sequence at ``q[i]``; (0, "") if cut short."""
        rest = q[i:i + 64]
        if len(rest) == 1:
            return 0, ""
        if rest.startswith(PASTE_START):
            return len(PASTE_START), "paste"
        if rest[1:2] == b"[":
            m = _CSI.match(rest)
            if m is None:
                if len(rest) < 64 and all(0x20 <= c < 0x40 for c in rest[2:]):
                    return 0, ""
                return 2, ""                               # malformed: drop ESC [
            params, final = m.group(1), m.group(3)
            return m.end(), _CSI_KEYS.get((params, final), "")
        if rest[1:2] == b"O":
            m = _SS3.match(rest)
            if m is None:
                return (0, "") if len(rest) < 3 else (2, "")
            return m.end(), _SS3_KEYS.get(m.group(1), "")
        if rest[1:2] == b"\x1b":
            return 1, ""
        return 2, {b"b": "word-left", b"f": "word-right", b"\x7f": "kill-word",
                   b"d": "kill-word-right"}.get(rest[1:2], "")

    # -- editing ------------------------------------------------------------------
    def _insert(self, data: bytes) -> bytes:
        chars = list(self._decoder.decode(data))
        room = MAX_LINE - len(self.text)
        if room <= 0:
            return b"\x07"
        chars = [c if c != "\t" else " " for c in chars[:room]]
        at_end = self.cursor == len(self.text)
        self.text[self.cursor:self.cursor] = chars
        self.cursor += len(chars)
        if at_end and all(char_width(c) == 1 for c in chars):
            total = self._cols(len(self.text))
            before = total - len(chars)
            if before // self.width == (total - 1) // self.width and total % self.width:
                return "".join(shown(c) for c in chars).encode("utf-8", "replace")
        return self._redraw()

    def _key(self, key: str) -> bytes:
        t, c = self.text, self.cursor
        if key == "left":
            self.cursor = max(0, c - 1)
        elif key == "right":
            self.cursor = min(len(t), c + 1)
        elif key == "home":
            self.cursor = 0
        elif key == "end":
            self.cursor = len(t)
        elif key == "backspace":
            if c == 0:
                return b""
            gone = t[c - 1]
            del t[c - 1]
            self.cursor -= 1
            if c - 1 == len(t) and char_width(gone) == 1 and self._cols(c) % self.width:
                return b"\b \b"                   # at the end, not at a row's start: as readline
        elif key == "delete":
            if c >= len(t):
                return b""
            del t[c]
        elif key == "word-left":
            self.cursor = self._word_start(c)
        elif key == "word-right":
            j = c
            while j < len(t) and not t[j].isalnum():
                j += 1
            while j < len(t) and t[j].isalnum():
                j += 1
            self.cursor = j
        elif key == "kill-end":
            self._kill = "".join(t[c:])
            del t[c:]
        elif key == "kill-start":
            self._kill = "".join(t[:c])
            del t[:c]
            self.cursor = 0
        elif key == "kill-word":                           # ^W: whitespace-delimited, as bash
            j = c
            while j > 0 and t[j - 1] == " ":
                j -= 1
            while j > 0 and t[j - 1] != " ":
                j -= 1
            self._kill = "".join(t[j:c])
            del t[j:c]
            self.cursor = j
        elif key == "kill-word-right":
            j = c
            while j < len(t) and not t[j].isalnum():
                j += 1
            while j < len(t) and t[j].isalnum():
                j += 1
            self._kill = "".join(t[c:j])
            del t[c:j]
        elif key == "yank":
            if not self._kill:
                return b""
            t[c:c] = list(self._kill)
            self.cursor += len(self._kill)
        elif key in ("up", "down"):
            return self._history(-1 if key == "up" else 1)
        elif key == "clear":
            self._row = 0
            return b"\x1b[H\x1b[2J" + self._draw_full()
        elif key == "delete-or-eof":
            return self._key("delete")
        elif key == "search":
            return self._start_search()
        else:
            return b""
        return self._redraw()

    # -- ^R: reverse incremental search of the history ---------------------------------
    def _search_key(self, q: bytes, i: int) -> tuple[int, bytes]:
        """One key while searching: (bytes used, screen).  0 used: the search is over and
        the key is for the line (Enter runs the match, Left edits it, ^C abandons it...);
        -1: an escape sequence cut short."""
        b = q[i]
        if b == 0x12:                                      # ^R again: an older match
            return 1, self._search_for(self._search or "", self._found - 1)
        if b == 0x07:                                      # ^G: back to the line as it was
            prompt, text, cursor = self._before
            self._search = None
            self.prompt, self.text, self.cursor = prompt, list(text), cursor
            return 1, self._redraw()
        if b in (0x7f, 0x08):
            query = (self._search or "")[:-1]
            return 1, self._search_for(query, len(self.history) - 1)
        if b >= 0x20:                                      # one byte at a time, as typed
            query = (self._search or "") + self._decoder.decode(q[i:i + 1])
            return 1, self._search_for(query, min(self._found, len(self.history) - 1))
        if b == 0x1b and len(q) - i == 1:
            return -1, b""
        self._search = None                                # any other key: keep the match
        self.prompt = self._before[0]
        return 0, self._redraw()

    def _search_for(self, query: str, start: int) -> bytes:
        self._search = query[-MAX_LINE:]
        found = -1
        for pos in range(min(start, len(self.history) - 1), -1, -1):
            if query in self.history[pos]:
                found = pos
                break
        failed = found < 0 and bool(query)
        if found >= 0:
            self._found = found
            self.text = list(self.history[found])
            self.cursor = self.history[found].find(query) if query else len(self.text)
        label = "(failed reverse-i-search)" if failed else "(reverse-i-search)"
        self.prompt = f"{label}`{''.join(shown(ch) for ch in self._search)}': "
        return (b"\x07" if failed else b"") + self._redraw()

    def _start_search(self) -> bytes:
        self._before = (self.prompt, list(self.text), self.cursor)
        self._found = len(self.history)
        self._search = ""
        self.prompt = "(reverse-i-search)`': "
        return self._redraw()

    def _word_start(self, c: int) -> int:
        j = c
        while j > 0 and not self.text[j - 1].isalnum():
            j -= 1
        while j > 0 and self.text[j - 1].isalnum():
            j -= 1
        return j

    def _history(self, step: int) -> bytes:
        pos = self._hist_pos + step
        if pos < 0 or pos > len(self.history):
            return b"\x07"
        if self._hist_pos == len(self.history):
            self._draft = list(self.text)
        self._hist_pos = pos
        self.text = list(self.history[pos]) if pos < len(self.history) else list(self._draft)
        self.cursor = len(self.text)
        return self._redraw()

    def _enter(self) -> bytes:
        return self._end_screen() + b"\r\n"

    # -- drawing ------------------------------------------------------------------
    def _cols(self, upto: int) -> int:
        return len(self.prompt) + sum(char_width(ch) for ch in self.text[:upto])

    def _end_screen(self) -> bytes:
        """Move the terminal cursor to the end of the line (before a newline)."""
        end = self.cursor
        self.cursor = len(self.text)
        if end == len(self.text):
            return b""
        return self._redraw()

    def _draw_full(self) -> bytes:
        self._row = 0
        return self._redraw(from_start=True)

    def _redraw(self, from_start: bool = False) -> bytes:
        w = self.width
        out = []
        if not from_start and self._row:
            out.append(f"\x1b[{self._row}A")
        out.append("\r" + self.prompt + "".join(shown(ch) for ch in self.text) + "\x1b[J")
        total = self._cols(len(self.text))
        if total and total % w == 0:
            out.append("\r\n")
        end_row = total // w
        cur = self._cols(self.cursor)
        row, col = cur // w, cur % w
        if end_row > row:
            out.append(f"\x1b[{end_row - row}A")
        out.append("\r")
        if col:
            out.append(f"\x1b[{col}C")
        self._row = row
        return "".join(out).encode("utf-8", "replace")


_CONTROL = {0x01: "home", 0x02: "left", 0x04: "delete-or-eof", 0x05: "end", 0x06: "right",
            0x08: "backspace", 0x09: "tab", 0x0b: "kill-end", 0x0c: "clear", 0x0e: "down",
            0x10: "up", 0x12: "search", 0x15: "kill-start", 0x17: "kill-word", 0x19: "yank", 0x7f: "backspace"}
_CSI_KEYS = {(b"", b"A"): "up", (b"", b"B"): "down", (b"", b"C"): "right", (b"", b"D"): "left",
             (b"", b"H"): "home", (b"", b"F"): "end", (b"1", b"~"): "home", (b"7", b"~"): "home",
             (b"4", b"~"): "end", (b"8", b"~"): "end", (b"3", b"~"): "delete"}
for _mod in (b"3", b"5"):
    _CSI_KEYS[(b"1;" + _mod, b"C")] = "word-right"
    _CSI_KEYS[(b"1;" + _mod, b"D")] = "word-left"
_SS3_KEYS = {b"A": "up", b"B": "down", b"C": "right", b"D": "left", b"H": "home", b"F": "end"}


def _columns(choices: list[str], width: int) -> bytes:
    """``choices`` in columns across ``width`` (as bash lists completions)."""
    cell = min(max(_cols_of(c) for c in choices) + 2, max(width, 2))
    per_row = max(1, width // cell)
    rows = []
    for start in range(0, len(choices), per_row):
        row = choices[start:start + per_row]
        rows.append("".join(c + " " * (cell - _cols_of(c)) for c in row[:-1]) + row[-1])
    return ("\r\n".join(rows) + "\r\n").encode("utf-8", "replace")


def _cols_of(text: str) -> int:
    return sum(char_width(ch) for ch in text)
