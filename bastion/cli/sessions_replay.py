"""CLI: ``bastion sessions play`` (replay in this terminal, escape sequences filtered) and
``bastion sessions export`` (asciicast, JSON or the exact recorded bytes), from the local
index or, with ``--server``, from recordings fetched through the API and checked against the
index's hashes.  A recording that no longer matches the SHA-256 sealed at close is named."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.text import Text

from bastion.cli.common import DEFAULT_DATA_DIR, DataDirOpt, JsonOpt, err_console, handle_errors
from bastion.cli.remote import ServerCaOpt, ServerOpt, as_index_record, fetched_recordings
from bastion.cli.remote import client as remote
from bastion.cli.sessions import _emit_json, _when
from bastion.errors import RecordingError
from bastion.proto.sanitize import sanitize
from bastion.recording import player, query
from bastion.recording import verify as verifier
from bastion.recording.located import recording_file

DataDir = DataDirOpt


def _channel_choice(record: dict, channel: int | None, start: str | None, db) -> tuple[list[dict], float]:
    """Channels to play and the start offset, from --channel and --from."""
    channels = [c for c in record["channels"] if c.get("path")]
    if not channels:
        raise RecordingError(f"session {record['id']} has no recording",
                             hint="refused attempts and sessions without channels have none")
    offset = 0.0
    if start:
        m = re.fullmatch(r"(?:cmd:|#)(\d+)", start.strip())
        if m:
            cmd = (query.get_command(db, int(m.group(1))) if db is not None else next(
                (c for c in record.get("commands", []) if c["id"] == int(m.group(1))),
                {"id": int(m.group(1)), "session_id": None}))
            if cmd["session_id"] != record["id"]:
                raise RecordingError(f"command {cmd['id']} belongs to session {cmd['session_id']}")
            channel = channel or cmd.get("channel_id")
            offset = float(cmd.get("offset") or 0.0)
        else:
            offset = _parse_offset(start)
    if channel is not None:
        chosen = [c for c in channels if c["id"] == channel]
        if not chosen:
            raise RecordingError(f"session {record['id']} has no recorded channel {channel}",
                                 hint="channels: " + ", ".join(str(c["id"]) for c in channels))
        return chosen, offset
    if start and len(channels) > 1:
        raise RecordingError(f"session {record['id']} has {len(channels)} channels; say which with --channel",
                             hint="channels: " + ", ".join(str(c["id"]) for c in channels))
    return channels, offset


def _parse_offset(text: str) -> float:
    value = text.strip()
    m = re.fullmatch(r"(?:(\d+):)?(\d+):(\d+(?:\.\d+)?)", value)
    if m:
        return int(m.group(1) or 0) * 3600 + int(m.group(2)) * 60 + float(m.group(3))
    try:
        result = float(value)
    except ValueError:
        raise RecordingError(f"not an offset: {text!r}",
                             hint="seconds (12.5), mm:ss (1:05), or a command: cmd:42") from None
    if result < 0:
        raise RecordingError("the offset must not be negative")
    return result


def _check_sealed_hash(data_dir: Path, ch: dict) -> None:
    if not ch.get("sha256"):
        return
    try:
        digest = verifier.file_sha256(recording_file(data_dir, ch))
    except OSError:
        return
    if digest != ch["sha256"]:
        err_console.print(Text(f"warning: recording {sanitize(ch['path'])} does not match the SHA-256 sealed "
                               "at close: it was modified (see `bastion verify`)", style="bold red"))


@handle_errors
def play_cmd(
    session_id: Annotated[int, typer.Argument(metavar="SESSION_ID", help="Session id.")],
    data_dir: DataDir = Path(DEFAULT_DATA_DIR),
    speed: Annotated[float, typer.Option(help="Playback speed factor.")] = 1.0,
    idle_limit: Annotated[Optional[float], typer.Option(help="Cap every pause at this many seconds.")] = None,
    start: Annotated[Optional[str], typer.Option("--from", help="Start at an offset: seconds, mm:ss, or cmd:ID.")] = None,
    channel: Annotated[Optional[int], typer.Option(help="Channel id (default: all, in order).")] = None,
    server: ServerOpt = None,
    server_ca: ServerCaOpt = None,
    as_json: JsonOpt = False,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Follow the running session "
                                         "live instead, as `sessions watch` does.")] = False,
) -> None:
    """Replay a session in this terminal, dangerous escape sequences filtered out.

    Clipboard writes (OSC 52), title and font changes, device controls (DCS,
    APC, PM, SOS) and terminal queries are removed; colours and cursor
    movement are kept.  With --json, prints the filtered events instead.

    Example: bastion sessions play 42 --from cmd:317 --idle-limit 2
    """
    if follow:
        if start or as_json or idle_limit is not None or speed != 1.0:
            raise RecordingError("--follow shows the output as it is recorded: it takes no "
                                 "--from, --json, --speed or --idle-limit",
                                 hint="replay a session with those without --follow")
        from bastion.cli.sessions_live import watch_cmd
        watch_cmd(session_id, data_dir, channel, server, server_ca, None)
        return
    if server:
        api = remote(server, server_ca)
        record = as_index_record(api.session(session_id))
        channels, offset = _channel_choice(record, channel, start, None)
        with fetched_recordings(api, record["id"], channels) as copy_dir:
            _play(copy_dir, record, channels, offset, speed, idle_limit, as_json)
        return
    db = query.open_index(data_dir)
    record = query.get_session(db, session_id)
    channels, offset = _channel_choice(record, channel, start, db)
    _play(data_dir, record, channels, offset, speed, idle_limit, as_json)


def _play(data_dir: Path, record: dict[str, Any], channels: list[dict[str, Any]], offset: float,
          speed: float, idle_limit: Optional[float], as_json: bool) -> None:
    results = []
    for ch in channels:
        _check_sealed_hash(data_dir, ch)
        header, events = player.load(recording_file(data_dir, ch))
        if as_json:
            from bastion.proto.sanitize import TerminalFilter
            flt = TerminalFilter()
            results.append({"session": record["id"], "channel": ch["id"], "from": offset,
                            "events": [[ev.time, ev.code, flt.feed(ev.text())] for ev in events
                                       if ev.code in player.PLAYED_CODES and ev.time >= offset]})
            continue
        err_console.print(Text(sanitize(
            f"── session {record['id']} channel {ch['id']} ({ch['kind']}"
            + (f": {ch['command']}" if ch.get("command") else "") + f") · {header.get('title', '')} · "
            f"{header['width']}x{header['height']} · {_when(ch['started'])}"
            + (f" · from {offset:.3f}s" if offset else "")), style="dim"))
        try:
            stats = player.play(events, sys.stdout.buffer, speed=speed, idle_limit=idle_limit, start=offset)
        except KeyboardInterrupt:
            raise typer.Exit(130) from None
        if stats.dropped_sequences:
            err_console.print(Text(f"\n[{stats.dropped_sequences} unsafe escape sequence(s) filtered out]",
                                   style="dim"))
    if as_json:
        _emit_json(results)


@handle_errors
def export_cmd(
    session_id: Annotated[int, typer.Argument(metavar="SESSION_ID", help="Session id.")],
    data_dir: DataDir = Path(DEFAULT_DATA_DIR),
    fmt: Annotated[str, typer.Option("--format", help="cast (asciicast v2 file), json (session + events), "
                                     "or raw (the exact bytes of one stream).")] = "cast",
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help="Write here instead of stdout "
                                                   "(a new file, mode 0600; never through a symlink).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace the -o file if it exists (a symlink "
                                        "there is replaced, not followed).")] = False,
    channel: Annotated[Optional[int], typer.Option(help="Channel id (needed when there are several).")] = None,
    stream: Annotated[str, typer.Option(help="For raw: stdout, stderr or input.")] = "stdout",
    merge_stderr: Annotated[bool, typer.Option("--merge-stderr", help="For cast: write stderr as stdout events "
                                               "so other players show it.")] = False,
    as_json: JsonOpt = False,
    server: ServerOpt = None,
    server_ca: ServerCaOpt = None,
) -> None:
    """Export a session's recording as asciicast, JSON, or the exact recorded bytes.

    With -o the file is created new (mode 0600): an existing file or a symlink at that
    path is an error unless --force, which replaces it (never writing through a link).

    Example: bastion sessions export 42 --format cast -o session-42.cast
    """
    fmt = "json" if as_json else fmt
    if fmt not in ("cast", "json", "raw"):
        raise RecordingError(f"unknown format {fmt!r}", hint="one of: cast, json, raw")
    if fmt == "raw" and output is None and sys.stdout.isatty():
        raise RecordingError("refusing to write raw recorded bytes to a terminal",
                             hint="use -o FILE, or `bastion sessions play` to watch it safely")
    if server:                  # the recordings fetched, then checked against the index's hashes
        api = remote(server, server_ca)
        record = as_index_record(api.session(session_id))
        with fetched_recordings(api, session_id, [c for c in record["channels"]
                                                  if c.get("path")]) as copy_dir:
            _export(record, copy_dir, fmt, output, force, channel, stream, merge_stderr)
        return
    _export(query.get_session(query.open_index(data_dir), session_id), data_dir, fmt, output,
            force, channel, stream, merge_stderr)


def _export(record: dict[str, Any], data_dir: Path, fmt: str, output: Path | None, force: bool,
            channel: int | None, stream: str, merge_stderr: bool) -> None:
    session_id = record["id"]
    if fmt == "json":
        payload = json.dumps(query.public(player.export_json(record, data_dir)),
                             ensure_ascii=True, indent=2) + "\n"
        _write(output, payload.encode(), force)
        return
    channels = [c for c in record["channels"] if c.get("path")]
    if channel is not None:
        channels = [c for c in channels if c["id"] == channel]
    if len(channels) != 1:
        raise RecordingError(
            f"session {session_id} has {len(channels)} matching recorded channels; pick one with --channel",
            hint="channels: " + ", ".join(str(c["id"]) for c in record["channels"]) if record["channels"] else None)
    ch = channels[0]
    _check_sealed_hash(data_dir, ch)
    path = recording_file(data_dir, ch)
    if fmt == "raw":
        _, events = player.load(path)
        _write(output, player.stream_bytes(events, stream), force)
        return
    if output is None:
        player.export_cast(path, sys.stdout.buffer, merge_stderr=merge_stderr)
        sys.stdout.buffer.flush()
    else:
        _write(output, lambda fh: player.export_cast(path, fh, merge_stderr=merge_stderr), force)


def _write(output: Path | None, data, force: bool = False) -> None:
    """``data`` (bytes, or a function writing to a binary file) to stdout or to ``-o``."""
    if output is None:
        if callable(data):
            data(sys.stdout.buffer)
        else:
            sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    from bastion.private import OutputExists, new_output_file
    try:
        with new_output_file(output, overwrite=force) as fh:
            if callable(data):
                data(fh)
            else:
                fh.write(data)
    except OutputExists as exc:
        what = "is a symbolic link" if exc.symlink else "already exists"
        raise RecordingError(f"{output} {what}; not written",
                             hint="choose a new file name, or pass --force to replace it"
                                  + (" (the link itself, not what it points to)"
                                     if exc.symlink else "")) from None
    except OSError as exc:
        raise RecordingError(f"cannot write {output}: {exc.strerror or exc}") from exc
    err_console.print(Text(f"wrote {output}", style="dim"))


def register(app: typer.Typer) -> None:
    app.command("play")(play_cmd)
    app.command("export")(export_cmd)
