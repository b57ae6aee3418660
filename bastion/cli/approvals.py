"""CLI for approvers: ``approvals list/approve/deny/revoke/watch``, ``login``, ``logout``.

Runs beside ``bastion serve`` on the same host and data dir (the index is
shared, WAL).  Answers need an approver token (``bastion login``,
``BASTION_TOKEN`` or ``BASTION_TOKEN_FILE``; see bastion.approvals.approver),
validated with the policy's ``[oidc]`` and matched against ``[settings]
approvers`` for every answer.  Agent text is sanitised (bastion.approvals.view);
``--json`` output is ASCII-escaped JSON.

Exit codes: 0 ok, 1 refused or failed (message on stderr, e.g. already
answered, your own request, not an approver), 2 invalid configuration.
"""

from __future__ import annotations

import json
import os
import select
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from rich.live import Live
from rich.text import Text

from bastion.cli.common import (
    DEFAULT_DATA_DIR, DEFAULT_POLICY, DataDirOpt, JsonOpt, PolicyOpt, err_console, handle_errors,
    out_console,
)
from bastion.errors import BastionError, ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from bastion.approvals.model import ApprovalRecord
    from bastion.cli.approvals_source import LocalSource, RemoteSource
    Source = LocalSource | RemoteSource

approvals_app = typer.Typer(help="Answer held commands: list, approve, deny, or watch live.",
                            no_args_is_help=True)

TokenFileOpt = Annotated[Optional[Path], typer.Option(
    "--token-file", envvar="BASTION_TOKEN_FILE",
    help="File holding your token (default: the one `bastion login` saved). "
         "BASTION_TOKEN, if set, wins.")]
ReasonOpt = Annotated[str, typer.Option("--reason", "-r",
                                        help="Why (required; kept in the index).")]
ServerOpt = Annotated[Optional[str], typer.Option(
    "--server", envvar="BASTION_SERVER",
    help="The bastion's API (https://HOST:PORT, `bastion serve --api-listen`): work from "
         "your own machine instead of the data dir; every check is the server's.")]
ServerCaOpt = Annotated[Optional[Path], typer.Option(
    "--server-ca", envvar="BASTION_SERVER_CA",
    help="CA file to trust for --server (its self-signed DATA_DIR/api/cert.pem).")]


def _emit_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=True, indent=2, default=str) + "\n")


def _public(record: ApprovalRecord) -> dict[str, Any]:
    from bastion.recording.query import iso
    data: dict[str, Any] = record.to_dict()
    for key in ("created", "expires", "answered", "window_until", "revoked"):
        data[key] = iso(data.get(key))
    return data


def _said(record: ApprovalRecord) -> Text:
    from bastion.proto.sanitize import sanitize
    text = Text(f"request {record.id} {record.status}", style="green" if record.status ==
                "approved" else "red")
    text.append(f" by {sanitize(record.approver_label or '?')}: "
                f"{sanitize(record.answer_reason or '-')}")
    if record.window_until and record.status == "approved":
        from bastion.approvals.view import left
        text.append(f" (grant window: {left(record.window_until - time.time())})", style="cyan")
    return text


def _source(server: Optional[str], server_ca: Optional[Path], data_dir: Path, policy: Path,
            token_file: Optional[Path], *, answering: bool = True) -> "Source":
    from bastion.cli.approvals_source import open_source
    return open_source(server, server_ca, data_dir, policy, token_file, answering=answering)


def _answer(request_id: int, approve: bool, reason: str, window: Optional[str],
            source: "Source", as_json: bool) -> None:
    try:
        record = source.answer(request_id, approve, reason, window)
    finally:
        source.close()
    if as_json:
        _emit_json(_public(record))
    else:
        out_console.print(_said(record))


@approvals_app.command("list")
@handle_errors
def list_cmd(
    data_dir: DataDirOpt = Path(DEFAULT_DATA_DIR),
    all_: Annotated[bool, typer.Option("--all", help="Answered and expired ones too, newest "
                                                     "first.")] = False,
    limit: Annotated[int, typer.Option(help="At most this many.")] = 100,
    server: ServerOpt = None,
    server_ca: ServerCaOpt = None,
    token_file: TokenFileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List pending approval requests (oldest first), or with --all every request.

    Example: bastion approvals list --data-dir /var/lib/bastion --json
    """
    from bastion.approvals.view import requests_table
    source = _source(server, server_ca, data_dir, Path(DEFAULT_POLICY), token_file,
                     answering=False)
    try:
        records = source.list(all_statuses=all_, limit=limit)
    finally:
        source.close()
    if as_json:
        _emit_json([_public(r) for r in records])
        return
    title = f"{len(records)} {'request' if all_ else 'pending request'}(s)"
    out_console.print(requests_table(records, now=time.time(), title=title, answers=all_))


@approvals_app.command("approve")
@handle_errors
def approve_cmd(
    request_id: Annotated[int, typer.Argument(metavar="REQUEST_ID", help="Request id (from `approvals list`).")],
    reason: ReasonOpt,
    window: Annotated[Optional[str], typer.Option(
        "--window", help="Also approve this rule for this requester on this target for that "
                         "long (15m, 1h); at most [settings] approval_window_max.")] = None,
    data_dir: DataDirOpt = Path(DEFAULT_DATA_DIR),
    policy: PolicyOpt = Path(DEFAULT_POLICY),
    token_file: TokenFileOpt = None,
    server: ServerOpt = None,
    server_ca: ServerCaOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Approve a held command: it runs at once. Refused for your own request (four-eyes).

    Example: bastion approvals approve 42 --reason "planned restart, ticket OPS-12"
    """
    _answer(request_id, True, reason, window,
            _source(server, server_ca, data_dir, policy, token_file), as_json)


@approvals_app.command("deny")
@handle_errors
def deny_cmd(
    request_id: Annotated[int, typer.Argument(metavar="REQUEST_ID", help="Request id (from `approvals list`).")],
    reason: ReasonOpt,
    data_dir: DataDirOpt = Path(DEFAULT_DATA_DIR),
    policy: PolicyOpt = Path(DEFAULT_POLICY),
    token_file: TokenFileOpt = None,
    server: ServerOpt = None,
    server_ca: ServerCaOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Deny a held command: it is not run, the agent gets your reason.

    Example: bastion approvals deny 42 --reason "not during business hours"
    """
    _answer(request_id, False, reason, None,
            _source(server, server_ca, data_dir, policy, token_file), as_json)


@approvals_app.command("revoke")
@handle_errors
def revoke_cmd(
    request_id: Annotated[int, typer.Argument(metavar="REQUEST_ID", help="An approved request that opened a window.")],
    data_dir: DataDirOpt = Path(DEFAULT_DATA_DIR),
    policy: PolicyOpt = Path(DEFAULT_POLICY),
    token_file: TokenFileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """End the grant window an approval opened, now.

    Example: bastion approvals revoke 42
    """
    source = _source(None, None, data_dir, policy, token_file)
    try:
        record = source.revoke(request_id)
    finally:
        source.close()
    if as_json:
        _emit_json(_public(record))
    else:
        out_console.print(f"request {record.id}: grant window ended")


# -- watch ------------------------------------------------------------------------------

class LineReader:
    """Lines from a file descriptor, with a timeout, without Python's read-ahead buffer
    (which would hide buffered lines from ``select``)."""

    TIMEOUT = object()

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buf = b""
        self.eof = False

    def readline(self, timeout: float | None = None):
        """A line (without newline), ``None`` at end of input, or ``TIMEOUT``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self.buf:
            if self.eof:
                if self.buf:
                    line, self.buf = self.buf, b""
                    return line.decode("utf-8", "replace").strip()
                return None
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([self.fd], [], [], wait)
            if not ready:
                return self.TIMEOUT
            chunk = os.read(self.fd, 4096)
            if not chunk:
                self.eof = True
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line.decode("utf-8", "replace").strip()


def _ask(reader: LineReader, prompt: str) -> str | None:
    out_console.print(Text(prompt, style="bold"), end="")
    line = reader.readline()
    if not out_console.is_terminal:
        out_console.print()
    return line


def _watch_answer(reader: LineReader, request_id: int, source: "Source") -> bool:
    """One answer at the prompt.  False at end of input."""
    from bastion.approvals.view import detail
    record = source.get(request_id)
    out_console.print(detail(record, now=time.time()))
    choice = _ask(reader, "approve, deny or skip? [a/d/s] ")
    if choice is None:
        return False
    choice = choice.lower()
    if choice not in ("a", "approve", "d", "deny"):
        out_console.print("skipped")
        return True
    approve = choice.startswith("a")
    reason = ""
    while not reason.strip():
        reason = _ask(reader, "reason: ")
        if reason is None:
            return False
    window = None
    if approve and source.window_allowed():
        window = _ask(reader, "grant window for this rule, requester and target "
                              "(e.g. 15m; empty: none): ")
        if window is None:
            return False
    record = source.answer(request_id, approve, reason, window or None)
    out_console.print(_said(record))
    return True


@approvals_app.command("watch")
@handle_errors
def watch_cmd(
    data_dir: DataDirOpt = Path(DEFAULT_DATA_DIR),
    policy: PolicyOpt = Path(DEFAULT_POLICY),
    token_file: TokenFileOpt = None,
    server: ServerOpt = None,
    server_ca: ServerCaOpt = None,
    once: Annotated[bool, typer.Option("--once", help="Show the view once and exit.")] = False,
    interval: Annotated[float, typer.Option(help="Seconds between refreshes.")] = 0.5,
) -> None:
    """Live view of pending requests; type a request id and Enter to approve or deny it.

    Shows requester, target, the command line (escape sequences made visible), the simple
    commands the policy found, the rule and the time left, plus recent answers. Type q to quit.

    Example: bastion approvals watch --data-dir /var/lib/bastion --policy /etc/bastion/policy.toml
    """
    from bastion.approvals.view import watch_view
    source = _source(server, server_ca, data_dir, policy, token_file)
    try:
        source.check_approver()
    except BaseException:
        source.close()
        raise
    prompt = "type a request id and Enter to answer it, q to quit"

    def render() -> Any:
        now = time.time()
        return watch_view(source.list(), source.list(all_statuses=True, limit=5,
                                                     since=now - 600),
                          now=now, me=source.me, prompt=prompt)

    reader = LineReader(sys.stdin.fileno())
    try:
        if once:
            out_console.print(render())
            return
        while True:
            if out_console.is_terminal:
                with Live(render(), console=out_console, auto_refresh=False,
                          transient=True) as live:
                    line = reader.readline(interval)
                    while line is LineReader.TIMEOUT:
                        live.update(render(), refresh=True)
                        line = reader.readline(interval)
            else:
                out_console.print(render())
                line = reader.readline()
            if line is None or line.lower() in ("q", "quit", "exit"):
                return
            if not line:
                line = _ask(reader, "request id: ")
                if line is None:
                    return
            if not line.strip().isdigit():
                out_console.print(Text(f"not a request id: {line!r}", style="red"))
                continue
            try:
                if not _watch_answer(reader, int(line), source):
                    return
            except BastionError as exc:       # say why, keep watching
                from bastion.proto.sanitize import sanitize
                out_console.print(Text(f"refused: {sanitize(str(exc))}", style="bold red"))
                if exc.hint:
                    out_console.print(Text(f"hint: {sanitize(exc.hint)}", style="dim"))
    finally:
        source.close()


# -- login / logout ---------------------------------------------------------------------

@handle_errors
def login_cmd(
    client_id: Annotated[str, typer.Option(
        "--client-id", envvar="BASTION_CLIENT_ID",
        help="The approvers' public client app id (device-code flow enabled).")],
    policy: PolicyOpt = Path(DEFAULT_POLICY),
    authority: Annotated[Optional[str], typer.Option(
        "--authority", envvar="BASTION_AUTHORITY",
        help="msal authority (default: [oidc] issuer without /v2.0).")] = None,
    scope: Annotated[Optional[str], typer.Option(
        "--scope", help="Scope to ask for (default: the first [oidc] audience + /.default).")]
        = None,
    ca_bundle: Annotated[Optional[Path], typer.Option(
        "--ca-bundle", envvar="BASTION_CA_BUNDLE",
        help="CA to trust for the issuer (default: [oidc] ca_bundle).")] = None,
    token_file: Annotated[Optional[Path], typer.Option(
        "--token-file", help="Where to save the token (0600; default "
                             "~/.cache/bastion/approver-token).")] = None,
) -> None:
    """Sign in as an approver with the device-code flow and keep the token (0600 file).

    Prints where to enter a code, waits until you did, checks the token against [oidc]
    and tells whether [settings] approvers lets you answer requests.

    Example: bastion login --client-id 2222-... --policy /etc/bastion/policy.toml
    """
    from bastion.approvals.approver import (
        authenticate, authority_from_issuer, default_scope, default_token_path, device_login,
        is_approver, save_token,
    )
    from bastion.config import load_config
    from bastion.proto.sanitize import sanitize
    config = load_config(policy)
    if config.oidc is None:
        raise ConfigError("policy has no [oidc] table: there is no issuer to log in to",
                          path=str(policy), hint="add [oidc] issuer = ... and audience = ...")
    secret = device_login(
        client_id=client_id, authority=authority or authority_from_issuer(config.oidc.issuer),
        scope=scope or default_scope(config),
        ca_bundle=str(ca_bundle) if ca_bundle else config.oidc.ca_bundle,
        show=lambda message: err_console.print(Text(sanitize(message))))
    approver = authenticate(config, secret)
    path = save_token(secret, token_file or default_token_path())
    until = ""
    if approver.expires:
        until = ", valid until " + time.strftime("%H:%M", time.localtime(approver.expires))
    err_console.print(Text(f"logged in as {sanitize(approver.label)}; token saved to {path}"
                           f"{until}"))
    if not is_approver(config, approver):
        err_console.print(Text("warning: [settings] approvers does not include you: you cannot "
                               "answer requests", style="yellow"))


@handle_errors
def logout_cmd(
    token_file: Annotated[Optional[Path], typer.Option(
        "--token-file", help="The token file to remove (default: the one `login` saved).")]
        = None,
) -> None:
    """Forget the approver token `bastion login` saved.

    Example: bastion logout
    """
    from bastion.approvals.approver import default_token_path
    path = token_file or default_token_path()
    try:
        path.unlink()
    except FileNotFoundError:
        err_console.print(f"no token at {path}")
        return
    err_console.print(f"removed {path}")


def register(app: typer.Typer) -> None:
    app.add_typer(approvals_app, name="approvals")
    app.command("login")(login_cmd)
    app.command("logout")(logout_cmd)
