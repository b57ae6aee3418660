"""CLI: ``bastion ca known-hosts`` and ``bastion ssh-config`` — what agents need to trust and reach.

``ca known-hosts`` prints the ``@cert-authority`` line for the bastion's host CA
(:mod:`bastion.ssh.hostca`); ``ssh-config`` prints an ssh_config for agents.
Does not cover the vault (``bastion keys``) or tokens (``bastion token``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from bastion.cli.common import DEFAULT_DATA_DIR, DataDirOpt, err_console, handle_errors
from bastion.errors import ConfigError
from bastion.ssh.agentconfig import (  # noqa: F401 - re-exported
    DEFAULT_BASTION, DEFAULT_KNOWN_HOSTS, _PATTERN, _quote, _split_host_port, render_ssh_config)

ca_app = typer.Typer(
    name="ca", no_args_is_help=True,
    help="The bastion's host CA: it certifies the bastion's own host key and a host key for "
         "every target name, so agents trust one line in known_hosts."
         "\n\nExample: bastion ca known-hosts > ~/.ssh/bastion_known_hosts")


@handle_errors
def known_hosts_cmd(
    data_dir: DataDirOpt = Path(DEFAULT_DATA_DIR),
    bastion_host: Annotated[str, typer.Option(
        "--bastion-host", help="HOST or HOST:PORT agents use for the bastion (written [HOST]:PORT "
                               "when PORT is not 22).")] = DEFAULT_BASTION,
    target: Annotated[Optional[list[str]], typer.Option(
        "--target", help="known_hosts pattern of target names the CA is trusted for (repeat); "
                         "default '*', which also covers the bastion.")] = None,
    plain: Annotated[bool, typer.Option(
        "--plain", help="Also print a plain line for the bastion's host key.")] = False,
) -> None:
    """Print the known_hosts line(s) agents need: `@cert-authority PATTERN CA-KEY`.

    The CA certifies the bastion's host key and a host key for each target name, so with
    this line `StrictHostKeyChecking yes` holds for the bastion and every target. With the
    default pattern '*' the CA is trusted for every host name: keep the line in a known_hosts
    file of its own used only for bastion connections (as `bastion ssh-config` does). The CA
    is created in the data dir if it does not exist yet (encrypted with the vault passphrase,
    BASTION_VAULT_PASSPHRASE or BASTION_VAULT_PASSPHRASE_FILE; reading an existing one needs
    no passphrase).

    Example:

    \b
        bastion ca known-hosts --data-dir data > ~/.ssh/bastion_known_hosts
    """
    print(known_hosts_text(data_dir, bastion_host, target or ["*"], plain=plain), end="")


def known_hosts_text(data_dir: Path, bastion_host: str, targets: list[str], *,
                     plain: bool = False, environ: dict[str, str] | None = None) -> str:
    """What ``bastion ca known-hosts`` prints; the CA is made (encrypted with the vault
    passphrase from ``environ``, default the process's) if the data dir has none yet."""
    from bastion.ssh.hostca import HostKeys, PublicHostKeys, known_hosts_pattern
    from bastion.vault import passphrase_from_env

    host, port = _split_host_port(bastion_host, 22)
    for t in targets:
        if not _PATTERN.fullmatch(t):
            raise ConfigError(f"invalid --target pattern {t!r}")
    keys = PublicHostKeys.read(data_dir)          # the public halves: no passphrase needed
    if keys is None:                              # first use: make them (encrypted)
        keys = HostKeys.load_or_create(data_dir, passphrase=passphrase_from_env(environ))
    text = keys.known_hosts_lines(known_hosts_pattern(host, port), ",".join(targets),
                                  include_plain_host_key=plain)
    return (f"# bastion host CA ({keys.ca_key.get_fingerprint('sha256')}); "
            f"use this file only for bastion connections\n{text}")


@handle_errors
def ssh_config_cmd(
    bastion: Annotated[str, typer.Option(
        "--bastion", help="HOST:PORT agents connect to (not necessarily the listen address).")]
    = DEFAULT_BASTION,
    target: Annotated[Optional[list[str]], typer.Option(
        "--target", help="A target name to write a Host block for (repeat). Default: the "
                         "targets of --policy, or one `Host *` block.")] = None,
    policy: Annotated[Optional[Path], typer.Option(
        "--policy", envvar="BASTION_POLICY",
        help="policy.toml whose [[targets]] give the Host blocks and their User.")] = None,
    data_dir: DataDirOpt = Path(DEFAULT_DATA_DIR),
    known_hosts: Annotated[str, typer.Option(
        "--known-hosts-file", help="Where agents keep the output of `bastion ca known-hosts`.")]
    = DEFAULT_KNOWN_HOSTS,
    alias: Annotated[str, typer.Option("--alias", help="Host alias for the bastion.")] = "bastion",
    user: Annotated[str, typer.Option("--user", help="Outer login name (free: the token says who "
                                                     "the agent is).")] = "agent",
) -> None:
    """Print an ssh_config for agents: the bastion hop plus a ProxyJump block per target.

    `-o` options given on the ssh command line do not reach the `-J` hop, hence a config
    file: the bastion block sets keyboard-interactive (the OIDC token via bastion-askpass),
    no keys or passwords, the CA-only known_hosts file and StrictHostKeyChecking yes; the
    target blocks jump through it and log in with auth 'none'.

    Example:

    \b
        bastion ssh-config --bastion bastion.example.com:2222 \\
            --policy policy.toml > agent_ssh_config
    """
    targets: list[tuple[str, str | None]]
    if target:
        targets = [(t, None) for t in target]
        if policy is not None and policy.exists():
            from bastion.config import load_config
            known = load_config(policy).targets
            targets = [(t, known[t].user if t in known else None) for t in target]
    elif policy is not None:
        from bastion.config import load_config
        targets = [(t.name, t.user) for t in load_config(policy).targets.values()]
    else:
        targets = []
    fingerprint = None
    ca_pub = data_dir / "hostkeys" / "host_ca.pub"
    if ca_pub.is_file():
        try:
            import asyncssh
            fingerprint = asyncssh.read_public_key(ca_pub).get_fingerprint("sha256")
        except (OSError, ValueError):
            fingerprint = None
    text = render_ssh_config(bastion, targets, known_hosts=known_hosts, alias=alias, user=user,
                             ca_fingerprint=fingerprint)
    print(text, end="")
    if not targets:
        err_console.print("note: no targets given, wrote one `Host *` block (pass --policy or "
                          "--target NAME for one block per target)")


ca_app.command("known-hosts")(known_hosts_cmd)


def register(app: typer.Typer) -> None:
    app.add_typer(ca_app, name="ca")
    app.command("ssh-config")(ssh_config_cmd)
