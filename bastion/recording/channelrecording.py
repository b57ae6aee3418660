"""One channel's recording: ``ChannelRecording``, what the SSH layer feeds while a channel is open.

Made by ``SessionHandle.open_channel`` (bastion.recording.recorder, whose module doc is the
contract: every call returns at once and only enqueues; output reaches the agent through
``gate``; once recording fails the channel is *lost* and its calls raise).  Here: the data,
resize, marker and command calls, the size cap's byte counting, waiting for the file to
exist (``opened``) and for the queue to drain (``drain``), and reading a policy decision
into the index's fields.

Not covered: sessions, ids and the worker's start (recorder.py), the queue (acks.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from bastion.errors import RecordingError
from bastion.metrics import RECORDED_INPUT, RECORDED_OUTPUT, TO_AGENT, TO_HOST
from bastion.proto import asciicast
from bastion.proto.sanitize import sanitize
from bastion.recording.ops import (FLUSH_INTERVAL, HIGH_WATER, OP_CHANNEL_CLOSE, OP_COMMAND,
                                   OP_COMMAND_APPROVER, OP_COMMAND_RESULT, OP_DATA, OP_MARKER,
                                   OP_RESIZE)

if TYPE_CHECKING:  # pragma: no cover
    from bastion.recording.recorder import SessionHandle

log = logging.getLogger("bastion.recording")


class ChannelRecording:
    """One channel's recording.  ``bytes_in``: agent -> host, ``bytes_out``: host -> agent."""

    def __init__(self, session: SessionHandle, cid: int, kind: str, path: Path, t0: float) -> None:
        self.id = cid
        self.kind = kind
        self.path = path
        self.session = session
        self._rec = session._rec
        self._t0 = t0
        self.bytes_in = 0
        self.bytes_out = 0
        self._truncated = False          # set (from the worker's event) at the size cap
        self._counted_at = 0.0           # past the cap: when byte counters were last sent
        self.closed = False
        self.lost: str | None = None     # recording failed while the channel was open
        try:                             # resolved by the worker once the file exists (or not)
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
            self._open_fut: asyncio.Future[str | None] | None = self._loop.create_future()
        except RuntimeError:             # used outside an event loop (tests, tools)
            self._loop = self._open_fut = None

    @property
    def truncated(self) -> bool:
        return self._truncated

    def _lost_by(self, error: str) -> None:
        """Any thread: recording failed while this channel was open; it cannot go on."""
        if self.lost is None:
            self.lost = error
        self._open_done(error)

    def _check(self) -> None:
        self._rec._check()
        if self.lost is not None:
            raise RecordingError(f"session recording is not possible: {self.lost}")

    def gate(self, chan: Any, on_failure: Callable[[RecordingError], None]) -> Any:
        """``chan`` (the agent's channel) behind a gate: writes wait until this recording
        holds what came before them; ``on_failure(RecordingError)`` is called on the loop
        as soon as recording fails (bastion.recording.gate)."""
        from bastion.recording.gate import AgentGate
        return AgentGate(chan, self, on_failure)

    def _open_done(self, error: str | None) -> None:
        """Reader thread: the recording file was created (error None) or could not be."""
        if self._loop is None:
            return

        def resolve() -> None:
            fut = self._open_fut
            if fut is not None and not fut.done():
                fut.set_result(error)
        try:
            self._loop.call_soon_threadsafe(resolve)
        except RuntimeError:             # the loop is closed: nobody is waiting
            pass

    async def opened(self, timeout: float = 10.0) -> None:
        """Wait until the recording file exists on disk.

        The SSH layer awaits this before anything reaches the host, so a session never
        runs unrecorded, not even the first one after the disk broke.  Raises
        RecordingError when the file could not be created (or not within ``timeout``).
        """
        if self._open_fut is None:
            return
        try:
            error = await asyncio.wait_for(asyncio.shield(self._open_fut), timeout)
        except asyncio.TimeoutError:
            raise RecordingError(f"channel {self.id}: the recording was not created within "
                                 f"{timeout:g}s") from None
        if error:
            raise RecordingError(f"session recording is not possible: {error}")

    def _now(self) -> float:
        return time.monotonic() - self._t0

    def _closed_call(self, what: str) -> bool:
        if self.closed:
            log.warning("channel %s: %s after close ignored", self.id, what)
            return True
        return False

    def output(self, data: bytes, *, stderr: bool = False) -> None:
        """Host -> agent data (stdout, or stderr of an exec channel)."""
        if self._closed_call("output") or not data:
            return
        self._check()
        self.bytes_out += len(data)
        TO_AGENT(len(data))
        stream = asciicast.STDERR if stderr else asciicast.STDOUT
        if self._truncated:
            self._count(stream)
            return
        RECORDED_OUTPUT(len(data))
        self._rec._put((OP_DATA, self.id, stream, self._now(), bytes(data), self.bytes_in,
                        self.bytes_out), len(data))

    def input(self, data: bytes) -> None:
        """Agent -> host data (keystrokes, exec stdin)."""
        if self._closed_call("input") or not data:
            return
        self._check()
        self.bytes_in += len(data)
        TO_HOST(len(data))
        if self._truncated:
            self._count(asciicast.INPUT)
            return
        RECORDED_INPUT(len(data))
        self._rec._put((OP_DATA, self.id, asciicast.INPUT, self._now(), bytes(data), self.bytes_in,
                        self.bytes_out), len(data))

    def _count(self, stream: str) -> None:
        """Past the size cap: only the byte counters go to the index, at most once per interval."""
        now = time.monotonic()
        if now - self._counted_at >= FLUSH_INTERVAL:
            self._counted_at = now
            self._rec._put((OP_DATA, self.id, stream, self._now(), b"", self.bytes_in,
                            self.bytes_out))

    def resize(self, width: int, height: int) -> None:
        if self._closed_call("resize"):
            return
        self._check()
        self._rec._put((OP_RESIZE, self.id, self._now(), int(width), int(height)))

    def marker(self, label: str) -> None:
        """A marker in the recording (approval requests and answers, notes)."""
        if self._closed_call("marker"):
            return
        self._check()
        self._rec._put((OP_MARKER, self.id, self._now(), sanitize(label)), len(label))

    def command(self, line: str, decision: Any, *, approver: str | None = None) -> int:
        """Record a command line and its policy decision; returns the command id.

        ``decision`` is a bastion.policy Decision (read by duck typing:
        ``to_dict()`` if present, else the attributes action, rule, reason,
        commands).  The recording gets a marker at the same offset.
        """
        self._check()
        if self.closed:
            raise RecordingError(f"channel {self.id} is closed")
        action, rule, reason, commands = _decision_fields(decision)
        cmd_id = next(self._rec._command_ids)
        t = self._now()
        label = f"command {cmd_id}: {action}"
        if rule:
            label += f" [{rule}]"
        if approver:
            label += f" (approver {approver})"
        label = sanitize(label + ": " + line)
        self._rec._put((OP_COMMAND, cmd_id, self.session.id, self.id, time.time(), t, line,
                        commands, action, rule, reason, approver, label), len(line) + len(label))
        return cmd_id

    def command_approver(self, command_id: int, approver: str) -> None:
        """Who approved a held command (set before its row is sealed).  Never raises."""
        try:
            self._rec._put((OP_COMMAND_APPROVER, int(command_id), str(approver)), len(approver))
        except RecordingError as exc:
            log.error("command %s: approver not recorded: %s", command_id, exc)

    def command_result(self, command_id: int, exit_status: int | None) -> None:
        """The exit status of a recorded command, once known (seals its row)."""
        try:
            self._rec._put((OP_COMMAND_RESULT, int(command_id), exit_status))
        except RecordingError as exc:
            log.error("command %s: result not recorded: %s", command_id, exc)

    def close(self, *, exit_status: int | None = None, exit_signal: str | None = None) -> None:
        """End the recording: flush, SHA-256, seal the channel row.  Never raises."""
        if self.closed:
            return
        self.closed = True
        self._rec._writer.untrack(self.id)
        try:
            self._rec._put((OP_CHANNEL_CLOSE, self.id, self._now(), time.time(), exit_status,
                            exit_signal, self.bytes_in, self.bytes_out, self.lost))
        except RecordingError as exc:
            log.error("channel %s: close not recorded: %s", self.id, exc)
        self.session._channel_closed(self.id)   # a session closed meanwhile follows now

    def over_high_water(self) -> bool:
        """True while the queue to disk is over its high-water mark: pause reading."""
        return self._rec._writer.queued > HIGH_WATER

    async def drain(self) -> None:
        """Wait until the queue is back under the low-water mark.

        Raises RecordingError if recording failed meanwhile.
        """
        loop = asyncio.get_running_loop()
        while True:
            fut = loop.create_future()
            if not self._rec._writer.add_waiter(loop, fut):
                break
            await fut
        self._check()


def _jsonable(value: Any) -> Any:
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if hasattr(value, "value") and not isinstance(value, (str, bytes)):
        return value.value
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def _decision_fields(decision: Any) -> tuple[str, str | None, str | None, str | None]:
    data = {}
    if hasattr(decision, "to_dict"):
        try:
            data = dict(decision.to_dict())
        except Exception:  # a broken to_dict must not lose the record
            data = {}
    action = data.get("action", getattr(decision, "action", None))
    action = getattr(action, "value", action)
    rule = data.get("rule", getattr(decision, "rule", None))
    reason = data.get("reason", getattr(decision, "reason", None))
    commands = data.get("commands", getattr(decision, "commands", None))
    commands_json = json.dumps(_jsonable(commands), ensure_ascii=False) if commands else None
    return (str(action) if action is not None else "unknown",
            str(rule) if rule is not None else None,
            str(reason) if reason is not None else None,
            commands_json)
