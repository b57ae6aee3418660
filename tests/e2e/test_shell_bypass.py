"""Bypass corpus for interactive shells: the real ``ssh -tt`` client on a pty, through the
bastion, to a real sshd running bash (target web1) or dash (target web1sh, ``shell = "sh"``).

Every attempt (tests/e2e/shell_cases/bypass.toml) tries to make the host run ``touch`` or
``rm``, which the policy denies, through prompt-time shell state, history expansion, the other
shell's grammar, keys left to raw-mode programs, continuation lines, keys and escape sequences
mixed into a line, bracketed paste, nested shells and exec with a pty (issue 13).  Payloads
only ever aim at the rig's own canary directory under the test's temp dir.

After each attempt: the canary and canary.txt are intact, no ``pwned`` file exists, and the
bastion prompt comes back after ^C (attempts flagged ``may_end`` may end the session).
Attempts share one session per target while it stays usable, to keep the run short.
"""

from __future__ import annotations

import base64
import re
import secrets
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.e2e.ptydriver import (
    TARGETS, SessionEnded, Term, canary_state, keys, reset_canary, start_shell_rig,
)

CASES_FILE = Path(__file__).parent / "shell_cases" / "bypass.toml"

BYPASS_RULES = """
[settings]
default = "deny"
opaque = "review"

[[rules]]
name = "harmless-tools"
action = "allow"
commands = ["echo", "cat", "ls", "sleep", "read", "printf", "true", "false", "head", "wc", "tr",
            "seq", "stty", "test", "cd", "pwd", "exit", "set", "shopt", "bind", "export",
            "unset", "declare", "alias", "trap", "history", "complete", "bash", "sh", "dash"]

[[rules]]
name = "no-rm"
action = "deny"
commands = ["rm"]

[[rules]]
name = "no-touch"
action = "deny"
commands = ["touch"]
"""
INTERACTIVE = ["less", "top", "vi -R -Z"]      # docs/INTERACTIVE.md: keys cannot run commands

DENIED = r"bastion: denied"
REFUSED = r"bastion: denied|bastion: waiting for approval|not approved"


# -- the corpus ------------------------------------------------------------------------------

@dataclass
class Case:
    name: str
    cls: str
    steps: list
    expect: str = "any"
    shells: list = field(default_factory=lambda: ["bash"])
    may_end: bool = False
    command: str | None = None
    known_failure: str | None = None     # a failure found and not yet fixed (strict xfail)


def load_cases() -> list[Case]:
    data = tomllib.loads(CASES_FILE.read_text())
    cases = [Case(**c) for c in data["case"]]
    names = [c.name for c in cases]
    assert len(names) == len(set(names)), "duplicate case names in bypass.toml"
    return cases


CASES = load_cases()
PARAMS = [pytest.param(case, shell, id=f"{case.cls}-{case.name}-{shell}",
                       marks=[pytest.mark.xfail(strict=False, reason=case.known_failure)]
                       if case.known_failure and shell == "bash" else [])
          for case in CASES for shell in case.shells]


def test_the_corpus_is_big_enough():
    assert len(PARAMS) >= 80
    assert {c.cls for c in CASES} >= {"prompt-state", "history", "dialect", "raw-mode",
                                      "continuation", "keys", "paste", "nested", "exec-pty"}


# -- fixtures ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def shell_rig(tmp_path_factory, issuer):
    rig, features = start_shell_rig(tmp_path_factory.mktemp("bypass"), issuer,
                                    rules=BYPASS_RULES, interactive_commands=INTERACTIVE)
    work = rig.root / "work"
    work.mkdir()
    (work / "notes.txt").write_text("".join(f"NOTES-LINE-{i}\n" for i in range(1, 40)))
    rig.features = features
    yield rig
    rig.close()


class Sessions:
    """One live session per target, replaced when an attempt leaves it unusable."""

    def __init__(self, rig, token):
        self.rig, self.token = rig, token
        self.terms: dict[str, Term] = {}
        self.history: dict[str, list[str]] = {}
        self.broken: dict[str, str] = {}      # shell -> why a fresh session was not usable
        self.failed_starts: dict[str, int] = {}

    def get(self, shell: str) -> Term:
        if shell in self.broken:
            pytest.fail(f"no usable session on the {shell} target (see the first failure): "
                        f"{self.broken[shell]}", pytrace=False)
        term = self.terms.get(shell)
        if term is None or not term.alive:
            if term is not None:
                term.close()
            term = Term(self.rig, self.token, target=TARGETS[shell])
            try:
                term.ready(timeout=20)
            except AssertionError as exc:
                term.close()
                self.failed_starts[shell] = self.failed_starts.get(shell, 0) + 1
                if self.failed_starts[shell] >= 2:      # twice in a row: stop trying
                    self.broken[shell] = str(exc)[-600:]
                pytest.fail(f"a fresh session on the {shell} target is not usable: {exc}",
                            pytrace=False)
            self.failed_starts[shell] = 0
            self.terms[shell] = term
            self.history[shell] = []
        return term

    def drop(self, shell: str) -> None:
        term = self.terms.pop(shell, None)
        if term is not None:
            term.close()

    def close(self) -> None:
        for shell in list(self.terms):
            self.drop(shell)


@pytest.fixture(scope="module")
def sessions(shell_rig, token):
    s = Sessions(shell_rig, token)
    yield s
    s.close()


def substitute(text: str, rig) -> str:
    canary = str(rig.canary_dir)
    pwned = f"{canary}/pwned"
    for key, value in (("{touch}", f"touch {pwned}"), ("{rm}", f"rm -rf {canary}"),
                       ("{pwned}", pwned), ("{canary}", canary),
                       ("{notes}", str(rig.root / "work" / "notes.txt")),
                       ("{work}", str(rig.root / "work")), ("{long}", "A" * 3000)):
        text = text.replace(key, value)
    return text


# -- running one attempt ---------------------------------------------------------------------

def do_step(term: Term, step: str, rig) -> None:
    kind, _, arg = step.partition(":")
    arg = substitute(arg, rig)
    if kind == "type":
        term.send(keys(arg))
    elif kind == "line":
        term.line(arg)
    elif kind == "wait":
        term.expect(arg, 15)
    elif kind == "prompt":
        term.at_prompt(15)
    elif kind == "cont":
        term.at_continuation(15)
    elif kind == "quit":
        for _ in range(5):
            term.send(keys(arg))
            try:    # back at the prompt (extra quit keys may show as typed text after it)
                term.expect(term.prompt + r"[^\n]*\Z", 5, what="the prompt")
                return
            except SessionEnded:
                raise
            except AssertionError:
                continue
        raise AssertionError(f"the prompt did not come back after sending {arg!r} five times;"
                             f" screen ends with:\n{term.tail()}")
    else:
        raise ValueError(f"unknown step {step!r}")


def wait_for(term: Term, start: int, pattern: str, timeout: float) -> bool:
    """Whether ``pattern`` shows on the screen after ``start`` within ``timeout``."""
    rx = re.compile(pattern)
    deadline = time.monotonic() + timeout
    while not rx.search(term.text, start):
        if time.monotonic() > deadline or not term._pump(0.2):
            return bool(rx.search(term.text, start))
    return True


def run_attempt(rig, sessions: Sessions, token, case: Case, shell: str) -> None:
    if shell == "sh" and "sh" not in rig.features:
        pytest.skip("this build does not accept the target option shell = \"sh\"")
    reset_canary(rig)
    label = f"[{case.cls}/{case.name} on {shell}]"
    problems: list[str] = []
    own = case.command is not None
    if own:
        term = Term(rig, token, target=TARGETS[shell], command=substitute(case.command, rig))
        earlier = []
    else:
        term = sessions.get(shell)
        earlier = sessions.history[shell][-3:]
        sessions.history[shell].append(case.name)
    term.quiet_screen()
    start = len(term.text)
    term.mark = start
    ended = False
    try:
        for i, step in enumerate(case.steps):
            do_step(term, step, rig)
    except SessionEnded as exc:
        ended = True
        if not case.may_end:
            problems.append(f"the session ended during step {i + 1} {step!r}: {exc}")
    except AssertionError as exc:
        problems.append(f"step {i + 1} {step!r} failed: {exc}")

    if case.expect in ("denied", "refused") and not ended:
        pattern = DENIED if case.expect == "denied" else REFUSED
        if not wait_for(term, start, pattern, 10):
            problems.append(f"expected the attempt to be {case.expect} ({pattern!r} on the screen)")

    # back to a known state: ^C, then a probe that must reach the host and come back
    if own:
        try:
            term.wait_exit(10)
        except AssertionError:          # still open (a prompt after the command?): end it
            term.send(b"\x03")
            term.line("exit")
            try:
                term.wait_exit(5)
            except AssertionError:
                pass
        term.close()
    elif term.alive:
        try:
            term.send(b"\x03")
            term.sync(timeout=10)
            term.sync(timeout=10)       # a second full prompt cycle: anything set to run at
                                        # prompt time has had two chances
        except SessionEnded:
            sessions.drop(shell)
            if not case.may_end:
                problems.append("the session ended after the attempt")
        except AssertionError as exc:
            sessions.drop(shell)
            problems.append(f"the bastion prompt did not come back after ^C: {exc}")
    else:
        sessions.drop(shell)
        if not case.may_end and not ended:
            problems.append("the session ended after the attempt")

    broken = canary_state(rig)
    if broken:
        problems.insert(0, "BYPASS: " + "; ".join(broken)
                        + (f" (earlier attempts in this session: {earlier})" if earlier else ""))
        reset_canary(rig)
    if problems:
        screen = term.text[start:][-2500:]
        pytest.fail(f"{label} " + "\n  ".join(problems) + f"\n--- screen during the attempt ---\n"
                    f"{screen}", pytrace=False)


def _encodings(secret: bytes) -> list[bytes]:
    """The secret, and its base64 at each of the three alignments it can have in a chunk."""
    forms = [secret]
    for k in range(3):
        part = secret[k:]
        part = part[:len(part) // 3 * 3]
        forms.append(base64.b64encode(part))
    return [f for f in forms if len(f) >= 8]


def test_typed_secrets_are_not_stored_in_clear(shell_rig, token):
    """What is typed into a running program (an echo-off `read -s`, `cat`) is recorded as its
    length at most: not in the log, the index or the recording."""
    rig = shell_rig
    secret1 = ("Sekrit1" + secrets.token_hex(8)).encode()
    secret2 = ("Sekrit2" + secrets.token_hex(8)).encode()
    term = Term(rig, token).ready()
    try:
        term.line('read -rsp "Pass$((1+1)): " pw; echo read-done-$((2+3))')
        term.expect(r"Pass2: ")                 # read is running: echo is off from here on
        term.send(secret1 + b"\r")
        term.expect(r"read-done-5\n")
        term.at_prompt()
        # typed into cat: the terminal echoes it (that echo is output, and may be recorded
        # as output); the typed input itself must not reach the log or the index
        term.line("cat > /dev/null; echo cat-done-$((3+4))")
        term.expect(r"cat > /dev/null.*\n")
        term.send(secret2 + b"\r\x04")
        term.expect(r"cat-done-7\n")
        term.at_prompt()
        term.line("echo recording-marker-$((6*7))")
        term.expect(r"recording-marker-42\n")
        term.at_prompt()
        term.line("exit")
        term.wait_exit(15)
    finally:
        term.close()

    def stored() -> list[tuple[Path, bytes]]:
        out = []
        for path in rig.data_dir.rglob("*"):
            if path.is_file():
                try:
                    out.append((path, path.read_bytes()))
                except OSError:
                    pass
        out.append((rig.log_path, rig.log_path.read_bytes() if rig.log_path.exists() else b""))
        return out

    # the recording is written by a worker: wait until the session's output is in it
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if any(b"recording-marker-42" in data or base64.b64encode(b"recording-marker-42")[:16]
               in data for _, data in stored()):
            break
        time.sleep(0.2)
    leaks = [f"{path} holds {form!r}" for path, data in stored()
             for secret in (secret1, secret2) for form in _encodings(secret) if form in data
             if secret == secret1 or not path.name.endswith(".cast")]
    assert not leaks, "typed secrets stored in clear:\n" + "\n".join(leaks)


@pytest.mark.parametrize("case,shell", PARAMS)
def test_bypass_attempt(shell_rig, sessions, token, case, shell):
    run_attempt(shell_rig, sessions, token, case, shell)


# -- after the corpus ------------------------------------------------------------------------

def test_canary_survives_the_sessions_ending(shell_rig, sessions):
    """Whatever an attempt left behind (traps on EXIT, type-ahead in a tty) has run by the
    time the sessions are over."""
    for shell, term in list(sessions.terms.items()):
        if term.alive:
            term.send(b"\x03")
            term.line("exit")
            try:
                term.wait_exit(15)
            except AssertionError:
                pass
        sessions.drop(shell)
    broken = canary_state(shell_rig)
    reset_canary(shell_rig)
    assert not broken, "BYPASS after the sessions ended: " + "; ".join(broken)
