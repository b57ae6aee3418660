"""CLI: ``bastion sessions watch`` (a running session's output as it is recorded) and
``bastion sessions kill`` (end it now, through the API)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Any, Iterator, Optional

import typer
from rich.text import Text

from bastion.cli.common import DEFAULT_DATA_DIR, DataDirOpt, err_console, handle_errors
from bastion.cli.remote import ServerCaOpt, ServerOpt, TokenFileOpt
from bastion.cli.remote import client as remote


def _local(data_dir: Path, session_id: int, channel: Optional[int]) -> Iterator[dict[str, Any]]:
    """The same events as the API's live view, read from the data dir (this node's file) or,
    for another node's session on a PostgreSQL store, from the store's copy."""
    from bastion.proto.asciicast import MARKER
    from bastion.recording import query
    from bastion.recording.follow import OUTPUT_CODES, POLL, LiveChannel, check_live, live_channel
    db = query.open_index(data_dir)
    try:
        session = query.get_session(db, session_id)
    finally:
        db.conn.close()
    if channel is None:
        check_live(session)
    ch = live_channel(session, channel)
    live = LiveChannel(data_dir, ch)
    try:
        yield {"event": "channel", "data": {"session": session_id, "channel": ch["id"],
                                            "from_store": live.from_store}}
        while True:
            events, ended = live.poll()
            for ev in events:
                if ev.code in OUTPUT_CODES:
                    yield {"event": "message", "data": {"code": ev.code, "data": ev.text()}}
                elif ev.code == MARKER:
                    yield {"event": "marker", "data": {"t": ev.time, "text": ev.text()}}
            if ended:
                yield {"event": "end", "data": live.end}
                return
            if not events:
                time.sleep(POLL)
    finally:
        live.close()


def watch_cmd(
    session_id: Annotated[int, typer.Argument(metavar="SESSION_ID", help="Session id.")],
    data_dir: DataDirOpt = Path(DEFAULT_DATA_DIR),
    channel: Annotated[Optional[int], typer.Option(
        help="Channel id (default: the newest open one).")] = None,
    server: ServerOpt = None,
    server_ca: ServerCaOpt = None,
    token_file: TokenFileOpt = None,
    markers: Annotated[bool, typer.Option(
        "--markers/--no-markers",
        help="Show each command with its decision (and approvals, exit status) on stderr "
             "as it is recorded.")] = True,
) -> None:
    """Follow a running session: its output as it is recorded (secrets masked), until the
    channel ends or Ctrl-C.  Each command the agent runs appears on stderr with the
    policy's decision, as a dim `── command 17: deny [no-rm]: rm -rf /srv` line
    (--no-markers: the output alone).  On a PostgreSQL store this works from any node: a session
    recorded elsewhere is followed through the store's copy.  A session that has ended is
    refused (replay it with `sessions play`), unless --channel names one.

    Escape sequences that could act on your terminal (clipboard, title, queries) are
    filtered out, as in `sessions play`. Exit status 0 when the channel ended.

    Example: bastion sessions watch 42 --server https://bastion.example.com:8443
    """
    from bastion.errors import BastionError
    from bastion.proto.sanitize import TerminalFilter, sanitize
    if server:
        stream = remote(server, server_ca, token_file).live(session_id, channel)
    else:
        stream = _local(data_dir, session_id, channel)
    flt = TerminalFilter()
    out = sys.stdout.buffer
    at_line_start = True
    try:
        for item in stream:
            if item["event"] == "channel":
                where = " from the store's copy" if item["data"].get("from_store") else ""
                err_console.print(Text(f"── watching session {session_id} channel "
                                       f"{item['data'].get('channel')}{where} (Ctrl-C stops)",
                                       style="dim"))
            elif item["event"] == "end":
                out.write(flt.finish().encode())
                out.flush()
                end = item["data"]
                how = ""
                if end.get("status") == "interrupted":
                    how = " (interrupted" + (f": {end['reason']}" if end.get("reason") else "") + ")"
                err_console.print(Text("\n── the channel ended" + sanitize(how), style="dim"))
                return
            elif item["event"] == "error":
                out.write(flt.finish().encode())
                out.flush()
                raise BastionError(sanitize(str(item["data"].get("error", "the live view failed"))),
                                   hint=sanitize(str(item["data"]["hint"]))
                                   if item["data"].get("hint") else None)
            elif item["event"] == "marker":
                if markers:
                    err_console.print(Text(("" if at_line_start else "\n") + "── "
                                           + sanitize(str(item["data"].get("text", ""))),
                                           style="dim"))
                    at_line_start = True
            else:
                text = flt.feed(str(item["data"].get("data", "")))
                if text:
                    out.write(text.encode("utf-8", "replace"))
                    out.flush()
                    at_line_start = text.endswith("\n")
    except KeyboardInterrupt:
        out.write(flt.finish().encode())
        out.flush()
        raise typer.Exit(130) from None
    out.write(flt.finish().encode())
    out.flush()
    raise BastionError("the live view was cut off before the channel ended",
                       hint="follow again (`bastion sessions watch` replays it from the start)")


def kill_cmd(
    session_id: Annotated[int, typer.Argument(metavar="SESSION_ID", help="Session id.")],
    reason: Annotated[str, typer.Option("--reason", "-r",
                                        help="Why (required; in the recording and the log).")],
    server: ServerOpt = None,
    server_ca: ServerCaOpt = None,
    token_file: TokenFileOpt = None,
) -> None:
    """Terminate a running session now ([settings] admins only): its commands are closed,
    the agent's ssh prints who ended it and why, the recording gets a marker.

    Example: bastion sessions kill 42 -r "INC-7" --server https://bastion:8443
    """
    from bastion.errors import BastionError
    if not server:
        raise BastionError("sessions kill needs --server (or BASTION_SERVER): only the "
                           "bastion that runs the session can end it",
                           hint="run bastion serve with --api-listen and pass its URL")
    result = remote(server, server_ca, token_file).terminate(session_id, reason)
    err_console.print(f"session {result['session']} terminated")


def register(sessions_app: typer.Typer) -> None:
    sessions_app.command("watch")(handle_errors(watch_cmd))
    sessions_app.command("kill")(handle_errors(kill_cmd))
