"""CLI: ``bastion demo`` — the whole data path on loopback, with a scripted agent."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from bastion.cli.common import handle_errors


@handle_errors
def demo_cmd(
    directory: Annotated[Path, typer.Option("--dir", help="Where the demo keeps its issuer, "
                                                          "vault, data and policy.")] = Path("demo"),
    listen: Annotated[str, typer.Option("--listen", help="Loopback HOST:PORT for the bastion.")]
    = "127.0.0.1:2222",
    once: Annotated[bool, typer.Option("--once", help="Stop after the scripted agent "
                                                      "(for CI).")] = False,
) -> None:
    """Run everything locally: dev issuer, bastion, a demo target sshd, and a scripted agent.

    Prints a token and the ssh lines to paste, runs an allowed, a denied and a held
    command through the real ssh client, then keeps serving until Ctrl-C.

    Example:

    \b
        scripts/setup.sh && .venv/bin/bastion demo
    """
    from bastion.demo.run import run_demo

    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    logging.basicConfig(level=logging.INFO, filename=str(directory / "bastion.log"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("asyncssh").setLevel(logging.WARNING)
    code = run_demo(directory, listen, once)
    raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo_cmd)
