"""A mediated shell channel as a sans-IO state machine: events in, actions out.

The bastion owns the command line (:mod:`bastion.proto.lineeditor`); the host runs a
non-interactive shell that only ever runs decided commands, sent on a separate channel
(:mod:`bastion.proto.shellstart`), and tells where it is with marks
(:mod:`bastion.proto.shellmarks`).  This class ties them together.  Inputs (each returns a
list of actions, to carry out in order):

``agent(data)``        bytes the agent typed
``host(data)``         bytes from the host's terminal
``decided(action, message)``   the policy's answer to the last :class:`Evaluate`
                       (``allow`` / ``deny`` / ``review``; ``message`` is shown on deny)
``approved(ok, message)``      the approver's answer to a ``review``
``settled()``          the settle time asked for by :class:`Settle` is over
``listed(names)``      the host's listing for :class:`ListDir` (None: refused or failed)
``resize(width)``      the agent's terminal changed size

Actions: :class:`Show` (bytes for the agent's screen; ``record`` is what the recording keeps
of it, possibly nothing), :class:`Output` (host output, marks removed: show and record as
usual), :class:`Type` (bytes for the running program's terminal; record only their length),
:class:`Evaluate` (ask policy about a complete command), :class:`Run` (send the decided
command to the host), :class:`Finished` (the command that ran ended with ``status``),
:class:`WithdrawReview` (^C while waiting for an approver: cancel the request; the
machine has already refused the command and is back at its prompt), :class:`Hangup` (the agent ended
input: close the command channel, the shell exits with its last status), :class:`Sync` (send
the sync frame: the shell answers with what is left unread on its terminal), :class:`Settle`
(call ``settled()`` after a short while), :class:`Go` (answer the shell's C mark: run the
command, or not, after a ^C typed before it started).

States: ``starting`` (until the shell's first prompt mark) → ``prompt`` (the editor has the
keys) → ``deciding``/``reviewing`` (keys are queued as type-ahead) → ``running`` (what is
queued is typed to the program that starts, as a terminal would; keys go to the program's
terminal; a ^C or ^\\ typed before the shell's mark that the command starts (C) is the answer
to that mark, so the command does not run; one typed after it is typed, and the keys after it
are held until the prompt comes back, or until ``settled()`` if the program survives the signal;
if it had shown nothing before that ^C, the ^C is typed once more then) → ``syncing`` (if keys were typed into the command: what
it left unread comes back as a T mark and starts the next line) → ``prompt`` ... → ``closed``.

What it does not cover: the SSH plumbing, recording and policy calls (``bastion.ssh.shell``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

from bastion.proto import completion
from bastion.proto.lineeditor import (
    EndOfInput, Event, Interrupted, LineEditor, Submitted, TabPressed,
)
from bastion.proto.sanitize import sanitize
from bastion.proto.shellmarks import Mark, MarkScanner

PASTE_ON = b"\x1b[?2004h"
PASTE_OFF = b"\x1b[?2004l"
MAX_COMMAND = 256 * 1024


@dataclass(frozen=True, repr=False)
class Show:
    data: bytes
    record: bytes = b""

    def __repr__(self) -> str:
        return f"Show(<{len(self.data)} bytes>, record=<{len(self.record)} bytes>)"


@dataclass(frozen=True, repr=False)
class Output:
    data: bytes

    def __repr__(self) -> str:
        return f"Output(<{len(self.data)} bytes>)"


@dataclass(frozen=True, repr=False)
class Type:
    data: bytes

    def __repr__(self) -> str:
        return f"Type(<{len(self.data)} bytes>)"


@dataclass(frozen=True, repr=False)
class Evaluate:
    command: str

    def __repr__(self) -> str:
        return f"Evaluate(<{len(self.command)} chars>)"


@dataclass(frozen=True, repr=False)
class Run:
    command: str

    def __repr__(self) -> str:
        return f"Run(<{len(self.command)} chars>)"


@dataclass(frozen=True)
class Finished:
    status: int | None
    typed: int                     # bytes the agent typed into the command while it ran


WITHDRAWN = "bastion: approval request withdrawn; it was not run"


@dataclass(frozen=True)
class WithdrawReview:
    """^C while waiting for an approver: cancel the request (the machine is at its prompt)."""


@dataclass(frozen=True)
class Hangup:
    pass


@dataclass(frozen=True)
class Settle:
    """^C or ^\\ went to the running command: call ``settled()`` after a short while (keys
    typed meanwhile are held, so that a program dying of the signal cannot swallow them)."""


@dataclass(frozen=True)
class Go:
    """The shell said the command starts (C mark) and waits for the word: send it ``status``
    (``0``: run it; ``130``/``131``: a ^C or ^\\ came before it started, so it does not run
    and ends with that status)."""
    status: int


@dataclass(frozen=True)
class Sync:
    """Ask the host shell what was left unread on its terminal (answered by a T mark)."""


@dataclass(frozen=True)
class ListDir:
    """Tab on a path: if the policy allows listing ``directory`` (``ls -a``), ask the host
    shell (an L mark answers; call ``listed(names)``), else call ``listed(None)``."""
    directory: str


Action = (Show | Output | Type | Evaluate | Run | Go | Finished | WithdrawReview | Hangup | Sync
          | Settle | ListDir)


class MediatedShell:
    def __init__(self, *, nonce: str, user: str, target: str, width: int = 80,
                 needs_more: Callable[[str], bool] = lambda text: False,
                 first_command: str | None = None, can_sync: bool = True,
                 command_names: Callable[[], Iterable[str]] = lambda: ()) -> None:
        self.state = "starting"
        self.editor = LineEditor(width=width)
        self.marks = MarkScanner(nonce)
        self.user, self.target = sanitize(user), sanitize(target)
        self.needs_more = needs_more
        self.cwd = ""
        self.home = ""
        self.status: int | None = None
        self.single = first_command is not None     # exec with a pty: one command, then exit
        self.can_sync = can_sync                     # the host shell can give back unread keys
        self._first = first_command
        self._lines: list[str] = []                  # physical lines of a continued command
        self._pending = ""                           # the command being decided / reviewed
        self._typed = 0
        self._interrupted = False
        self._started = False                        # the shell's C mark came for this command
        self._quiet = False                          # nothing shown since it started
        self._again = b""                            # the interrupt to type once more (settled)
        self.command_names = command_names           # Tab in command position (policy names)
        self._tab: tuple[str, bool] | None = None    # completing: (prefix, Tab pressed again)
        self._last_tab = ""                          # the line before the cursor at the last Tab

    # -- inputs ------------------------------------------------------------------
    def agent(self, data: bytes) -> list[Action]:
        if self.state in ("syncing", "completing"):     # queued for the prompt
            self.editor.feed(data)
            return []
        if self.state == "running":
            if self._interrupted:                    # just after ^C: held (see settled)
                self.editor.feed(data)
                return []
            cut = min((i for i in (data.find(b"\x03"), data.find(b"\x1c")) if i >= 0),
                      default=-1)
            actions: list[Action] = []
            if cut >= 0 and not self._started:
                # The shell has not said the command starts (C mark): ^C and what follows
                # wait for it, and the ^C is then the word the shell waits for (Go), not a
                # signal: one that reaches the shell before the command's process exists is
                # taken by the shell, and bash acts on it only once that process has ended.
                self._interrupted = True
                self.editor.feed(data[cut:])
                data = data[:cut]
            elif cut >= 0:
                # Keys typed right after ^C would race the program's death (a dying reader
                # can still take them); they are held until the prompt comes back or the
                # program is seen to survive the interrupt (settled), like less.
                self._interrupted = True
                self.editor.feed(data[cut + 1:])
                data = data[:cut + 1]
                actions.append(Settle())
                if self._quiet:                      # see settled()
                    self._quiet, self._again = False, data[cut:]
            self._typed += len(data)
            return ([Type(data)] if data else []) + actions
        if self.state == "reviewing" and b"\x03" in data:
            # ^C withdraws the request at once (the approver's late answer finds no command);
            # keys before it were for the held command, keys after it are for the prompt.
            self.editor.drop_queue()
            self.editor.feed(data[data.index(b"\x03") + 1:])
            withdrawn: list[Action] = [Show(b"^C\r\n"), WithdrawReview()]
            return withdrawn + self._refused(WITHDRAWN)
        screen, event = self.editor.feed(data)
        return self._after_edit(screen, event)

    def host(self, data: bytes) -> list[Action]:
        clean, marks = self.marks.feed(data)
        actions: list[Action] = []
        pos = 0
        for mark in marks:
            if mark.at > pos:
                self._shown()
                actions.append(Output(clean[pos:mark.at]))
                pos = mark.at
            actions.extend(self._mark(mark))
        if pos < len(clean):
            self._shown()
            actions.append(Output(clean[pos:]))
        return actions

    def _shown(self) -> None:
        if self._started:
            self._quiet = False

    def decided(self, action: str, message: str = "") -> list[Action]:
        if self.state != "deciding":
            return []
        if action == "allow":
            return self._run()
        if action == "review":
            self.state = "reviewing"
            return []
        return self._refused(message)

    def approved(self, ok: bool, message: str = "") -> list[Action]:
        if self.state != "reviewing":
            return []
        if ok:
            return self._run()
        return self._refused(message)

    def listed(self, names: list[str] | None) -> list[Action]:
        """The host's listing for the Tab being completed (None: not allowed or failed)."""
        if self.state != "completing" or self._tab is None:
            return []
        prefix, again = self._tab
        self._tab = None
        self.state = "prompt"
        if names is None:
            screen, event = self.editor.complete(bell=True)
        else:
            out = completion.choose(prefix, names, again=again, path=True)
            screen, event = self.editor.complete(out.insert, list(out.choices), out.bell)
        return self._after_edit(screen, event)

    def settled(self) -> list[Action]:
        """The settle time after ^C is over and the command still runs: it survived the
        interrupt, so the keys held since go to it."""
        if self.state != "running" or not self._interrupted or not self._started:
            return []
        if self._again:
            # That ^C came before the command had shown anything, and it still runs: it may
            # have reached the shell before the command's process existed (bash then acts on
            # it only once that process has ended), so it is typed once more; the keys after
            # it stay held one more settle time.  (A program that shows nothing and survives
            # ^C gets it twice.)
            again, self._again = self._again, b""
            return [Type(again), Settle()]
        self._interrupted = False
        held = self.editor.take_queue()
        return self.agent(held) if held else []

    def resize(self, width: int) -> None:
        self.editor.resize(width)

    # -- internals ---------------------------------------------------------------
    def _mark(self, mark: Mark) -> list[Action]:
        if mark.kind == "L":
            if self.state != "completing":
                return []
            return self.listed(completion.parse_listing(mark.data.decode("ascii", "replace")))
        if mark.kind == "C":
            if self.state != "running" or self._started:
                return []
            self._started = True                # a ^C now reaches the command
            if not self._interrupted:
                self._quiet = True
                return [Go(0)]
            # ^C or ^\\ came before the command started: it does not run at all (the shell
            # waits for this word); the keys after it stay held until the prompt is back
            held = self.editor.take_queue()
            self.editor.feed(held[1:])
            key = held[:1]
            return [Show(b"^\\\r\n" if key == b"\x1c" else b"^C\r\n"),
                    Go(131 if key == b"\x1c" else 130)]
        if mark.kind == "T":
            if self.state != "syncing":
                return []
            # a ^D left unread was an end-of-file for the program, not a logout
            self.editor.unshift(mark.data.replace(b"\x04", b""))
            return self._prompt()
        if mark.cwd:
            self.cwd = mark.cwd
            if not self.home:
                self.home = mark.cwd
        if self.state == "starting":
            if self.single:
                self._pending = self._first or ""
                self.state = "deciding"
                return self._run()
            return self._prompt()
        if self.state != "running":
            return []                       # a forged or stray mark: nothing to do
        self.status = mark.status
        typed, self._typed = self._typed, 0
        actions: list[Action] = [Finished(mark.status, typed)]
        if self.single:
            self.state = "closed"
            return actions + [Hangup()]
        if typed and self.can_sync:                   # keys may be left unread: ask for them
            self.state = "syncing"
            return actions + [Sync()]
        return actions + self._prompt()

    def prompt_text(self) -> str:
        cwd = sanitize(self.cwd) or "?"
        if self.home and (cwd == self.home or cwd.startswith(self.home.rstrip("/") + "/")):
            cwd = "~" + cwd[len(self.home.rstrip("/")):] if self.home != "/" else cwd
        return f"{self.user}@{self.target}:{cwd}$ "

    def _prompt(self) -> list[Action]:
        self.state = "prompt"
        self._lines = []
        screen, event = self.editor.begin(self.prompt_text())
        return self._after_edit(PASTE_ON + screen, event)

    def _after_edit(self, screen: bytes, event: Event | None) -> list[Action]:
        actions: list[Action] = [Show(screen)] if screen else []
        while event is not None:
            if isinstance(event, TabPressed):
                again = event.before == self._last_tab
                self._last_tab = event.before
                word = completion.word_at(event.before)
                if word is not None and not word.command:
                    directory = completion.host_dir(word, self.cwd, self.home)
                    if directory is not None:
                        self.state = "completing"
                        self._tab = (word.prefix, again)
                        actions.append(ListDir(directory))
                        return actions
                    word = None
                if word is None:
                    screen, event = self.editor.complete(bell=True)
                else:
                    names = list(self.command_names()) + [
                        h.split()[0] for h in self.editor.history if h.split()]
                    out = completion.choose(word.text, names, again=again, path=False)
                    screen, event = self.editor.complete(out.insert, list(out.choices), out.bell)
            elif isinstance(event, Interrupted):
                self._lines = []
                screen, event = self.editor.begin(self.prompt_text())
            elif isinstance(event, EndOfInput):
                if self._lines:              # ^D in a continued command: drop it, as bash does
                    self._lines = []
                    actions.append(Show(b"bastion: unexpected end of input; command "
                                        b"discarded\r\n"))
                    screen, event = self.editor.begin(self.prompt_text())
                else:
                    self.state = "closed"
                    actions.append(Show(b"exit\r\n" + PASTE_OFF))
                    actions.append(Hangup())
                    return actions
            else:
                assert isinstance(event, Submitted)
                self._lines.append(event.line)
                text = "\n".join(self._lines)
                if len(text) > MAX_COMMAND:
                    self._lines = []
                    actions.append(Show(b"bastion: command too long; discarded\r\n"))
                    screen, event = self.editor.begin(self.prompt_text())
                elif not text.strip():
                    self._lines = []
                    screen, event = self.editor.begin(self.prompt_text())
                elif self.needs_more(text):
                    screen, event = self.editor.begin("> ")
                else:
                    self._pending = text
                    self.state = "deciding"
                    actions.append(Evaluate(text))
                    return actions
            if screen:
                actions.append(Show(screen))
        return actions

    def _run(self) -> list[Action]:
        if not self.single and b"\x03" in self.editor.queued_bytes():
            # ^C typed after Enter, before the command started: it is not started at all
            self._pending = ""
            before, _, after = self.editor.take_queue().partition(b"\x03")
            self.editor.feed(after)
            return [Show(b"^C\r\n")] + self._prompt()
        command, self._pending = self._pending, ""
        self.state = "running"
        self._typed = 0
        self._interrupted = False
        self._started = False
        self._quiet = False
        self._again = b""
        record = b""
        if not self.single:
            shown = (self.prompt_text() + command.replace("\n", "\r\n> ")).encode(
                "utf-8", "replace")
            record = shown + b"\r\n"
        actions: list[Action] = [Show(PASTE_OFF, record), Run(command)]
        if not self.editor.pasting:
            # (the rest of a paste is for the prompt: pasted lines are commands, one by one)
            # Type-ahead goes to the program that starts, as in a terminal; what it does not
            # read comes back after it (Sync) and is decided at the prompt like typing.
            ahead = self.editor.take_queue()
            if ahead:
                self._typed += len(ahead)
                actions.append(Type(ahead))
        return actions

    def _refused(self, message: str) -> list[Action]:
        self._pending = ""
        text = (sanitize(message) + "\r\n").encode("utf-8", "replace")
        if self.single:
            self.state = "closed"
            return [Show(text, text), Hangup()]
        return [Show(text, text)] + self._prompt()
