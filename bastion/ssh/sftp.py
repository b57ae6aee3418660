"""An inner session channel that asked for the ``sftp`` subsystem: served by the bastion.

Order, as for commands (record first, decide before upstream, fail closed):

1. the channel's recording is opened (kind ``sftp``; the file exists before anything
   runs); it holds markers, and the index one ``transfers`` row per operation;
2. the grant: a ``[[grants]]`` entry must list ``"sftp"`` in ``channels`` (grants
   without ``channels`` give exec and shell only); otherwise one line on stderr and
   exit status 126;
3. an upstream SFTP session on the pooled connection (the vault key), and the target
   user's home directory (``realpath .``) for rules written as ``~/...``;
4. asyncssh's SFTP server protocol runs on the agent's channel (with reads and writes in
   flight together, :mod:`bastion.ssh.sftppipe`) with
   :class:`bastion.ssh.sftprelay.RelayServer`, which decides and relays each operation.

The agent's channel stays paused until step 4, so no request is read before it can be
decided.  A recording failure stops the channel.  Statuses: 126 no grant, 255 the bastion
could not record or reach the target.

Not covered: the other subsystems (refused by :mod:`bastion.ssh.session`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import asyncssh
from asyncssh.sftp import start_sftp_client
from asyncssh.stream import SSHClientStreamSession, SSHReader, SSHServerStreamSession, SSHWriter

from bastion.errors import BastionError, RecordingError
from bastion.identity.expiry import channel_deadline, ended_message
from bastion.ssh.context import InnerContext
from bastion.ssh.relay import printable

log = logging.getLogger("bastion.sftp")
audit = logging.getLogger("bastion.audit")

SFTP_VERSION = 3                    # what OpenSSH speaks
UPSTREAM_WINDOW = 4 * 1024 * 1024
UPSTREAM_PACKET = 256 * 1024
EXIT_DENIED = 126
EXIT_BASTION_ERROR = 255


class SftpChannel:
    """The glue of one sftp channel: set-up, the stream the SFTP server reads, the end."""

    def __init__(self, ctx: InnerContext, chan: Any) -> None:
        self.ctx = ctx
        self.chan = chan
        self.rec: Any = None
        self.lease: Any = None
        self.client: Any = None              # asyncssh SFTPClient upstream
        self.stream: SSHServerStreamSession[bytes] | None = None
        self._early: list[tuple[bytes, Any]] = []
        self._early_eof = False
        self._ended = False
        self._closed = False
        self._task: asyncio.Task[None] | None = None
        self._expiry: asyncio.TimerHandle | None = None
        self.holds: set[asyncio.Future[Any]] = set()   # approvals the relay waits for
        self.relay: Any = None                         # the RelayServer, once started

    # -- set-up ----------------------------------------------------------------------
    def take_over(self, session: Any) -> "SftpChannel":
        """Route the channel callbacks asyncssh calls on ``session`` (the InnerSession
        that accepted the subsystem) to this object, and start."""
        for name in ("data_received", "eof_received", "pause_writing", "resume_writing",
                     "connection_lost"):
            setattr(session, name, getattr(self, name))
        self.start()
        return self

    def start(self) -> None:
        self.chan.pause_reading()
        self._task = asyncio.ensure_future(self._setup())
        self._task.add_done_callback(self._setup_done)
        services = self.ctx.services
        deadline = channel_deadline(self.ctx.principal, services.session_grace())
        if deadline is not None:          # like every channel: ended once the token is over
            self._expiry = asyncio.get_running_loop().call_later(
                max(0.0, deadline - time.time()), self._fail,
                ended_message(self.ctx.principal, services.session_grace()), EXIT_BASTION_ERROR)

    def _setup_done(self, task: "asyncio.Task[None]") -> None:
        if task.cancelled() or task.exception() is None:
            return
        exc = task.exception()
        log.error("sftp %s: internal error: %r", self.ctx.where, exc, exc_info=exc)
        self._fail("bastion: internal error (see the bastion log)", EXIT_BASTION_ERROR)

    async def _setup(self) -> None:
        ctx = self.ctx
        services = ctx.services
        try:
            masks = services.channel_masks(ctx, "sftp")
            self.rec = services.open_recording(ctx, "sftp", command=None, term=None, size=None,
                                               env=self.chan.get_environment(), masks=masks)
            await self.rec.opened()
        except RecordingError as exc:
            log.error("sftp %s refused: recording unavailable: %s", ctx.where, exc)
            self._fail(f"bastion: the session cannot be recorded, so it is refused: {exc}",
                       EXIT_BASTION_ERROR)
            return
        if services.config.grant_for(ctx.principal, ctx.target, "sftp") is None:
            reason = (f"no grant lets {ctx.principal.label} open an sftp channel on target "
                      f"{ctx.target.name}")
            audit.warning("channel refused principal=%s target=%s kind=sftp: %s",
                          ctx.principal.subject, ctx.target.name, reason)
            self._fail(f"bastion: {reason} (a grant needs channels = [\"sftp\"])", EXIT_DENIED)
            return
        try:
            home = await self._open_upstream()
        except asyncio.CancelledError:
            raise
        except BastionError as exc:
            log.warning("sftp %s failed: %s", ctx.where, exc)
            self._fail(f"bastion: {exc}", EXIT_BASTION_ERROR)
            return
        except (asyncssh.Error, OSError) as exc:
            reason = getattr(exc, "reason", None) or str(exc)
            log.warning("sftp %s failed upstream: %s", ctx.where, reason)
            self._fail(f"bastion: target {ctx.target.name} refused sftp: {reason}",
                       EXIT_BASTION_ERROR)
            return
        if self._ended:
            self._release()
            return
        from bastion.ssh.sftprelay import RelayServer
        server = self.relay = RelayServer(self.chan, self, home)
        audit.info("sftp started principal=%s target=%s home=%s", ctx.principal.subject,
                   ctx.target.name, printable(home))
        from bastion.ssh.sftppipe import start_server
        stream: SSHServerStreamSession[bytes] = SSHServerStreamSession(None)
        stream.connection_made(self.chan)
        start_server(server, stream, self.chan, SFTP_VERSION)
        self.stream = stream
        for data, datatype in self._early:
            stream.data_received(data, datatype)
        self._early.clear()
        if self._early_eof:
            stream.eof_received()
        self.chan.resume_reading()

    async def _open_upstream(self) -> str:
        services = self.ctx.services
        self.lease = await services.pool.acquire(self.ctx.target)
        up_chan, session = await self.lease.create_session(
            lambda: _UpstreamStream(self), subsystem="sftp", encoding=None,
            window=UPSTREAM_WINDOW, max_pktsize=UPSTREAM_PACKET)
        reader: SSHReader[bytes] = SSHReader(session, up_chan)
        writer: SSHWriter[bytes] = SSHWriter(session, up_chan)
        self.client = await start_sftp_client(self.lease.conn, asyncio.get_running_loop(),
                                              "strict", reader, writer, None, "strict",
                                              SFTP_VERSION)
        home: bytes = await self.client.realpath(b".")
        return home.decode("utf-8", "surrogateescape")

    # -- for the relay server -----------------------------------------------------------
    def tell(self, message: str) -> None:
        """A line for the agent's sftp (stderr, shown by OpenSSH), also in the recording."""
        if self.rec is not None:
            try:
                self.rec.marker(message)
            except RecordingError as exc:
                self.recording_failed(exc)
                return
        if not self._closed:
            try:
                self.chan.write_stderr((printable(message) + "\n").encode())
            except (asyncssh.Error, OSError):
                pass

    async def drain(self) -> None:
        if self.rec is not None and self.rec.over_high_water():
            try:
                await self.rec.drain()
            except RecordingError as exc:
                self.recording_failed(exc)

    def upstream_lost(self, exc: Exception | None) -> None:
        """The upstream sftp channel closed: the agent's ends too (nothing left to relay to)."""
        if not self._ended and self.client is not None:
            log.warning("sftp %s: the target closed the sftp session: %s", self.ctx.where, exc)
            if self.relay is not None:           # rows for what was sent, while recordable
                from bastion.ssh.sftprelay import TARGET_CLOSED
                self.relay.record_in_flight(TARGET_CLOSED)
            self._fail(f"bastion: target {self.ctx.target.name} closed the sftp session",
                       EXIT_BASTION_ERROR)

    def recording_failed(self, exc: Exception) -> None:
        log.error("sftp %s ended: recording failed: %s", self.ctx.where, exc)
        self._fail(f"bastion: recording failed ({exc}); the channel was stopped",
                   EXIT_BASTION_ERROR)

    def finished(self) -> None:
        """The SFTP session ended: the agent closed it (status 0), or its channel went (none)."""
        self._end(None if self._closed else 0)

    # -- the agent's channel ---------------------------------------------------------------
    def data_received(self, data: bytes, datatype: Any) -> None:
        if self.stream is not None:
            self.stream.data_received(data, datatype)
        elif not self._ended:
            self._early.append((data, datatype))

    def eof_received(self) -> bool:
        if self.stream is not None:
            return bool(self.stream.eof_received())
        self._early_eof = True
        return True

    def pause_writing(self) -> None:
        if self.stream is not None:
            self.stream.pause_writing()

    def resume_writing(self) -> None:
        if self.stream is not None:
            self.stream.resume_writing()

    @property
    def gone(self) -> bool:
        """The agent's channel closed, or the channel ended."""
        return self._closed or self._ended

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        if self._task is not None and not self._task.done():
            self._task.cancel()
        for hold in list(self.holds):        # a pending approval request is withdrawn
            hold.cancel()
        if self.stream is not None:
            # the SFTP handler closes the open files (their rows are recorded), then
            # calls the server's exit(), which ends the channel's recording
            self.stream.connection_lost(exc)
        else:
            self._end(None)

    # -- ending ------------------------------------------------------------------------------
    def _fail(self, message: str, status: int) -> None:
        if self._ended:
            return
        if not self._closed:
            try:
                self.chan.write_stderr((message + "\n").encode())
            except (asyncssh.Error, OSError):
                pass
        if self.rec is not None:
            try:
                self.rec.marker(message)
            except RecordingError:
                pass
        self._end(status)

    def _end(self, status: int | None) -> None:
        """Close the recording, the upstream session and the agent's channel (with the exit
        status: OpenSSH's scp counts a channel without one as failed)."""
        if self._ended:
            return
        self._ended = True
        if self._expiry is not None:
            self._expiry.cancel()
        for hold in list(self.holds):
            hold.cancel()
        if self.rec is not None:
            self.rec.close(exit_status=status)
        self._release()
        if self._closed:
            return
        try:
            if status is not None:
                self.chan.exit(status)
            else:
                self.chan.close()
        except (asyncssh.Error, OSError):
            self.chan.close()

    def _release(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            client.exit()
        if self.lease is not None:
            self.lease.release()


class _UpstreamStream(SSHClientStreamSession[bytes]):
    """The upstream sftp channel's stream, telling its SftpChannel when it closes."""

    def __init__(self, owner: SftpChannel) -> None:
        super().__init__()
        self._owner = owner

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._owner.upstream_lost(exc)
