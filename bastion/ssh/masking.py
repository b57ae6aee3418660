"""Secret masking on a channel: recordings always, the agent's live stream where policy says.

Each direction of a channel (stdout, stderr, the agent's input) is masked by its
own streaming :class:`bastion.proto.masker.Masker`.  What goes into the
recording is always the masked stream.

* With ``mask_live`` (``[settings] mask_live`` or the grant's ``mask_live``) the
  maskers run here, on the event loop: the agent receives the masked stream and
  the recording gets the same bytes, which the recording worker masks again.
* Otherwise the agent receives the bytes as they come and the recording worker
  process masks them before they are written (bastion.recording.sink), so the
  relay does not pay for masking: :meth:`ChannelMasks.feed` passes bytes through.
  Either way the recording is opened with the detectors (``Services.open_recording``).

The masker holds back the last few hundred bytes that could still be the start
of a secret.  On the live stream held bytes are shown when the stream goes quiet
for ``LIVE_QUIET`` seconds (so a prompt never hangs) and at the end; in the
recording they are written only once decided (more data, or the end), never on a
timer, so a secret split by a pause is still stored masked whole.

Command lines and decisions stored in the index or the log go through
:func:`mask_line` / :func:`masked_decision`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from bastion.proto.channel import INPUT, STDERR, STDOUT  # noqa: F401 - the streams' names
from bastion.proto.masker import BUILTIN, Masker, QUIET_FLUSH_SECONDS, mask_text

LIVE_QUIET = QUIET_FLUSH_SECONDS       # 50 ms


@dataclass
class ChannelMasks:
    """The maskers of one channel.  ``live``: the agent sees masked output too.

    Not live: nothing is masked here (``feed`` returns its input, ``flush`` nothing);
    the recording worker masks with ``detectors``.
    """

    detectors: Sequence = BUILTIN
    live: bool = False
    _maskers: dict = field(default_factory=dict)

    def _masker(self, stream: str) -> Masker:
        m = self._maskers.get(stream)
        if m is None:
            m = self._maskers[stream] = Masker(self.detectors)
        return m

    def feed(self, stream: str, data: bytes) -> bytes:
        if not self.live:
            return data
        return self._masker(stream).feed(data)

    @property
    def pending(self) -> bool:
        return any(m.pending for m in self._maskers.values())

    def flush(self) -> list[tuple[str, bytes]]:
        """Everything held, per stream (quiet timer or end of stream)."""
        out = []
        for stream, m in self._maskers.items():
            data = m.flush()
            if data:
                out.append((stream, data))
        return out


def mask_line(line: str, detectors: Sequence = BUILTIN) -> str:
    return mask_text(line, detectors)


def _mask_value(value, detectors):
    if isinstance(value, str):
        return mask_text(value, detectors)
    if isinstance(value, list):
        return [_mask_value(v, detectors) for v in value]
    if isinstance(value, tuple):
        return tuple(_mask_value(v, detectors) for v in value)
    if isinstance(value, dict):
        return {k: _mask_value(v, detectors) for k, v in value.items()}
    return value


class MaskedDecision:
    """A decision as stored: every string in it (reason, argv…) masked; same duck type."""

    def __init__(self, decision, detectors: Sequence = BUILTIN) -> None:
        self._dict = _mask_value(decision.to_dict(), detectors)
        self.action = decision.action
        self.rule = decision.rule
        self.reason = self._dict.get("reason", "")
        self.command = self._dict.get("command")
        self.commands = self._dict.get("commands", [])

    def to_dict(self) -> dict:
        return self._dict


def masked_decision(decision, detectors: Sequence = BUILTIN) -> MaskedDecision:
    return MaskedDecision(decision, detectors)
