"""CLI for the session store: ``bastion store import`` (bastion.recording.importer).

One library call plus rendering; errors become exit codes in :func:`handle_errors`.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.text import Text

from bastion.cli.common import JsonOpt, PolicyOpt, err_console, handle_errors, out_console
from bastion.proto.sanitize import sanitize
from bastion.recording import importer, query, renumber

store_app = typer.Typer(help="The PostgreSQL session store: bring a one-node data dir into "
                             "it, list its nodes, forget those gone for good.",
                        no_args_is_help=True)


@store_app.command("import")
@handle_errors
def import_cmd(
    source: Annotated[Path, typer.Option("--from", help="The data dir of the one-node bastion "
                                         "(index.sqlite and recordings/).")],
    policy: PolicyOpt = Path("policy.toml"),
    node: Annotated[Optional[str], typer.Option(
        "--node", help="The node the imported sessions belong to (default: import, no "
                       "node's). A node's verify checks its sessions' recordings in its "
                       "data dir (copy the old one there first), the others' in the "
                       "store. Refused when the store has the source's session or channel "
                       "ids (their recordings get new names).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Check, count and say which ids "
                                          "would be renumbered; write nothing, claim no "
                                          "id.")] = False,
    while_serving: Annotated[bool, typer.Option(
        "--while-serving", help="Import although nodes serve on the store: their recordings "
                                "wait for the import (and fail after 10 s).")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Copy a one-node bastion's audit history into the PostgreSQL store.

    Every session, refused login, channel, command, transfer and approval of the data
    dir's SQLite index is copied; every recording is uploaded into the store, so any node
    lists, searches, verifies and plays them. The rows are re-sealed into the store's hash
    chain in the source chain's order; the source chain's start and head are kept in the
    store's imports table and printed: note them with the head `bastion verify` printed on
    the source.

    Ids: a table keeps the source's ids when the store has none of them (a first import
    before the nodes served). When it has some (transfers and approvals the nodes made,
    which count from 1 as on SQLite; or a second one-node bastion's history, which counts
    from 1 too), that table's rows get new ids, in order: sessions, channels and commands
    from an id block the import claims, transfers and approvals from the store's counters.
    Every reference moves with them, and the import prints the map ("12 sessions
    renumbered: 1-12 are now 3000000001-3000000012"); `bastion store imports` shows it
    later, so an id a ticket cites can be followed. --dry-run says which would move.

    Refused, with nothing written: a data dir `bastion serve` still records into, one
    with sessions still active, an index or recording that does not verify, a stored copy
    of a transferred file missing or changed, a source
    imported before, a transfer uid the store has, a store nodes serve on (unless
    --while-serving), --node when sessions or channels are renumbered (their recordings
    get new names). The files stay where they are.

    The store is the one `bastion serve` uses: [store] of --policy, or BASTION_STORE_URL
    and BASTION_STORE_PASSWORD_FILE.

    Examples: bastion store import --from /var/lib/bastion --policy /etc/bastion/policy.toml
    --dry-run; then the same without --dry-run; then --from /srv/old/bastion-b for a second
    one-node bastion's history.
    """
    os.environ["BASTION_POLICY"] = str(policy)       # its [store] (bastion.store.location)
    report = importer.import_data_dir(source, node=node, dry_run=dry_run,
                                      while_serving=while_serving)
    if as_json:
        sys.stdout.write(json.dumps(report.to_dict(), ensure_ascii=True, indent=2) + "\n")
        return
    r = report

    def say(text: str, style: str = "") -> None:
        out_console.print(Text(text, style=style), soft_wrap=True)

    say(f"{'would import' if r.dry_run else 'imported'}: {r.sessions} session(s) "
        f"({r.refused} refused login(s)), {r.channels} channel(s), {r.commands} command(s), "
        f"{r.transfers} transfer(s), {r.approvals} approval(s), {r.recordings} recording(s) "
        f"({r.bytes} bytes), {r.copies} stored copies of transfers ({r.copy_bytes} bytes) "
        f"in {r.seconds:.1f} s", "" if r.dry_run else "green")
    say(f"from: {r.source}")
    start = (f"prune checkpoint seq {r.source_start_seq} {r.source_start_hash}"
             if r.source_start_seq else "seq 0 (the genesis)")
    say(f"source chain: starts at {start}; head seq {r.source_head_seq} {r.source_head_hash}")
    for line in renumber.describe(r.renumbered):
        say(line, "yellow")
    if not r.renumbered:
        say("ids: every id kept (the store has none of them)")
    if r.dry_run:
        say("nothing was written; run it again without --dry-run to import")
        return
    if r.store_first_seq is not None:
        shift = r.store_first_seq - r.source_start_seq - 1
        say(f"store chain: the imported rows are seq {r.store_first_seq}..{r.store_last_seq} "
            f"(store seq = source seq {'+' if shift >= 0 else '-'} {abs(shift)}); head seq "
            f"{r.store_last_seq} {r.store_head_hash}")
    say(f"the sessions belong to node {r.node}")
    err_console.print(Text("next: `bastion verify` on any node (keep its head beside the two "
                           "above), then start the nodes on the store", style="dim"),
                      soft_wrap=True)


@store_app.command("imports")
@handle_errors
def imports_cmd(policy: PolicyOpt = Path("policy.toml"), as_json: JsonOpt = False,
                old: Annotated[Optional[str], typer.Option(
                    "--old", metavar="TABLE:ID",
                    help="Where an id from before an import went: session:7, command:12, "
                         "approval:3 ... (each import's answer).")] = None) -> None:
    """List what `bastion store import` brought into the store, with both chains' ends.

    For each import: the source data dir, when, the source chain's start (its prune
    checkpoint, or the genesis) and head, and the store seqs its rows got: compare the
    source head with the one `bastion verify` printed on the old node. Then the ids it
    renumbered because the store had them ("12 sessions renumbered: 1-12 are now
    3000000001-3000000012"; a table not named kept its ids): a session, command or
    approval id from before the import, in a ticket or the old node's logs, is the new id
    in the store. --json gives every run (source ids old_first..old_last are now
    new_first..new_last).

    --old TABLE:ID answers for one id: "import 2 from /var/lib/bastion-b: session 7 is
    now session 1000000007", or that an import kept that table's ids.

    Example: bastion store imports --policy /etc/bastion/policy.toml --old session:7
    """
    os.environ["BASTION_POLICY"] = str(policy)
    wanted = renumber.parse_old(old) if old is not None else None
    rows = importer.list_imports()
    if wanted is not None:
        _say_where(rows, *wanted, as_json=as_json)
        return
    if as_json:
        sys.stdout.write(json.dumps(rows, ensure_ascii=True, indent=2) + "\n")
        return
    if not rows:
        out_console.print(Text("no imports in this store"))
    for r in rows:
        out_console.print(Text(
            f"import {r['id']} at {query.iso(r['imported'])} from {sanitize(r['source'])} (node "
            f"{sanitize(r['node'])}): {r['sessions']} session(s), {r['commands']} command(s), "
            f"{r['recordings']} recording(s) ({r['bytes']} bytes)\n"
            f"  source chain: starts at seq {r['source_start_seq']} {r['source_start_hash']}; "
            f"head seq {r['source_head_seq']} {r['source_head_hash']}\n"
            f"  store chain: seq {r['store_first_seq']}..{r['store_last_seq']}, then head "
            f"{r['store_head_hash']}"), soft_wrap=True)
        for line in renumber.describe(r["renumbered"]) or ["every id kept"]:
            out_console.print(Text(f"  ids: {line}"), soft_wrap=True)


def _say_where(rows: list[dict[str, Any]], table: str, old_id: int, *, as_json: bool) -> None:
    found = renumber.lookup(rows, table, old_id)
    if as_json:
        sys.stdout.write(json.dumps(found, ensure_ascii=True, indent=2) + "\n")
        return
    name = table[:-1]
    if not found:
        out_console.print(Text("no imports in this store: every id is the store's own"))
    for f in found:
        where = f"import {f['import']} from {sanitize(f['source'])}: "
        if f["how"] == "renumbered":
            text = f"{name} {old_id} is now {name} {f['new']}"
        elif f["how"] == "kept":
            text = f"kept its {table}' ids: {name} {old_id}, if it came from there"
        else:
            text = f"had no {name} {old_id} (its {table} were renumbered)"
        out_console.print(Text(where + text), soft_wrap=True)


def register(app: typer.Typer) -> None:
    from bastion.cli import store_nodes
    store_nodes.register(store_app)
    app.add_typer(store_app, name="store")
