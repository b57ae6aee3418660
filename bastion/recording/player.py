"""Replay and export of recordings.

``play``: writes a channel's output events (stdout ``o``, stderr ``e`` and
their binary twins) to a byte stream in real time, through
:class:`bastion.proto.sanitize.TerminalFilter` so a recording cannot write the
reviewer's clipboard, retitle their window, query their terminal or change
fonts; colours and cursor movement are kept.  ``speed`` divides delays,
``idle_limit`` caps each pause, ``start`` fast-forwards: events before it are
written at once (so a full-screen program's screen is right when playback
reaches the offset), timing starts there.  ``sleep`` is injectable for tests.
Resizes cannot be applied to the reviewer's terminal and are skipped; input
(``i``) is not shown (a pty echoes it in the output anyway).

``export_cast``: the file's exact bytes (optionally stderr rewritten as
stdout for foreign players); ``export_json``: the session, its commands and
every channel's header and events; ``stream_bytes``: the exact bytes of one
stream (stdout / stderr / input), reassembled from text and base64 events.

Not covered: choosing which channel (the CLI), the index (query.py).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable

from bastion.errors import RecordingError
from bastion.proto import asciicast
from bastion.proto.sanitize import TerminalFilter

PLAYED_CODES = asciicast.OUTPUT_CODES
STREAM_NAMES = {"stdout": asciicast.STDOUT, "stderr": asciicast.STDERR, "input": asciicast.INPUT}


@dataclass
class PlayStats:
    events: int = 0
    dropped_sequences: int = 0
    duration: float = 0.0


def load(path: Path) -> tuple[dict, list[asciicast.Event]]:
    """Header and events of a recording (a partial last line of a live one is ignored)."""
    try:
        with open(path, "rb") as fh:
            header, events = asciicast.iter_cast(fh, allow_partial_tail=True)
            return header, list(events)
    except FileNotFoundError:
        raise RecordingError(f"recording {path} is missing",
                             hint="it may have been pruned; `bastion verify` reports missing files") from None
    except asciicast.CastFormatError as exc:
        raise RecordingError(f"recording {path} is not valid asciicast v2: {exc}",
                             hint="`bastion verify` tells whether it was modified") from None
    except OSError as exc:
        raise RecordingError(f"cannot read recording {path}: {exc}") from exc


def play(events: list[asciicast.Event], out: BinaryIO, *, speed: float = 1.0,
         idle_limit: float | None = None, start: float = 0.0,
         sleep: Callable[[float], None] = time.sleep, show_stderr: bool = True) -> PlayStats:
    """Replay output events to ``out`` (see module doc).  Always ends with a terminal reset."""
    if speed <= 0:
        raise RecordingError("--speed must be greater than 0")
    if idle_limit is not None and idle_limit < 0:
        raise RecordingError("--idle-limit must not be negative")
    codes = PLAYED_CODES if show_stderr else frozenset({"o", "ob", "oz"})
    flt = TerminalFilter()
    stats = PlayStats()
    prev = start
    try:
        for event in events:
            if event.code not in codes:
                continue
            if event.time > start:
                delay = event.time - prev
                if idle_limit is not None:
                    delay = min(delay, idle_limit)
                if delay > 0:
                    sleep(delay / speed)
                    stats.duration += delay / speed
                prev = event.time
            text = flt.feed(event.text())
            if text:
                out.write(text.encode("utf-8", errors="replace"))
                out.flush()
            stats.events += 1
    finally:
        out.write(flt.finish().encode())
        out.flush()
        stats.dropped_sequences = flt.dropped
    return stats


def export_cast(path: Path, out: BinaryIO, *, merge_stderr: bool = False) -> None:
    """Copy the recording; ``merge_stderr`` rewrites ``e`` events as ``o`` for foreign players."""
    if not merge_stderr:
        try:
            with open(path, "rb") as fh:
                while chunk := fh.read(1 << 20):
                    out.write(chunk)
        except OSError as exc:
            raise RecordingError(f"cannot read recording {path}: {exc}") from exc
        return
    header, events = load(path)
    out.write((json.dumps(header, ensure_ascii=False) + "\n").encode())
    for ev in events:
        code = {"e": "o", "eb": "ob", "ez": "oz"}.get(ev.code, ev.code)
        out.write(asciicast.event_line(ev.time, code, ev.data))


def stream_bytes(events: list[asciicast.Event], stream: str = "stdout") -> bytes:
    """The exact bytes of one stream of a recording."""
    if stream not in STREAM_NAMES:
        raise RecordingError(f"unknown stream {stream!r}", hint="one of: stdout, stderr, input")
    assembler = asciicast.Reassembler()
    for ev in events:
        assembler.feed(ev)
    return assembler.bytes(STREAM_NAMES[stream])


def export_json(session: dict, data_dir: Path) -> dict:
    """The session record with, per channel, the recording header and events."""
    out = dict(session)
    channels = []
    for ch in session.get("channels", []):
        ch = dict(ch)
        if ch.get("path"):
            from bastion.recording.located import recording_file
            header, events = load(recording_file(Path(data_dir), ch))
            ch["header"] = header
            ch["events"] = [[ev.time, ev.code, ev.data] for ev in events]
        channels.append(ch)
    out["channels"] = channels
    return out
