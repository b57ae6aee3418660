"""``ssh -L`` through the bastion: a TCP connection opened from the target, by destination.

The agent's ``-L LOCAL:HOST:PORT`` arrives as a direct-tcpip request on the inner connection.
A grant's ``forward = ["HOST:PORT", ...]`` (bastion.config.BastionConfig.forward_for) must
name the destination; then the bastion opens the same request on its own upstream
connection (the target connects to HOST:PORT, as with OpenSSH's -L on the target) and
relays bytes both ways.  Recorded as a channel of kind ``forward`` (command ``HOST:PORT``):
markers when it opens and closes, bytes each way in the row and the closing marker, the
duration; never the contents.  Flow control: each side stops reading while the other's
write buffer is over :data:`HIGH_WATER`.  Not covered: ``-R``, ``-D``, agent and X11
forwarding (refused elsewhere).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import asyncssh

from bastion.errors import BastionError
from bastion.logfmt import fields as log_fields
from bastion.metrics import TO_AGENT, TO_HOST

log = logging.getLogger("bastion.session")
audit = logging.getLogger("bastion.audit")

HIGH_WATER = 1 << 20             # bytes buffered toward one side before the other pauses
MAX_EARLY = 1 << 20              # agent bytes kept while the upstream side is being opened


class _Upstream(asyncssh.SSHTCPSession[bytes]):
    """The target side: what it sends goes to the agent."""

    def __init__(self, relay: "ForwardRelay") -> None:
        self.relay = relay

    def data_received(self, data: bytes, datatype: Any) -> None:
        self.relay.to_agent(data)

    def eof_received(self) -> bool:
        self.relay.upstream_eof()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.relay.finish("the target side closed" if exc is None else f"target side: {exc}")

    def pause_writing(self) -> None:
        if self.relay.chan is not None:
            self.relay.chan.pause_reading()

    def resume_writing(self) -> None:
        if self.relay.chan is not None:
            self.relay.chan.resume_reading()


class ForwardRelay(asyncssh.SSHTCPSession[bytes]):
    """The agent side of one forwarded connection."""

    def __init__(self, ctx: Any, host: str, port: int, grant: str) -> None:
        self.ctx, self.host, self.port, self.grant = ctx, host, port, grant
        self.chan: Any = None
        self.up: Any = None
        self.lease: Any = None
        self.rec: Any = None
        self._early: list[bytes] = []
        self._early_size = 0
        self._eof = False
        self._done = False
        self._t0 = time.monotonic()
        self._task: asyncio.Task[None] | None = None

    @property
    def dest(self) -> str:
        return f"{self.host}:{self.port}"

    # -- the agent's side ------------------------------------------------------------
    def connection_made(self, chan: Any) -> None:
        self.chan = chan
        self._task = asyncio.ensure_future(self._open())

    def data_received(self, data: bytes, datatype: Any) -> None:
        if self.rec is not None:
            self.rec.bytes_in += len(data)
        TO_HOST(len(data))
        if self.up is None:
            self._early.append(data)
            self._early_size += len(data)
            if self._early_size > MAX_EARLY:
                self.chan.pause_reading()
            return
        self.up.write(data)
        if self.up.get_write_buffer_size() > HIGH_WATER:
            self.chan.pause_reading()

    def eof_received(self) -> bool:
        self._eof = True
        if self.up is not None:
            self.up.write_eof()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.finish("the agent closed it" if exc is None else f"agent side: {exc}")

    def pause_writing(self) -> None:
        if self.up is not None:
            self.up.pause_reading()

    def resume_writing(self) -> None:
        if self.up is not None:
            self.up.resume_reading()

    # -- the target's side -----------------------------------------------------------
    def to_agent(self, data: bytes) -> None:
        if self.rec is not None:
            self.rec.bytes_out += len(data)
        TO_AGENT(len(data))
        if self.chan is not None:
            self.chan.write(data)

    def upstream_eof(self) -> None:
        if self.chan is not None:
            self.chan.write_eof()

    async def _open(self) -> None:
        ctx = self.ctx
        services = ctx.services
        try:
            self.rec = services.open_recording(ctx, "forward", command=self.dest, term=None,
                                               size=None, env=None, masks=None)
            await self.rec.opened()
            self.lease = await services.pool.acquire(ctx.target)
            self.up, _ = await self.lease.conn.create_connection(
                lambda: _Upstream(self), self.host, self.port)
        except (BastionError, asyncssh.Error, OSError) as exc:
            why = f"forward to {self.dest} failed: {exc}"
            log.warning("session %s: %s", ctx.where, why)
            if self.rec is not None:
                self.rec.marker(f"error: {why}")
            self.finish(why)
            return
        except asyncio.CancelledError:
            self.finish("cancelled")
            raise
        self.rec.marker(f"forward opened to {self.dest} (grant forward {self.grant!r})")
        audit.info("forward opened principal=%s target=%s dest=%s", ctx.principal.subject,
                   ctx.target.name, self.dest,
                   extra=log_fields("forward_opened", principal=ctx.principal.subject,
                                    target=ctx.target.name, dest=self.dest,
                                    session=getattr(ctx.recording, "id", None)))
        early, self._early = self._early, []
        for data in early:
            self.up.write(data)
        if self._early_size > MAX_EARLY:
            self.chan.resume_reading()
        if self._eof:
            self.up.write_eof()

    def finish(self, why: str) -> None:
        """Both sides end; the recording gets the totals (once)."""
        if self._done:
            return
        self._done = True
        for chan in (self.up, self.chan):
            if chan is not None:
                try:
                    chan.close()
                except (asyncssh.Error, OSError):
                    pass
        if self._task is not None and not self._task.done():
            self._task.cancel()
        if self.lease is not None:
            self.ctx.services.pool.release(self.ctx.target, self.lease)
        rec = self.rec
        if rec is not None:
            seconds = time.monotonic() - self._t0
            try:
                rec.marker(f"forward closed ({why}): {rec.bytes_in} bytes to {self.dest}, "
                           f"{rec.bytes_out} back, {seconds:.1f} s")
                rec.close(exit_status=None)
            except BastionError as exc:
                log.error("session %s: recording the forward's end failed: %s",
                          self.ctx.where, exc)
