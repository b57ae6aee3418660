"""Sessions on an inner connection: policy first, then a relay to the upstream host.

exec: the command is evaluated by policy before anything goes upstream.
  allow  → an upstream session runs it; stdout, stderr, stdin, EOF, window
           changes, signals, exit status and exit signal are passed through.
  deny   → nothing runs; one line on stderr naming the rule; exit status 126.
  review → held for a human (the approvals feature); until an approver exists the
           command is refused like a denial, exit status 125.
shell: every line the agent submits is evaluated with its Enter held back
  (:mod:`bastion.proto.linetracker`); a line the bastion cannot reconstruct exactly
  from the keystrokes is opaque; a refused line is cleared on the host, not run.

Exit statuses the bastion itself produces (documented in the README):
  126 denied by policy or grant, 125 held for review and not approved,
  255 the bastion could not reach or use the upstream host.

``env`` requests are dropped unless named in ``[settings] env_allow``.
Not covered here: sftp/subsystems (refused), X11/agent forwarding (refused by
the inner server), approvals (later).
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
from typing import Any

import asyncssh

from bastion.errors import BastionError
from bastion.ssh.context import InnerContext

log = logging.getLogger("bastion.session")
audit = logging.getLogger("bastion.audit")

EXIT_DENIED = 126
EXIT_NOT_APPROVED = 125
EXIT_BASTION_ERROR = 255

UPSTREAM_WINDOW = 4 * 1024 * 1024


def _printable(text: str, limit: int = 300) -> str:
    """A one-line, control-free rendering of agent text for logs and messages."""
    out = []
    for ch in text:
        if ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 32 or 0x7f <= ord(ch) < 0xa0:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    s = "".join(out)
    return s if len(s) <= limit else s[:limit] + "…"


class _UpstreamSide(asyncssh.SSHClientSession):
    """Client session on the upstream connection; mirrors everything to the inner channel."""

    def __init__(self, owner: "InnerSession") -> None:
        self.owner = owner

    def data_received(self, data: bytes, datatype: Any) -> None:
        self.owner.upstream_data(data, datatype)

    def eof_received(self) -> bool:
        self.owner.upstream_eof()
        return True

    def pause_writing(self) -> None:
        self.owner.chan.pause_reading()

    def resume_writing(self) -> None:
        self.owner.chan.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner.upstream_closed(exc)


class InnerSession(asyncssh.SSHServerSession):
    """One session channel of an inner connection."""

    def __init__(self, ctx: InnerContext) -> None:
        self.ctx = ctx
        self.chan: asyncssh.SSHServerChannel | None = None
        self.kind: str | None = None          # "exec" | "shell"
        self.command: str | None = None
        self.term_type: str | None = None
        self.term_size: tuple[int, int, int, int] | None = None
        self.term_modes: dict | None = None
        self.up_chan: asyncssh.SSHClientChannel | None = None
        self.up_conn: asyncssh.SSHClientConnection | None = None
        self._pending: list[tuple[bytes, Any]] = []
        self._pending_eof = False
        self._tracker = None
        self._closed = False
        self._task: asyncio.Task | None = None
        self._exit_sent = False
        self.recording = None

    # -- requests ------------------------------------------------------------
    def connection_made(self, chan: asyncssh.SSHServerChannel) -> None:
        self.chan = chan

    def pty_requested(self, term_type: str, term_size, term_modes) -> bool:
        self.term_type, self.term_size, self.term_modes = term_type, term_size, term_modes
        return True

    def shell_requested(self) -> bool:
        self.kind = "shell"
        return True

    def exec_requested(self, command: str) -> bool:
        self.kind = "exec"
        self.command = command
        return True

    def subsystem_requested(self, subsystem: str) -> bool:
        audit.warning("subsystem refused principal=%s target=%s subsystem=%s",
                      self.ctx.principal.subject, self.ctx.target.name, _printable(subsystem))
        return False

    def session_started(self) -> None:
        self.chan.pause_reading()
        self._task = asyncio.ensure_future(self._start())

    # -- start: grant, policy, upstream ------------------------------------
    async def _start(self) -> None:
        ctx = self.ctx
        services = ctx.services
        config = services.config
        try:
            grant = config.grant_for(ctx.principal, ctx.target, self.kind)
            if grant is None:
                reason = (f"no grant lets {ctx.principal.label} open a {self.kind} channel "
                          f"on target {ctx.target.name}")
                audit.warning("channel refused principal=%s target=%s kind=%s: %s",
                              ctx.principal.subject, ctx.target.name, self.kind, reason)
                self._refuse(f"bastion: {reason}", EXIT_DENIED)
                return
            if self.kind == "exec":
                decision = services.decide(ctx, self.command, channel="exec")
                if decision.action.value != "allow":
                    self._refuse(self._decision_message(decision),
                                 EXIT_DENIED if decision.action.value == "deny" else EXIT_NOT_APPROVED)
                    return
            elif not self.term_type:
                # Without a terminal there is no line editing to follow: bytes that a pty
                # would treat as editing keys reach the shell literally, so keystroke
                # tracking cannot be exact.  Scripts use exec; people use a pty.
                self._refuse("bastion: a shell needs a terminal here: run commands as "
                             "`ssh host 'command'` or ask for a pty with `ssh -t`", EXIT_DENIED)
                return
            else:
                self._tracker = services.new_line_tracker()
            await self._open_upstream()
        except BastionError as exc:
            log.warning("session %s failed: %s", ctx.where, exc)
            self._refuse(f"bastion: {exc}", EXIT_BASTION_ERROR)
        except Exception:  # noqa: BLE001 - never leave a channel hanging on a bug
            log.exception("session %s: internal error", ctx.where)
            self._refuse("bastion: internal error (see the bastion log)", EXIT_BASTION_ERROR)

    @staticmethod
    def _decision_message(decision) -> str:
        action = decision.action.value
        rule = decision.rule or "<none>"
        if action == "deny":
            return f"bastion: denied by rule {rule}: {_printable(decision.reason)}"
        return (f"bastion: held for review by rule {rule} ({_printable(decision.reason)}); "
                "no approver is available, so it was not run")

    async def _open_upstream(self) -> None:
        ctx = self.ctx
        services = ctx.services
        self.up_conn = await services.pool.acquire(ctx.target)
        env = services.filter_env(self.chan.get_environment())
        try:
            self.up_chan, _ = await self.up_conn.create_session(
                lambda: _UpstreamSide(self), self.command if self.kind == "exec" else None,
                term_type=self.term_type, term_size=self.term_size,
                term_modes=self._upstream_modes(), env=env, encoding=None,
                window=UPSTREAM_WINDOW)
        except asyncssh.ChannelOpenError as exc:
            services.pool.release(ctx.target, self.up_conn)
            self.up_conn = None
            raise UpstreamErrorFromChannel(ctx.target.name, exc.reason) from exc
        if self._closed:
            self.up_chan.close()
            return
        for data, datatype in self._pending:
            self._to_upstream(data)
        self._pending.clear()
        if self._pending_eof:
            self.up_chan.write_eof()
        self.chan.resume_reading()

    def _upstream_modes(self) -> dict:
        """Terminal modes for the upstream pty.

        For a tracked shell, the bastion's own fixed modes, not the agent's: an agent
        that set the end-of-line character to ``#`` could otherwise run a line with
        no Enter for the tracker to hold, and IUCLC would turn ``RM`` into ``rm``.
        """
        if self._tracker is not None and self.term_type:
            from bastion.proto.linetracker import UPSTREAM_TTY_MODES
            return dict(UPSTREAM_TTY_MODES)
        return dict(self.term_modes or {})

    def _refuse(self, message: str, status: int) -> None:
        if self._closed or self.chan is None:
            return
        try:
            nl = "\r\n" if self.term_type else "\n"
            self.chan.write_stderr((message + nl).encode("utf-8", "replace"))
            self.chan.exit(status)
        except (asyncssh.Error, OSError, BrokenPipeError):
            self.chan.close()
        self._exit_sent = True

    # -- agent → upstream ----------------------------------------------------
    def data_received(self, data: bytes, datatype: Any) -> None:
        if self.up_chan is None:
            self._pending.append((data, datatype))
            return
        self._to_upstream(data)

    def _to_upstream(self, data: bytes) -> None:
        if self._tracker is None:
            self.up_chan.write(data)
            return
        from bastion.proto.linetracker import LineTrackerError
        try:
            self._handle_events(self._tracker.receive(data))
        except LineTrackerError as exc:
            log.warning("session %s: line tracker refused input: %s", self.ctx.where, exc)
            self._refuse(f"bastion: input refused: {exc}", EXIT_DENIED)
            self.up_chan.close()

    def _handle_events(self, events) -> None:
        from bastion.proto.linetracker import Forward, LineSubmitted
        for event in events:
            if isinstance(event, Forward):
                if event.data:
                    self.up_chan.write(event.data)
            elif isinstance(event, LineSubmitted):
                self._decide_line(event)
                return   # release()/cancel() continue the stream

    def _decide_line(self, event) -> None:
        services = self.ctx.services
        if event.exact:
            decision = services.decide(self.ctx, event.line, channel="shell")
        else:
            decision = services.decide_opaque(self.ctx, event.line, event.reason or "line edited")
        if decision.action.value == "allow":
            self._handle_events(self._tracker.release())
        else:
            self.chan.write(("\r\n" + self._decision_message(decision) + "\r\n").encode())
            self._handle_events(self._tracker.cancel())

    def eof_received(self) -> bool:
        if self.up_chan is None:
            self._pending_eof = True
        else:
            self.up_chan.write_eof()
        return True

    def terminal_size_changed(self, width, height, pixwidth, pixheight) -> None:
        self.term_size = (width, height, pixwidth, pixheight)
        if self.up_chan is not None:
            self.up_chan.change_terminal_size(width, height, pixwidth, pixheight)

    def signal_received(self, signal: str) -> None:
        if self.up_chan is not None:
            self.up_chan.send_signal(signal)

    def break_received(self, msec: int) -> bool:
        if self.up_chan is not None:
            self.up_chan.send_break(msec)
            return True
        return False

    def pause_writing(self) -> None:
        if self.up_chan is not None:
            self.up_chan.pause_reading()

    def resume_writing(self) -> None:
        if self.up_chan is not None:
            self.up_chan.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        if self._task and not self._task.done():
            self._task.cancel()
        if self.up_chan is not None:
            self.up_chan.close()

    # -- upstream → agent ----------------------------------------------------
    def upstream_data(self, data: bytes, datatype: Any) -> None:
        if self._tracker is not None:
            self._tracker.observe_output(data)
        if not self._closed:
            self.chan.write(data, datatype)

    def upstream_eof(self) -> None:
        if not self._closed:
            try:
                self.chan.write_eof()
            except (asyncssh.Error, OSError):
                pass

    def upstream_closed(self, exc: Exception | None) -> None:
        if self.up_conn is not None:
            self.ctx.services.pool.release(self.ctx.target, self.up_conn)
            self.up_conn = None
        if self._closed or self._exit_sent:
            return
        self._exit_sent = True
        up = self.up_chan
        signal = up.get_exit_signal() if up else None
        status = up.get_exit_status() if up else None
        try:
            if signal:
                name, core_dumped, msg, lang = signal
                log.info("session %s: exit signal %s", self.ctx.where, name)
                self.chan.exit_with_signal(name, core_dumped, msg, lang)
            elif status is not None:
                self.chan.exit(status)
            else:
                if exc is not None:
                    self.chan.write_stderr(f"bastion: upstream connection lost: {exc}\n".encode())
                    self.chan.exit(EXIT_BASTION_ERROR)
                else:
                    self.chan.close()
        except (asyncssh.Error, OSError):
            self.chan.close()


class UpstreamErrorFromChannel(BastionError):
    def __init__(self, target: str, reason: str) -> None:
        super().__init__(f"target {target} refused the session: {reason}")
