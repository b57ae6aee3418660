"""Build the ``bastion`` typer app from the command modules.

A command line names one top-level command, so :func:`main` imports and registers only the
module that provides it (:data:`COMMANDS`): typer turns every registered command into click
objects before it parses, and the modules import what their commands need (the index's
query layer, asyncssh, rich tables), so building the whole app cost each invocation 0.1-0.2
s of CPU more than building one module's (docs/BENCHMARKS.md, "Start-up").  ``bastion``
alone, ``--help``, ``--version`` and a name no module provides get the whole app (the
complete command list, click's "did you mean").  ``from bastion.cli.main import app``
gives the whole app too.
"""

from __future__ import annotations

import importlib
import sys

import typer

# Every top-level command, and the module whose register(app) adds it
# (tests/integration/test_cli_help.py checks this against what the modules register).
COMMANDS = {
    "serve": "serve", "status": "status", "demo": "demo", "policy": "policy",
    "token": "identity", "askpass": "identity", "dev-issuer": "identity",
    "keys": "keys", "ca": "ca", "ssh-config": "ca",
    "sessions": "sessions", "commands": "sessions", "verify": "sessions", "prune": "sessions",
    "mask": "mask", "approvals": "approvals", "login": "approvals", "logout": "approvals",
    "transfers": "transfers", "store": "store", "quarantine": "quarantine",
}
# Each module has register(app); registered in this order, so the order of --help is stable.
COMMAND_MODULES = tuple(dict.fromkeys(COMMANDS.values()))


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version
        try:
            typer.echo(f"bastion {version('bastion')}")
        except PackageNotFoundError:       # run from a checkout that was never installed
            typer.echo("bastion (version unknown: not installed)")
        raise typer.Exit()


def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """An SSH bastion for autonomous agents: OIDC login, policy on every command, recorded
    sessions.

    Start here: `bastion demo` runs everything locally.
    """


def build(modules: tuple[str, ...] = COMMAND_MODULES) -> typer.Typer:
    """The app with the commands of ``modules`` (all of them unless told)."""
    app = typer.Typer(
        name="bastion",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        # plain click help: policy.toml's [[tables]] and [sections] stay as written (rich
        # markup would eat them), flags carry no type tag, and text wraps to the terminal
        rich_markup_mode=None,
        context_settings={"max_content_width": 100},
    )
    app.callback()(_root)
    for name in modules:
        importlib.import_module(f"bastion.cli.{name}").register(app)
    return app


def __getattr__(name: str) -> typer.Typer:
    if name == "app":                  # the whole app, built on first use
        whole = globals()["app"] = build()
        return whole
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _quiet_what_errors_say() -> None:
    """A command prints its error with a hint (cli.common.handle_errors); a log record that
    says the same (errors.SAID_BY_ERROR) is left out of what Python prints when nothing
    configured logging.  ``serve`` configures its own handler: its log keeps them."""
    import logging

    from bastion.errors import SAID_BY_ERROR
    if logging.lastResort is not None:
        logging.lastResort.addFilter(lambda record: not getattr(record, SAID_BY_ERROR, False))


def main() -> None:
    # Everything bastion writes (index, recordings, keys, exports, tokens) is for its own
    # user; modules also set 0600/0700 explicitly, this covers what they do not.
    from bastion.private import set_private_umask
    set_private_umask()
    _quiet_what_errors_say()
    module = COMMANDS.get(sys.argv[1]) if len(sys.argv) > 1 else None
    build((module,) if module else COMMAND_MODULES)()


if __name__ == "__main__":  # pragma: no cover
    main()
