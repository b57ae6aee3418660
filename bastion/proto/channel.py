"""One session channel of an inner connection as a sans-IO state machine: events in, actions out.

It decides the order of everything that matters on a channel: nothing goes upstream before
the recording exists, the grant was checked and the command was decided (and approved, if
held); a byte reaches the agent only after its record (a failed record stops the actions
that follow it: the glue calls :meth:`ChannelCore.recording_failed`); the channel ends once,
with the bastion's own exit statuses.  A pty session (shell, or exec with a pty) is a
*mediated shell* once it is connected: its bytes go to :class:`bastion.proto.mediated.MediatedShell`
through the glue (:class:`ToShell`, :class:`ShellEof`), and its host output comes back here
through :meth:`ChannelCore.output` to be masked and recorded like an exec command's.

Events (each returns the actions to carry out, in order):

``recording_opened(masks)``   the recording exists; ``masks`` is the channel's
                              :class:`bastion.ssh.masking.ChannelMasks`-like object
                              (``feed(stream, data)``, ``flush()``, ``live``)
``recording_refused(why)``    it could not be opened
``granted(reason)``           the grant check: ``None`` if a grant allows the channel
``decided(action, message)``  the policy's answer to :class:`Decide` (allow/deny/review)
``approved(ok, message)``     the approver's answer to :class:`AskApproval`
``upstream_ready()`` / ``error(why)``    the answer to :class:`Connect` (``error`` also
                              for any failure of the bastion's that ends the channel)
``agent_data(data)`` / ``agent_eof()`` / ``agent_closed()``
``host_data(data, stderr)`` / ``host_eof()`` / ``host_closed(status, signal, lost)``
``output(data, stderr)``      host output of a mediated shell (marks removed)
``quiet()``                   the live output has been quiet for a while (flush the maskers)
``recording_failed(why)``     a record could not be written
``fail(why, status)``         the glue ends the channel (internal error, send failure)

Actions: :class:`Record`, :class:`Marker`, :class:`CheckGrant`, :class:`Decide`,
:class:`AskApproval`, :class:`Connect`, :class:`ToHost`, :class:`HostEof`, :class:`ToShell`,
:class:`ShellEof`, :class:`ToAgent`, :class:`ResumeAgent`, :class:`NoteData`,
:class:`CloseHostLater`,
:class:`CommandResult`, :class:`End` (close the recording and upstream; tell the agent, if
still there, and give it the exit status or signal).

States: ``opening`` → ``granting`` → ``deciding`` → ``reviewing`` → ``connecting`` →
``relaying`` → ``ended``.  The agent's bytes and EOF are kept until ``relaying``; an exec
command's input is recorded as it arrives (masked), a mediated shell's is not (it records
decided lines itself).

Exit statuses the bastion itself gives (README): 126 denied by policy or grant, 125 held for
review and not approved, 255 the bastion could not reach or use the upstream host, or could
not record.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

EXIT_DENIED = 126
EXIT_NOT_APPROVED = 125
EXIT_BASTION_ERROR = 255

STDOUT, STDERR, INPUT = "stdout", "stderr", "input"


@dataclass(frozen=True)
class Record:
    """Write ``data`` (already masked) to the recording's ``stream``."""
    stream: str
    data: bytes


@dataclass(frozen=True)
class Marker:
    label: str


@dataclass(frozen=True)
class CheckGrant:
    """Answer with ``granted(reason)``."""


@dataclass(frozen=True)
class Decide:
    """Decide the exec command and record it; answer with ``decided(action, message)``."""
    command: str


@dataclass(frozen=True)
class AskApproval:
    """Hold the command for a human; answer with ``approved(ok, message)``."""
    command: str


@dataclass(frozen=True)
class Connect:
    """Open the upstream session (``mediated``: a mediated shell, its first command
    ``first_command`` for an exec with a pty); answer with ``upstream_ready()`` or
    ``error(why)``."""
    mediated: bool
    first_command: str | None = None


@dataclass(frozen=True)
class ToHost:
    data: bytes


@dataclass(frozen=True)
class HostEof:
    pass


@dataclass(frozen=True)
class ToShell:
    """Agent bytes for the mediated shell."""
    data: bytes


@dataclass(frozen=True)
class ShellEof:
    pass


@dataclass(frozen=True)
class ToAgent:
    data: bytes
    stderr: bool = False


@dataclass(frozen=True)
class CloseHostLater:
    """The agent left while its command runs: close the upstream channel if it has not
    ended by itself after a grace time (its end then comes as ``host_closed``)."""


@dataclass(frozen=True)
class ResumeAgent:
    """Reading from the agent may start (it was paused while the channel started)."""


@dataclass(frozen=True)
class NoteData:
    """Live-masked data went by: call ``quiet()`` once the stream has been quiet."""


@dataclass(frozen=True)
class CommandResult:
    """The decided exec command ended with ``status`` (None: unknown)."""
    status: int | None


@dataclass(frozen=True)
class End:
    """Close the recording (with ``status``/``signal``) and the upstream channel; if the agent
    is still there, write ``message`` on its stderr (if any) and end its channel with
    ``signal`` (asyncssh's exit-signal tuple), else ``status``, else a plain close."""
    status: int | None
    signal: tuple[Any, ...] | None = None
    message: bytes = b""
    agent: bool = True


Action = (Record | Marker | CheckGrant | Decide | AskApproval | Connect | ToHost | HostEof
          | ToShell | ShellEof | ToAgent | ResumeAgent | NoteData | CommandResult | End
          | CloseHostLater)


def bastion_line(message: str) -> str:
    """``message`` as the one line the bastion ends a channel with: ``bastion: ...``."""
    line = " ".join(message.split()) or "the bastion ended the session"
    return line if line.startswith("bastion: ") else "bastion: " + line


class ChannelCore:
    """The state of one session channel (see the module doc)."""

    def __init__(self, kind: str, command: str | None, pty: bool,
                 mask: Callable[[str], str] = lambda text: text) -> None:
        self.kind = kind                         # "exec" | "shell"
        self.command = command
        self.pty = pty
        self.mediated = pty and kind in ("shell", "exec")
        self.mask = mask                         # for the bastion's own messages
        self.state = "opening"
        self.masks: Any = None
        self.agent_gone = False
        self._input: list[bytes] = []
        self._eof = False
        self._decided = False                    # a command was decided: report its result

    @property
    def ended(self) -> bool:
        return self.state == "ended"

    # -- start -----------------------------------------------------------------
    def recording_opened(self, masks: Any) -> list[Action]:
        if self.state != "opening":
            return []
        self.masks = masks
        self.state = "granting"
        actions: list[Action] = []
        if not self.mediated:                    # input that came early is recorded now
            actions += self._record_input(b"".join(self._input))
        return actions + [CheckGrant()]

    def recording_refused(self, why: str) -> list[Action]:
        return self._end_with(f"bastion: sessions are refused: they cannot be recorded ({why})",
                              EXIT_BASTION_ERROR)

    def granted(self, reason: str | None) -> list[Action]:
        if self.state != "granting":
            return []
        if reason is not None:
            return [Marker(f"refused: {reason}")] + self._end_with(f"bastion: {reason}",
                                                                   EXIT_DENIED)
        if self.kind == "exec":
            self.state = "deciding"
            return [Decide(self.command or "")]
        if not self.pty:
            # Without a terminal there is no line to edit: scripts use exec; people a pty.
            return self._end_with("bastion: a shell needs a terminal here: run commands as "
                                  "`ssh host 'command'` or ask for a pty with `ssh -t`",
                                  EXIT_DENIED)
        return self._connect()

    def decided(self, action: str, message: str = "") -> list[Action]:
        if self.state != "deciding":
            return []
        self._decided = True
        if action == "allow":
            return self._connect()
        if action == "review":
            self.state = "reviewing"
            return [AskApproval(self.command or "")]
        return self._end_with(message, EXIT_DENIED)

    def approved(self, ok: bool, message: str = "") -> list[Action]:
        if self.state != "reviewing":
            return []
        if ok:
            return self._connect()
        return self._end_with(message, EXIT_NOT_APPROVED)

    def _connect(self) -> list[Action]:
        self.state = "connecting"
        first = self.command if self.mediated and self.kind == "exec" else None
        return [Connect(self.mediated, first)]

    def upstream_ready(self) -> list[Action]:
        if self.state != "connecting":
            return []
        self.state = "relaying"
        pending, self._input = self._input, []
        actions: list[Action] = []
        for data in pending:
            actions.append(ToShell(data) if self.mediated else ToHost(data))
        if self._eof:
            actions.append(ShellEof() if self.mediated else HostEof())
        return actions + [ResumeAgent()]

    def error(self, why: str) -> list[Action]:
        """The bastion could not go on (the upstream could not be reached or used, ...)."""
        return [Marker(f"error: {why}")] + self._end_with(f"bastion: {why}", EXIT_BASTION_ERROR)

    # -- the agent -------------------------------------------------------------
    def agent_data(self, data: bytes) -> list[Action]:
        if self.ended:
            return []
        actions: list[Action] = []
        if not self.mediated and self.masks is not None:
            actions += self._record_input(data)
            if self.masks.live:
                actions.append(NoteData())
        if self.state != "relaying":
            self._input.append(data)
            return actions
        return actions + [ToShell(data) if self.mediated else ToHost(data)]

    def agent_eof(self) -> list[Action]:
        if self.ended:
            return []
        if self.state != "relaying":
            self._eof = True
            return []
        return [ShellEof() if self.mediated else HostEof()]

    def agent_closed(self) -> list[Action]:
        """The agent's channel is gone (it closed it, or the connection dropped).

        A command already running upstream gets end of input and a grace time to end by
        itself, so that its exit status (or what it still prints) is recorded; then the
        upstream channel is closed.  Anything not started yet never starts."""
        self.agent_gone = True
        if self.ended:
            return []
        if self.state == "relaying":
            return [Marker("agent left: waiting for the command to end"),
                    ShellEof() if self.mediated else HostEof(), CloseHostLater()]
        self.state = "ended"
        if self.masks is None:                   # nothing recorded yet: nothing to close
            return [End(None, agent=False)]
        return self._flush(final=True, to_agent=False) + [End(None, agent=False)]

    # -- the host --------------------------------------------------------------
    def host_data(self, data: bytes, stderr: bool = False) -> list[Action]:
        if self.ended or self.mediated:
            return []                           # (a mediated shell's output comes via output())
        return self.output(data, stderr)

    def output(self, data: bytes, stderr: bool = False) -> list[Action]:
        """Host output for the agent: masked, recorded first, then written."""
        if self.ended or self.masks is None:
            return []
        masked = self.masks.feed(STDERR if stderr else STDOUT, data)
        actions: list[Action] = [Record(STDERR if stderr else STDOUT, masked)] if masked else []
        shown = masked if self.masks.live else data
        if shown and not self.agent_gone:
            actions.append(ToAgent(shown, stderr))
        if self.masks.live:
            actions.append(NoteData())
        return actions

    def host_eof(self) -> list[Action]:
        """The host's output ended; the EOF itself goes to the agent with the exit status
        (an OpenSSH client whose stdin is at EOF closes at once on EOF, losing the status)."""
        if self.ended:
            return []
        return self._flush(final=False, to_agent=True)

    def host_closed(self, status: int | None, signal: tuple[Any, ...] | None,
                    lost: str | None = None) -> list[Action]:
        """The upstream channel closed with ``status`` or ``signal``; ``lost``: why the
        connection broke, if it did."""
        if self.ended:
            return []
        actions: list[Action] = []
        if self._decided and self.kind == "exec" and not self.mediated:
            actions.append(CommandResult(status))
        actions += self._flush(final=True, to_agent=not self.agent_gone)
        if status is None and signal is None and lost is not None and not self.agent_gone:
            return actions + self._end_with(f"bastion: upstream connection lost: {lost}",
                                            EXIT_BASTION_ERROR, flush=False)
        self.state = "ended"
        return actions + [End(status, signal, agent=not self.agent_gone)]

    def quiet(self) -> list[Action]:
        if self.ended or self.masks is None:
            return []
        return self._flush(final=False, to_agent=True)

    # -- failures ----------------------------------------------------------------
    def recording_failed(self, why: str) -> list[Action]:
        return self._end_with(f"bastion: session ended: it can no longer be recorded ({why})",
                              EXIT_BASTION_ERROR, flush=False, record=False)

    def fail(self, why: str, status: int = EXIT_BASTION_ERROR) -> list[Action]:
        return self._end_with(why, status)

    # -- internals ---------------------------------------------------------------
    def _record_input(self, data: bytes) -> list[Action]:
        if not data:
            return []
        masked = self.masks.feed(INPUT, data)
        return [Record(INPUT, masked)] if masked else []

    def _flush(self, *, final: bool, to_agent: bool) -> list[Action]:
        """What the maskers hold: to the recording, and to the agent when live."""
        if self.masks is None:
            return []
        actions: list[Action] = []
        for stream, data in self.masks.flush():
            actions.append(Record(stream, data))
            if stream != INPUT and self.masks.live and to_agent and not self.agent_gone:
                actions.append(ToAgent(data, stream == STDERR))
        return actions

    def _end_with(self, message: str, status: int, *, flush: bool = True,
                  record: bool = True) -> list[Action]:
        """End the channel from the bastion's side: a message on stderr, an exit status.

        The message is always one line starting ``bastion: `` (so that a script can tell the
        bastion's 125/126/255 from the same status of a command: docs/DATAPATH.md)."""
        if self.ended:
            return []
        self.state = "ended"
        nl = "\r\n" if self.pty else "\n"
        text = (bastion_line(message) + nl).encode("utf-8", "replace")
        actions: list[Action] = []
        if self.masks is not None and record:
            if flush:
                actions += self._flush(final=True, to_agent=False)
            actions.append(Record(STDERR, self.mask(text.decode("utf-8", "replace"))
                                  .encode("utf-8", "replace")))
        return actions + [End(status, message=text, agent=not self.agent_gone)]
