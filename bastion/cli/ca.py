"""CLI: ``bastion ca known-hosts`` and ``bastion ssh-config`` — what agents need to trust and reach.

``ca known-hosts`` prints the ``@cert-authority`` line for the bastion's host CA
(:mod:`bastion.ssh.hostca`); ``ssh-config`` prints an ssh_config for agents.
Does not cover the vault (``bastion keys``) or tokens (``bastion token``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Optional

import typer

from bastion.cli.common import DEFAULT_DATA_DIR, DataDirOpt, err_console, handle_errors
from bastion.errors import ConfigError

ca_app = typer.Typer(
    name="ca", no_args_is_help=True,
    help="The bastion's host CA: it certifies the bastion's own host key and a host key for "
         "every target name, so agents trust one line in known_hosts."
         "\n\nExample: bastion ca known-hosts > ~/.ssh/bastion_known_hosts")

DEFAULT_BASTION = "127.0.0.1:2222"
DEFAULT_KNOWN_HOSTS = "~/.ssh/bastion_known_hosts"
_HOST = re.compile(r"^[A-Za-z0-9:][A-Za-z0-9_.\-:]*$")
_PATTERN = re.compile(r"^[A-Za-z0-9_.\-:*?\[\]!]+$")


def _split_host_port(value: str, default_port: int) -> tuple[str, int]:
    host, port = value, default_port
    if value.startswith("["):                        # [::1]:2222
        inner, _, rest = value[1:].partition("]")
        host = inner
        if rest.startswith(":") and rest[1:].isdigit():
            port = int(rest[1:])
        elif rest:
            host = ""
    elif value.count(":") == 1:                      # host:2222 (a bare IPv6 has several)
        host, _, p = value.partition(":")
        port = int(p) if p.isdigit() else -1
    if not host or not _HOST.fullmatch(host) or not 0 < port < 65536:
        raise ConfigError(f"expected HOST or HOST:PORT, got {value!r}")
    return host, port


def _quote(value: str) -> str:
    return f'"{value}"' if any(c.isspace() for c in value) else value


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

        bastion ca known-hosts --data-dir data > ~/.ssh/bastion_known_hosts
    """
    from bastion.ssh.hostca import HostKeys, PublicHostKeys, known_hosts_pattern
    from bastion.vault import passphrase_from_env

    host, port = _split_host_port(bastion_host, 22)
    targets = target or ["*"]
    for t in targets:
        if not _PATTERN.fullmatch(t):
            raise ConfigError(f"invalid --target pattern {t!r}")
    keys = PublicHostKeys.read(data_dir)          # the public halves: no passphrase needed
    if keys is None:                              # first use: make them (encrypted)
        keys = HostKeys.load_or_create(data_dir, passphrase=passphrase_from_env())
    text = keys.known_hosts_lines(known_hosts_pattern(host, port), ",".join(targets),
                                  include_plain_host_key=plain)
    print(f"# bastion host CA ({keys.ca_key.get_fingerprint('sha256')}); "
          "use this file only for bastion connections")
    print(text, end="")


def _auth_off() -> list[str]:
    return ["PubkeyAuthentication no", "PasswordAuthentication no", "HostbasedAuthentication no",
            "GSSAPIAuthentication no", "IdentitiesOnly yes", "IdentityAgent none"]


def _trust(known_hosts: str) -> list[str]:
    return [f"UserKnownHostsFile {_quote(known_hosts)}", "GlobalKnownHostsFile /dev/null",
            "StrictHostKeyChecking yes", "UpdateHostKeys no", "CheckHostIP no",
            "ForwardAgent no", "ForwardX11 no"]


def render_ssh_config(bastion: str, targets: list[tuple[str, str | None]], *,
                      known_hosts: str = DEFAULT_KNOWN_HOSTS, alias: str = "bastion",
                      user: str = "agent", ca_fingerprint: str | None = None) -> str:
    """The ssh_config text; ``targets`` is [(name, login or None)], empty for ``Host *``."""
    host, port = _split_host_port(bastion, 2222)
    if not _HOST.fullmatch(alias) or ":" in alias:
        raise ConfigError(f"invalid --alias {alias!r}")
    if not re.fullmatch(r"[A-Za-z0-9_.\-]+", user):
        raise ConfigError(f"invalid --user {user!r}")
    for name, login in targets:
        if not _HOST.fullmatch(name):
            raise ConfigError(f"invalid target name {name!r}")
        if name == alias:
            raise ConfigError(f"a target is named {name!r} like the bastion alias",
                              hint="pass --alias OTHER")
        if login is not None and not re.fullmatch(r"[A-Za-z0-9_.\-]+", login):
            raise ConfigError(f"invalid login {login!r} for target {name!r}")
    out = [
        "# ssh_config for agents reaching targets through the bastion.",
        "# 1. Write the CA line (-o options on the command line do not reach the -J hop,",
        "#    so everything lives in this file):",
        f"#      bastion ca known-hosts > {known_hosts}",
        "# 2. Give ssh the token through askpass (no tty needed):",
        "#      export SSH_ASKPASS=bastion-askpass SSH_ASKPASS_REQUIRE=force",
        "#      export BASTION_TOKEN_FILE=/path/to/token     # or BASTION_TOKEN=...",
        "# 3. Use it:  ssh -F THIS_FILE deploy@web1 'uptime'   (or Include it from ~/.ssh/config)",
    ]
    if ca_fingerprint:
        out.append(f"# The bastion host CA is {ca_fingerprint}.")
    out += ["", f"Host {alias}", f"    HostName {host}", f"    Port {port}", f"    User {user}",
            "    ProxyJump none", "    PreferredAuthentications keyboard-interactive",
            "    KbdInteractiveAuthentication yes", "    NumberOfPasswordPrompts 1"]
    out += [f"    {line}" for line in _auth_off() + _trust(known_hosts)]
    inner = ([f"ProxyJump {alias}",
              "# the inner login needs no credential: the bastion accepts auth 'none'",
              "PreferredAuthentications none", "KbdInteractiveAuthentication no"]
             + _auth_off() + _trust(known_hosts))
    blocks: dict[str | None, list[str]] = {}        # one Host block per login
    for name, login in targets or [("*", None)]:
        if name not in blocks.setdefault(login, []):
            blocks[login].append(name)
    for login, names in blocks.items():
        out += ["", "Host " + " ".join(names)]
        if login:
            out.append(f"    User {login}")
        out += [f"    {line}" for line in inner]
    return "\n".join(out) + "\n"


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

        bastion ssh-config --bastion bastion.example.com:2222 --policy policy.toml > agent_ssh_config
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
