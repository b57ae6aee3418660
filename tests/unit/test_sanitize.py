"""Sanitising agent text for display, and the replay filter for dangerous sequences."""

from __future__ import annotations

import pytest

from bastion.proto.sanitize import TerminalFilter, sanitize


@pytest.mark.parametrize("text, expected", [
    ("ls -la", "ls -la"),
    ("", ""),
    ("café ☕", "café ☕"),
    ("rm -rf / \x1b[2K\rls", "rm -rf / ␛[2K␍ls"),                  # hiding attempt shown in full
    ("a\nb\tc", "a␊b␉c"),
    ("nul\x00del\x7f", "nul␀del␡"),
    ("\x9b31m", "\\x9b31m"),                                         # C1 CSI
    ("abc\u202edef", "abc\\u202edef"),                               # bidi override
    ("x\u200by", "x\\u200by"),                                       # zero width space
    ("p\u2028q", "p\\u2028q"),                                       # line separator
    ("\udcff", "\\xff"),                  # lone surrogate from surrogateescape: the byte
    ("a\udc80b", "a\\x80b"),
    ("\ud800", "\\ud800"),                                           # another lone surrogate
    ("\x1b]52;c;ZXZpbA==\x07", "␛]52;c;ZXZpbA==␇"),
    (None, ""),
])
def test_sanitize(text, expected):
    assert sanitize(text) == expected


def test_sanitize_keep_newlines():
    assert sanitize("a\nb\tc\r\x1b", keep_newlines=True) == "a\nb\tc␍␛"


@pytest.mark.parametrize("text", ["rm -rf / \x1b[2K\rls", "\x1b]0;x\x07", "a\u202eb"])
def test_sanitize_output_is_inert_and_idempotent(text):
    once = sanitize(text)
    assert sanitize(once) == once
    assert all(ch.isprintable() for ch in once)


KEPT = [
    "plain text\r\n",
    "\x1b[1;31mred\x1b[0m",                 # SGR
    "\x1b[38;2;10;20;30mtrue\x1b[m",        # truecolour SGR
    "\x1b[38:5:196mcolon\x1b[m",
    "\x1b[10;5H\x1b[2J\x1b[K\x1b[3A\x1b[2B\x1b[4C\x1b[D",   # cursor moves, erase
    "\x1b7saved\x1b8",                      # DECSC / DECRC
    "\x1b[s\x1b[u",
    "\x1b[?25l\x1b[?25h",                   # cursor visibility
    "\x1b[?1049hfull screen\x1b[?1049l",    # alternate screen
    "\x1b(0lqk\x1b(B",                      # line drawing charset
    "\x1b[5;20r",                           # scroll region
    "\x1bM\x1bD\x1bE",                      # RI IND NEL
    "tab\there\b\x07",
    "\x1b[2 q",                             # cursor shape
    "\x1b[5b",                              # REP, small count
]


@pytest.mark.parametrize("text", KEPT)
def test_filter_keeps_safe_sequences(text):
    flt = TerminalFilter()
    assert flt.feed(text) == text
    assert flt.dropped == 0


DROPPED = [
    ("\x1b]52;c;ZXZpbA==\x07", "OSC 52 clipboard, BEL"),
    ("\x1b]52;c;ZXZpbA==\x1b\\", "OSC 52 clipboard, ST"),
    ("\x1b]0;pwned\x07", "OSC 0 title"),
    ("\x1b]2;title\x1b\\", "OSC 2 title"),
    ("\x1b]1;icon\x07", "OSC 1 icon"),
    ("\x1b]50;font\x07", "OSC 50 font"),
    ("\x1b]8;;http://evil\x07", "OSC 8 hyperlink"),
    ("\x1b]4;1;rgb:ff/00/00\x07", "palette change"),
    ("\x1b]11;?\x07", "colour query"),
    ("\x1bP$qm\x1b\\", "DCS DECRQSS"),
    ("\x1bPtmux;\x1b\x1b]52;c;x\x07\x1b\\", "tmux passthrough"),
    ("\x1b_apc payload\x1b\\", "APC"),
    ("\x1b^pm payload\x1b\\", "PM"),
    ("\x1bXsos payload\x1b\\", "SOS"),
    ("\x9d0;c1 title\x9c", "C1 OSC"),
    ("\x90c1 dcs\x9c", "C1 DCS"),
    ("\x1b[21t", "report title (answers into input)"),
    ("\x1b[8;100;100t", "resize window"),
    ("\x1b[6n", "DSR cursor report"),
    ("\x1b[c", "DA"),
    ("\x1b[>c", "DA2"),
    ("\x1b[?1000h", "mouse tracking"),
    ("\x1b[?2004h", "bracketed paste"),
    ("\x1b[?1h", "application cursor keys"),
    ("\x1b[>4;2m", "key modifier options"),
    ("\x1bc", "RIS full reset"),
    ("\x1b%G", "charset switch"),
    ("\x1b#8", "DECALN"),
    ("\x1b[99999b", "huge REP"),
    ("\x05", "ENQ answerback"),
    ("\x1b[$p", "DECRQM"),
    ("\x9b6n", "C1 CSI DSR"),
]


@pytest.mark.parametrize("seq, what", DROPPED, ids=[d[1] for d in DROPPED])
def test_filter_drops_dangerous_sequences(seq, what):
    flt = TerminalFilter()
    out = flt.feed("A" + seq + "B")
    assert out == "AB", what
    assert flt.dropped >= 1


@pytest.mark.parametrize("seq, what", DROPPED, ids=[d[1] for d in DROPPED])
def test_filter_same_result_byte_by_byte(seq, what):
    text = "A\x1b[31m" + seq + "B\x1b[0m"
    whole = TerminalFilter().feed(text)
    flt = TerminalFilter()
    pieces = "".join(flt.feed(ch) for ch in text)
    assert pieces == whole == "A\x1b[31mB\x1b[0m"


def test_filter_output_never_contains_string_introducers():
    nasty = "".join(seq for seq, _ in DROPPED) * 3
    out = TerminalFilter().feed(nasty)
    for intro in ("\x1b]", "\x1bP", "\x1b_", "\x1b^", "\x1bX", "\x9d", "\x90", "\x9b"):
        assert intro not in out


def test_unterminated_string_does_not_hide_the_rest_forever():
    flt = TerminalFilter()
    out = flt.feed("\x1b]0;" + "x" * 5000 + "visible")
    assert out.endswith("visible")


def test_esc_inside_string_starts_a_new_sequence():
    # as in xterm: ESC [ inside an OSC ends it and the CSI is interpreted
    assert TerminalFilter().feed("\x1b]0;t\x1b[31mred") == "\x1b[31mred"


def test_overlong_csi_dropped():
    flt = TerminalFilter()
    assert flt.feed("\x1b[" + "1;" * 100 + "mafter") == "after"


def test_finish_restores_modes():
    flt = TerminalFilter()
    flt.feed("\x1b[?1049h\x1b[?25l\x1b[3;10r\x0e")
    trailer = flt.finish()
    for seq in ("\x1b[0m", "\x1b[?1049l", "\x1b[?25h", "\x1b[r", "\x0f"):
        assert seq in trailer
    plain = TerminalFilter()
    assert "\x1b[?1049l" not in plain.finish()


def test_finish_drops_incomplete_sequence():
    flt = TerminalFilter()
    assert flt.feed("ok\x1b]52;c;abc") == "ok"
    flt.finish()
    assert flt.dropped == 1
