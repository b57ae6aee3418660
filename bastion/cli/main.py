"""Build the ``bastion`` typer app from the command modules."""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="bastion",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # plain click help: policy.toml's [[tables]] and [sections] stay as written (rich
    # markup would eat them), flags carry no type tag, and text wraps to the terminal
    rich_markup_mode=None,
    context_settings={"max_content_width": 100},
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version
        try:
            typer.echo(f"bastion {version('bastion')}")
        except PackageNotFoundError:       # run from a checkout that was never installed
            typer.echo("bastion (version unknown: not installed)")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """An SSH bastion for autonomous agents: OIDC login, policy on every command, recorded
    sessions.

    Start here: `bastion demo` runs everything locally.
    """

# Each module has register(app); listed here so the order of --help is stable.
COMMAND_MODULES = ("serve", "status", "demo", "policy", "identity", "keys", "ca", "sessions", "mask",
                   "approvals", "transfers", "store", "quarantine")

for _name in COMMAND_MODULES:
    _module = importlib.import_module(f"bastion.cli.{_name}")
    _module.register(app)


def main() -> None:
    # Everything bastion writes (index, recordings, keys, exports, tokens) is for its own
    # user; modules also set 0600/0700 explicitly, this covers what they do not.
    from bastion.private import set_private_umask
    set_private_umask()
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
