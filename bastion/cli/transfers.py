"""CLI: ``bastion transfers search`` / ``show`` — file operations of sftp channels and rsync,
by path or hash; ``show --content`` the stored copy (``[settings] store_transfers``)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table
from rich.text import Text

from bastion.cli.common import (DEFAULT_DATA_DIR, DataDirOpt, JsonOpt, add_columns, handle_errors,
                                out_console, review_table)

transfers_app = typer.Typer(help="Find file transfers (sftp, scp, rsync): by path, hash, who, "
                                 "when; show one and its stored copy.",
                            no_args_is_help=True)


@transfers_app.command("search")
@handle_errors
def search_cmd(
    path: Annotated[Optional[str], typer.Argument(
        metavar="PATH", help="Path glob on the target (e.g. '/etc/*' or '*.tar.gz').")] = None,
    data_dir: DataDirOpt = Path(DEFAULT_DATA_DIR),
    sha256: Annotated[Optional[str], typer.Option(
        help="A whole file's SHA-256, or its first 8+ hex digits.")] = None,
    op: Annotated[Optional[str], typer.Option(
        help="get, put, remove, rename, mkdir, setstat, list, rsync-get, rsync-put...")] = None,
    principal: Annotated[Optional[str], typer.Option(help="Subject, app id or name (glob).")] = None,
    target: Annotated[Optional[str], typer.Option(help="Target name (glob).")] = None,
    refused: Annotated[bool, typer.Option("--refused", help="Only what the policy refused.")] = False,
    since: Annotated[Optional[str], typer.Option(help="At/after: 7d, 12h, 2024-05-01...")] = None,
    until: Annotated[Optional[str], typer.Option(help="At/before (same forms).")] = None,
    limit: Annotated[int, typer.Option(help="At most this many (newest first).")] = 50,
    as_json: JsonOpt = False,
) -> None:
    """Search the file operations agents made over sftp and rsync, newest first.

    Each row: when, session, who, target, operation, path, bytes, SHA-256 of a whole file,
    the decision and its rule, the result.

    Example: bastion transfers search '/etc/*' --refused --since 7d
    """
    from bastion.proto.sanitize import sanitize
    from bastion.recording import query
    now = time.time()
    rows = query.search_transfers(
        query.open_index(data_dir), path=path, sha256=sha256, op=op, principal=principal,
        target=target, refused=refused,
        since=query.parse_time(since, now=now) if since else None,
        until=query.parse_time(until, now=now) if until else None, limit=limit)
    if as_json:
        sys.stdout.write(json.dumps([query.public(r) for r in rows], ensure_ascii=True,
                                    indent=2, default=str) + "\n")
        return
    table = review_table(f"{len(rows)} transfer(s)")
    add_columns(table, ("time", "session", "who", "target", "op", "path", "bytes", "sha256",
                        "decision", "result"))
    for r in rows:
        who = r.get("principal_name") or r.get("principal_subject") or "-"
        path_text = r.get("path") or "-"
        if r.get("path2"):
            path_text += " -> " + r["path2"]
        decision = f"{r['action']} ({r.get('rule') or '-'})"
        table.add_row((query.iso(r["time"]) or "-")[:19].replace("T", " "), str(r["session_id"]),
                      Text(sanitize(who)), Text(sanitize(f"{r.get('login')}@{r.get('target')}")),
                      Text(sanitize(r["op"])), Text(sanitize(path_text)), str(r["bytes"]),
                      (r.get("sha256") or "-")[:16],
                      Text(sanitize(decision), style="red" if r["action"] != "allow" else ""),
                      Text(sanitize(r["result"])))
    out_console.print(table)


@transfers_app.command("show")
@handle_errors
def show_cmd(
    transfer_id: Annotated[int, typer.Argument(metavar="ID", help="The transfer's id.")],
    data_dir: DataDirOpt = Path(DEFAULT_DATA_DIR),
    content: Annotated[bool, typer.Option(
        "--content", help="Write the stored copy (store_transfers) to stdout.")] = False,
    output: Annotated[Optional[Path], typer.Option(
        "--output", "-o", help="Write the stored copy to this file instead.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """One file operation: its decision, hash and, when stored, its masked content.

    The stored copy is checked against the SHA-256 recorded with it before it is shown; on
    a terminal its control characters are made visible.

    Example: bastion transfers show 42 --content > copy.txt
    """
    from bastion.proto.sanitize import sanitize
    from bastion.recording import query
    row = query.get_transfer(query.open_index(data_dir), transfer_id)
    if content or output is not None:
        data, _ = query.transfer_content(data_dir, row)
        if output is not None:
            output.write_bytes(data)
        elif sys.stdout.isatty():
            out_console.print(Text(sanitize(data.decode("utf-8", "replace"))))
        else:
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
        return
    if as_json:
        sys.stdout.write(json.dumps(query.public(row), ensure_ascii=True, indent=2,
                                    default=str) + "\n")
        return
    table = Table(title=f"transfer {transfer_id}", title_justify="left", show_header=False)
    table.add_column("field")
    table.add_column("value", overflow="fold")
    for key, value in query.public(row).items():
        if key in ("seq", "hash") or value is None:
            continue
        table.add_row(key, Text(sanitize(str(value))))
    out_console.print(table)


def register(app: typer.Typer) -> None:
    app.add_typer(transfers_app, name="transfers")
