"""CLI for reviewers: ``sessions list/show/play/export``, ``commands search``, ``verify``, ``prune``.

``sessions play``/``export`` are in :mod:`bastion.cli.sessions_replay`, ``sessions
watch``/``kill`` in :mod:`bastion.cli.sessions_live`.  Each command is one library call
(bastion.recording.query / verify / player) plus rendering.  Tables show agent text through
:func:`bastion.proto.sanitize.sanitize` (escapes made visible, never
interpreted) in rich ``Text`` cells (never markup); ``--json`` output is
ASCII-escaped JSON.  The index is opened read-only except by ``prune``; all
of these run beside ``bastion serve`` (WAL).

Exit codes: 0 ok, 1 error (message on stderr), 3 ``verify`` found a break, 4 ``verify``
found no break but operations the recording worker kept aside that nobody acknowledged
(``bastion quarantine``; a break wins: 3).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich import box
from rich.table import Table
from rich.text import Text

from bastion.cli.common import (DEFAULT_DATA_DIR, DataDirOpt, JsonOpt, add_columns, err_console,
                                handle_errors, out_console, review_table)
from bastion.cli.remote import (ServerCaOpt, ServerOpt, as_index_record, verify_report)
from bastion.cli.remote import client as remote
from bastion.errors import RecordingError
from bastion.proto.sanitize import sanitize
from bastion.recording import query
from bastion.recording import verify as verifier

VERIFY_FAILED = 3
VERIFY_KEPT_ASIDE = 4

sessions_app = typer.Typer(help="Review recorded sessions: list, show, replay, export.",
                           no_args_is_help=True)
commands_app = typer.Typer(help="Search every command line agents sent, with its decision.",
                           no_args_is_help=True)

DataDir = DataDirOpt


def _emit_json(obj) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=True, indent=2, default=str) + "\n")


def _when(ts: float | None) -> str:
    text = query.iso(ts)
    return text[:19].replace("T", " ") if text else "-"


def _who(record: dict[str, Any]) -> str:
    p = record.get("principal") or {}
    name, subject = p.get("name"), p.get("subject")
    if name and subject:
        return sanitize(f"{name} ({subject})")
    return sanitize(subject or name or "-")


def _t(value) -> Text:
    """A table cell from agent-controlled text: sanitised, never markup."""
    return Text(sanitize("" if value is None else str(value)))


def _since(value: str | None, now: float) -> float | None:
    return query.parse_time(value, now=now) if value else None


def _now() -> float:
    import time
    return time.time()


@sessions_app.command("list")
@handle_errors
def list_cmd(
    data_dir: DataDir = Path(DEFAULT_DATA_DIR),
    principal: Annotated[Optional[str], typer.Option(help="Subject, app id or name (glob).")] = None,
    target: Annotated[Optional[str], typer.Option(help="Target name (glob, e.g. 'web*').")] = None,
    since: Annotated[Optional[str], typer.Option(help="Started at/after: 7d, 12h, 2024-05-01...")] = None,
    until: Annotated[Optional[str], typer.Option(help="Started at/before (same forms).")] = None,
    status: Annotated[Optional[str], typer.Option(help="active, closed, interrupted or refused.")] = None,
    denied: Annotated[bool, typer.Option("--denied", help="Only refused sessions or ones with a command that did not run: denied, or held and not approved.")] = False,
    limit: Annotated[int, typer.Option(help="At most this many (newest first).")] = 100,
    wide: Annotated[bool, typer.Option("--wide", help="Also the client address, the principal's subject and the bytes in/out (and the node, on a PostgreSQL store).")] = False,
    node: Annotated[Optional[str], typer.Option(help="A PostgreSQL store: the node that recorded them (glob; a name alone also matches its workers NODE-wN).")] = None,
    server: ServerOpt = None,
    server_ca: ServerCaOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List sessions, newest first, refused attempts included.

    One line per session: who (the principal's name, or its subject shortened), where,
    how many commands and how many refused (denied, or held and not approved).

    Example: bastion sessions list --since 24h --target 'web*' --denied
             bastion sessions list --node bastion-a --status interrupted
    """
    now = _now()
    if server:
        rows = as_index_record(remote(server, server_ca).sessions(
            principal=principal, target=target, since=since, until=until, status=status,
            denied="1" if denied else None, limit=limit, node=node))
    else:
        rows = query.list_sessions(query.open_index(data_dir), principal=principal,
                                   target=target, since=_since(since, now),
                                   until=_since(until, now), status=status, denied=denied,
                                   limit=limit, node=node)
    if as_json:
        _emit_json([query.public(r) for r in rows])
        return
    out_console.print(_sessions_table(rows, wide=wide))


def _short_who(record: dict[str, Any], limit: int) -> str:
    """The principal's name, else its subject, cut to ``limit`` characters (--wide shows
    both whole)."""
    p = record.get("principal") or {}
    who = sanitize(p.get("name") or p.get("subject") or "-")
    return who if len(who) <= limit else who[:limit - 1] + "…"


def _sessions_table(rows: list[dict[str, Any]], *, wide: bool) -> Table:
    table = Table(title=f"{len(rows)} session(s)", title_justify="left", box=box.SIMPLE_HEAD,
                  pad_edge=False, collapse_padding=True)
    columns = ["id", "started", "status", "principal", "target", "cmds", "refused", "exit"]
    nodes = wide and any(r.get("node") for r in rows)      # a PostgreSQL store's
    if wide:
        columns[4:4] = ["client"]
        columns.append("in/out bytes")
        if nodes:
            columns.append("node")
    # ids are copied into the next command: whole, however narrow (a PostgreSQL store's
    # have ten digits); the counts and the status keep their width; the target folds first
    # when a row does not fit (80 columns in a pipe)
    id_width = max([len("id"), *(len(str(r["id"])) for r in rows)])
    for col in columns:
        table.add_column(col, overflow="fold", min_width=id_width if col == "id" else None,
                         no_wrap=col in ("id", "started", "status", "cmds", "refused", "exit")
                         or (col == "principal" and not wide))
    limit = 12 if out_console.width < 120 else 40     # one line per session at 80 columns
    for r in rows:
        status_text = Text(r["status"], style={"refused": "red", "interrupted": "yellow",
                                                "active": "green"}.get(r["status"], ""))
        if r.get("truncated"):
            status_text.append(" (truncated)", style="yellow")
        cells: list[Any] = [str(r["id"]), _when(r["started"])[:None if wide else 16], status_text,
                       Text(_who(r) if wide else _short_who(r, limit)),
                       _t(f"{r.get('login') or '?'}@{r.get('target') or '?'}"),
                       str(r["n_commands"]),
                       Text(str(r["n_denied"]), style="red" if r["n_denied"] else ""),
                       "-" if r.get("exit_status") is None else str(r["exit_status"])]
        if wide:
            cells[4:4] = [_t(r.get("client"))]
            cells.append(f"{r['bytes_in']}/{r['bytes_out']}")
            if nodes:
                cells.append(_t(r.get("node") or "-"))
        table.add_row(*cells)
    return table


@sessions_app.command("show")
@handle_errors
def show_cmd(
    session_id: Annotated[int, typer.Argument(metavar="SESSION_ID", help="Session id (from `sessions list`).")],
    data_dir: DataDir = Path(DEFAULT_DATA_DIR),
    server: ServerOpt = None,
    server_ca: ServerCaOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show a session: who, where, when, its channels, the command timeline with decisions,
    and the files its sftp channels read and wrote (with SHA-256 and decisions).

    Example: bastion sessions show 42
    """
    record = (as_index_record(remote(server, server_ca).session(session_id)) if server
              else query.get_session(query.open_index(data_dir), session_id))
    if as_json:
        _emit_json(query.public(record))
        return
    meta = Table.grid(padding=(0, 2))
    meta.add_column(style="bold")
    meta.add_column()
    p = record.get("principal") or {}
    for key, value in (("session", record["id"]), ("status", record["status"]),
                       ("reason", record.get("reason")), ("principal", _who(record)),
                       ("app id", p.get("app_id")), ("roles", ", ".join(p.get("roles") or [])),
                       ("client", record.get("client")),
                       ("target", f"{record.get('login')}@{record.get('target')}"),
                       ("started", _when(record["started"])), ("ended", _when(record.get("ended"))),
                       ("exit status", record.get("exit_status")),
                       ("bytes in/out", f"{record['bytes_in']}/{record['bytes_out']}"),
                       ("truncated", "yes" if record.get("truncated") else None),
                       ("chain", f"seq {record['seq']}" if record.get("seq") else "not sealed yet")):
        if value not in (None, ""):
            meta.add_row(key, _t(value))
    out_console.print(meta)
    if record["channels"]:
        ch_table = review_table("channels")
        add_columns(ch_table, ("id", "kind", "command", "status", "exit", "in/out", "recording"))
        for ch in record["channels"]:
            exit_text = ch.get("exit_signal") or ("-" if ch.get("exit_status") is None else str(ch["exit_status"]))
            ch_table.add_row(str(ch["id"]), _t(ch["kind"]), _t(ch.get("command") or ""),
                             _t(ch["status"] + (" (truncated)" if ch.get("truncated") else "")),
                             _t(exit_text), f"{ch['bytes_in']}/{ch['bytes_out']}", _t(ch.get("path")))
        out_console.print(ch_table)
    if record["commands"]:
        cmd_table = review_table("commands")
        add_columns(cmd_table, ("id", "time", "channel", "offset", "action", "rule", "line",
                                "reason", "approver", "exit"))
        for c in record["commands"]:
            cmd_table.add_row(str(c["id"]), _when(c["time"]), str(c.get("channel_id") or "-"),
                              f"{c['offset']:.3f}" if c.get("offset") is not None else "-",
                              Text(sanitize(c["action"]), style={"deny": "red", "review": "yellow"}.get(c["action"], "green")),
                              _t(c.get("rule")), _t(c["line"]), _t(c.get("reason")), _t(c.get("approver")),
                              "-" if c.get("exit_status") is None else str(c["exit_status"]))
        out_console.print(cmd_table)
        first = record["commands"][0]["id"]
        out_console.print(Text(f"replay from a command: bastion sessions play {record['id']} --from cmd:{first}",
                               style="dim"))
    if record.get("transfers"):
        out_console.print(_transfers_table(record["transfers"]))


def _transfers_table(rows: list[dict[str, Any]]) -> Table:
    """File operations of sftp channels: what, where, how much, the hash and the decision."""
    table = review_table("transfers")
    add_columns(table, ("id", "time", "channel", "op", "path", "bytes", "sha256", "result",
                        "rule", "reason"))
    for t in rows:
        path = t.get("path") or ""
        if t.get("path2"):
            path += f" -> {t['path2']}"
        table.add_row(str(t["id"]), _when(t["time"]), str(t.get("channel_id") or "-"),
                      _t(t["op"]), _t(path), str(t.get("bytes") or 0), _t(t.get("sha256") or "-"),
                      Text(sanitize(t["result"]), style="red" if t["action"] != "allow" else "green"),
                      _t(t.get("rule")), _t(t.get("reason")))
    return table


@commands_app.command("search")
@handle_errors
def search_cmd(
    text: Annotated[str, typer.Argument(metavar="QUERY", help="Words to find in command lines (all must match).")],
    data_dir: DataDir = Path(DEFAULT_DATA_DIR),
    principal: Annotated[Optional[str], typer.Option(help="Subject, app id or name (glob).")] = None,
    target: Annotated[Optional[str], typer.Option(help="Target name (glob).")] = None,
    action: Annotated[Optional[str], typer.Option(help="allow, deny or review.")] = None,
    since: Annotated[Optional[str], typer.Option(help="At/after: 7d, 12h, 2024-05-01...")] = None,
    until: Annotated[Optional[str], typer.Option(help="At/before (same forms).")] = None,
    limit: Annotated[int, typer.Option(help="At most this many (newest first).")] = 50,
    raw: Annotated[bool, typer.Option("--raw", help="QUERY is FTS5 syntax: OR, NOT, \"a phrase\", NEAR(a b, N), ^first, line: (the same on PostgreSQL).")] = False,
    as_json: JsonOpt = False,
    server: ServerOpt = None,
    server_ca: ServerCaOpt = None,
) -> None:
    """Full-text search over every command line, newest first.

    Example: bastion commands search 'systemctl restart' --target 'web*' --since 7d
    """
    if server:
        rows = as_index_record(remote(server, server_ca).commands(
            text, principal=principal, target=target, action=action, since=since, until=until,
            limit=limit, raw="1" if raw else None))
    else:
        now = _now()
        rows = query.search_commands(query.open_index(data_dir), text, principal=principal,
                                     target=target, action=action, since=_since(since, now),
                                     until=_since(until, now), limit=limit, raw=raw)
    if as_json:
        _emit_json([query.public(r) for r in rows])
        return
    out_console.print(_commands_table(rows))


def _commands_table(rows: list[dict[str, Any]]) -> Table:
    """``commands search``: one row per command line, with its decision and exit status."""
    table = review_table(f"{len(rows)} command(s)")
    add_columns(table, ("id", "time", "session", "principal", "target", "action", "line", "rule",
                        "exit"))
    for r in rows:
        who = r.get("principal_name") or r.get("principal_subject") or "-"
        table.add_row(str(r["id"]), _when(r["time"]), str(r["session_id"]), _t(who),
                      _t(f"{r.get('login')}@{r.get('target')}"),
                      Text(sanitize(r["action"]), style={"deny": "red", "review": "yellow"}.get(r["action"], "green")),
                      _t(r["line"]), _t(r.get("rule")),
                      "-" if r.get("exit_status") is None else str(r["exit_status"]))
    return table


@handle_errors
def verify_cmd(
    data_dir: DataDir = Path(DEFAULT_DATA_DIR),
    no_files: Annotated[bool, typer.Option("--no-files", help="Check the index chain only, not the recordings.")] = False,
    as_json: JsonOpt = False,
    server: ServerOpt = None,
    server_ca: ServerCaOpt = None,
) -> None:
    """Check the tamper-evidence chain of the index and every closed recording's SHA-256.

    Exits 3 and names the first break if anything was changed or deleted.
    Keep the printed head somewhere else to detect a rewrite later.

    Exits 4 (when nothing is broken) while operations the recording worker
    could not store are kept aside in DATA_DIR/quarantine and not acknowledged:
    rows the index lacks. Read them, then `bastion quarantine ack`.

    Example: bastion verify --data-dir /var/lib/bastion
    """
    report = (verify_report(remote(server, server_ca).verify(files=not no_files)) if server
              else verifier.verify_index(data_dir, check_files=not no_files))
    if as_json:
        _emit_json(report.to_dict())
    elif report.ok:
        copies = f", and {report.copies} stored copies of transfers" if report.copies else ""
        out_console.print(Text(f"ok: {report.rows} rows and {report.files} recordings verified{copies}"
                               + (f" (from prune checkpoint seq {report.start_seq})" if report.start_seq else ""),
                               style="green"))
        if report.active_sessions:
            out_console.print(Text(f"{report.active_sessions} active session(s) are not sealed yet", style="dim"))
    else:
        err_console.print(Text(f"verification FAILED: {len(report.problems)} problem(s)", style="bold red"))
        err_console.print(Text("first break: " + report.first.message, style="red"))
        for problem in report.problems[1:20]:
            err_console.print(Text("  " + problem.message))
        if len(report.problems) > 20:
            err_console.print(Text(f"  ... and {len(report.problems) - 20} more (see --json)"))
    if report.kept_aside and not as_json:
        _print_kept_aside(report.kept_aside)
    if not as_json:
        out_console.print(Text(f"chain head: seq {report.head_seq} {report.head_hash}", style="dim"))
    if not report.ok:
        raise typer.Exit(VERIFY_FAILED)
    if report.kept_aside:
        raise typer.Exit(VERIFY_KEPT_ASIDE)


def _print_kept_aside(kept: list[dict[str, Any]]) -> None:
    err_console.print(Text(f"{len(kept)} recording operation(s) kept aside and not acknowledged "
                           f"(oldest {_when(kept[0]['at'])}, newest {_when(kept[-1]['at'])}): "
                           "rows the index does not have", style="bold yellow"))
    for k in kept[:20]:
        whose = (f"session {k.get('session')} channel {k.get('channel')} {k.get('operation')}"
                 if k.get("operation") else "not a file the worker wrote")
        err_console.print(Text(sanitize(f"  {k['path']}  {whose}: {k.get('why') or '-'}")))
    if len(kept) > 20:
        err_console.print(Text(f"  ... and {len(kept) - 20} more (see --json)"))
    err_console.print(Text("read each file, then: bastion quarantine ack --all", style="dim"))


@handle_errors
def prune_cmd(
    older_than: Annotated[str, typer.Option("--older-than", help="Delete sessions that ended longer ago than "
                                            "this: 90d, 12w, 24h.")],
    data_dir: DataDir = Path(DEFAULT_DATA_DIR),
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only report what would be deleted.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Delete old sessions, their commands and recordings, keeping the chain verifiable.

    Example: bastion prune --older-than 90d --yes
    """
    seconds = query.parse_duration(older_than)
    if not dry_run and not yes:
        if not sys.stdin.isatty():
            raise RecordingError("prune deletes recordings; pass --yes to confirm (or --dry-run)")
        if not typer.confirm(f"Delete sessions that ended more than {older_than} ago, with their recordings?"):
            raise typer.Exit(1)
    report = verifier.prune(data_dir, older_than=seconds, dry_run=dry_run)
    if as_json:
        _emit_json(dict(report.to_dict(), cutoff=query.iso(report.cutoff)))
        return
    verb = "would delete" if dry_run else "deleted"
    out_console.print(Text(f"{verb} {report.sessions} session(s), {report.rows} row(s)"
                           + ("" if dry_run else f", {report.files_deleted} recording(s)")
                           + f" ended before {_when(report.cutoff)}"))
    if report.blocked_by is not None:
        out_console.print(Text(f"stopped at session {report.blocked_by}: it is newer or still active, and "
                               "the chain can only be cut before it", style="dim"))


def register(app: typer.Typer) -> None:
    from bastion.cli import sessions_live, sessions_replay
    sessions_replay.register(sessions_app)
    sessions_live.register(sessions_app)
    app.add_typer(sessions_app, name="sessions")
    app.add_typer(commands_app, name="commands")
    app.command("verify")(verify_cmd)
    app.command("prune")(prune_cmd)
