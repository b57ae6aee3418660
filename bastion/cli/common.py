"""Options and helpers shared by every CLI command.

Every command that touches the policy, data dir, keys dir or listen address
takes the same flags, falling back to ``BASTION_POLICY``, ``BASTION_DATA_DIR``,
``BASTION_KEYS_DIR`` and ``BASTION_LISTEN`` when a flag is absent.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated, Callable, Iterable

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from bastion.errors import BastionError, ConfigError

DEFAULT_POLICY = "policy.toml"
DEFAULT_DATA_DIR = "data"
DEFAULT_KEYS_DIR = "keys"
DEFAULT_LISTEN = "127.0.0.1:2222"

PolicyOpt = Annotated[Path, typer.Option("--policy", envvar="BASTION_POLICY",
                                         help="policy.toml to use.", show_default=True)]
DataDirOpt = Annotated[Path, typer.Option("--data-dir", envvar="BASTION_DATA_DIR",
                                          help="Where host keys, the host CA, recordings and the index live.")]
KeysDirOpt = Annotated[Path, typer.Option("--keys-dir", envvar="BASTION_KEYS_DIR",
                                          help="The vault: upstream private keys, encrypted at rest.")]
ListenOpt = Annotated[str, typer.Option("--listen", envvar="BASTION_LISTEN",
                                        help="HOST:PORT the bastion listens on.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of a table.")]

err_console = Console(stderr=True, highlight=False)
out_console = Console(highlight=False)

# Columns a reviewer copies into the next command (``sessions show ID``): never wrapped,
# whatever the width (a 10-digit id of a PostgreSQL store folded over two lines in a
# narrow terminal or a pipe's 80 columns); the other columns fold to make room.
ID_COLUMNS = frozenset({"id", "session", "channel"})


# ... and with them columns of a few characters whose header would otherwise wrap
_UNWRAPPED = ID_COLUMNS | {"action", "exit"}


def add_columns(table: Table, columns: Iterable[str]) -> None:
    """Add ``columns`` to a rich ``table``: ids whole (:data:`ID_COLUMNS`) and short ones
    unwrapped, the rest folded."""
    for col in columns:
        table.add_column(col, overflow="fold", no_wrap=col in _UNWRAPPED)


def review_table(title: str) -> Table:
    """A listing for reviewers (commands, channels, transfers): a rule under the header and
    no cell borders, as ``sessions list`` has, so that the text columns get the room."""
    return Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False,
                 collapse_padding=True)


from bastion.ssh.agentconfig import parse_listen  # noqa: E402,F401 - re-exported


def escape(text: str) -> str:
    from rich.markup import escape as _escape
    return _escape(text)


def handle_errors(fn: Callable) -> Callable:
    """Decorator: turn BastionError into a message on stderr and its exit code."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except BastionError as exc:
            if isinstance(exc, ConfigError) and len(exc.problems) > 1:
                head = f"{exc.path}: " if exc.path else ""
                err_console.print(f"[bold red]error:[/] {escape(head)}"
                                  f"{len(exc.problems)} problems")
                for p in exc.problems:
                    err_console.print(f"  {escape(str(p))}")
            else:
                err_console.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
            if exc.hint:
                err_console.print(f"[dim]hint:[/] {escape(exc.hint)}", soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            raise typer.Exit(130) from None

    return wrapper

