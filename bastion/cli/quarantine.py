"""CLI: ``bastion quarantine list`` / ``ack``: the recording operations kept aside.

The recording worker keeps aside an operation the index refuses for its own values
(bastion.recording.quarantine): one file each in ``DATA_DIR/quarantine/``.  ``bastion
verify`` exits 4 while any is there; ``ack`` moves the ones an operator has read to
``quarantine/reviewed/`` (kept, never deleted), after which verify no longer counts them.
Each command is one library call plus rendering; what a file says is agent text, shown
sanitised.

Not covered: keeping aside (the worker), storing the operation after all (nobody does).
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

from bastion.cli.common import DEFAULT_DATA_DIR, DataDirOpt, JsonOpt, handle_errors, out_console
from bastion.errors import RecordingError
from bastion.proto.sanitize import sanitize
from bastion.recording import quarantine, query

quarantine_app = typer.Typer(
    help="Recording operations the index refused, kept aside in DATA_DIR/quarantine: list "
         "them, acknowledge the ones you have read (bastion verify exits 4 until you do).",
    no_args_is_help=True)


def _when(ts: float) -> str:
    return (query.iso(ts) or "-")[:19].replace("T", " ")


@handle_errors
def list_cmd(
    data_dir: DataDirOpt = Path(DEFAULT_DATA_DIR),
    reviewed: Annotated[bool, typer.Option("--reviewed", help="List the acknowledged ones "
                                           "(quarantine/reviewed) instead.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """List the operations kept aside: when, whose (session, channel), which
    operation, why the index refused it, and the file that holds it. These are
    rows the index does not have; `bastion verify` exits 4 until each one is
    read and acknowledged (`bastion quarantine ack`).

    Example: bastion quarantine list --data-dir /var/lib/bastion
    """
    kept = _listing(data_dir, reviewed)
    if as_json:
        sys.stdout.write(json.dumps([k.to_dict() for k in kept], ensure_ascii=True, indent=2)
                         + "\n")
        return
    if not kept:
        out_console.print(Text("none acknowledged yet" if reviewed else
                               "nothing kept aside (or everything acknowledged)"))
        return
    table = Table(box=box.SIMPLE)
    for col in ("written (UTC)", "session", "channel", "operation", "why", "file"):
        table.add_column(col)
    for k in kept:
        table.add_row(_when(k.at), *(Text(sanitize(v or "-")) for v in
                                     (k.session, k.channel, k.operation, k.why, k.path.name)))
    out_console.print(table)
    if not reviewed:
        out_console.print(Text(f"in {data_dir / quarantine.DIR}; after reading them: "
                               "bastion quarantine ack NAME... (or --all)", style="dim"))


@handle_errors
def ack_cmd(
    names: Annotated[Optional[list[str]], typer.Argument(
        help="File names as `quarantine list` shows them.", show_default=False,
        metavar="NAME...")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every file kept aside now.")] = False,
    data_dir: DataDirOpt = Path(DEFAULT_DATA_DIR),
    as_json: JsonOpt = False,
) -> None:
    """Acknowledge operations kept aside: move their files to quarantine/reviewed
    (kept there, never deleted), so that `bastion verify` stops counting them.
    Read each file first: it is the only record of that row.

    Example: bastion quarantine ack 20261207T055406Z-8405-0.txt
    """
    if bool(names) == all_:
        raise RecordingError("name the files to acknowledge, or pass --all (not both)",
                             hint="bastion quarantine list shows them")
    try:
        moved = quarantine.acknowledge(data_dir, list(names or []))
    except OSError as exc:
        raise RecordingError(f"cannot acknowledge: {exc}") from exc
    if as_json:
        sys.stdout.write(json.dumps([str(p) for p in moved], ensure_ascii=True) + "\n")
        return
    for path in moved:
        out_console.print(Text(sanitize(f"acknowledged: {path}")))
    if not moved:
        out_console.print(Text("nothing kept aside: nothing to acknowledge"))


def _listing(data_dir: Path, reviewed: bool) -> list[Any]:
    try:
        return quarantine.listing(data_dir, reviewed=reviewed)
    except OSError as exc:
        raise RecordingError(f"cannot read {data_dir / quarantine.DIR}: {exc}") from exc


def register(app: typer.Typer) -> None:
    quarantine_app.command("list")(list_cmd)
    quarantine_app.command("ack")(ack_cmd)
    app.add_typer(quarantine_app, name="quarantine")
