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

The order of everything (record first, decide before upstream, end once) is the pure
:class:`bastion.proto.channel.ChannelCore`; this module carries out its actions (the
upstream channel is opened by :mod:`bastion.ssh.upchannel`, the end -- and the staged end of
a command whose agent left -- is carried out by :mod:`bastion.ssh.ending`).

Every channel is recorded (:mod:`bastion.recording`) before anything runs: when
the recording cannot be opened or written, the channel is refused or ended —
a session never runs unrecorded.  Writes to the recording are flow-controlled:
while its queue is over the high-water mark, reading from both peers pauses.

Exit statuses the bastion itself produces (documented in the README):
  126 denied by policy or grant, 125 held for review and not approved,
  255 the bastion could not reach or use the upstream host, or could not record.

sftp: served by the bastion, each file operation decided (:mod:`bastion.ssh.sftp`).
  Legacy scp (exec ``scp -t``/``-f``) is denied, naming scp without -O and sftp; rsync
  (exec ``rsync --server``) is decided by its paths (:mod:`bastion.ssh.rsyncexec`).
``env`` requests are dropped unless named in ``[settings] env_allow``.
Not covered here: other subsystems (refused), X11/agent forwarding (refused by
the inner server).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from typing import Any

import asyncssh

from bastion.errors import BastionError, RecordingError
from bastion.identity.expiry import channel_deadline, ended_message
from bastion.proto import channel as c
from bastion.proto.channel import EXIT_BASTION_ERROR, EXIT_DENIED, EXIT_NOT_APPROVED  # noqa: F401
from bastion.ssh.context import InnerContext
from bastion.ssh.held import ask_approval
from bastion.ssh.masking import LIVE_QUIET, masked_decision
from bastion.ssh.relay import Valve, printable
from bastion.ssh import ending, rsyncexec, upchannel
from bastion.transfer.decide import legacy_scp, legacy_scp_decision

log = logging.getLogger("bastion.session")
audit = logging.getLogger("bastion.audit")



class InnerSession(asyncssh.SSHServerSession):
    """One session channel of an inner connection: the glue around a ChannelCore."""

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
        self.core: c.ChannelCore | None = None
        self._mediated = None                 # shell.MediatedSession for a pty session
        self._decision = None
        self._command_id: int | None = None
        self._closed = False                  # the agent's channel is gone
        self._draining = False
        self._unrecorded = False              # a record failed while ending: show no more
        self._queue: collections.deque = collections.deque()
        self._applying = False
        self._tasks: set[asyncio.Task] = set()
        self._last_data = 0.0
        self._flush_timer: asyncio.TimerHandle | None = None
        self._close_later: asyncio.TimerHandle | None = None
        self._expiry: asyncio.TimerHandle | None = None
        self._sftp: Any = None                # ssh.sftp.SftpChannel for the sftp subsystem
        self._rsync: Any = None               # ssh.rsyncexec.Plan of an rsync allowed or held

    @property
    def _finished(self) -> bool:
        return self.core is not None and self.core.ended

    # -- requests ------------------------------------------------------------
    def connection_made(self, chan: asyncssh.SSHServerChannel) -> None:
        self.chan = chan
        self.agent_valve.attach(chan)

    def pty_requested(self, term_type: str, term_size, term_modes) -> bool:
        if "\x00" in term_type:     # sshd drops the whole (shared) upstream connection on it
            log.warning("session %s: pty request refused: its terminal type holds a NUL",
                        self.ctx.where)
            return False
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
        if subsystem == "sftp" and self.kind is None:
            self.kind = "sftp"                # granted or not, decided once it started
            return True
        audit.warning("subsystem refused principal=%s target=%s subsystem=%s",
                      self.ctx.principal.subject, self.ctx.target.name, printable(subsystem))
        return False

    def session_started(self) -> None:
        if self.kind == "sftp":               # the channel's callbacks go to it from now on
            from bastion.ssh.sftp import SftpChannel
            self._sftp = SftpChannel(self.ctx, self.chan).take_over(self)
            return
        self.core = c.ChannelCore(self.kind or "shell", self.command, bool(self.term_type),
                                  mask=self.ctx.services.mask)
        self.agent_valve.pause("starting")
        self._spawn(self._open_recording())
        deadline = channel_deadline(self.ctx.principal, self.ctx.services.session_grace())
        if deadline is not None:
            self._expiry = asyncio.get_running_loop().call_later(
                max(0.0, deadline - time.time()), self._token_over)

    def _token_over(self) -> None:
        """The token expired and the time allowed after it is over: end the channel."""
        self._expiry = None
        if self.core.ended:
            return
        grace = self.ctx.services.session_grace()
        log.warning("session %s ended: the token expired (+%g s)", self.ctx.where, grace)
        self._apply([c.Marker("token expired: the channel is ended")]
                    + self.core.fail(ended_message(self.ctx.principal, grace)))

    # -- carrying out the core's actions -------------------------------------
    def _apply(self, actions: list) -> None:
        """Carry out actions in order (those of events raised meanwhile after them)."""
        self._queue.extend(actions)
        if self._applying:
            return
        self._applying = True
        try:
            while self._queue:
                action = self._queue.popleft()
                try:
                    self._do(action)
                except RecordingError as exc:
                    if self.core.ended:           # ending anyway: go on, but show no more
                        self._unrecorded = True
                        continue
                    log.error("session %s ended: recording failed: %s", self.ctx.where, exc)
                    self._queue.clear()           # what followed the record is not done
                    self._queue.extend(self.core.recording_failed(str(exc)))
                except BastionError as exc:
                    log.warning("session %s failed: %s", self.ctx.where, exc)
                    self._queue.clear()
                    self._queue.extend(self.core.error(str(exc)))
                except Exception:  # noqa: BLE001 - never leave a channel hanging on a bug
                    log.exception("session %s: internal error", self.ctx.where)
                    self._queue.clear()
                    self._queue.extend(self.core.fail("bastion: internal error (see the "
                                                      "bastion log)"))
        finally:
            self._applying = False

    def _do(self, action) -> None:
        core = self.core
        if isinstance(action, c.Record):
            if action.stream == c.INPUT:
                self.rec.input(action.data)
            else:
                self.rec.output(action.data, stderr=action.stream == c.STDERR)
            self._watch_high_water()
        elif isinstance(action, c.ToAgent):
            if not self._closed and not self._unrecorded:
                self.chan.write(action.data,
                                asyncssh.EXTENDED_DATA_STDERR if action.stderr else None)
        elif isinstance(action, c.ToHost):
            self.up_chan.write(action.data)
        elif isinstance(action, c.ToShell):
            self._mediated.agent_data(action.data)
        elif isinstance(action, c.NoteData):
            self._note_data()
        elif isinstance(action, c.Marker):
            if self.rec is not None:
                self.rec.marker(action.label)
        elif isinstance(action, c.CheckGrant):
            self._apply(core.granted(self._check_grant()))
        elif isinstance(action, c.Decide):
            self._decide(action.command)
        elif isinstance(action, c.AskApproval):
            self._spawn(self._review(action.command))
        elif isinstance(action, c.Connect):
            if action.mediated:
                from bastion.ssh.shell import MediatedSession
                self._mediated = MediatedSession(self, first_command=action.first_command)
                self._command_id = None           # a mediated shell records its own results
            self._spawn(upchannel.connect(self))
        elif isinstance(action, c.HostEof):
            self.up_chan.write_eof()
        elif isinstance(action, c.ShellEof):
            self._mediated.eof()
        elif isinstance(action, c.ResumeAgent):
            self.agent_valve.resume("starting")
        elif isinstance(action, c.CommandResult):
            if self._command_id is not None:
                self.rec.command_result(self._command_id, action.status)
        elif isinstance(action, c.CloseHostLater):
            ending.close_host_later(self)
        elif isinstance(action, c.End):
            ending.end(self, action)

    def _spawn(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: "asyncio.Task[None]") -> None:
        """A channel task ended: one that failed unexpectedly ends the channel (fail closed:
        never a channel left waiting on a step that will not come)."""
        self._tasks.discard(task)
        if task.cancelled() or task.exception() is None:
            return
        exc = task.exception()
        log.error("session %s: internal error: %r", self.ctx.where, exc, exc_info=exc)
        if self.core is not None and not self.core.ended:
            self._finish("bastion: internal error (see the bastion log)", EXIT_BASTION_ERROR)
        elif self.chan is not None:
            self.chan.close()

    # -- start: recording, grant, policy, upstream -----------------------------
    async def _open_recording(self) -> None:
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
            self._apply(self.core.recording_refused(str(exc)))
            return
        # the agent gets a byte only once the recording holds it, and the channel ends at
        # once when recording fails (bastion.recording.gate)
        rec: Any = self.rec
        self.chan = rec.gate(self.chan, self._recording_failed)
        self._apply(self.core.recording_opened(masks))

    def _check_grant(self) -> str | None:
        ctx = self.ctx
        if ctx.services.config.grant_for(ctx.principal, ctx.target, self.kind) is not None:
            return None
        reason = (f"no grant lets {ctx.principal.label} open a {self.kind} channel "
                  f"on target {ctx.target.name}")
        audit.warning("channel refused principal=%s target=%s kind=%s: %s",
                      ctx.principal.subject, ctx.target.name, self.kind, reason)
        return reason

    def _decide(self, command: str) -> None:
        services = self.ctx.services
        if rsyncexec.recognised(command):    # a file transfer, decided by its paths
            self._spawn(rsyncexec.decide_in(self, command))
            return
        decision = self._decision = (legacy_scp_decision() if legacy_scp(command) else
                                     services.decide(self.ctx, command, channel="exec"))
        self._command_id = self.rec.command(services.mask(command),
                                            masked_decision(decision, services.detectors))
        action = decision.action.value
        message = self._decision_message(decision) if action == "deny" else ""
        self._apply(self.core.decided(action, message))

    async def _review(self, command: str) -> None:
        try:
            outcome = await self._ask_approval(command, self._decision, self._command_id)
        except RecordingError as exc:
            self._recording_failed(exc)
            return
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001
            log.exception("session %s: internal error while waiting for approval",
                          self.ctx.where)
            self._finish("bastion: internal error (see the bastion log)", EXIT_BASTION_ERROR)
            return
        message = ""
        if not outcome.approved:
            from bastion.approvals.notices import outcome_message
            message = outcome_message(outcome)
        if self._rsync is not None:           # resolved and decided again before it runs
            refused = await rsyncexec.reviewed_in(self, command, outcome.approved, message)
            if refused and self.core is not None:
                self._apply(self.core.fail(refused, EXIT_DENIED))
                return
        self._apply(self.core.approved(outcome.approved, message))

    @staticmethod
    def _decision_message(decision) -> str:
        rule = decision.rule or "<none>"
        return f"bastion: denied by rule {rule}: {printable(decision.reason)}"

    # -- helpers for the mediated shell and the approval hold -------------------
    async def _ask_approval(self, line: str, decision, command_id: int | None):
        return await ask_approval(self.ctx, self.rec, self._tell, line, decision, command_id,
                                  self.kind or "shell")

    def _tell(self, message: str) -> None:
        """A line for the agent (stderr for exec, the terminal for a shell), recorded too."""
        nl = "\r\n" if self.term_type else "\n"
        text = ((nl if self.kind == "shell" else "") + message + nl).encode("utf-8", "replace")
        if not self._recorded(self.rec.output, self.ctx.services.mask(text.decode()).encode(),
                              stderr=self.kind != "shell"):
            return
        if self._closed or self.chan is None:
            return
        if self.kind == "shell":
            self.chan.write(text)
        else:
            self.chan.write_stderr(text)

    def _relay_output(self, data: bytes, datatype: Any = None) -> None:
        self._apply(self.core.output(data, datatype == asyncssh.EXTENDED_DATA_STDERR))

    def _finish(self, message: str, status: int) -> None:
        """End the channel from the bastion's side: a message on stderr, an exit status."""
        self._apply(self.core.fail(message, status))

    def _recording_failed(self, exc: Exception) -> None:
        log.error("session %s ended: recording failed: %s", self.ctx.where, exc)
        self._apply(self.core.recording_failed(str(exc)))

    def _marker(self, label: str) -> None:
        if self.rec is not None:
            self._recorded(self.rec.marker, label)

    def _recorded(self, fn, *args, **kwargs) -> bool:
        """Call a recording method; on failure end the channel.  False if it failed."""
        try:
            fn(*args, **kwargs)
        except RecordingError as exc:
            self._recording_failed(exc)
            return False
        self._watch_high_water()
        return True

    # -- flow control and the live maskers' quiet timer -----------------------
    def _watch_high_water(self) -> None:
        if self.rec.over_high_water() and not self._draining:
            self._draining = True
            self.agent_valve.pause("recording")
            self.upstream_valve.pause("recording")
            self._spawn(self._drain())

    async def _drain(self) -> None:
        try:
            await self.rec.drain()
        except RecordingError as exc:
            self._recording_failed(exc)
        finally:
            self._draining = False
            self.agent_valve.resume("recording")
            self.upstream_valve.resume("recording")

    def _note_data(self) -> None:
        # called for every live-masked chunk: only the time is noted; the timer re-arms itself
        self._last_data = time.monotonic()
        if self._flush_timer is None:
            self._flush_timer = asyncio.get_running_loop().call_later(LIVE_QUIET, self._quiet)

    def _quiet(self) -> None:
        self._flush_timer = None
        if self.core.ended:
            return
        idle = time.monotonic() - self._last_data
        if idle < LIVE_QUIET:
            self._flush_timer = asyncio.get_running_loop().call_later(LIVE_QUIET - idle,
                                                                      self._quiet)
            return
        self._apply(self.core.quiet())

    # -- agent → upstream ----------------------------------------------------
    def data_received(self, data: bytes, datatype: Any) -> None:
        if self.agent_valve.reasons:          # asyncssh resumed the channel on its own
            self.agent_valve.hold()
        self._apply(self.core.agent_data(data))

    def eof_received(self) -> bool:
        self._apply(self.core.agent_eof())
        return True

    def terminal_size_changed(self, width, height, pixwidth, pixheight) -> None:
        self.term_size = (width, height, pixwidth, pixheight)
        if self.rec is not None and not self._finished:
            self._recorded(self.rec.resize, width, height)
        if self._mediated is not None:
            self._mediated.resize(width)
        if self.up_chan is not None:
            self.up_chan.change_terminal_size(width, height, pixwidth, pixheight)

    def signal_received(self, signal: str) -> None:
        if self.up_chan is not None and "\x00" not in signal:     # not a C string: dropped
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
        for task in list(self._tasks):
            if not task.done():
                task.cancel()           # a pending approval request is withdrawn
        if self._mediated is not None:
            self._mediated.agent_gone()
        if self.core is not None:
            self._apply(self.core.agent_closed())
        if self.core is None or self.core.ended:
            if self._mediated is not None:
                self._mediated.close()
            if self.up_chan is not None:
                self.up_chan.close()
        # (else the command still runs upstream: it ends, or is closed after a grace time)

    # -- upstream → agent ----------------------------------------------------
    def upstream_data(self, data: bytes, datatype: Any) -> None:
        if self.upstream_valve.reasons:
            self.upstream_valve.hold()
        if self._finished:
            return
        if self._mediated is not None:
            self._mediated.host_data(data)
            return
        self._apply(self.core.host_data(data, datatype == asyncssh.EXTENDED_DATA_STDERR))

    def upstream_eof(self) -> None:
        """The host's output ended.  The EOF itself is passed on with the exit status."""
        self._apply(self.core.host_eof())

    def upstream_closed(self, exc: Exception | None) -> None:
        if self._mediated is not None:
            self._mediated.close()
        if self.up_conn is not None:
            self.ctx.services.pool.release(self.ctx.target, self.up_conn)
            self.up_conn = None
        up = self.up_chan
        signal = up.get_exit_signal() if up else None
        status = up.get_exit_status() if up else None
        if signal and not self._finished:
            log.info("session %s: exit signal %s", self.ctx.where, printable(signal[0], 64))
        self._apply(self.core.host_closed(status, signal or None,
                                          str(exc) if exc is not None else None))
