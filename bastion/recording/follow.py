"""Following a recording as it is written: the live view (``sessions watch``, the API).

The recording worker appends a channel's events to its asciicast file as soon as they are
decided (masked: bastion.recording.sink), so a reader that follows the file shows exactly
what the recording holds, secrets masked, from any process that can read the data dir.
:class:`Follower` returns the complete new events at each :meth:`Follower.read`; a line
still being written waits for its end.  :func:`live_channel` picks the channel to follow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bastion.errors import RecordingError
from bastion.proto import asciicast

READ_MAX = 1 << 20
OUTPUT_CODES = asciicast.OUTPUT_CODES


class Follower:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.pos = 0
        self.header: dict[str, Any] | None = None
        self._partial = b""

    def read(self) -> list[asciicast.Event]:
        """The events completed since the last call (output, input, resizes, markers)."""
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.pos)
                data = fh.read(READ_MAX)
        except FileNotFoundError:
            return []                                   # not created yet, or pruned
        except OSError as exc:
            raise RecordingError(f"cannot read recording {self.path}: {exc}") from exc
        self.pos += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        events: list[asciicast.Event] = []
        for line in lines:
            if not line.strip():
                continue
            try:
                if self.header is None:
                    self.header = asciicast.parse_header(line)
                else:
                    events.append(asciicast.parse_event(line))
            except asciicast.CastFormatError as exc:
                raise RecordingError(f"recording {self.path} is not valid asciicast v2: {exc}",
                                     hint="`bastion verify` tells whether it was modified") from None
        return events


def live_channel(session: dict[str, Any], channel_id: int | None = None) -> dict[str, Any]:
    """The channel of ``session`` (query.get_session) to follow: ``channel_id``, else the
    newest open one, else the newest."""
    channels: list[dict[str, Any]] = [c for c in session.get("channels", []) if c.get("path")]
    if channel_id is not None:
        for ch in channels:
            if ch["id"] == channel_id:
                return ch
        raise RecordingError(f"session {session['id']} has no channel {channel_id}",
                             hint="`bastion sessions show` lists its channels")
    if not channels:
        raise RecordingError(f"session {session['id']} has no recorded channel yet",
                             hint="try again once the agent has opened one")
    open_ones = [c for c in channels if c.get("ended") is None]
    return (open_ones or channels)[-1]
