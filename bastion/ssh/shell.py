"""Mediated shells on the wire: the glue between an inner session and two upstream channels.

The logic is :class:`bastion.proto.mediated.MediatedShell` (pure); the host side is
:mod:`bastion.proto.shellstart`.  Here: open the command channel and read its ready line,
open the terminal channel with the agent's pty, and carry out the state machine's actions
(policy, recording, approval, writes).  Used by :class:`bastion.ssh.session.InnerSession`
for a shell with a pty, and for an exec with a pty (one command, already decided, then exit).
Typed input is never recorded in clear: a command is recorded as its decided text, keys typed
into a running program as a count.
"""

from __future__ import annotations

import asyncio
import logging
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import asyncssh

from bastion.errors import RecordingError, UpstreamError
from bastion.proto import mediated as m
from bastion.proto.shellstart import (FAIL_STATUS, SYNC_FRAME, control_command, frame,
                                      list_frame,
                                      new_nonce, parse_ready, start_word, terminal_command)
from bastion.ssh.masking import masked_decision
from bastion.ssh.relay import UpstreamSide

if TYPE_CHECKING:  # pragma: no cover
    from bastion.ssh.session import InnerSession

log = logging.getLogger("bastion.session")

READY_TIMEOUT = 15.0
#: How long keys typed right after ^C are held before they go to a program that survived it
#: (less, vi). Long enough for a program killed by the signal to be gone when they arrive (so
#: it cannot swallow them) and, on dash, which cannot give unread keys back, for the prompt
#: mark to come back first; short enough not to be noticed.
SETTLE_AFTER_INTERRUPT = {"bash": 0.3, "sh": 1.0}
LIST_TIMEOUT = 10.0         # s the host has to list a directory for Tab, else the bell
BUILTINS = ("cd", "pwd", "exit", "export", "unset", "set", "echo", "printf", "test", "read",
            "type", "command", "true", "false", "umask", "wait", "kill", "times", "trap")
MAX_READY_LINE = 4096

#: The mediated terminal's modes (RFC 4254 section 8 opcodes, as asyncssh's ``term_modes``),
#: whatever the agent asked for: the usual keys (^C interrupt, ^\\ quit, DEL erase, ^U kill,
#: ^D end of file), no VEOL/VEOL2 and no suspend key (the host shell has no job control: ^Z
#: would stop a program that nobody could resume), echo and canonical input on (``read`` and
#: ``cat`` rely on the terminal to echo and edit what is typed into them), ICRNL on, IUTF8.
#: 255 = disabled.
MEDIATED_TTY_MODES = MappingProxyType({
    1: 0x03, 2: 0x1C, 3: 0x7F, 4: 0x15, 5: 0x04,   # VINTR VQUIT VERASE VKILL VEOF
    6: 255, 7: 255, 10: 255,                       # VEOL VEOL2 VSUSP disabled
    8: 0x11, 9: 0x13, 12: 0x12,                    # VSTART VSTOP VREPRINT
    13: 0x17, 14: 0x16, 18: 0x0F,                  # VWERASE VLNEXT VDISCARD
    33: 0, 34: 0, 35: 0, 36: 1, 37: 0, 42: 1,      # ISTRIP INLCR IGNCR off, ICRNL on, IUCLC off, IUTF8
    50: 1, 51: 1, 52: 0, 53: 1, 57: 0, 59: 1,      # ISIG ICANON on, XCASE off, ECHO on, NOFLSH off, IEXTEN
})


class _ControlSide(asyncssh.SSHClientSession):
    """The command channel: its first stdout line says whether the FIFO is ready."""

    def __init__(self) -> None:
        self.buf = b""
        self.ready: asyncio.Future = asyncio.get_running_loop().create_future()
        self.closed = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes, datatype: Any) -> None:
        if self.ready.done() or datatype == asyncssh.EXTENDED_DATA_STDERR:
            return
        self.buf += data
        if b"\n" in self.buf:
            self.ready.set_result(self.buf.split(b"\n", 1)[0].decode("utf-8", "replace"))
        elif len(self.buf) > MAX_READY_LINE:
            self.ready.set_result("")

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_result("")
        if not self.closed.done():
            self.closed.set_result(None)


class MediatedSession:
    """One mediated shell: owned by an InnerSession, which keeps the channels' lifecycle."""

    def __init__(self, owner: "InnerSession", first_command: str | None = None) -> None:
        self.owner = owner
        self.ctl_chan = None
        self.ctl_side: _ControlSide | None = None
        self.nonce = new_nonce()
        self.dialect = "bash"
        self.first_command = first_command
        self.command_id: int | None = owner._command_id if first_command is not None else None
        self.review_task: asyncio.Task | None = None
        self.settle_timer: asyncio.TimerHandle | None = None
        self.ctl_ended = False          # EOF written on the command channel (input ended)
        ctx = owner.ctx
        services = ctx.services
        width = owner.term_size[0] if owner.term_size and owner.term_size[0] else 80
        self.machine = m.MediatedShell(nonce=self.nonce, user=ctx.target.user,
                                       target=ctx.target.name, width=width,
                                       needs_more=self._needs_more,
                                       first_command=first_command,
                                       command_names=self._command_names)
        self.list_timer: asyncio.TimerHandle | None = None
        # (can_sync is set once the host's shell is known: dash cannot give keys back)
        self._needs_more_fn = getattr(services, "needs_more", None)

    def _command_names(self) -> list[str]:
        """Names Tab completes in command position: the programs an allow rule that applies
        to this principal and target names literally, and the shell's builtins."""
        from bastion.policy.selectors import any_principal_matches, any_target_matches
        ctx = self.owner.ctx
        names = set(BUILTINS)
        try:
            for rule in ctx.services.config.policy.rules:
                if rule.action.value != "allow":
                    continue
                who: Any = ctx.principal
                where: Any = ctx.target
                if not (any_principal_matches(rule.who, who)
                        and any_target_matches(rule.targets, where)):
                    continue
                for pattern in rule.patterns:
                    first = pattern.source.split()[0] if pattern.source.split() else ""
                    if first and not any(c in first for c in "*?[]/\\"):
                        names.add(first)
        except Exception:  # noqa: BLE001 - completion is a convenience: never a failure
            log.debug("command names for completion failed", exc_info=True)
        return sorted(names)

    def _needs_more(self, text: str) -> bool:
        fn = self._needs_more_fn
        try:
            return bool(fn(text, self.dialect)) if fn else False
        except Exception:  # noqa: BLE001 - a wrong guess only costs a prompt
            log.exception("needs_more failed")
            return False

    # -- start -----------------------------------------------------------------
    async def open(self, conn: asyncssh.SSHClientConnection, env: dict) -> asyncssh.SSHClientChannel:
        """Open both upstream channels; returns the terminal channel (the session's up_chan)."""
        owner = self.owner
        target = owner.ctx.target
        try:
            self.ctl_chan, self.ctl_side = await conn.create_session(
                _ControlSide, control_command(), encoding=None)
        except asyncssh.ChannelOpenError as exc:
            raise UpstreamError(f"target {target.name} refused the session: {exc.reason}") from exc
        try:
            line = await asyncio.wait_for(asyncio.shield(self.ctl_side.ready), READY_TIMEOUT)
        except asyncio.TimeoutError:
            line = ""
        ready = parse_ready(line)
        if ready is None:
            self.ctl_chan.close()
            status = self.ctl_chan.get_exit_status()
            why = ("it could not make a private FIFO in its temporary directory"
                   if status == FAIL_STATUS else "its start-up did not answer")
            raise UpstreamError(f"target {target.name} cannot host a mediated shell: {why}; "
                                f"run commands as `ssh host 'command'` instead")
        fifo_dir, shells = ready
        wanted = getattr(target, "shell", "auto") or "auto"
        if wanted in ("auto", "bash") and "bash" in shells:
            path, self.dialect = shells["bash"], "bash"
        elif wanted in ("auto", "sh") and "sh" in shells:
            path, self.dialect = shells["sh"], "sh"
        else:
            self.ctl_chan.close()
            raise UpstreamError(f"target {target.name} has no {wanted} shell for a mediated "
                                f"session (set shell = \"sh\" on the target, or use exec)")
        try:
            chan, _ = await conn.create_session(
                lambda: UpstreamSide(owner), terminal_command(fifo_dir, path, self.nonce),
                term_type=owner.term_type, term_size=owner.term_size,
                term_modes=dict(MEDIATED_TTY_MODES), env=env, encoding=None)
        except asyncssh.ChannelOpenError as exc:
            self.ctl_chan.close()
            raise UpstreamError(f"target {target.name} refused the session: {exc.reason}") from exc
        self.machine.can_sync = self.dialect == "bash"
        owner._marker(f"mediated shell: {self.dialect}")
        return chan

    # -- inputs ----------------------------------------------------------------
    def agent_data(self, data: bytes) -> None:
        self._apply(self.machine.agent(data))

    def host_data(self, data: bytes) -> None:
        self._apply(self.machine.host(data))

    def resize(self, width: int) -> None:
        self.machine.resize(width)

    def eof(self) -> None:
        """The agent ended its input: the shell exits once its command channel ends."""
        if self.ctl_chan is not None:
            self.ctl_ended = True
            self.ctl_chan.write_eof()

    def agent_gone(self) -> None:
        """The agent left: nothing held for review or typing runs any more."""
        if self.review_task and not self.review_task.done():
            self.review_task.cancel()
        if self.settle_timer is not None:
            self.settle_timer.cancel()
            self.settle_timer = None

    def close(self) -> None:
        self.agent_gone()
        if self.ctl_chan is not None:
            self.ctl_chan.close()

    # -- actions ---------------------------------------------------------------
    def _apply(self, actions: list) -> None:
        owner = self.owner
        for action in actions:
            if owner._finished:
                return
            if isinstance(action, m.Output):
                owner._relay_output(action.data, None)
            elif isinstance(action, m.Show):
                if action.record and not owner._recorded(
                        owner.rec.output, owner.ctx.services.mask(
                            action.record.decode("utf-8", "replace")).encode("utf-8", "replace")):
                    return
                if action.data and not owner._closed:
                    owner.chan.write(action.data)
            elif isinstance(action, m.Type):
                if owner.up_chan is not None:
                    owner.up_chan.write(action.data)
            elif isinstance(action, m.Evaluate):
                self._evaluate(action.command)
            elif isinstance(action, m.Run):
                try:
                    self.ctl_chan.write(frame(action.command))
                except (ValueError, asyncssh.Error, OSError) as exc:
                    owner._finish(f"bastion: the command could not be sent ({exc})", 255)
                    return
            elif isinstance(action, m.Go):
                self._go(action.status)
            elif isinstance(action, m.Finished):
                if self.command_id is not None:
                    owner.rec.command_result(self.command_id, action.status)
                    self.command_id = None
                if action.typed:
                    owner._marker(f"input: {action.typed} bytes typed into the running "
                                  f"command (not recorded)")
            elif isinstance(action, m.WithdrawReview):
                if self.review_task and not self.review_task.done():
                    self.review_task.cancel()
            elif isinstance(action, m.Sync):
                self.ctl_chan.write(SYNC_FRAME)
            elif isinstance(action, m.Settle):
                if self.settle_timer is not None:
                    self.settle_timer.cancel()
                self.settle_timer = asyncio.get_running_loop().call_later(
                    SETTLE_AFTER_INTERRUPT.get(self.dialect, 1.0), self._settled)
            elif isinstance(action, m.ListDir):
                self._list_dir(action.directory)
            elif isinstance(action, m.Hangup):
                if self.ctl_chan is not None:
                    self.ctl_ended = True
                    self.ctl_chan.write_eof()

    def _go(self, status: int) -> None:
        """The word the host shell waits for after its C mark (mediated.Go): run, or not."""
        if self.ctl_chan is not None and not self.ctl_ended:
            try:
                self.ctl_chan.write(start_word(status))
                return
            except (asyncssh.Error, OSError) as exc:
                log.debug("mediated shell: the start word could not be sent: %s", exc)
        # The command channel has ended (the agent's input did): the shell reads its end as
        # "run".  An interrupt typed before the start then goes to the terminal, as a key.
        if status and self.owner.up_chan is not None:
            self.owner.up_chan.write(b"\x1c" if status == 131 else b"\x03")

    def _list_dir(self, directory: str) -> None:
        """Tab on a path: the host lists ``directory`` only if the policy allows
        ``ls -a`` of it for this principal (decided and logged like any command)."""
        import shlex
        owner = self.owner
        services = owner.ctx.services
        if self.list_timer is not None:
            self.list_timer.cancel()
            self.list_timer = None
        line = "ls -a -- " + shlex.quote(directory)
        decision = services.decide(owner.ctx, line, channel="shell", dialect=self.dialect,
                                   cwd=self.machine.cwd or None)
        if decision.action.value != "allow" or self.ctl_chan is None:
            self._apply(self.machine.listed(None))
            return
        owner._marker(f"completion: listed {services.mask(directory)} "
                      f"(rule {decision.rule})")
        try:
            self.ctl_chan.write(list_frame(directory))
        except (ValueError, asyncssh.Error, OSError):
            self._apply(self.machine.listed(None))
            return
        self.list_timer = asyncio.get_running_loop().call_later(LIST_TIMEOUT, self._list_late)

    def _list_late(self) -> None:
        self.list_timer = None
        if not self.owner._finished:
            self._apply(self.machine.listed(None))

    def _settled(self) -> None:
        self.settle_timer = None
        if not self.owner._finished:
            self._apply(self.machine.settled())

    def _evaluate(self, command: str) -> None:
        owner = self.owner
        services = owner.ctx.services
        decision = services.decide(owner.ctx, command, channel="shell", dialect=self.dialect,
                                   cwd=self.machine.cwd or None)
        try:
            self.command_id = owner.rec.command(services.mask(command),
                                                masked_decision(decision, services.detectors))
        except RecordingError as exc:
            owner._recording_failed(exc)
            return
        action = decision.action.value
        if action == "review":
            self._apply(self.machine.decided("review"))
            self.review_task = asyncio.ensure_future(self._review(command, decision))
            return
        message = owner._decision_message(decision) if action != "allow" else ""
        self._apply(self.machine.decided(action, message))

    async def _review(self, command: str, decision) -> None:
        owner = self.owner
        try:
            outcome = await owner._ask_approval(command, decision, self.command_id)
            if owner._finished:
                return
            from bastion.approvals.notices import outcome_message
            message = "" if outcome.approved else outcome_message(outcome)
            self._apply(self.machine.approved(outcome.approved, message))
        except asyncio.CancelledError:
            pass        # withdrawn with ^C (the machine is already back at its prompt) or closed
        except RecordingError as exc:
            owner._recording_failed(exc)
        except Exception:  # noqa: BLE001
            log.exception("session %s: internal error while waiting for approval",
                          owner.ctx.where)
            owner._finish("bastion: internal error (see the bastion log)", 255)
