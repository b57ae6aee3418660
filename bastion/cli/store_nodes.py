"""CLI: ``bastion store nodes`` (bastion.recording.nodes): the store's nodes and their state."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from bastion.cli.common import JsonOpt, PolicyOpt, err_console, handle_errors, out_console
from bastion.config.digest import short
from bastion.proto.sanitize import sanitize
from bastion.recording import leases, nodeconfig, nodes, query

STYLE = {"alive": "green", "late": "yellow", "gone": "red"}


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h" if seconds < 172800 else f"{seconds / 86400:.0f} days"


def nodes_cmd(policy: PolicyOpt = Path("policy.toml"), as_json: JsonOpt = False) -> None:
    """List the nodes of the PostgreSQL store: alive, late or gone, with their sessions.

    Each `bastion serve` worker beats into the store every lease/6 seconds (a name per
    worker: NODE-wN; the lease is BASTION_STORE_LEASE, 60 s by default).  alive: a
    heartbeat within a third of the lease.  late: silent for less than the lease (a
    peer leaves its sessions alone).  gone: silent for the lease or more: a peer marks
    its open sessions interrupted and seals their recordings (docs/SCALING.md, 'A node
    that dies: leases').  Also shown: sessions open and recorded, the latest start, the
    recordings a peer sealed that the node has not taken back yet (it does at its
    restart), and which tail key the node seals held-back output with, numbered: two
    numbers mean two vault passphrases, and a node does not start beside a live one
    with another.

    Nodes must enforce the same policy and present the same host CA and host key:
    each line shows the digest of its policy in force (`bastion policy check` prints
    a file's; a reload refused since is flagged: it keeps the previous one) and its
    host CA and host key, numbered.  Nodes not gone that differ are listed in red,
    with what to do (JSON: "differ").

    Example: bastion store nodes --policy /etc/bastion/policy.toml --json
    """
    os.environ["BASTION_POLICY"] = str(policy)       # its [store] (bastion.store.location)
    rows = nodes.read(leases.LEASE)
    differ = nodes.apart(rows)
    if as_json:
        sys.stdout.write(json.dumps({"lease_seconds": leases.LEASE, "nodes": rows,
                                     "differ": differ}, ensure_ascii=True, indent=2) + "\n")
        return
    if not rows:
        out_console.print(Text("no node has served on this store yet"))
        return
    numbers = {column: {v: i + 1 for i, v in enumerate(nodeconfig.groups(rows, column))}
               for column in ("host_ca", "host_key")}
    for r in rows:
        line = Text(f"{sanitize(r['node'])}: ")      # a store row: shown inert
        line.append(r["state"], style=STYLE[r["state"]])
        line.append(f", heartbeat {_ago(r['silent_seconds'])} ago; {r['open_sessions']} "
                    f"session(s) open, {r['sessions']} recorded")
        if r["last_session"] is not None:
            line.append(f", the latest started {query.iso(r['last_session'])}")
        if r["taken_back_pending"]:
            line.append(f"; {r['taken_back_pending']} recording(s) a peer sealed, not yet "
                        "taken back", style="yellow")
        if r["policy"]:
            line.append(f"; policy {short(r['policy'])}")
            if r["policy_error"]:
                ago = _ago(max(0.0, time.time() - (r["policy_error_at"] or time.time())))
                line.append(f" (a reload refused {ago} ago: it keeps that one)", style="yellow")
            line.append(f"; host CA {numbers['host_ca'].get(r['host_ca'], '?')}, host key "
                        f"{numbers['host_key'].get(r['host_key'], '?')}")
        if r["schema"] is not None:
            line.append(f"; bastion {sanitize(str(r['release']))}, schema {r['schema']}")
        if r["tail_key"] is not None:
            line.append(f"; tail key {r['tail_key']}")
        out_console.print(line, soft_wrap=True)
    keys = {r["tail_key"] for r in rows if r["tail_key"] is not None}
    if len(keys) > 1:
        err_console.print(Text(f"{len(keys)} tail keys among these nodes: they were started "
                               "with different vault passphrases; a node's held-back output "
                               "does not open on a node with another key", style="yellow"),
                          soft_wrap=True)
    for column, said in nodeconfig.COMPARED:
        if column in differ:
            _say_apart(said, differ[column], numbers.get(column))
    for hint in nodeconfig.hints(differ):
        err_console.print(Text(hint, style="red"), soft_wrap=True)
    schemas = sorted({r["schema"] for r in rows if r["state"] != "gone" and r["schema"]})
    if len(schemas) > 1:
        err_console.print(Text(f"the nodes not gone run {len(schemas)} schema versions "
                               f"({', '.join(map(str, schemas))}): an upgrade one node at a "
                               "time is under way (docs/SCALING.md, 'Upgrading the nodes one at "
                               "a time')", style="yellow"), soft_wrap=True)
    gone = [r["node"] for r in rows if r["state"] == "gone" and not r["open_sessions"]]
    if gone:
        err_console.print(Text(f"{len(gone)} node(s) gone; those taken out of service: "
                               f"bastion store forget {' '.join(sanitize(n) for n in gone)}",
                               style="dim"), soft_wrap=True)
    err_console.print(Text(f"lease {leases.LEASE:g} s (BASTION_STORE_LEASE)", style="dim"))


def _say_apart(said: str, found: dict[str, list[str]], numbers: dict[str, int] | None) -> None:
    """Nodes not gone that differ in one compared column: which has what."""
    each = "; ".join(
        f"{numbers[value] if numbers else short(value)}{' = ' + value if numbers else ''} on "
        f"{', '.join(sanitize(n) for n in names)}" for value, names in found.items())
    plural = "policies" if said == "policy" else f"{said}s"
    err_console.print(Text(f"{len(found)} different {plural} among the nodes not gone: {each}",
                           style="red"), soft_wrap=True)


def forget_cmd(names: Annotated[list[str], typer.Argument(
                   metavar="NODE...", help="Node names as `bastion store nodes` shows them "
                                           "(NODE-wN for a worker).")],
               policy: PolicyOpt = Path("policy.toml"), as_json: JsonOpt = False) -> None:
    """Remove nodes that are gone for good from the store's list of nodes.

    For a bastion host taken out of service, or worker names a host no longer runs
    (after lowering --workers): they stay `gone` in `bastion store nodes`, and a node
    that started with another vault passphrase is warned about at every start.
    Refused for a node that is not gone (a heartbeat within the lease: stop it and
    wait that long) or whose sessions a live peer has not closed yet.  Its sessions
    stay in the index under its name; a node of that name that starts again is
    simply listed again (and takes back what a peer sealed for it).

    Example: bastion store forget bastion-c-w1 bastion-c-w2 --policy /etc/bastion/policy.toml
    """
    os.environ["BASTION_POLICY"] = str(policy)       # its [store] (bastion.store.location)
    done = nodes.forget_nodes(names, leases.LEASE)
    if as_json:
        sys.stdout.write(json.dumps({"forgotten": done}, ensure_ascii=True, indent=2) + "\n")
        return
    for r in done:
        out_console.print(Text(f"forgot node {sanitize(r['node'])} (its last heartbeat "
                               f"{_ago(r['silent_seconds'])} ago; its {r['sessions']} "
                               "session(s) stay in the index under its name)"), soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("nodes")(handle_errors(nodes_cmd))
    app.command("forget")(handle_errors(forget_cmd))
