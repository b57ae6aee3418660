"""Make agent-supplied text safe to show on a human's terminal.  Pure: no IO.

Two tools:

``sanitize(text)``
    For *display* of agent text in tables, prompts and headers (command lines,
    titles, user names).  Nothing is deleted, everything becomes inert and
    visible: C0 controls and DEL become Unicode control pictures (ESC -> ``␛``,
    CR -> ``␍``, NUL -> ``␀``), C1 controls, bidi overrides/isolates, zero-width
    and other format characters, line/paragraph separators and lone surrogates
    become ``\\x9b`` / ``\\u202e`` style escapes (a byte that was not UTF-8, which
    ``surrogateescape`` made a lone surrogate, shows as that byte: ``\\xff``).
    A line that tries to hide part
    of itself (``rm -rf / ␛[2K␍ls``) is therefore shown in full.  With
    ``keep_newlines=True`` LF and TAB are kept (for multi-line panels).

``TerminalFilter``
    A stateful stream filter for *replaying* a recording (``bastion sessions
    play``).  It keeps what a reviewer needs to see the screen as the agent saw
    it -- printable text, CR/LF/TAB/BS/BEL, SGR colours, cursor movement,
    erase/scroll/insert/delete, save/restore cursor, charset selection (line
    drawing), alternate screen, cursor visibility -- and removes everything
    else, notably: every OSC (window/icon titles 0/1/2, clipboard 52, palette,
    fonts 50, hyperlinks, colour queries), DCS / SOS / PM / APC strings (device
    controls, sixel, DECRQSS, tmux passthrough, soft fonts), terminal queries
    that make the reviewer's terminal answer into its own input (DA, DSR,
    DECRQM, window reports ``CSI t``), mouse and keyboard modes, RIS.  It works
    chunk by chunk (sequences split across chunks are handled) and
    ``finish()`` returns a trailer that restores the modes it let through.

Not covered: deciding what is dangerous to *execute* (that is policy/), or the
width of East Asian characters in tables (rich handles that).
"""

from __future__ import annotations

import unicodedata

__all__ = ["sanitize", "TerminalFilter"]

_C0_PICTURES = {i: chr(0x2400 + i) for i in range(0x20)}
_C0_PICTURES[0x7F] = "\u2421"  # ␡


def escape_char(ch: str) -> str:
    """``ch`` as a backslash escape; a lone surrogate that ``surrogateescape`` made of a byte
    that was not UTF-8 (U+DC80-U+DCFF) as that byte, ``\\xff``."""
    code = ord(ch)
    if 0xDC80 <= code <= 0xDCFF:
        return f"\\x{code - 0xDC00:02x}"
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _is_unsafe_unicode(ch: str) -> bool:
    # Cc: controls (C1 here, C0 handled before); Cf: format (bidi, zero width,
    # soft hyphen, BOM); Zl/Zp: line/paragraph separators; Cs: lone surrogates
    # (from surrogateescape decoding).
    return unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp", "Cs")


def sanitize(text: str, *, keep_newlines: bool = False) -> str:
    """Return ``text`` with every control/escape/format character made visible.

    Idempotent on its own output (the pictures and backslash escapes it
    produces are ordinary printable characters).
    """
    if text is None:
        return ""
    if not isinstance(text, str):
        text = str(text)
    if text.isprintable() and text.isascii():
        return text                       # fast path: plain ASCII
    out: list[str] = []
    for ch in text:
        code = ord(ch)
        if code < 0x20 or code == 0x7F:
            if keep_newlines and ch in "\n\t":
                out.append(ch)
            else:
                out.append(_C0_PICTURES[code])
        elif code < 0x80:
            out.append(ch)
        elif _is_unsafe_unicode(ch):
            out.append(escape_char(ch))
        else:
            out.append(ch)
    return "".join(out)


# --------------------------------------------------------------------------
# Replay filter
# --------------------------------------------------------------------------

_GROUND, _ESC, _ESC_INTER, _CSI, _STRING, _STRING_ESC = range(6)

_SAFE_C0 = frozenset("\n\r\t\b\x07\x0e\x0f")      # LF CR TAB BS BEL SO SI
_CAN_SUB = frozenset("\x18\x1a")                   # abort any sequence
_ESC_STRING_INTRO = {"]": "osc", "P": "dcs", "X": "sos", "^": "pm", "_": "apc"}
_C1_STRING_INTRO = {"\x9d": "osc", "\x90": "dcs", "\x98": "sos", "\x9e": "pm", "\x9f": "apc"}
_ESC_SIMPLE_OK = frozenset("78DEMH")   # DECSC DECRC IND NEL RI HTS
# CSI finals allowed without a private marker (cursor, erase, edit, scroll, SGR)
_CSI_FINAL_OK = frozenset("ABCDEFGHJKLMPSTXZ@`abdefgIrsum")
# private (?) modes allowed through CSI ? ... h / l
_PRIVATE_MODES_OK = frozenset({"7", "12", "25", "47", "1047", "1048", "1049"})
_ALT_SCREEN_MODES = frozenset({"47", "1047", "1049"})
_MAX_CSI = 64          # longer CSI sequences are dropped whole
_MAX_REPEAT = 1000     # CSI n b (repeat last char) beyond this is dropped
_MAX_STRING = 4096     # an unterminated OSC/DCS longer than this ends; the rest shows as text


class TerminalFilter:
    """Remove dangerous escape sequences from a terminal output stream.

    ``feed(text) -> text`` may be called with arbitrary chunk boundaries;
    ``finish() -> text`` drops any incomplete sequence and returns a trailer
    that resets attributes and leaves the alternate screen if the stream
    entered it.  ``dropped`` counts the sequences removed.
    """

    def __init__(self) -> None:
        self._state = _GROUND
        self._buf: list[str] = []      # CSI / ESC-intermediate being collected
        self._buf_len = 0
        self._string_kind = ""
        self._string_len = 0
        self.dropped = 0
        self._alt_screen = False
        self._cursor_hidden = False
        self._scroll_region = False
        self._shifted = False

    # -- public -----------------------------------------------------------
    def feed(self, text: str) -> str:
        out: list[str] = []
        for ch in text:
            self._step(ch, out)
        return "".join(out)

    def finish(self) -> str:
        if self._state != _GROUND:
            self.dropped += 1
            self._reset_state()
        trailer = ["\x1b[0m"]
        if self._scroll_region:
            trailer.append("\x1b[r")
        if self._alt_screen:
            trailer.append("\x1b[?1049l")
        if self._cursor_hidden:
            trailer.append("\x1b[?25h")
        if self._shifted:
            trailer.append("\x0f")
        trailer.append("\x1b(B")
        self._alt_screen = self._cursor_hidden = self._scroll_region = self._shifted = False
        return "".join(trailer)

    # -- state machine ----------------------------------------------------
    def _reset_state(self) -> None:
        self._state = _GROUND
        self._buf = []
        self._buf_len = 0
        self._string_kind = ""
        self._string_len = 0

    def _drop(self) -> None:
        self.dropped += 1
        self._reset_state()

    def _step(self, ch: str, out: list[str]) -> None:
        state = self._state
        if state == _GROUND:
            self._ground(ch, out)
        elif state == _ESC:
            self._after_esc(ch, out)
        elif state == _ESC_INTER:
            self._esc_inter(ch, out)
        elif state == _CSI:
            self._csi(ch, out)
        elif state == _STRING:
            self._string(ch, out)
        else:  # _STRING_ESC
            # ESC \ (ST) ends the string; ESC + anything else also ends it (as in
            # xterm's parser) and starts a new escape sequence.
            self._drop()
            if ch != "\\":
                self._state = _ESC
                self._after_esc(ch, out)

    def _ground(self, ch: str, out: list[str]) -> None:
        code = ord(ch)
        if code >= 0x20 and code != 0x7F and not (0x80 <= code <= 0x9F):
            out.append(ch)
            return
        if ch in _SAFE_C0:
            if ch == "\x0e":
                self._shifted = True
            elif ch == "\x0f":
                self._shifted = False
            out.append(ch)
        elif ch == "\x1b":
            self._state = _ESC
        elif ch == "\x9b":
            self._state = _CSI
            self._buf, self._buf_len = [], 0
        elif ch in _C1_STRING_INTRO:
            self._state = _STRING
            self._string_kind = _C1_STRING_INTRO[ch]
            self._string_len = 0
        else:
            self.dropped += 1          # other C0 (NUL, ENQ...), DEL, other C1

    def _after_esc(self, ch: str, out: list[str]) -> None:
        if ch == "[":
            self._state = _CSI
            self._buf, self._buf_len = [], 0
        elif ch in _ESC_STRING_INTRO:
            self._state = _STRING
            self._string_kind = _ESC_STRING_INTRO[ch]
            self._string_len = 0
        elif "\x20" <= ch <= "\x2f":
            self._state = _ESC_INTER
            self._buf, self._buf_len = [ch], 1
        elif ch in _ESC_SIMPLE_OK:
            out.append("\x1b" + ch)
            self._reset_state()
        elif ch == "\x1b":
            self.dropped += 1          # ESC ESC: the first one is lost
        elif ch in _CAN_SUB:
            self._drop()
        elif ord(ch) < 0x20:
            # a control inside an escape sequence is executed by terminals;
            # do the same for the safe ones, keep waiting for the final byte
            if ch in _SAFE_C0:
                out.append(ch)
        else:
            self._drop()               # ESC c (RIS), ESC = / >, ESC # ..., unknown

    def _esc_inter(self, ch: str, out: list[str]) -> None:
        if "\x20" <= ch <= "\x2f":
            self._buf.append(ch)
            self._buf_len += 1
            if self._buf_len > 4:
                self._drop()
            return
        if "\x30" <= ch <= "\x7e":
            inter = "".join(self._buf)
            if inter in ("(", ")", "*", "+") and ch in "0AB":
                out.append("\x1b" + inter + ch)        # charset designation
                self._reset_state()
            else:
                self._drop()                           # ESC % G, ESC # 8, soft fonts...
            return
        self._interrupted(ch, out)

    def _csi(self, ch: str, out: list[str]) -> None:
        if "\x20" <= ch <= "\x3f":                     # parameters and intermediates
            self._buf.append(ch)
            self._buf_len += 1
            if self._buf_len > _MAX_CSI:
                self._drop()
                self._state = _STRING                  # swallow the rest up to a final byte
                self._string_kind = "csi-overflow"
            return
        if "\x40" <= ch <= "\x7e":
            body = "".join(self._buf)
            self._reset_state()
            if self._csi_allowed(body, ch):
                out.append("\x1b[" + body + ch)
            else:
                self.dropped += 1
            return
        self._interrupted(ch, out)

    def _interrupted(self, ch: str, out: list[str]) -> None:
        """A byte that cannot continue the sequence being read: ESC starts a new one
        (the old one is dropped), CAN/SUB cancel it, safe controls act, others drop it."""
        if ch == "\x1b":
            self.dropped += 1
            self._reset_state()
            self._state = _ESC
        elif ch in _CAN_SUB:
            self._drop()
        elif ch in _SAFE_C0:
            out.append(ch)
        else:
            self._drop()

    def _csi_allowed(self, body: str, final: str) -> bool:
        params = body.rstrip(" !\"#$%&'()*+,-./")
        inter = body[len(params):]
        private = params[:1] in ("?", ">", "<", "=")
        if inter:
            if inter == " " and final == "q" and not private:   # DECSCUSR cursor shape
                return True
            return False
        if any(c not in "0123456789;:?" for c in params) or "?" in params[1:]:
            return False
        if final in "hl":
            if not private:
                return all(p in ("4",) for p in params.split(";"))   # IRM insert mode only
            if params[0] != "?":
                return False
            modes = params[1:].split(";")
            if not all(m in _PRIVATE_MODES_OK for m in modes):
                return False
            on = final == "h"
            if any(m in _ALT_SCREEN_MODES for m in modes):
                self._alt_screen = on
            if "25" in modes:
                self._cursor_hidden = not on
            return True
        if private:
            # ?J / ?K selective erase are harmless; >m, >c, ?u... are queries or modes
            return params[0] == "?" and final in "JK"
        if final not in _CSI_FINAL_OK:
            return False
        if final == "r":
            self._scroll_region = params not in ("",)
        if final == "b":                              # REP: bound the repeat count
            first = params.split(";")[0]
            return first == "" or (first.isdigit() and int(first) <= _MAX_REPEAT)
        return True

    def _string(self, ch: str, out: list[str]) -> None:
        if self._string_kind == "csi-overflow":
            if "\x40" <= ch <= "\x7e":
                self._reset_state()
            elif ch == "\x1b":
                self._reset_state()
                self._state = _ESC
            elif ch in _CAN_SUB:
                self._reset_state()
            return
        if ch == "\x1b":
            self._state = _STRING_ESC
            return
        if ch == "\x9c" or (ch == "\x07" and self._string_kind == "osc"):
            self._drop()
            return
        if ch in _CAN_SUB:
            self._drop()
            return
        self._string_len += 1
        if self._string_len > _MAX_STRING:
            # An unterminated string must not hide the rest of the session from
            # the reviewer: give up and show what follows as text.
            self._drop()
