"""Small pieces of the relay between an inner session and its upstream session.

``printable``: agent text made one control-free line for logs and messages.
``Valve``: pause/resume reading of a channel for several independent reasons.
``UpstreamSide``: the upstream (client) session that mirrors into the inner session.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import asyncssh

from bastion.proto.sanitize import sanitize

if TYPE_CHECKING:  # pragma: no cover
    from bastion.ssh.session import InnerSession


def printable(text: str | None, limit: int = 300) -> str:
    """Agent text as one control-free line for logs and messages, at most ``limit`` long."""
    shown = sanitize(text or "")
    return shown if len(shown) <= limit else shown[:limit] + "…"


class Valve:
    """pause_reading/resume_reading of one channel, held for named reasons.

    asyncssh does not count pauses, so two reasons (peer window full, recording
    queue full) must not resume each other's pause.  Nor does it respect one:
    it resumes a session channel right after ``session_started()`` returns, so a
    pause taken there is lost; the session calls :meth:`hold` when data arrives
    while a reason is held, which pauses the channel again before the next chunk.
    """

    def __init__(self) -> None:
        self.chan = None
        self.reasons: set[str] = set()

    def attach(self, chan) -> None:
        self.chan = chan
        if self.reasons:
            chan.pause_reading()

    def pause(self, reason: str) -> None:
        if not self.reasons and self.chan is not None:
            self.chan.pause_reading()
        self.reasons.add(reason)

    def hold(self) -> None:
        """Data came in although a reason is held: pause the channel (again)."""
        if self.reasons and self.chan is not None:
            self.chan.pause_reading()

    def resume(self, reason: str) -> None:
        if reason not in self.reasons:
            return
        self.reasons.discard(reason)
        if not self.reasons and self.chan is not None:
            self.chan.resume_reading()


class UpstreamSide(asyncssh.SSHClientSession):
    """Client session on the upstream connection; mirrors everything to the inner channel."""

    def __init__(self, owner: "InnerSession") -> None:
        self.owner = owner

    def connection_made(self, chan: asyncssh.SSHClientChannel) -> None:
        # The owner learns its channel now, before create_session returns to it: a command
        # that ends at once can close the channel first, and its exit status is read from it.
        if getattr(self.owner, "up_chan", None) is None:
            self.owner.up_chan = chan

    def data_received(self, data: bytes, datatype: Any) -> None:
        self.owner.upstream_data(data, datatype)

    def eof_received(self) -> bool:
        self.owner.upstream_eof()
        return True

    def pause_writing(self) -> None:
        self.owner.agent_valve.pause("upstream window full")

    def resume_writing(self) -> None:
        self.owner.agent_valve.resume("upstream window full")

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner.upstream_closed(exc)
