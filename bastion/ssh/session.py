"""Sessions on an inner connection: recorded, policy first, then a relay upstream.

exec: the command is evaluated by policy before anything goes upstream.
  allow  → an upstream session runs it; stdout, stderr, stdin, EOF, window
           changes, signals, exit status and exit signal are passed through.
  deny   → nothing runs; one line on stderr naming the rule; exit status 126.
  review → held for a human (:mod:`bastion.approvals`): the agent is told
           "waiting for approval, request N, up to T s"; approved → it runs; denied,
           timed out or the bastion restarted → nothing runs, exit status 125.
shell with a pty, and exec with a pty: a mediated shell (:mod:`bastion.ssh.shell`,
  docs/INTERACTIVE.md): the bastion edits the command line itself and the host's shell
  runs only decided command texts; an exec command is decided first, as above.
  A shell without a pty is refused (scripts use exec; people use a pty).

Every channel is recorded (:mod:`bastion.recording`) before anything runs: when
the recording cannot be opened or written, the channel is refused or ended —
a session never runs unrecorded.  Writes to the recording are flow-controlled:
while its queue is over the high-water mark, reading from both peers pauses.

Exit statuses the bastion itself produces (documented in the README):
  126 denied by policy or grant, 125 held for review and not approved,
  255 the bastion could not reach or use the upstream host, or could not record.

``env`` requests are dropped unless named in ``[settings] env_allow``.
Not covered here: sftp/subsystems (refused), X11/agent forwarding (refused by
the inner server).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import asyncssh

from bastion.errors import BastionError, RecordingError, UpstreamError
from bastion.ssh.context import InnerContext
from bastion.ssh.held import ReviewMixin
from bastion.ssh.masking import INPUT, STDERR, STDOUT, MaskFlushMixin, masked_decision
from bastion.ssh.relay import Valve, UpstreamSide, printable

log = logging.getLogger("bastion.session")
audit = logging.getLogger("bastion.audit")

EXIT_DENIED = 126
EXIT_NOT_APPROVED = 125
EXIT_BASTION_ERROR = 255

UPSTREAM_WINDOW = 4 * 1024 * 1024
UPSTREAM_PACKET = 256 * 1024     # sshd may then send up to its read size (64 KiB) per packet


class InnerSession(ReviewMixin, MaskFlushMixin, asyncssh.SSHServerSession):
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
        self.agent_valve = Valve()           # reading from the agent
        self.upstream_valve = Valve()        # reading from the host
        self.rec = None                       # recording.ChannelRecording
        self.masks = None                     # masking.ChannelMasks (after the grant check)
        self._last_data = 0.0
        self._flush_timer: asyncio.TimerHandle | None = None
        self._command_id: int | None = None
        self._pending: list[bytes] = []
        self._pending_eof = False
        self._mediated = None                 # shell.MediatedSession for a pty session
        self._closed = False
        self._finished = False
        self._draining = False
        self._task: asyncio.Task | None = None
        self._review_task: asyncio.Task | None = None

    # -- requests ------------------------------------------------------------
    def connection_made(self, chan: asyncssh.SSHServerChannel) -> None:
        self.chan = chan
        self.agent_valve.attach(chan)

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
                      self.ctx.principal.subject, self.ctx.target.name, printable(subsystem))
        return False

    def session_started(self) -> None:
        self.agent_valve.pause("starting")
        self._task = asyncio.ensure_future(self._start())

    # -- start: recording, grant, policy, upstream -----------------------------
    async def _start(self) -> None:
        ctx = self.ctx
        services = ctx.services
        masks = services.channel_masks(ctx, self.kind)
        try:
            self.rec = services.open_recording(
                ctx, self.kind, command=self.command, term=self.term_type,
                size=self.term_size, env=self.chan.get_environment(), masks=masks)
            await self.rec.opened()          # the file exists before anything can run
        except RecordingError as exc:
            log.error("session %s refused: recording unavailable: %s", ctx.where, exc)
            self._finish(f"bastion: sessions are refused: they cannot be recorded ({exc})",
                         EXIT_BASTION_ERROR)
            return
        try:
            grant = services.config.grant_for(ctx.principal, ctx.target, self.kind)
            self.masks = masks
            if not self._is_mediated():
                for data in self._pending:
                    masked = self.masks.feed(INPUT, data)
                    if masked:
                        self.rec.input(masked)
            if grant is None:
                reason = (f"no grant lets {ctx.principal.label} open a {self.kind} channel "
                          f"on target {ctx.target.name}")
                audit.warning("channel refused principal=%s target=%s kind=%s: %s",
                              ctx.principal.subject, ctx.target.name, self.kind, reason)
                self._marker(f"refused: {reason}")
                self._finish(f"bastion: {reason}", EXIT_DENIED)
                return
            if self.kind == "exec":
                decision = services.decide(ctx, self.command, channel="exec")
                self._command_id = self.rec.command(services.mask(self.command),
                                                    masked_decision(decision, services.detectors))
                if decision.action.value == "deny":
                    self._finish(self._decision_message(decision), EXIT_DENIED)
                    return
                if decision.action.value == "review":
                    outcome = await self._ask_approval(self.command, decision, self._command_id)
                    if not outcome.approved:
                        from bastion.approvals.notices import outcome_message
                        self._finish(outcome_message(outcome), EXIT_NOT_APPROVED)
                        return
            if self.kind == "exec" and self.term_type:
                # exec with a pty: the decided command runs in a mediated shell, so what is
                # typed into it afterwards reaches only that command, never a shell.
                from bastion.ssh.shell import MediatedSession
                self._mediated = MediatedSession(self, first_command=self.command)
                self._command_id = None
            elif self.kind == "exec":
                pass
            elif not self.term_type:
                # Without a terminal there is no line editing to follow: bytes that a pty
                # would treat as editing keys reach the shell literally, so keystroke
                # tracking cannot be exact.  Scripts use exec; people use a pty.
                self._finish("bastion: a shell needs a terminal here: run commands as "
                             "`ssh host 'command'` or ask for a pty with `ssh -t`", EXIT_DENIED)
                return
            else:
                from bastion.ssh.shell import MediatedSession
                self._mediated = MediatedSession(self)
            await self._open_upstream()
        except RecordingError as exc:
            self._recording_failed(exc)
        except BastionError as exc:
            log.warning("session %s failed: %s", ctx.where, exc)
            self._marker(f"error: {exc}")
            self._finish(f"bastion: {exc}", EXIT_BASTION_ERROR)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - never leave a channel hanging on a bug
            log.exception("session %s: internal error", ctx.where)
            self._finish("bastion: internal error (see the bastion log)", EXIT_BASTION_ERROR)

    @staticmethod
    def _decision_message(decision) -> str:
        rule = decision.rule or "<none>"
        return f"bastion: denied by rule {rule}: {printable(decision.reason)}"

    async def _open_upstream(self) -> None:
        ctx = self.ctx
        services = ctx.services
        self.up_conn = await services.pool.acquire(ctx.target)
        env = services.filter_env(self.chan.get_environment())
        if self._mediated is not None:
            try:
                self.up_chan = await self._mediated.open(self.up_conn, env)
            except BaseException:
                services.pool.release(ctx.target, self.up_conn)
                self.up_conn = None
                raise
            self.upstream_valve.attach(self.up_chan)
            if self._closed or self._finished:
                self._mediated.close()
                self.up_chan.close()
                return
            pending, self._pending = self._pending, []
            for data in pending:
                self._mediated.agent_data(data)
            if self._pending_eof:
                self._mediated.machine.state = "closed"
                self._mediated.ctl_chan.write_eof()
            self.agent_valve.resume("starting")
            return
        try:
            self.up_chan, _ = await self.up_conn.create_session(
                lambda: UpstreamSide(self), self.command if self.kind == "exec" else None,
                term_type=self.term_type, term_size=self.term_size,
                env=env, encoding=None,
                window=UPSTREAM_WINDOW, max_pktsize=UPSTREAM_PACKET)
        except asyncssh.ChannelOpenError as exc:
            services.pool.release(ctx.target, self.up_conn)
            self.up_conn = None
            raise UpstreamError(f"target {ctx.target.name} refused the session: "
                                f"{exc.reason}") from exc
        self.upstream_valve.attach(self.up_chan)
        if self._closed or self._finished:
            self.up_chan.close()
            return
        pending, self._pending = self._pending, []
        for data in pending:
            self.up_chan.write(data)
        if self._pending_eof:
            self.up_chan.write_eof()
        self.agent_valve.resume("starting")

    def _is_mediated(self) -> bool:
        return bool(self.term_type) and self.kind in ("shell", "exec")

    # -- ending ------------------------------------------------------------------
    def _finish(self, message: str, status: int) -> None:
        """End the channel from the bastion's side: a message on stderr, an exit status."""
        if self._finished:
            return
        self._finished = True
        text = (message + ("\r\n" if self.term_type else "\n")).encode("utf-8", "replace")
        if self.rec is not None:
            try:
                self._flush_masks(final=True)
                self.rec.output(self.ctx.services.mask(text.decode("utf-8", "replace"))
                                .encode("utf-8", "replace"), stderr=True)
            except RecordingError:
                pass
            self.rec.close(exit_status=status)
        if self.up_chan is not None:
            self.up_chan.close()
        if self._closed or self.chan is None:
            return
        try:
            self.chan.write_stderr(text)
            self.chan.exit(status)
        except (asyncssh.Error, OSError, BrokenPipeError):
            self.chan.close()

    def _recording_failed(self, exc: Exception) -> None:
        log.error("session %s ended: recording failed: %s", self.ctx.where, exc)
        self._finish(f"bastion: session ended: it can no longer be recorded ({exc})",
                     EXIT_BASTION_ERROR)

    def _marker(self, label: str) -> None:
        if self.rec is not None:
            try:
                self.rec.marker(label)
            except RecordingError as exc:
                self._recording_failed(exc)

    def _recorded(self, fn, *args, **kwargs) -> bool:
        """Call a recording method; on failure end the channel.  False if it failed."""
        try:
            fn(*args, **kwargs)
        except RecordingError as exc:
            self._recording_failed(exc)
            return False
        if self.rec.over_high_water() and not self._draining:
            self._draining = True
            self.agent_valve.pause("recording")
            self.upstream_valve.pause("recording")
            asyncio.ensure_future(self._drain())
        return True

    async def _drain(self) -> None:
        try:
            await self.rec.drain()
        except RecordingError as exc:
            self._recording_failed(exc)
        finally:
            self._draining = False
            self.agent_valve.resume("recording")
            self.upstream_valve.resume("recording")

    # -- agent → upstream ----------------------------------------------------
    def data_received(self, data: bytes, datatype: Any) -> None:
        if self.agent_valve.reasons:          # asyncssh resumed the channel on its own
            self.agent_valve.hold()
        if self.masks is None:                # before recording and masks exist: keep, record later
            self._pending.append(data)
            return
        if self._finished:
            return
        if self._mediated is not None:        # typed text is recorded as decided lines only
            if self.up_chan is None:
                self._pending.append(data)
            else:
                self._mediated.agent_data(data)
            return
        masked = self.masks.feed(INPUT, data)
        if masked and not self._recorded(self.rec.input, masked):
            return
        self._data_seen()
        if self.up_chan is None:
            self._pending.append(data)
            return
        self.up_chan.write(data)

    def eof_received(self) -> bool:
        if self._mediated is not None:
            if self._mediated.ctl_chan is not None:
                self._mediated.ctl_chan.write_eof()
            else:
                self._pending_eof = True
            return True
        if self.up_chan is None:
            self._pending_eof = True
        else:
            self.up_chan.write_eof()
        return True

    def terminal_size_changed(self, width, height, pixwidth, pixheight) -> None:
        self.term_size = (width, height, pixwidth, pixheight)
        if self.rec is not None:
            self._recorded(self.rec.resize, width, height)
        if self._mediated is not None:
            self._mediated.resize(width)
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
        self.upstream_valve.pause("agent window full")

    def resume_writing(self) -> None:
        self.upstream_valve.resume("agent window full")

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        for task in (self._task, self._review_task):
            if task and not task.done():
                task.cancel()           # a pending approval request is withdrawn
        if self._mediated is not None:
            self._mediated.close()
        if self.up_chan is not None:
            self.up_chan.close()
        if self.rec is not None and not self._finished:
            try:
                self._flush_masks(final=True)
            except RecordingError:
                pass
            self.rec.close()            # agent went away first; upstream status unknown

    # -- upstream → agent ----------------------------------------------------
    def upstream_data(self, data: bytes, datatype: Any) -> None:
        if self.upstream_valve.reasons:
            self.upstream_valve.hold()
        if self._finished:
            return
        if self._mediated is not None:
            self._mediated.host_data(data)
            return
        self._relay_output(data, datatype)

    def _relay_output(self, data: bytes, datatype: Any) -> None:
        """Host output to the agent: masked, recorded first, then written."""
        stderr = datatype == asyncssh.EXTENDED_DATA_STDERR
        masked = self.masks.feed(STDERR if stderr else STDOUT, data)
        if masked and not self._recorded(self.rec.output, masked, stderr=stderr):
            return
        if not self._closed:
            if self.masks.live:
                if masked:
                    self.chan.write(masked, datatype)
            else:
                self.chan.write(data, datatype)
        self._data_seen()

    def upstream_eof(self) -> None:
        """The host's output ended.  The EOF itself is passed on with the exit status.

        An OpenSSH client whose stdin is already at EOF closes the channel as soon as it
        sees EOF; passing EOF on at once would lose the exit status that follows it.
        """
        if not self._closed and not self._finished:
            try:
                self._flush_masks()          # what the maskers hold goes out now
            except RecordingError as exc:
                self._recording_failed(exc)

    def upstream_closed(self, exc: Exception | None) -> None:
        if self._mediated is not None:
            self._mediated.close()
        if self.up_conn is not None:
            self.ctx.services.pool.release(self.ctx.target, self.up_conn)
            self.up_conn = None
        if self._finished:
            return
        up = self.up_chan
        signal = up.get_exit_signal() if up else None
        status = up.get_exit_status() if up else None
        if signal:
            log.info("session %s: exit signal %s", self.ctx.where, signal[0])
        if self._command_id is not None:
            self.rec.command_result(self._command_id, status)
        try:
            self._flush_masks(final=True)
        except RecordingError as exc:
            log.error("session %s: the end of the output was not recorded: %s",
                      self.ctx.where, exc)
        if self._closed:
            self._finished = True
            self.rec.close(exit_status=status, exit_signal=signal[0] if signal else None)
            return
        if status is None and not signal and exc is not None:
            self._finish(f"bastion: upstream connection lost: {exc}", EXIT_BASTION_ERROR)
            return
        self._finished = True
        self.rec.close(exit_status=status, exit_signal=signal[0] if signal else None)
        try:
            if signal:
                name, core_dumped, msg, lang = signal
                self.chan.exit_with_signal(name, core_dumped, msg, lang)
            elif status is not None:
                self.chan.exit(status)
            else:
                self.chan.close()
        except (asyncssh.Error, OSError):
            self.chan.close()
