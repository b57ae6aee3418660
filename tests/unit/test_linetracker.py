"""The interactive line tracker (bastion.proto.linetracker), table-driven.

Every case is fed three ways -- whole, one byte at a time, and with trailing bytes in the
same chunk -- and must give the same bytes to the host and the same submissions; at each
submission the bytes already forwarded must equal those of the byte-at-a-time run, which
proves nothing typed after a held key reaches the host before the decision.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import NamedTuple

import pytest

from bastion.proto import linetracker
from bastion.proto.linetracker import (CLEAR_LINE, UPSTREAM_TTY_MODES, Forward, LineSubmitted,
                                       LineTracker, LineTrackerError)

R, C, I = "release", "cancel", "interrupt"
RC, RN = "release continues", "release ends"          # release(continues=True / False)
ON = ("out", b"\x1b[?2004h")                          # host output: bracketed paste turned on
OFF = ("out", b"\x1b[?2004l")
PS, PE = b"\x1b[200~", b"\x1b[201~"
CLR = b"\x05\x15"
TRAIL = b"zz"


class Case(NamedTuple):
    steps: list                 # bytes typed, or ("out", bytes) shown to observe_output
    decisions: list             # answers, in order, to each LineSubmitted
    forwarded: bytes            # everything the host receives
    lines: list                 # (kind, line, exact) per submission
    opts: dict = {}
    reason: str | None = None   # a word in the first inexact submission's reason
    trailing_dropped: bool = False


SAME = None                                           # forwarded: exactly the bytes typed


def case(name, steps, decisions, forwarded, lines, **kw):
    steps = [steps] if isinstance(steps, bytes) else steps
    if forwarded is SAME:
        forwarded = b"".join(s for s in steps if isinstance(s, bytes))
    return pytest.param(Case(steps, decisions, forwarded, lines, **kw), id=name)


E, P, K, EOF = "enter", "paste-newline", "key", "eof"
T, F = True, False

CASES = [
    # -- Enter -------------------------------------------------------------------------------
    case("cr", b"ls -l\r", [R], SAME, [(E, "ls -l", T)]),
    case("lf", b"ls -l\n", [R], SAME, [(E, "ls -l", T)]),
    case("crlf-is-one-enter", b"ls\r\npwd\r\n", [R, R], b"ls\rpwd\r", [(E, "ls", T), (E, "pwd", T)]),
    case("lf-then-cr-are-two", b"ls\n\r", [R, R], SAME, [(E, "ls", T), (E, "", T)]),
    case("empty-enter-is-held", b"\r", [R], SAME, [(E, "", T)]),
    case("three-lines-one-chunk", b"a\rb\rc\r", [R, R, R], SAME,
         [(E, "a", T), (E, "b", T), (E, "c", T)]),
    case("cancel-clears", b"rm -rf /\r", [C], b"rm -rf /" + CLR, [(E, "rm -rf /", T)]),
    case("cancel-then-next", b"rm -rf /\rls\r", [C, R], b"rm -rf /" + CLR + b"ls\r",
         [(E, "rm -rf /", T), (E, "ls", T)]),
    case("cancel-swallows-lf", b"rm x\r\nls\r", [C, R], b"rm x" + CLR + b"ls\r",
         [(E, "rm x", T), (E, "ls", T)]),
    case("cancel-interrupt", b"rm -rf /\rls\r", [I, R], b"rm -rf /\x03ls\r",
         [(E, "rm -rf /", T), (E, "ls", T)]),
    # -- editing keys --------------------------------------------------------------------------
    case("del", b"lx\x7fs\r", [R], SAME, [(E, "ls", T)]),
    case("del-on-empty", b"\x7f\x7fls\r", [R], SAME, [(E, "ls", T)]),
    case("del-past-start", b"ab\x7f\x7f\x7fls\r", [R], SAME, [(E, "ls", T)]),
    case("ctrl-h-inexact", b"lx\x08s\r", [R], SAME, [(E, "lxs", F)], reason="^H"),
    case("ctrl-u", b"rm -rf /\x15ls\r", [R], SAME, [(E, "ls", T)]),
    case("ctrl-w", b"echo foo\x17bar\r", [R], SAME, [(E, "echo bar", T)]),
    case("ctrl-w-trailing-space", b"echo foo  \x17x\r", [R], SAME, [(E, "echo x", T)]),
    case("ctrl-w-only-space", b"   \x17ls\r", [R], SAME, [(E, "ls", T)]),
    case("ctrl-w-empty", b"\x17ls\r", [R], SAME, [(E, "ls", T)]),
    case("ctrl-w-punctuation-inexact", b"rm /tmp/x\x17\r", [R], SAME, [(E, "rm ", F)], reason="^W"),
    case("ctrl-c-discards", b"rm -rf /\x03ls\r", [R], SAME, [(E, "ls", T)]),
    case("ctrl-v-literal-control", b"echo \x16\x15x\r", [R], SAME, [(E, "echo \x15x", T)]),
    case("ctrl-v-cr-is-not-enter", b"echo a\x16\rb\r", [R], SAME, [(E, "echo a\rb", T)]),
    case("ctrl-v-lf-is-not-enter", b"echo a\x16\nb\r", [R], SAME, [(E, "echo a\nb", T)]),
    case("ctrl-v-signal-inexact", b"echo \x16\x03\r", [R], SAME, [(E, "echo ", F)], reason="^V"),
    case("ctrl-v-non-ascii-inexact", b"echo \x16\xc3\xa9\r", [R], SAME, [(E, "echo \ufffd", F)],
         opts={"utf8": True}),
    case("nul-inexact", b"ls\x00\r", [R], SAME, [(E, "ls", F)]),
    case("ctrl-a-inexact", b"ls\x01\r", [R], SAME, [(E, "ls", F)], reason="^A"),
    case("ctrl-l-inexact", b"ls\x0c\r", [R], SAME, [(E, "ls", F)]),
    case("ctrl-z-inexact", b"ls\x1a\r", [R], SAME, [(E, "ls", F)]),
    # -- cursor, history and keys that may run code ------------------------------------------
    case("up-arrow", b"\x1b[A\r", [R], SAME, [(E, "", F)], reason="history"),
    case("left-arrow-then-edit", b"lsx\x1b[D\x7f\r", [R], SAME, [(E, "ls", F)]),
    case("home-ss3", b"ls\x1bOH\r", [R], SAME, [(E, "ls", F)]),
    case("ctrl-left", b"ls\x1b[1;5D\r", [R], SAME, [(E, "ls", F)]),
    case("delete-key", b"ls\x1b[3~\r", [R], SAME, [(E, "ls", F)]),
    case("meta-ctrl-e-held", b"$(id)\x1b\x05", [C], b"$(id)" + CLR, [(K, "$(id)", F)], reason="Meta"),
    case("meta-b-then-enter", b"ab\x1bbc\r", [R, R], SAME, [(K, "ab", F), (E, "abc", F)]),
    case("f1-held", b"\x1bOP", [R], SAME, [(K, "", F)]),
    case("insert-key-held", b"\x1b[2~", [R], SAME, [(K, "", F)]),
    case("f5-held", b"\x1b[15~", [R], SAME, [(K, "", F)]),
    case("esc-esc-held", b"\x1b\x1b", [R], SAME, [(K, "", F)]),
    case("stray-paste-end-held", PE, [R], SAME, [(K, "", F)]),
    case("over-long-csi", b"\x1b[" + b"1" * 40 + b"m", [R], SAME, [(K, "", F)], reason="over-long"),
    case("malformed-csi", b"\x1b[1\rls\r", [R, R, R], SAME, [(K, "", F), (E, "", F), (E, "ls", F)]),
    case("tab-held", b"ls\t", [R], SAME, [(K, "ls", F)], reason="completion"),
    case("tab-then-enter", b"ls\t\r", [R, R], SAME, [(K, "ls", F), (E, "ls", F)]),
    case("tab-cancelled-never-reached-host", b"ls\t\r", [C, R], b"ls" + CLR + b"\r",
         [(K, "ls", F), (E, "", T)]),
    case("ctrl-o-held", b"ls\x0f", [R], SAME, [(K, "ls", F)], reason="^O"),
    case("ctrl-x-ctrl-e-held", b"ls\x18\x05", [C], b"ls" + CLR, [(K, "ls", F)], reason="^X"),
    case("sticky-until-ctrl-c", b"\x12x\rls\r\x03ls\r", [R, R, R], SAME,
         [(E, "x", F), (E, "ls", F), (E, "ls", T)]),
    # -- ^D ------------------------------------------------------------------------------------
    case("ctrl-d-empty-forwarded", b"\x04", [], SAME, []),
    case("ctrl-d-non-empty-held", b"ls\x04", [R], SAME, [(K, "ls", F)], reason="^D"),
    case("ctrl-d-after-arrow-held", b"\x1b[A\x04", [R], SAME, [(K, "", F)]),
    case("ctrl-d-flushed-text-survives-cancel", b"rm -rf /\x04\rx\r", [R, C, R],
         b"rm -rf /\x04" + CLR + b"x\r",
         [(K, "rm -rf /", F), (E, "rm -rf /", F), (E, "rm -rf /x", F)]),
    case("ctrl-d-at-continuation", b"echo a \\\r\x04", [R, R], SAME,
         [(E, "echo a \\", T), (EOF, "echo a \\\n", T)]),
    # -- continuation lines --------------------------------------------------------------------
    case("backslash-continues", b"echo a \\\rb\r", [R, R], SAME,
         [(E, "echo a \\", T), (E, "echo a \\\nb", T)]),
    case("double-backslash-ends", b"echo a\\\\\rb\r", [R, R], SAME, [(E, "echo a\\\\", T), (E, "b", T)]),
    case("caller-says-continues", b"echo 'a\rb'\r", [RC, R], SAME,
         [(E, "echo 'a", T), (E, "echo 'a\nb'", T)]),
    case("caller-says-ends", b"echo a \\\rb\r", [RN, R], SAME, [(E, "echo a \\", T), (E, "b", T)]),
    case("three-line-command", b"a \\\rb \\\rc\r", [R, R, R], SAME,
         [(E, "a \\", T), (E, "a \\\nb \\", T), (E, "a \\\nb \\\nc", T)]),
    case("ctrl-c-drops-continuation", b"echo a \\\r\x03ls\r", [R, R], SAME,
         [(E, "echo a \\", T), (E, "ls", T)]),
    case("cancel-keeps-continuation", b"echo a \\\rrm\rx\r", [R, C, R], b"echo a \\\rrm" + CLR + b"x\r",
         [(E, "echo a \\", T), (E, "echo a \\\nrm", T), (E, "echo a \\\nx", T)]),
    case("interrupt-drops-continuation", b"echo a \\\rrm\rx\r", [R, I, R], b"echo a \\\rrm\x03x\r",
         [(E, "echo a \\", T), (E, "echo a \\\nrm", T), (E, "x", T)]),
    case("inexact-continuation-taints", b"\x1b[Aa \\\rb\r", [R, R], SAME,
         [(E, "a \\", F), (E, "a \\\nb", F)]),
    # -- non-ASCII -------------------------------------------------------------------------------
    case("utf8-exact", "echo café ✓\r".encode(), [R], SAME, [(E, "echo café ✓", T)],
         opts={"utf8": True}),
    case("utf8-erase-inexact", "café\x7f\r".encode(), [R], SAME, [(E, "caf", F)], opts={"utf8": True}),
    case("utf8-invalid", b"a\xff\r", [R], SAME, [(E, "a\ufffd", F)], opts={"utf8": True}, reason="UTF-8"),
    case("utf8-truncated", b"a\xc3\r", [R], SAME, [(E, "a\ufffd", F)], opts={"utf8": True}),
    case("locale-unknown-holds-character", "echo é\r".encode(), [R, R], SAME,
         [(K, "echo ", F), (E, "echo é", F)], reason="locale"),
    case("locale-unknown-emoji-one-key", "😀\r".encode(), [R, R], SAME, [(K, "", F), (E, "😀", F)]),
    case("locale-unknown-stray-byte", b"\xa9", [C], CLR, [(K, "", F)]),
    # -- bracketed paste ---------------------------------------------------------------------------
    case("paste-exact", [ON, PS + b"ls -l" + PE + b"\r"], [R], SAME, [(E, "ls -l", T)]),
    case("paste-host-not-pasting", PS + b"ls -l" + PE + b"\r", [R], SAME, [(E, "ls -l", F)],
         reason="2004h"),
    case("paste-host-turned-it-off", [ON, OFF, PS + b"ls" + PE + b"\r"], [R], SAME, [(E, "ls", F)]),
    case("paste-mode-marker-split", [("out", b"$ \x1b[?20"), ("out", b"04h"), PS + b"ls" + PE + b"\r"],
         [R], SAME, [(E, "ls", T)]),
    case("paste-mode-lost-after-enter", [ON, b"ls\r", PS + b"x" + PE + b"\r"], [R, R], SAME,
         [(E, "ls", T), (E, "x", F)]),
    case("paste-mode-renewed-by-prompt", [ON, b"ls\r", ON, PS + b"x" + PE + b"\r"], [R, R], SAME,
         [(E, "ls", T), (E, "x", T)]),
    case("paste-multiline", [ON, PS + b"echo a\necho b\n" + PE + b"\r"], [R, R, R], SAME,
         [(P, "echo a", T), (P, "echo a\necho b", T), (E, "echo a\necho b\n", T)]),
    case("paste-crlf", [ON, PS + b"a\r\nb" + PE + b"\r"], [R, R], PS + b"a\rb" + PE + b"\r",
         [(P, "a", T), (E, "a\nb", T)]),
    case("paste-cancel-drops-rest", [ON, PS + b"rm -rf /\nls\n" + PE + b"ok\r"], [C, R],
         PS + b"rm -rf /" + PE + CLR + b"ok\r", [(P, "rm -rf /", T), (E, "ok", T)]),
    case("paste-cancel-end-never-comes", [ON, PS + b"rm\nmore"], [C], PS + b"rm" + PE + CLR,
         [(P, "rm", T)], trailing_dropped=True),
    case("paste-interrupt", [ON, PS + b"rm\nls\n" + PE + b"ok\r"], [I, R], PS + b"rm" + PE + b"\x03ok\r",
         [(P, "rm", T), (E, "ok", T)]),
    case("paste-tab-held", [ON, PS + b"a\tb" + PE + b"\r"], [R, R], SAME, [(K, "a", F), (E, "a\tb", F)]),
    case("paste-del-inexact", [ON, PS + b"ab\x7f" + PE + b"\r"], [R], SAME, [(E, "a", F)]),
    case("paste-esc-is-meta", [ON, PS + b"a\x1bb" + PE + b"\r"], [R, R], SAME,
         [(K, "a", F), (E, "a\x1bb", F)]),
    case("paste-arrow-held", [ON, PS + b"a\x1b[A" + PE + b"\r"], [R, R], SAME,
         [(K, "a", F), (E, "a\x1b[A", F)]),
    case("paste-ctrl-c", [ON, PS + b"rm\x03ls" + PE + b"\r"], [R], SAME, [(E, "ls", F)]),
    case("paste-non-ascii-held", [ON, PS + "é".encode() + PE + b"\r"], [R, R], SAME,
         [(K, "", F), (E, "é", F)]),
    case("paste-newline-then-del", [ON, PS + b"a\n" + PE + b"\x7f\x7f\r"], [R, R], SAME,
         [(P, "a", T), (E, "a\n", F)]),
    case("paste-newline-then-ctrl-w", [ON, PS + b"a\nb" + PE + b"\x17\r"], [R, R], SAME,
         [(P, "a", T), (E, "a\n", F)]),
    case("paste-newline-then-ctrl-u", [ON, PS + b"a\nb" + PE + b"\x15\r"], [R, R], SAME,
         [(P, "a", T), (E, "a\n", F)]),
    case("paste-cancel-after-newline", [ON, PS + b"a\nrm" + PE + b"\rx\r"], [R, C, R],
         PS + b"a\nrm" + PE + CLR + b"x\r", [(P, "a", T), (E, "a\nrm", T), (E, "a\nx", F)]),
    # -- limits ------------------------------------------------------------------------------------
    case("longest-exact-line", b"a" * 4095 + b"\r", [R], SAME, [(E, "a" * 4095, T)]),
    case("line-too-long", b"a" * 4096 + b"\r", [R], SAME, [(E, "a" * 4096, F)], reason="4095"),
    case("text-capped", b"123456789\r", [R], SAME, [(E, "12345678", F)], opts={"max_text": 8}),
    case("continued-command-too-long", b"abcdef \\\rghijk\r", [R, R], SAME,
         [(E, "abcdef \\", T), (E, "abcdef \\\nghijk", F)], opts={"max_text": 10}, reason="longer"),
]


def _answer(tracker, decision):
    return {R: lambda: tracker.release(), RC: lambda: tracker.release(continues=True),
            RN: lambda: tracker.release(continues=False), C: lambda: tracker.cancel(),
            I: lambda: tracker.cancel(interrupt=True)}[decision]()


def drive(c: Case, mode: str):
    """Feed the case; answer each submission from the script; return (forwarded, submissions)."""
    tracker = LineTracker(**c.opts)
    forwarded, subs, todo = bytearray(), [], list(c.decisions)

    def handle(events):
        while events:
            *head, last = events
            assert all(isinstance(e, Forward) for e in head), "a LineSubmitted must be the last event"
            for e in head:
                forwarded.extend(e.data)
            if isinstance(last, Forward):
                forwarded.extend(last.data)
                return
            assert isinstance(last, LineSubmitted) and tracker.awaiting_decision
            subs.append((last, bytes(forwarded)))
            assert todo, f"no decision scripted for {last!r}"
            events = _answer(tracker, todo.pop(0))

    last_input = max(k for k, s in enumerate(c.steps) if isinstance(s, bytes))
    for k, step in enumerate(c.steps):
        if isinstance(step, tuple):
            tracker.observe_output(step[1])
            continue
        data = step + (TRAIL if mode == "trailing" and k == last_input else b"")
        chunks = [data[j:j + 1] for j in range(len(data))] if mode == "bytewise" else [data]
        for chunk in chunks:
            assert not tracker.awaiting_decision
            handle(tracker.receive(chunk))
    assert not todo, "scripted decisions left over"
    assert not tracker.awaiting_decision
    return bytes(forwarded), subs


@pytest.mark.parametrize("mode", ["whole", "bytewise", "trailing"])
@pytest.mark.parametrize("c", CASES)
def test_table(c: Case, mode: str) -> None:
    forwarded, subs = drive(c, mode)
    trail = TRAIL if mode == "trailing" and not c.trailing_dropped else b""
    assert forwarded == c.forwarded + trail
    assert [(s.kind, s.line, s.exact) for s, _ in subs] == c.lines
    for s, _ in subs:
        assert (s.reason is None) == s.exact
        assert s.reason is None or s.reason.isprintable()
    if c.reason is not None:
        assert c.reason in next(s.reason for s, _ in subs if not s.exact)
    # nothing typed after a held key was forwarded before its decision
    _, reference = drive(c, "bytewise")
    assert [before for _, before in subs] == [before for _, before in reference]


# -- the contract around the table ---------------------------------------------------------------------


def test_events_stop_at_a_held_enter_and_resume_in_order() -> None:
    t = LineTracker()
    [fwd, sub] = t.receive(b"ls\rrm")
    assert fwd == Forward(b"ls") and (sub.kind, sub.line, sub.key) == ("enter", "ls", b"\r")
    assert t.awaiting_decision and t.held_bytes == 2
    assert t.receive(b" -rf /\r") == []          # still held, nothing forwarded
    [fwd, sub] = t.release()
    assert fwd == Forward(b"\rrm -rf /") and sub.line == "rm -rf /"
    assert t.cancel() == [Forward(CLEAR_LINE)]
    assert not t.awaiting_decision and t.held_bytes == 0


def test_line_is_the_whole_command_and_current_the_physical_line() -> None:
    t = LineTracker()
    t.receive(b"echo a \\\rb\r")
    [_, sub] = t.release()
    assert (sub.line, sub.current) == ("echo a \\\nb", "b")


def test_answering_without_a_question_is_an_error() -> None:
    t = LineTracker()
    with pytest.raises(LineTrackerError):
        t.release()
    with pytest.raises(LineTrackerError):
        t.cancel()


def test_too_much_input_while_awaiting_raises() -> None:
    t = LineTracker(max_held=10)
    t.receive(b"ls\r")
    t.receive(b"0123456789")
    with pytest.raises(LineTrackerError, match="awaits a decision") as info:
        t.receive(b"x")
    assert "pause reading" in info.value.hint


def test_custom_clear_keys() -> None:
    t = LineTracker(clear_keys=b"\x01\x0b")
    t.receive(b"rm\r")
    assert t.cancel() == [Forward(b"\x01\x0b")]


def test_reprs_never_show_typed_text() -> None:
    t = LineTracker()
    events = t.receive(b"hunter2-secret\r")
    assert all("hunter2" not in repr(e) for e in events)
    assert "hunter2" in events[-1].line      # the text is there for the caller to mask and evaluate


def test_reason_never_quotes_the_agent() -> None:
    t = LineTracker()
    [_, sub] = t.receive(b"secret-word\x1b[D\r")
    assert not sub.exact and "secret" not in sub.reason


def test_observe_output_ignores_unrelated_output_and_keeps_the_last_mode() -> None:
    t = LineTracker()
    t.observe_output(b"plain output\r\n")
    t.observe_output(b"\x1b[?2004l\x1b[?2004h\x1b[1mbold")
    [_, sub] = t.receive(PS + b"ls" + PE + b"\r")
    assert sub.exact


def test_upstream_tty_modes_use_rfc4254_opcodes() -> None:
    c = pytest.importorskip("asyncssh.constants")
    expected = {c.PTY_VINTR: 3, c.PTY_VERASE: 127, c.PTY_VKILL: 21, c.PTY_VEOF: 4, c.PTY_VEOL: 255,
                c.PTY_VEOL2: 255, c.PTY_WERASE: 23, c.PTY_VLNEXT: 22, c.PTY_ICRNL: 1, c.PTY_IUCLC: 0,
                c.PTY_INLCR: 0, c.PTY_IGNCR: 0, c.PTY_ISIG: 1, c.PTY_ICANON: 1, c.PTY_IEXTEN: 1}
    assert {k: UPSTREAM_TTY_MODES[k] for k in expected} == expected


def test_module_is_pure() -> None:
    tree = ast.parse(Path(linetracker.__file__).read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert imported <= {"__future__", "re", "dataclasses", "types", "typing", "bastion"}


TOKENS = [b"ls", b" ", b"-rf", b"/", b"\r", b"\n", b"\r\n", b"\x7f", b"\x08", b"\x15", b"\x17", b"\x03",
          b"\x04", b"\x16", b"\t", b"\x0f", b"\x18", b"\x12", b"\x00", b"\x1b", b"\x1b[A", b"\x1bOH",
          b"\x1b[3~", b"\x1b[15~", PS, PE, b"\\", b"'", "é".encode(), b"\xff", b"\x1b[?2004h"]


def _random_run(seed: int, chunking: str) -> tuple[bytes, list]:
    rnd = __import__("random").Random(seed)
    data = b"".join(rnd.choice(TOKENS) for _ in range(60))
    if chunking == "whole":
        chunks = [data]
    elif chunking == "bytewise":
        chunks = [data[i:i + 1] for i in range(len(data))]
    else:
        cuts = sorted(rnd.sample(range(1, len(data)), min(8, len(data) - 1)))
        chunks = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)])]
    t = LineTracker(utf8=seed % 2 == 0)
    t.observe_output(b"\x1b[?2004h")
    forwarded, subs = bytearray(), []
    for chunk in chunks:
        events = t.receive(chunk)
        while events:
            for e in events:
                if isinstance(e, Forward):
                    forwarded += e.data
            last = events[-1]
            if not isinstance(last, LineSubmitted):
                break
            subs.append((last.kind, last.line, last.exact, last.key, bytes(forwarded)))
            answer = len(subs) % 4
            events = (t.release() if answer < 2 else t.cancel(interrupt=answer == 3))
    return bytes(forwarded), subs


@pytest.mark.parametrize("seed", range(40))
def test_random_streams_do_not_depend_on_chunking(seed: int) -> None:
    whole = _random_run(seed, "whole")
    assert _random_run(seed, "bytewise") == whole
    assert _random_run(seed, "random") == whole
