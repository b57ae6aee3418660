"""The end of a session channel (:class:`bastion.ssh.session.InnerSession`).

``close_host_later``/``agent_gone_over``: the staged ending of a command whose agent left
(the core's ``CloseHostLater``): it may still run ``AGENT_GONE_GRACE`` seconds to end by
itself and report its status; then SIGTERM, SIGKILL and close, then the channel is ended
without the host's answer.  ``end``: the core's ``End`` carried out -- timers cancelled,
the recording closed, pending tasks (an approval) withdrawn, the upstream channel closed and
the agent told the message and the exit status (or signal).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import asyncssh

from bastion.proto import channel as c
from bastion.ssh import rsyncexec

if TYPE_CHECKING:
    from bastion.ssh.session import InnerSession

log = logging.getLogger("bastion.session")

#: seconds a command whose agent left may still run (to end by itself and report its status)
AGENT_GONE_GRACE = 10.0
#: then: SIGTERM to the command; this long after, SIGKILL and the upstream channel closed;
#: as long again after that, the channel is ended without waiting for the host any longer
AGENT_GONE_KILL_AFTER = 5.0


def close_host_later(s: InnerSession) -> None:
    """The agent left while its command runs: give the command the grace time."""
    s._close_later = asyncio.get_running_loop().call_later(
        AGENT_GONE_GRACE, agent_gone_over, s, 0)


def agent_gone_over(s: InnerSession, stage: int) -> None:
    """The agent left and its command did not end within the grace time: end it.

    Closing the upstream channel alone does not: OpenSSH's sshd keeps a session channel
    without a pty, and its command, until the command's stdout and stderr close (a
    ``sleep`` never writes, so it is never even sent SIGPIPE), and never answers the
    close meanwhile.  So: SIGTERM (a ``signal`` request, OpenSSH >= 7.9), then SIGKILL and
    close, then the channel is ended here without the host's answer (its row is closed
    with no exit status; the upstream channel is left to the pool's connection)."""
    s._close_later = None
    up = s.up_chan
    if s.core is None or s.core.ended or up is None:
        return
    loop = asyncio.get_running_loop()
    if stage == 0:
        log.info("session %s: the agent left %g s ago and its command still runs: "
                 "SIGTERM", s.ctx.where, AGENT_GONE_GRACE)
        s._marker("agent gone: the command is sent SIGTERM")
        up.send_signal("TERM")
        s._close_later = loop.call_later(AGENT_GONE_KILL_AFTER, agent_gone_over, s, 1)
    elif stage == 1:
        log.warning("session %s: the command did not end on SIGTERM: SIGKILL",
                    s.ctx.where)
        s._marker("agent gone: the command is sent SIGKILL")
        up.send_signal("KILL")
        up.close()
        s._close_later = loop.call_later(AGENT_GONE_KILL_AFTER, agent_gone_over, s, 2)
    else:
        log.warning("session %s: the host did not close the channel: ending it without "
                    "its exit status", s.ctx.where)
        s._apply([c.Marker("agent gone: the host did not end the command")]
                 + s.core.host_closed(None, None))


def end(s: InnerSession, end: c.End) -> None:
    """Carry out the core's ``End``: once per channel."""
    for timer in (s._flush_timer, s._close_later, s._expiry):
        if timer is not None:
            timer.cancel()
    s._flush_timer = s._close_later = s._expiry = None
    if s._rsync is not None:
        rsyncexec.ended_in(s, end.status)
    if s.rec is not None:
        s.rec.close(exit_status=end.status,
                    exit_signal=end.signal[0] if end.signal else None)
    current = asyncio.current_task()
    for task in list(s._tasks):             # an approval still pending is withdrawn
        if task is not current and not task.done():
            task.cancel()
    if s._mediated is not None:
        s._mediated.close()
    if s.up_chan is not None:
        s.up_chan.close()
    if not end.agent or s._closed or s.chan is None:
        return
    try:
        if end.message:
            s.chan.write_stderr(end.message)
        if end.signal:
            name, core_dumped, msg, lang = end.signal
            s.chan.exit_with_signal(name, core_dumped, msg, lang)
        elif end.status is not None:
            s.chan.exit(end.status)
        else:
            s.chan.close()
    except (asyncssh.Error, OSError):
        s.chan.close()
