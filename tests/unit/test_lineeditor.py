"""The mediated shell's line editor: keys in, the line out; whole, byte by byte, with trailing data."""

from __future__ import annotations

import pytest

from bastion.proto.lineeditor import EndOfInput, Interrupted, LineEditor, Submitted

LEFT, RIGHT, UP, DOWN = b"\x1b[D", b"\x1b[C", b"\x1b[A", b"\x1b[B"
HOME, END, DEL = b"\x1b[H", b"\x1b[F", b"\x1b[3~"

# (keys, the submitted line)
LINES = [
    (b"echo hi\r", "echo hi"),
    (b"echo hi\n", "echo hi"),
    (b"echo hi\r\n", "echo hi"),
    (b"ehco\x7f\x7f\x7fcho hi\r", "echo hi"),
    (b"ehco\x08\x08\x08cho hi\r", "echo hi"),
    (b"rm X" + LEFT + b"-rf \r", "rm -rf X"),
    (b"rm X" + b"\x1bOD" + b"-rf \r", "rm -rf X"),
    (b"cho hi" + HOME + b"e\r", "echo hi"),
    (b"cho hi\x01e\r", "echo hi"),
    (b"echo h" + HOME + END + b"i\r", "echo hi"),
    (b"echo h\x01\x05i\r", "echo hi"),
    (b"echo hXi" + LEFT + LEFT + DEL + b"\r", "echo hi"),
    (b"echo hXi" + LEFT + LEFT + b"\x04\r", "echo hi"),
    (b"junk\x15echo hi\r", "echo hi"),
    (b"echo hi there\x17\x17hi\r", "echo hi"),
    (b"echo hi junk" + LEFT * 5 + b"\x0b\r", "echo hi"),
    (b"hi\x01\x0becho \x19\r", "echo hi"),
    (b"echo hi" + LEFT * 7 + RIGHT * 7 + b"!\r", "echo hi!"),
    (b"echo a b" + b"\x1bb" + b"X\r", "echo a Xb"),
    (b"echo a b" + b"\x1b[1;5D" + b"X\r", "echo a Xb"),
    (b"echo h\xc3\xa9llo\r", "echo h\u00e9llo"),
    (b"echo h\xc3\xa9" + b"\x7f" + b"e\r", "echo he"),
    (b"echo \xe4\xb8\xad\xe6\x96\x87\r", "echo \u4e2d\u6587"),
    (b"\x1b[200~echo\tx\x1b[201~\r", "echo x"),                # a pasted Tab is a blank
    (b"\x1b[200~echo pasted\x1b[201~\r", "echo pasted"),
    (b"\x1b[200~echo a\x1b\x03b\x1b[201~\r", "echo ab"),
    (b"echo hi\x1b[15~\x1bOP\x1b[1;2P\r", "echo hi"),        # function keys: ignored
    (b"echo hi\x0f\x18\x14\r", "echo hi"),                    # other controls: ignored
    (b"echo hi\x12\x07\r", "echo hi"),                          # ^R then ^G: the line back
    (b"\x0c" + b"echo hi\r", "echo hi"),
]


def run(editor: LineEditor, data: bytes, chunk: int | None):
    events, screen = [], b""
    pieces = [data] if chunk is None else [data[i:i + chunk] for i in range(0, len(data), chunk)]
    for piece in pieces:
        out, event = editor.feed(piece)
        screen += out
        if event is not None:
            events.append(event)
    return screen, events


@pytest.mark.parametrize("keys,line", LINES)
@pytest.mark.parametrize("chunk", [None, 1, 3])
def test_keys_make_the_line(keys, line, chunk):
    editor = LineEditor()
    editor.begin("$ ")
    _, events = run(editor, keys, chunk)
    assert events == [Submitted(line)]
    assert not editor.active


@pytest.mark.parametrize("chunk", [None, 1, 3])
def test_tab_pauses_the_line_until_complete_resumes_it(chunk):
    from bastion.proto.lineeditor import TabPressed
    editor = LineEditor()
    editor.begin("$ ")
    screen, events = run(editor, b"ech" + LEFT + b"\tx\r", chunk)
    assert events == [TabPressed("ec")] and not editor.active
    assert b"\x07" not in screen
    out, event = editor.complete("X", bell=True)       # queued keys go on after it
    assert out.startswith(b"\x07") and event == Submitted("ecXxh")
    editor.begin("$ ")
    run(editor, b"ls fi\t", chunk)
    out, event = editor.complete("", ["file1", "file2"])
    assert b"file1  file2\r\n\r$ ls fi" in out and event is None and editor.line() == "ls fi"


def with_history(*lines: bytes) -> LineEditor:
    editor = LineEditor()
    for line in lines:
        editor.begin("$ ")
        editor.feed(line + b"\r")
    editor.begin("$ ")
    return editor


@pytest.mark.parametrize("keys,line", [
    (b"dr" + UP + UP + b"\r", "one"),
    (b"dr" + UP + DOWN + b"aft\r", "draft"),
    (b"\x10\x10\x10\x0e\r", "two"),                    # ^P past the oldest rings, ^N
    (UP + b"\r", "two"),
    (UP + LEFT + b"X\r", "twXo"),
])
@pytest.mark.parametrize("chunk", [None, 1])
def test_history_up_down_and_draft(keys, line, chunk):
    editor = with_history(b"one", b"two")
    assert run(editor, keys, chunk)[1] == [Submitted(line)]


def test_history_skips_blank_and_repeated_lines():
    editor = with_history(b"one", b"one", b"  ")
    assert editor.history == ["one"]


def test_ctrl_c_and_ctrl_d():
    editor = LineEditor()
    editor.begin("$ ")
    screen, events = run(editor, b"rm -rf x\x03", None)
    assert events == [Interrupted()] and b"^C" in screen
    editor.begin("$ ")
    assert run(editor, b"\x04", None)[1] == [EndOfInput()]
    editor.begin("$ ")
    assert run(editor, b"ab\x01\x04\r", None)[1] == [Submitted("b")]   # ^D deletes under the cursor


def test_type_ahead_is_kept_for_the_next_line():
    editor = LineEditor()
    editor.begin("$ ")
    _, event = editor.feed(b"first\rsecond\rthi")
    assert event == Submitted("first") and editor.queued == len(b"second\rthi")
    assert editor.feed(b"rd\r") == (b"", None)            # inactive: queued, not processed
    _, event = editor.begin("$ ")
    assert event == Submitted("second")
    _, event = editor.begin("$ ")
    assert event == Submitted("third")


def test_a_newline_in_a_paste_submits_and_the_rest_waits():
    editor = LineEditor()
    editor.begin("$ ")
    _, event = editor.feed(b"\x1b[200~echo a\necho b\x1b[201~")
    assert event == Submitted("echo a")
    screen, event = editor.begin("$ ")
    assert event is None and editor.line() == "echo b"


def test_unshift_puts_recovered_type_ahead_first():
    editor = LineEditor()
    editor.feed(b"two\r")
    editor.unshift(b"one\r")
    assert editor.begin("$ ")[1] == Submitted("one")
    assert editor.begin("$ ")[1] == Submitted("two")


def test_echo_of_plain_typing_is_the_typed_text():
    editor = LineEditor(width=80)
    editor.begin("$ ")
    assert editor.feed(b"ls -la")[0] == b"ls -la"


def test_backspace_at_the_end_erases_in_place():
    editor = LineEditor(width=80)
    editor.begin("$ ")
    editor.feed(b"lsx")
    assert editor.feed(b"\x7f") == (b"\b \b", None)


def test_wrapping_lines_redraw_from_the_first_row():
    editor = LineEditor(width=10)
    editor.begin("$ ")
    editor.feed(b"0123456789abcdef")                      # 18 columns: two rows
    screen, _ = editor.feed(HOME)
    assert screen.startswith(b"\x1b[1A\r$ 0123456789abcdef")


def test_lone_escape_waits_for_the_next_byte():
    editor = LineEditor()
    editor.begin("$ ")
    assert editor.feed(b"ab\x1b") == (b"ab", None)
    _, event = editor.feed(b"[Dc\r")
    assert event == Submitted("acb")


def test_reprs_never_show_the_line():
    assert "secret" not in repr(Submitted("echo secret"))


# ^R through a history of (oldest first) these lines: (keys, the submitted line)
HISTORY = ["ls /var/log", "systemctl status nginx", "cat /etc/hosts", "systemctl status ssh"]
SEARCHES = [
    (b"\x12status\r", "systemctl status ssh"),                 # the newest match
    (b"\x12status\x12\r", "systemctl status nginx"),          # ^R again: further back
    (b"\x12status\x12\x12\r", "systemctl status nginx"),     # no older one: stays (bell)
    (b"\x12sx\x7f\x7fhosts\r", "cat /etc/hosts"),            # Backspace widens the query
    (b"\x12nginx\x05 -l\r", "systemctl status nginx -l"),    # ^E: keep it, edit it
    (b"\x12var" + b"\x1b[C" + b"X\r", "ls /vXar/log"),        # Right: edit at the match
    (b"typed\x12nginx\x07\r", "typed"),                        # ^G: the line as it was
    (b"\x12nope\r", "systemctl status nginx"),                 # as readline: a failed search
                                                                # keeps the last match ("n")
    (b"\x12zzz\r", ""),                                        # never a match: the empty line
]


@pytest.mark.parametrize("keys,line", SEARCHES)
@pytest.mark.parametrize("chunk", [None, 1, 2])
def test_ctrl_r_searches_the_history(keys, line, chunk):
    ed = LineEditor(width=200)
    for old in HISTORY:
        ed.begin("$ ")
        ed.feed(old.encode() + b"\r")
    ed.begin("$ ")
    screen, events = run(ed, keys, chunk)
    assert events == [Submitted(line)]
    assert ed.prompt == "$ "                                      # the real prompt is back


def test_ctrl_r_shows_the_query_and_the_match_and_says_when_it_fails():
    ed = LineEditor(width=200)
    ed.begin("$ ")
    ed.feed(b"cat /etc/hosts\r")
    ed.begin("$ ")
    screen, _ = ed.feed(b"\x12host")
    assert b"(reverse-i-search)`host': cat /etc/hosts" in screen
    screen, _ = ed.feed(b"x")
    assert b"(failed reverse-i-search)`hostx': " in screen and b"\x07" in screen
    screen, event = ed.feed(b"\x03")
    assert isinstance(event, Interrupted) and ed.prompt == "$ "


def test_ctrl_r_draws_no_control_characters_from_the_query():
    ed = LineEditor(width=200)
    ed.begin("$ ")
    screen, _ = ed.feed(b"\x12a\xc2\x9bb")                      # a C1 control in the query
    assert b"\xc2\x9b" not in screen and b"`a?b': " in screen
