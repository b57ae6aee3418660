"""Build the ``bastion`` typer app from the command modules."""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="bastion",
    help="An SSH bastion for autonomous agents: OIDC login, policy on every command, "
         "recorded sessions.\n\nStart here: `bastion demo` runs everything locally.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Each module has register(app); listed here so the order of --help is stable.
COMMAND_MODULES = ("serve", "status", "demo", "policy", "identity", "keys", "ca", "sessions", "mask",
                   "approvals")

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
