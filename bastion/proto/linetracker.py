"""Interactive line tracker for pty shells: every Enter is held until policy has seen the line.

Sans-IO, like h11: the agent's keystrokes go in through :meth:`LineTracker.receive`, events
come out.  :class:`Forward`: send these bytes to the host now.  :class:`LineSubmitted`: a key
that may make the host run something is held; answer with :meth:`~LineTracker.release` or
:meth:`~LineTracker.cancel` before anything else flows.  No asyncio, no clock, no IO.  Host
output may be shown to :meth:`~LineTracker.observe_output` (it only looks for bracketed-paste
mode).  docs/INTERACTIVE.md explains every decision, key by key.

Model.  The host's line editor is invisible, so the tracker keeps one buffer and calls it
*exact* only while two line disciplines would agree on it: GNU readline in emacs mode with
default bindings (bash, python) and a Linux cooked tty (dash, ``cat``, password prompts) set
up with :data:`UPSTREAM_TTY_MODES`.  Ordinary keys are forwarded at once.  Exact: printable
ASCII, UTF-8 text if ``utf8=True``, DEL over an ASCII character, ^U, ^W over a plain
``[A-Za-z0-9_]`` word, ^C, ^V before an ordinary byte, a bracketed paste while the host has
turned paste mode on.  Forwarded but inexact: cursor and history keys, ^H, NUL, other control
keys.  Held like Enter (readline or a cooked tty may *run* something on them): CR, LF, ^O,
Tab, ^X and Meta sequences (``ESC ^E`` performs command substitution), unknown escape
sequences, non-ASCII bytes unless ``utf8=True`` (Meta keys in a C locale), ^D on a line that
may not be empty or at a continuation prompt.  Every newline inside a paste is held too; a
continued command (``release(continues=True)``, or a trailing backslash) is reported whole.

Known limits (the caller must make up for them; see docs/INTERACTIVE.md):
  * No way to tell a shell prompt from a program reading input (``cat``, a REPL, ``[y/N]``,
    an echo-off password prompt): every Enter is held.  Mask a line before logging it.
  * Readline set up otherwise (vi mode, ``bind``, ``~/.inputrc``), other editors' widgets,
    ``stty`` run on the host, raw-mode programs: the model no longer holds.  Policy must
    refuse ``stty``, ``bind``, ``set -o vi`` and friends.
  * ``ESC[?2004h`` in output can be forged; that only changes how paste markers are read.
  * After a released held key or ^Q ^R ^S ^], the host editor may be in another mode
    (search, completion pager): every later line is inexact until ^C.
  * A lone ESC waits for the next byte (no clock); lines over ``max_line`` (4095 bytes, what
    a cooked tty keeps) are inexact.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

from bastion.errors import BastionError

__all__ = ["CLEAR_LINE", "INTERRUPT", "PASTE_END", "PASTE_START", "UPSTREAM_TTY_MODES", "Event",
           "Forward", "LineSubmitted", "LineTracker", "LineTrackerError"]

CR, LF, TAB, ESC, DEL = 0x0D, 0x0A, 0x09, 0x1B, 0x7F
CTRL_C, CTRL_D, CTRL_O, CTRL_U, CTRL_V, CTRL_W, CTRL_X = 0x03, 0x04, 0x0F, 0x15, 0x16, 0x17, 0x18
SIGNAL_KEYS = frozenset({0x03, 0x1A, 0x1C})       # ^C ^Z ^\: the tty turns them into signals
FLOW_KEYS = frozenset({0x11, 0x13})                # ^Q ^S: flow control, or readline commands
MODAL_KEYS = frozenset({0x11, 0x12, 0x13, 0x1D})   # ^Q ^R ^S ^]: readline reads the next keys its way
WHITESPACE = b" \t"

PASTE_START = b"\x1b[200~"
PASTE_END = b"\x1b[201~"
CLEAR_LINE = b"\x05\x15"     # ^E ^U: go to the end, kill the line; a cooked tty kills ^E too
INTERRUPT = b"\x03"          # ^C: also aborts a continued command, but interrupts a running program
_MODE_PREFIX = b"\x1b[?2004"  # + "h" / "l": the host application turns bracketed paste on / off
_MAX_ESCAPE = 32
_PASTE_CONTROL = "control key inside a bracketed paste (literal to readline, a command to a cooked tty)"

_PRINTABLE_RUN = re.compile(rb"[\x20-\x7e]+")
_NON_ASCII_RUN = re.compile(rb"[\x80-\xff]+")
_WORD = re.compile(rb"[A-Za-z0-9_]*")
_NAV_KEY = re.compile(rb"\x1b(?:\[(?:1;[2-8])?[ABCDHF]|\[[13-8](?:;[2-8])?~|O[ABCDHF])")

#: Terminal modes the upstream pty request must carry (RFC 4254 section 8 opcodes, as asyncssh's
#: ``term_modes``), whatever the agent asked for: the model above assumes them.  An agent-chosen
#: VEOL would end a line on any byte; IUCLC would turn ``RM`` into ``rm``.  255 = disabled.
UPSTREAM_TTY_MODES = MappingProxyType({
    1: 0x03, 2: 0x1C, 3: 0x7F, 4: 0x15, 5: 0x04,  # VINTR ^C, VQUIT ^\, VERASE DEL, VKILL ^U, VEOF ^D
    6: 255, 7: 255,                               # VEOL, VEOL2 disabled
    8: 0x11, 9: 0x13, 10: 0x1A, 12: 0x12,         # VSTART ^Q, VSTOP ^S, VSUSP ^Z, VREPRINT ^R
    13: 0x17, 14: 0x16, 18: 0x0F,                 # VWERASE ^W, VLNEXT ^V, VDISCARD ^O
    33: 0, 34: 0, 35: 0, 36: 1, 37: 0, 42: 1,     # ISTRIP INLCR IGNCR off, ICRNL on, IUCLC off, IUTF8
    50: 1, 51: 1, 52: 0, 57: 0, 59: 1,            # ISIG, ICANON on; XCASE, NOFLSH off; IEXTEN on
})


class LineTrackerError(BastionError):
    """The tracker was driven outside its contract (an answer with no question, input overflow)."""


@dataclass(frozen=True, repr=False)
class Forward:
    """Bytes to send to the host now, in order.  The repr hides them (they may be a password)."""

    data: bytes

    def __repr__(self) -> str:
        return f"Forward(<{len(self.data)} bytes>)"


Kind = Literal["enter", "paste-newline", "eof", "key"]


@dataclass(frozen=True, repr=False)
class LineSubmitted:
    """A key that may run something is held; answer with ``release()`` or ``cancel()``.

    ``line`` is what to evaluate: the whole command the host may run on this key -- earlier
    physical lines of a continued command and earlier lines of a paste, joined by ``\\n``.
    ``current`` is only the physical line being edited.  ``exact`` is False when the tracker
    cannot know ``line`` for sure (treat it as opaque; ``reason`` says why, in words that
    never quote the agent's text).  ``kind``: ``enter`` (CR or LF), ``paste-newline`` (a
    newline inside a bracketed paste), ``eof`` (^D at a continuation prompt), ``key``
    (another key that may run code: Tab, ^O, ^X..., Meta...).  ``key`` is the held bytes.
    Text may hold control characters: sanitise before showing it, mask before logging it.
    """

    line: str
    exact: bool
    reason: str | None
    kind: Kind
    key: bytes
    current: str

    def __repr__(self) -> str:
        return (f"LineSubmitted(kind={self.kind!r}, key={_key_name(self.key)!r}, exact={self.exact}, "
                f"reason={self.reason!r}, line=<{len(self.line)} chars>)")


Event = Forward | LineSubmitted


def _modal_reason(name: str) -> str:
    return f"{name} may leave the host's line editor in another mode until ^C"


def _key_name(key: bytes) -> str:
    """Caret/hex notation for keys: safe to log, never echoes more than one key of agent text."""
    return " ".join({ESC: "ESC", DEL: "DEL", TAB: "Tab"}.get(b) or (
        f"^{chr(b + 0x40)}" if b < 0x20 else chr(b) if b < 0x7F else f"0x{b:02x}") for b in key)


class LineTracker:
    """Follow the line an agent edits on a pty and hold every key that may submit it.

    ``utf8``: the host's locale is known to be UTF-8 (otherwise non-ASCII bytes are held:
    readline in a C locale reads them as Meta keys).  ``max_line``: longest exact physical
    line (a cooked tty keeps 4095 bytes).  ``max_text``: most bytes stored for a command.
    ``max_held``: most input kept while a decision is pending -- pause reading the agent's
    channel while :attr:`awaiting_decision`; beyond it :meth:`receive` raises.
    ``clear_keys``: what :meth:`cancel` sends to clear the line (default ^E ^U).
    """

    def __init__(self, *, utf8: bool = False, max_line: int = 4095, max_text: int = 65536,
                 max_held: int = 1 << 20, clear_keys: bytes = CLEAR_LINE) -> None:
        self._utf8 = utf8
        self._max_line = max_line
        self._max_text = max_text
        self._max_held = max_held
        self._clear_keys = bytes(clear_keys)
        self._in = bytearray()            # input not processed yet: held, or an incomplete key
        self._buf = bytearray()           # the line being edited, as the host holds it
        self._seg = 0                     # start of the current physical segment in _buf
        self._barrier = 0                 # _buf[:_barrier] passed a newline or ^D: a cooked tty keeps it
        self._why: str | None = None      # first reason _buf stopped being exact
        self._acc: list[bytes] = []       # earlier physical lines of a continued command
        self._acc_len = 0
        self._acc_why: str | None = None
        self._modal: str | None = None    # the host editor may be in another mode until ^C
        self._in_paste = False
        self._discard_paste = False       # after cancel() inside a paste: drop input up to its end
        self._host_paste = False          # host announced ESC[?2004h since the last submitted line
        self._swallow_lf = False          # a CR was held: an LF right after it is the same Enter
        self._event: LineSubmitted | None = None
        self._out_tail = b""

    # -- public API ----------------------------------------------------------------------
    @property
    def awaiting_decision(self) -> bool:
        """True while a :class:`LineSubmitted` waits for ``release()`` or ``cancel()``."""
        return self._event is not None

    @property
    def held_bytes(self) -> int:
        """Input received but not yet processed (held behind a decision or an incomplete key)."""
        return len(self._in)

    def receive(self, data: bytes) -> list[Event]:
        """Take bytes the agent typed; return events.  A :class:`LineSubmitted` is always last."""
        if self._event is not None:
            if len(self._in) + len(data) > self._max_held:
                raise LineTrackerError(
                    f"more than {self._max_held} bytes typed while a line awaits a decision",
                    hint="pause reading the agent's channel while awaiting_decision is true")
            self._in += data
            return []
        self._in += data
        return self._run(bytearray())

    def release(self, continues: bool | None = None) -> list[Event]:
        """Send the held key, then process what was typed after it.

        ``continues`` (Enter only): the shell will ask for more of this command, so the next
        line is reported together with this one.  Pass your parser's verdict (unclosed quote,
        here-document, trailing ``&&``...); None guesses from a trailing backslash only.
        """
        event = self._take_event()
        out = bytearray(event.key)
        if event.kind == "enter":
            if continues is None:
                seg = self._buf[self._seg:]
                continues = (len(seg) - len(seg.rstrip(b"\\"))) % 2 == 1
            self._end_line(continues)
        elif event.kind == "paste-newline":
            self._insert(b"\n")
            self._barrier = len(self._buf)
        elif event.kind == "eof":
            self._end_line(False)
        else:
            name = _key_name(event.key)
            if event.key == b"\x04":
                self._barrier = len(self._buf)
            elif event.key[0] >= 0x80 or self._in_paste:
                self._insert(event.key)    # a hint: text to a UTF-8 or pasting host
            self._taint(f"after {name} the host's line is unknown")
            self._modal = self._modal or _modal_reason(name)
            self._lose_host_paste()
        return self._run(out)

    def cancel(self, interrupt: bool = False) -> list[Event]:
        """Drop the held key and clear the line on the host, then process the rest.

        Sends ``clear_keys`` (^E ^U: clears the line in readline, zsh and a cooked tty,
        including a password prompt, and leaves a continuation prompt waiting), or ^C with
        ``interrupt=True`` (also aborts a continued command, but interrupts a running
        program).  Inside a bracketed paste the paste is closed first and the rest of it,
        up to its end marker, is dropped.
        """
        self._take_event()
        out = bytearray()
        if self._in_paste:
            out += PASTE_END
            self._in_paste = False
            self._discard_paste = True
        if interrupt:
            out += INTERRUPT
            self._interrupted()
        else:
            out += self._clear_keys
            committed = bytes(self._buf[:self._barrier])
            self._reset_line()
            if committed:
                self._insert(committed)
                self._barrier = len(self._buf)
                self._taint("text sent before a newline or ^D may still be pending on the host")
        return self._run(out)

    def observe_output(self, data: bytes) -> None:
        """Look at host output for bracketed-paste mode (``ESC[?2004h`` / ``ESC[?2004l``)."""
        buf = self._out_tail + bytes(data)
        self._out_tail = b""
        if b"\x1b" not in buf:
            return
        pos = buf.find(_MODE_PREFIX)
        while pos >= 0 and pos + len(_MODE_PREFIX) < len(buf):
            mode = buf[pos + len(_MODE_PREFIX)]
            if mode == ord("h"):
                self._host_paste = True
            elif mode == ord("l"):
                self._host_paste = False
            pos = buf.find(_MODE_PREFIX, pos + 1)
        for size in range(min(len(_MODE_PREFIX), len(buf)), 0, -1):
            if _MODE_PREFIX.startswith(buf[-size:]):
                self._out_tail = buf[-size:]
                break

    # -- the processing loop ---------------------------------------------------------------
    def _take_event(self) -> LineSubmitted:
        event = self._event
        if event is None:
            raise LineTrackerError("release() or cancel() called with no line awaiting a decision")
        self._event = None
        return event

    def _run(self, out: bytearray) -> list[Event]:
        data, i = self._in, 0
        while i < len(data) and self._event is None:
            j = self._step(data, i, out)
            if j < 0:          # an incomplete key sequence: wait for more input
                break
            i = j
        del data[:i]
        events: list[Event] = [Forward(bytes(out))] if out else []
        if self._event is not None:
            events.append(self._event)
        return events

    def _step(self, data: bytearray, i: int, out: bytearray) -> int:
        """Handle the key at ``data[i]``; return the index after it, or -1 to wait for more."""
        if self._discard_paste:
            return self._skip_paste(data, i)
        b = data[i]
        if self._swallow_lf:
            self._swallow_lf = False
            if b == LF:
                return i + 1
        if 0x20 <= b < 0x7F:
            end = _PRINTABLE_RUN.match(data, i).end()
            out += data[i:end]
            self._insert(data[i:end])
            return end
        if b >= 0x80:
            return self._non_ascii(data, i, out)
        if b == ESC:
            return self._escape(data, i, out)
        if b in (CR, LF):
            self._swallow_lf = b == CR
            self._hold(bytes([b]), "paste-newline" if self._in_paste else "enter")
            return i + 1
        if self._in_paste:
            self._taint(_PASTE_CONTROL)
        if b == TAB:
            return self._hold_key(data, i, 1, "Tab runs completion, which can run programs on the host")
        if b == CTRL_O:
            return self._hold_key(data, i, 1, "^O (operate-and-get-next) runs the line in bash")
        if b == CTRL_X:
            if i + 1 >= len(data):
                return -1
            return self._hold_key(data, i, 2, "^X starts a readline command (^X^E edits, then runs it)")
        if b == CTRL_D:
            return self._ctrl_d(data, i, out)
        out.append(b)
        if b == DEL:
            self._erase_char()
        elif b == CTRL_U:
            self._kill_line()
        elif b == CTRL_W:
            self._erase_word()
        elif b == CTRL_C:
            was_pasting = self._in_paste
            self._interrupted()
            if was_pasting:
                self._taint("^C inside a bracketed paste")
        elif b == CTRL_V:
            return self._literal_next(data, i, out)
        else:
            if b in MODAL_KEYS:
                self._modal = _modal_reason(_key_name(bytes([b])))
            elif b in SIGNAL_KEYS:
                self._lose_host_paste()
            self._taint(f"control key {_key_name(bytes([b]))} edits the line differently on each host")
        return i + 1

    def _non_ascii(self, data: bytearray, i: int, out: bytearray) -> int:
        if self._utf8:
            end = _NON_ASCII_RUN.match(data, i).end()
            out += data[i:end]
            self._insert(data[i:end])
            return end
        lead = data[i]     # hold one whole UTF-8 character (or one stray byte) as a key
        size = 2 if 0xC2 <= lead <= 0xDF else 3 if 0xE0 <= lead <= 0xEF else 4 if 0xF0 <= lead <= 0xF4 \
            else 1
        j = i + 1
        while j < i + size and j < len(data) and 0x80 <= data[j] <= 0xBF:
            j += 1
        if j < i + size and j == len(data):
            return -1
        return self._hold_key(data, i, j - i, "non-ASCII bytes are Meta keys to readline unless the "
                                              "host locale is UTF-8 (utf8=False)")

    def _escape(self, data: bytearray, i: int, out: bytearray) -> int:
        n = len(data)
        if self._in_paste:
            seg = bytes(data[i:i + len(PASTE_END)])
            if seg == PASTE_END:
                out += seg
                self._in_paste = False
                return i + len(seg)
            if PASTE_END.startswith(seg):
                return -1
            self._taint(_PASTE_CONTROL)
        if i + 1 >= n:
            return -1
        second = data[i + 1]
        if second == ord("["):
            j, limit = i + 2, min(n, i + _MAX_ESCAPE)
            while j < limit and 0x30 <= data[j] <= 0x3F:
                j += 1
            while j < limit and 0x20 <= data[j] <= 0x2F:
                j += 1
            if j == limit:
                if limit < i + _MAX_ESCAPE:
                    return -1
                return self._hold_key(data, i, j - i, "over-long escape sequence")
            if not 0x40 <= data[j] <= 0x7E:
                return self._hold_key(data, i, j - i, "malformed escape sequence")
            end = j + 1
        elif second == ord("O"):
            if i + 2 >= n:
                return -1
            if not 0x40 <= data[i + 2] <= 0x7E:
                return self._hold_key(data, i, 2, "Meta key (ESC O)")
            end = i + 3
        else:
            return self._hold_key(data, i, 2, f"Meta key ({_key_name(data[i:i + 2])}) runs a readline "
                                              "command (ESC ^E performs command substitution)")
        seq = bytes(data[i:end])
        if seq == PASTE_START:
            out += seq
            if self._in_paste:
                self._taint("paste start inside a bracketed paste")
            self._in_paste = True
            if not self._host_paste:
                self._taint("bracketed paste, but the host has not turned it on (ESC[?2004h) "
                            "since the last line")
            return end
        if not self._in_paste and _NAV_KEY.fullmatch(seq):
            out += seq
            self._taint("cursor or history key (arrows, Home, End, Delete, PgUp/PgDn)")
            return end
        return self._hold_key(data, i, end - i,
                              f"escape sequence {_key_name(seq)} may run a readline command")

    def _ctrl_d(self, data: bytearray, i: int, out: bytearray) -> int:
        if not self._buf and self._why is None:
            if not self._acc:
                out.append(CTRL_D)       # end of input on an empty line: nothing that could run
                self._lose_host_paste()
                return i + 1
            self._hold(b"\x04", "eof")   # the shell may run the continued command at end of input
            return i + 1
        return self._hold_key(data, i, 1, "^D on a line that may not be empty hands it to a cooked-"
                                          "tty program without Enter (and lists completions in zsh)")

    def _literal_next(self, data: bytearray, i: int, out: bytearray) -> int:
        if i + 1 >= len(data):
            del out[-1]                  # forward ^V together with its byte
            return -1
        nxt = data[i + 1]
        out.append(nxt)
        if nxt >= 0x80 or nxt == 0 or nxt in SIGNAL_KEYS or nxt in FLOW_KEYS:
            self._taint(f"^V before {_key_name(bytes([nxt]))} (the tty acts on it before readline)")
        else:
            self._insert(bytes([nxt]))
        if self._in_paste:
            self._taint("^V inside a bracketed paste")
        return i + 2

    def _skip_paste(self, data: bytearray, i: int) -> int:
        self._swallow_lf = False
        k = data.find(PASTE_END, i)
        if k >= 0:
            self._discard_paste = False
            return k + len(PASTE_END)
        for size in range(min(len(PASTE_END) - 1, len(data) - i), 0, -1):
            if PASTE_END.startswith(data[len(data) - size:]):
                del data[i:len(data) - size]   # keep what may be the start of the end marker
                return -1
        return len(data)

    # -- holding -----------------------------------------------------------------------------
    def _hold_key(self, data: bytearray, i: int, size: int, reason: str) -> int:
        self._hold(bytes(data[i:i + size]), "key", reason)
        return i + size

    def _hold(self, key: bytes, kind: Kind, reason: str | None = None) -> None:
        current, line_why = self._decode(bytes(self._buf), self._why)
        joined = b"\n".join([*self._acc, bytes(self._buf)])
        why = self._acc_why or line_why
        if why is None and len(joined) > self._max_text:
            why = f"command longer than {self._max_text} bytes"
        if kind == "key":
            why = reason
        line, why = self._decode(joined, why)
        self._event = LineSubmitted(line=line, exact=why is None, reason=why, kind=kind, key=key,
                                    current=current)

    @staticmethod
    def _decode(raw: bytes, why: str | None) -> tuple[str, str | None]:
        if why is None:
            try:
                return raw.decode("utf-8"), None
            except UnicodeDecodeError:
                why = "invalid UTF-8"
        return raw.decode("utf-8", errors="replace"), why

    # -- the line model ---------------------------------------------------------------------
    def _taint(self, reason: str) -> None:
        if self._why is None:
            self._why = reason

    def _insert(self, chunk: bytes | bytearray) -> None:
        room = self._max_text - len(self._buf)
        if len(chunk) > room:
            chunk = chunk[:max(room, 0)]
            self._taint(f"line longer than {self._max_text} bytes")
        self._buf += chunk
        nl = chunk.rfind(b"\n")
        if nl >= 0:
            self._seg = len(self._buf) - len(chunk) + nl + 1
        if len(self._buf) - self._seg > self._max_line:
            self._taint(f"line longer than {self._max_line} bytes (a cooked tty truncates it)")

    def _erase_char(self) -> None:
        buf = self._buf
        if not buf:
            return
        if len(buf) <= self._barrier:
            self._taint("DEL after a newline or ^D (readline erases, a cooked tty cannot)")
            return
        if buf[-1] >= 0x80:
            self._taint("DEL over a non-ASCII character (a byte or a character, by tty mode)")
            while len(buf) > self._barrier + 1 and 0x80 <= buf[-1] <= 0xBF:
                del buf[-1]
        del buf[-1]
        self._fix_segment()

    def _kill_line(self) -> None:
        if self._barrier:
            self._taint("^U after a newline or ^D (readline kills all, a cooked tty the last part)")
        del self._buf[self._barrier:]
        self._fix_segment()

    def _erase_word(self) -> None:
        buf = self._buf
        end = len(buf)
        while end > 0 and buf[end - 1] in WHITESPACE:
            end -= 1
        start = end
        while start > 0 and buf[start - 1] not in WHITESPACE:
            start -= 1
        if start < self._barrier or _WORD.fullmatch(buf, start, end) is None:
            self._taint("^W over a word not plain [A-Za-z0-9_] (readline, the tty and zsh disagree)")
        del buf[max(start, self._barrier):]
        self._fix_segment()

    def _fix_segment(self) -> None:
        if self._seg > len(self._buf):
            self._seg = self._buf.rfind(b"\n") + 1

    def _reset_line(self) -> None:
        self._buf.clear()
        self._seg = self._barrier = 0
        self._why = self._modal

    def _end_line(self, continues: bool) -> None:
        _, why = self._decode(bytes(self._buf), self._why)
        if continues:
            if self._acc_len + len(self._buf) + 1 > self._max_text:
                self._acc_why = self._acc_why or f"command longer than {self._max_text} bytes"
            else:
                self._acc.append(bytes(self._buf))
                self._acc_len += len(self._buf) + 1
                self._acc_why = self._acc_why or why
        else:
            self._acc.clear()
            self._acc_len, self._acc_why = 0, None
        self._reset_line()
        self._lose_host_paste()

    def _interrupted(self) -> None:
        self._acc.clear()
        self._acc_len, self._acc_why, self._modal = 0, None, None
        self._reset_line()
        self._lose_host_paste()

    def _lose_host_paste(self) -> None:
        self._host_paste = False
        self._out_tail = b""
