"""The ssh_config agents use to reach targets through the bastion (text only, no IO).

``render_ssh_config`` is what ``bastion ssh-config`` prints and what ``bastion demo`` writes:
a Host block for the bastion hop (keyboard-interactive for the token, nothing else) and one
per target login (ProxyJump through the hop, auth ``none``, the bastion CA as the only trust).
``parse_listen`` reads a ``--listen HOST:PORT`` value.
"""

from __future__ import annotations

import re

from bastion.errors import ConfigError

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
    out += ["    # One login for many commands (about 4x faster per command): uncomment.",
            "    # A kept connection works until the token expires; then new commands are",
            "    # refused with 'reconnect': `ssh -O exit " + alias + "` and the next one logs in.",
            "    #ControlMaster auto", "    #ControlPath ~/.ssh/bastion-cm-%C",
            "    #ControlPersist 10m"]
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


def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"--listen must be HOST:PORT, got {value!r}")
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port)
