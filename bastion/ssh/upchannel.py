"""The upstream channel of a session (:class:`bastion.ssh.session.InnerSession`): opened
on a connection of the pool (:mod:`bastion.ssh.upstream`) once the core says ``Connect``.

A mediated shell opens its own (:mod:`bastion.ssh.shell`); exec and a plain session get an
upstream session relayed by :class:`bastion.ssh.relay.UpstreamSide`.  A failure ends the
channel through the core (fail closed); the connection goes back to the pool if no channel
was opened on it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import asyncssh

from bastion.errors import BastionError, RecordingError, UpstreamError
from bastion.ssh.relay import UpstreamSide

if TYPE_CHECKING:
    from bastion.ssh.session import InnerSession

log = logging.getLogger("bastion.session")

UPSTREAM_WINDOW = 4 * 1024 * 1024
UPSTREAM_PACKET = 256 * 1024     # sshd may then send up to its read size (64 KiB) per packet


async def connect(s: InnerSession) -> None:
    """Open the upstream channel of ``s``; any failure ends its channel."""
    try:
        await open_upstream(s)
    except asyncio.CancelledError:
        raise
    except RecordingError as exc:
        s._recording_failed(exc)
    except BastionError as exc:
        log.warning("session %s failed: %s", s.ctx.where, exc)
        s._apply(s.core.error(str(exc)))
    except Exception:  # noqa: BLE001 - never leave a channel hanging on a bug
        log.exception("session %s: internal error", s.ctx.where)
        s._apply(s.core.fail("bastion: internal error (see the bastion log)"))


async def open_upstream(s: InnerSession) -> None:
    ctx = s.ctx
    services = ctx.services
    if s.kind == "exec" and "\x00" in (s.command or ""):
        # sshd reads the command as a C string and drops the whole upstream connection --
        # shared by every agent's sessions to the target -- on a NUL (an opaque line that
        # `opaque = "allow"` or an approval let through)
        raise UpstreamError("bastion: the command holds a NUL byte, which the target cannot "
                            "take; nothing was run")
    s.up_conn = await services.pool.acquire(ctx.target)
    env = services.filter_env(s.chan.get_environment())
    try:
        if s._mediated is not None:
            s.up_chan = await s._mediated.open(s.up_conn, env)
        else:
            try:
                s.up_chan, _ = await s.up_conn.create_session(
                    lambda: UpstreamSide(s), s.command if s.kind == "exec" else None,
                    term_type=s.term_type, term_size=s.term_size,
                    env=env, encoding=None,
                    window=UPSTREAM_WINDOW, max_pktsize=UPSTREAM_PACKET)
            except asyncssh.ChannelOpenError as exc:
                raise UpstreamError(f"target {ctx.target.name} refused the session: "
                                    f"{exc.reason}") from exc
    except BaseException:
        services.pool.release(ctx.target, s.up_conn)
        s.up_conn = None
        raise
    s.upstream_valve.attach(s.up_chan)
    if s.core.ended:                      # the agent left (or the channel ended) meanwhile
        if s._mediated is not None:
            s._mediated.close()
        s.up_chan.close()
        return
    s._apply(s.core.upstream_ready())
