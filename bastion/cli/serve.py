"""CLI: ``bastion serve`` — run the bastion."""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Annotated, Any, Callable, Optional

import typer

from bastion.cli.common import (
    DEFAULT_DATA_DIR, DEFAULT_KEYS_DIR, DEFAULT_LISTEN, DEFAULT_POLICY, DataDirOpt, KeysDirOpt,
    ListenOpt, PolicyOpt, handle_errors, parse_listen,
)
from pathlib import Path

from bastion.errors import BastionError, ConfigError
from bastion.private import describe_open, open_mode, set_private_umask, tighten_tree


log = logging.getLogger("bastion.serve")


def check_dir_modes(data_dir: Path, keys_dir: Path, *, strict: bool) -> None:
    """Refuse (strict) or warn about a data/keys dir other users can use; then, when strict,
    take group/other permissions off what an older bastion created in the data dir."""
    for option, path in (("--data-dir", data_dir), ("--keys-dir", keys_dir)):
        mode = open_mode(path)
        if mode is None:
            continue
        what = f"{option} {path} can be {describe_open(mode)} by other users (mode {mode:o})"
        if strict:
            raise BastionError(what, hint=f"chmod 700 {path}, or start with --no-strict-modes "
                                          "if other users must have access")
        log.warning("%s; starting anyway (--no-strict-modes)", what)
    if strict and data_dir.is_dir():
        from bastion.ssh.hostca import HOSTKEYS_DIR
        try:
            done = tighten_tree(data_dir, skip=(HOSTKEYS_DIR,))  # host keys: refused, not fixed
        except OSError as exc:
            raise BastionError(f"cannot make the files in {data_dir} private: "
                               f"{exc.strerror or exc}",
                               hint="the data dir's files must belong to the user that runs "
                                    "bastion serve") from exc
        if done.count:
            log.warning("made %d directories and %d files in %s private (group/other "
                        "permissions removed; an older bastion created them that way)",
                        done.dirs, done.files, data_dir)


def setup_logging(level: str, fmt: str = "text") -> None:
    from bastion.logfmt import formatter
    try:
        chosen = formatter(fmt)
    except ValueError as exc:
        raise ConfigError(f"--log-format: {exc}", hint="use --log-format text or json") from None
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(chosen)
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), handlers=[handler])
    logging.getLogger("asyncssh").setLevel(logging.WARNING)


@handle_errors
def serve_cmd(
    policy: PolicyOpt = Path(DEFAULT_POLICY),
    listen: ListenOpt = DEFAULT_LISTEN,
    data_dir: DataDirOpt = Path(DEFAULT_DATA_DIR),
    keys_dir: KeysDirOpt = Path(DEFAULT_KEYS_DIR),
    log_level: str = typer.Option("info", "--log-level", envvar="BASTION_LOG_LEVEL",
                                  help="debug, info, warning or error."),
    log_format: str = typer.Option(
        "text", "--log-format", envvar="BASTION_LOG_FORMAT",
        help="text, or json: one JSON object per line (time, level, logger, event, message, "
             "and principal, target, session, channel, action, rule... on audit events) for "
             "a SIEM; see docs/OPERATIONS.md."),
    api_listen: Annotated[Optional[str], typer.Option(
        "--api-listen", envvar="BASTION_API_LISTEN",
        help="Also serve the HTTPS API (approvers and reviewers from their own machines: "
             "docs/API.md) on HOST:PORT. Off by default.")] = None,
    api_cert: Annotated[Optional[Path], typer.Option(
        "--api-cert", envvar="BASTION_API_CERT",
        help="PEM certificate for the API (with --api-key); default: a self-signed one in "
             "DATA_DIR/api/, its fingerprint logged at start.")] = None,
    api_key: Annotated[Optional[Path], typer.Option(
        "--api-key", envvar="BASTION_API_KEY",
        help="PEM private key for --api-cert.")] = None,
    strict_modes: bool = typer.Option(
        True, "--strict-modes/--no-strict-modes", envvar="BASTION_STRICT_MODES",
        help="Refuse to start when other users can read, write or enter the data dir or the "
             "keys dir (the default). --no-strict-modes starts anyway, with a warning; what "
             "bastion creates is private (0600/0700) either way."),
    workers: Annotated[Optional[int], typer.Option(
        "--workers", envvar="BASTION_WORKERS",
        help="Processes accepting on the port (SO_REUSEPORT), each with its own recording "
             "worker, sharing the index; default: the number of cores. 1: one process, no "
             "supervisor. See docs/SCALING.md.")] = None,
) -> None:
    """Run the bastion: agents log in with an OIDC token and reach targets with `ssh -J`.

    Host keys and the host CA are created in the data dir on first start, encrypted with
    the vault passphrase like the upstream keys (unencrypted ones from an older bastion are
    re-written encrypted). The vault passphrase comes from BASTION_VAULT_PASSPHRASE or
    BASTION_VAULT_PASSPHRASE_FILE. Everything is created private (umask 077), and a data or
    keys dir open to other users is refused unless --no-strict-modes.
    SIGHUP (or editing the policy file) reloads policy.toml; an invalid file is refused
    and the previous policy kept. SIGTERM/SIGINT disconnect agents with a message and stop.
    It exits 2 when it cannot start (one line names the setting and what to do), 0 after
    SIGTERM. With --workers N > 1 a parent runs N worker processes, passes SIGHUP and
    SIGTERM to all, and starts a crashed one again.

    Example:

    \b
        bastion serve --policy policy.toml --listen 127.0.0.1:2222 \\
            --data-dir data --keys-dir keys
    """
    from bastion.cli.workers import WorkerRole, check_count, default_workers, run_parent, tell_ready
    setup_logging(log_level, log_format)
    listening = False
    role = WorkerRole.from_env()

    def ready(_port: int) -> None:
        nonlocal listening
        listening = True
        tell_ready()

    api = None
    if api_listen and (role is None or role.index == 1):     # one API: worker 1's
        api_host, api_port = parse_listen(api_listen)
        api = (api_host, api_port, api_cert, api_key)
    try:
        count = check_count(workers if workers is not None else default_workers())
        if role is None and count > 1:
            host, port = parse_listen(listen)
            if not 0 <= port < 65536:
                raise ConfigError(f"--listen port must be 0-65535, got {port}")
            set_private_umask()
            check_dir_modes(data_dir, keys_dir, strict=strict_modes)
            code = run_parent(count, host, port, policy, data_dir)
            if code:
                raise typer.Exit(code)
            return
        _serve(policy, listen, data_dir, keys_dir, strict_modes, ready, api, role)
    except BastionError as exc:
        if not listening:           # a start-up failure: the setting is named, exit 2
            exc.exit_code = 2
        raise


def _serve(policy: Path, listen: str, data_dir: Path, keys_dir: Path, strict_modes: bool,
           ready: Callable[[int], None], api: tuple[Any, ...] | None = None,
           role: Any = None) -> None:
    from bastion.services import Services
    from bastion.ssh.server import serve

    host, port = parse_listen(listen)
    if role is not None:               # a worker: the port its parent holds
        port = role.port
    if not 0 <= port < 65536:          # 0: any free port
        raise ConfigError(f"--listen port must be 0-65535, got {port}")
    for option, path in (("--data-dir", data_dir), ("--keys-dir", keys_dir)):
        if path.exists() and not path.is_dir():
            raise BastionError(f"{option} {path} is not a directory",
                               hint=f"pass a directory for {option} (it is created if missing)")
    set_private_umask()
    check_dir_modes(data_dir, keys_dir, strict=strict_modes)
    try:
        services = Services.build(policy, data_dir, keys_dir, listen_host=host,
                                  worker=role.index if role else 0,
                                  recover_all=role.recover_all if role else True)
    except OSError as exc:          # data/keys dir not creatable, not readable...
        where = f": {exc.filename}" if exc.filename else ""
        raise BastionError(f"cannot start: {exc.strerror or exc}{where}",
                           hint="check that --data-dir and --keys-dir are writable "
                                "directories") from exc
    also = None
    if api is not None:
        from bastion.api.server import start_api
        from bastion.web.app import WebUi
        api_host, api_port, cert, key = api

        async def also() -> Any:
            return await start_api(services, api_host, api_port, cert=cert, key=key, ui=WebUi)
    asyncio.run(serve(services, host, port, ready=ready, also=also,
                      worker=role.index if role else 0))


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_cmd)
