"""The agent's channel behind a gate: nothing reaches the agent before the recording holds it.

The SSH layer records every byte before it writes it to the agent (the order is
bastion.proto.channel's), but recording only *queues* (bastion.recording.supervisor).
:class:`AgentGate` wraps the agent's asyncssh channel: each write, EOF, exit status or
close is carried out at once when everything queued so far is acknowledged by the
recording worker (written with ``write(2)`` and committed), and otherwise held, in order,
until it is.  So the agent never sees output the recording does not hold, and gets an
exit status only once the channel's recording is closed and its row sealed.  What the
agent may see that the recording does not hold yet is only what a recording masker holds
back undecided (bastion.recording.sink; docs/RECORDINGS.md states the bound).

Held output is bounded by the recording queue: the SSH layer stops reading from the host
while the queue is over its high-water mark.

When recording fails (the worker reports a failure or dies), held output is dropped --
it was not recorded, so it is never shown -- and ``on_failure`` is called on the event
loop with a RecordingError: the SSH layer ends the channel (255 and a message).  If the
channel had ended already and only its exit status was held, the gate itself gives the
agent the message and exit status 255.  From then on the gate passes everything through:
only the bastion's own ending follows, as every other write to the agent is preceded by
a recording call, which raises on a lost channel.

Every other attribute is the wrapped channel's.  Not covered: the queue and the
acknowledgements (supervisor.py), what the SSH layer writes (bastion.ssh.session).
"""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:  # pragma: no cover
    from bastion.recording.recorder import ChannelRecording

from bastion.errors import RecordingError

log = logging.getLogger("bastion.recording")

_ENDS = ("exit", "exit_with_signal", "close")


class AgentGate:
    """An asyncssh server channel whose writes wait for the recording (see the module doc)."""

    def __init__(self, chan: Any, recording: "ChannelRecording",
                 on_failure: Callable[[RecordingError], None]) -> None:
        self._chan = chan
        self._rec = recording
        self._sup = recording._rec._writer
        self._on_failure = on_failure
        # (ticket, method name, arguments, bytes) of what waits for the recording
        self._pending: collections.deque[tuple[int, str, tuple[Any, ...], int]] = \
            collections.deque()
        self._failed: str | None = None
        self.loop = asyncio.get_running_loop()
        self.withheld = 0                # bytes held right now
        self._sup.register_gate(self)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._chan, name)

    @property
    def channel(self) -> Any:
        """The wrapped channel."""
        return self._chan

    # -- what is gated -------------------------------------------------------------------
    def write(self, data: bytes, datatype: int | None = None) -> None:
        self._call("write", (data, datatype), len(data))

    def write_stderr(self, data: bytes) -> None:
        self._call("write_stderr", (data,), len(data))

    def writelines(self, list_of_data: list[bytes], datatype: int | None = None) -> None:
        self._call("writelines", (list_of_data, datatype), sum(map(len, list_of_data)))

    def write_eof(self) -> None:
        self._call("write_eof", (), 0)

    def exit(self, status: int) -> None:
        self._call("exit", (status,), 0)

    def exit_with_signal(self, signal: str, core_dumped: bool = False, msg: str = "",
                         lang: str = "") -> None:
        self._call("exit_with_signal", (signal, core_dumped, msg, lang), 0)

    def close(self) -> None:
        self._call("close", (), 0)

    def _call(self, name: str, args: tuple[Any, ...], nbytes: int) -> None:
        if self._failed is not None:
            getattr(self._chan, name)(*args)
            return
        ticket = self._sup.last_seq
        if not self._pending and ticket < self._sup.frontier():
            getattr(self._chan, name)(*args)        # everything queued so far is recorded
            return
        self._pending.append((ticket, name, args, nbytes))
        self.withheld += nbytes
        if len(self._pending) == 1:
            self._sup.gate_waits(self, ticket)

    # -- called by the supervisor ----------------------------------------------------------
    def _release(self, frontier: float) -> None:
        """On the loop, after an acknowledgement: carry out what is recorded now."""
        if self._failed is not None:
            return
        while self._pending and self._pending[0][0] < frontier:
            _ticket, name, args, nbytes = self._pending.popleft()
            self.withheld -= nbytes
            self._deferred(name, args)
        if self._pending:
            self._sup.gate_waits(self, self._pending[0][0])

    def _deferred(self, name: str, args: tuple[Any, ...]) -> None:
        try:
            getattr(self._chan, name)(*args)
        except Exception as exc:  # noqa: BLE001 - the agent's channel closed meanwhile
            log.debug("channel %s: %s to the agent after it closed: %s", self._rec.id, name, exc)
            if name in _ENDS[:2]:
                try:
                    self._chan.close()
                except Exception:  # noqa: BLE001
                    pass

    def _fault_soon(self, message: str) -> None:
        """From the supervisor's thread: recording failed."""
        try:
            self.loop.call_soon_threadsafe(self._fault, message)
        except RuntimeError:                     # the loop is closed: nobody to tell
            pass

    def _fault(self, message: str) -> None:
        if self._failed is not None:
            return
        pending, self._pending = self._pending, collections.deque()
        if not pending and self._rec.closed:
            return                               # ended, and the agent has its exit status
        self._failed = message
        dropped = sum(item[3] for item in pending)
        self.withheld = 0
        if dropped:
            log.warning("channel %s: %d bytes of output not shown to the agent: they could not "
                        "be recorded", self._rec.id, dropped)
        ended = any(item[1] in _ENDS for item in pending)
        try:
            self._on_failure(RecordingError(message))
        except Exception:  # noqa: BLE001 - the channel must end anyway
            log.exception("channel %s: ending it after a recording failure failed", self._rec.id)
            ended = True
        if ended:
            # its end was held: the agent is told now (the SSH layer had finished with it)
            nl = "\r\n" if self._pty() else "\n"
            text = f"bastion: session ended: it can no longer be recorded ({message}){nl}"
            try:
                self._chan.write_stderr(text.encode("utf-8", "replace"))
                self._chan.exit(255)
            except Exception:  # noqa: BLE001
                try:
                    self._chan.close()
                except Exception:  # noqa: BLE001
                    pass

    def _pty(self) -> bool:
        try:
            return bool(self._chan.get_terminal_type())
        except Exception:  # noqa: BLE001
            return False
