"""CLI: ``bastion token``, ``bastion askpass`` and ``bastion dev-issuer``.

Thin wrappers over :mod:`bastion.identity.acquire`, :mod:`bastion.identity.askpass`
and :mod:`bastion.identity.devissuer`.  ``bastion token`` prints only the token
on stdout (for ``$(...)``); everything else goes to stderr.
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from typing import Annotated, Optional

import typer

from bastion.cli.common import err_console, handle_errors
from bastion.errors import ConfigError, IdentityError


def token(
    client_id: Annotated[Optional[str], typer.Option(
        "--client-id", envvar="BASTION_CLIENT_ID",
        help="The agent's app (client) id; with --managed-identity: a user-assigned identity.")] = None,
    authority: Annotated[Optional[str], typer.Option(
        "--authority", envvar="BASTION_AUTHORITY",
        help="https://login.microsoftonline.com/TENANT, or the dev issuer's authority.")] = None,
    client_secret_file: Annotated[Optional[Path], typer.Option(
        "--client-secret-file", envvar="BASTION_CLIENT_SECRET_FILE",
        help="File holding the client secret (never pass a secret on the command line).")] = None,
    certificate: Annotated[Optional[Path], typer.Option(
        "--certificate", envvar="BASTION_CERTIFICATE",
        help="PEM file with the private key and the certificate registered for the app.")] = None,
    managed_identity: Annotated[bool, typer.Option(
        "--managed-identity", help="Use the Azure managed identity of this machine.")] = False,
    scope: Annotated[str, typer.Option(
        "--scope", envvar="BASTION_SCOPE", help="The bastion API's scope.")]
        = "api://bastion/.default",
    ca_bundle: Annotated[Optional[Path], typer.Option(
        "--ca-bundle", envvar="BASTION_CA_BUNDLE",
        help="CA certificate(s) to trust for the issuer (e.g. the dev issuer's ca.pem).")] = None,
    cache: Annotated[Optional[Path], typer.Option(
        "--cache", envvar="BASTION_TOKEN_CACHE",
        help="msal token cache file (0600). Default: ~/.cache/bastion/msal-token-cache.json.")]
        = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Do not read or write a cache.")]
        = False,
) -> None:
    """Print an access token for the bastion (client credentials via msal).

    The token is cached until shortly before it expires, so calling this often is cheap.

    Example: bastion token --client-id 1111-... --authority https://login.microsoftonline.com/TENANT
    --client-secret-file ~/.agent-secret --scope api://bastion/.default
    """
    from bastion.identity.acquire import AcquireOptions, acquire_token

    given = [n for n, v in (("--client-secret-file", client_secret_file),
                            ("--certificate", certificate),
                            ("--managed-identity", managed_identity)) if v]
    if len(given) > 1:
        raise ConfigError(f"give one credential, not {' and '.join(given)}")
    if not given:
        raise ConfigError("no credential given",
                          hint="pass --client-secret-file FILE, --certificate PEM or "
                               "--managed-identity")
    if not managed_identity and not (client_id and authority):
        raise ConfigError("--client-id and --authority are required",
                          hint="e.g. --authority https://login.microsoftonline.com/TENANT")
    opts = AcquireOptions(
        client_id=client_id, authority=authority, scope=scope,
        client_secret_file=str(client_secret_file) if client_secret_file else None,
        certificate=str(certificate) if certificate else None,
        managed_identity=managed_identity, ca_bundle=str(ca_bundle) if ca_bundle else None,
        cache="off" if no_cache else (str(cache) if cache else None))
    secret = acquire_token(opts)
    sys.stdout.write(secret.reveal() + "\n")
    sys.stdout.flush()


def askpass(
    prompt: Annotated[str, typer.Argument(metavar="PROMPT", help="The prompt OpenSSH passes to SSH_ASKPASS.")] = "",
) -> None:
    """Answer one bastion token prompt with the right slice of the token (for SSH_ASKPASS).

    Token from BASTION_TOKEN, BASTION_TOKEN_FILE, or msal (BASTION_CLIENT_ID, BASTION_AUTHORITY,
    BASTION_CLIENT_SECRET_FILE or BASTION_CERTIFICATE, BASTION_SCOPE, BASTION_CA_BUNDLE).
    Any other prompt is refused (exit 1). SSH_ASKPASS takes a program path: use the
    `bastion-askpass` executable there, this command is the same thing for testing.

    Example: BASTION_TOKEN_FILE=token bastion askpass 'OIDC token (continued at byte 1000): '
    """
    from bastion.identity.askpass import run
    raise typer.Exit(run([prompt]))


def dev_issuer(
    state_dir: Annotated[Path, typer.Option(
        "--state-dir", help="Where the issuer keeps its CA, signing key and clients.")],
    port: Annotated[Optional[int], typer.Option(
        "--port", help="Port on 127.0.0.1 (default: the previous run's port, else a free one).")]
        = None,
    host: Annotated[str, typer.Option("--host", help="Loopback address to listen on.")]
        = "127.0.0.1",
    add_client: Annotated[Optional[list[str]], typer.Option(
        "--add-client", help="Register a client with this name (repeatable).")] = None,
    role: Annotated[Optional[list[str]], typer.Option(
        "--role", help="App role for the clients added now (repeatable).")] = None,
    with_certificate: Annotated[bool, typer.Option(
        "--certificate", help="Also give added clients a certificate (clients/NAME.pem).")]
        = False,
    audience: Annotated[str, typer.Option("--audience", help="API audience for the printed "
                                          "policy.toml snippet.")] = "api://bastion",
    approve_as: Annotated[Optional[str], typer.Option(
        "--approve-as", help="Approve every device-code login as this user name (dev only).")]
        = None,
    approve_role: Annotated[Optional[list[str]], typer.Option(
        "--approve-role", help="Roles claim of the --approve-as user (repeatable).")] = None,
    web_redirect: Annotated[Optional[list[str]], typer.Option(
        "--web-redirect", help="NAME=URI: a web client (created without a secret if new) and "
                               "its exact redirect URI for the authorization code flow "
                               "(repeatable), e.g. bastion-web=https://127.0.0.1:8443/ui/callback")]
        = None,
) -> None:
    """Run a local Entra-shaped OIDC issuer over https on loopback, until Ctrl-C.

    It has its own CA (STATE_DIR/ca.pem), serves discovery, JWKS and a token endpoint
    (client credentials with a secret or certificate; device code), so `bastion token`
    works against it unchanged given --ca-bundle.

    Example: bastion dev-issuer --state-dir .dev-issuer --add-client agent1 --role agents
    """
    from bastion.identity.devissuer import DevIssuer
    from bastion.identity.fetch import is_loopback_host

    if not is_loopback_host(host):
        raise ConfigError(f"--host {host!r} is not a loopback address; the dev issuer is for "
                          "local use only")
    if port is None:
        port = DevIssuer.saved_port(state_dir) or 0
    auto = {"name": approve_as, "roles": list(approve_role or ())} if approve_as else None
    issuer = DevIssuer(state_dir, host=host, port=port, auto_approve=auto)
    out: list[str] = []
    for item in web_redirect or ():
        name, sep, uri = item.partition("=")
        if not sep or not uri.startswith("https://"):
            raise ConfigError(f"--web-redirect {item!r}: give NAME=https://HOST:PORT/ui/callback")
        web = issuer.clients.by_name(name) or issuer.add_client(name, secret=False)
        issuer.authz.register(web.client_id, uri)
        out.append(f"web client {name}: client id {web.client_id}, redirect {uri} "
                   f"([oidc] web_client_id)")
    for name in add_client or ():
        if issuer.clients.by_name(name):
            out.append(f"client {name!r} exists already (kept as it is)")
            continue
        try:
            issuer.add_client(name, roles=tuple(role or ()), certificate=with_certificate)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    try:
        issuer.start()
    except OSError as exc:
        raise IdentityError(f"cannot listen on {host}:{port}: {exc.strerror}",
                            hint="pick another --port (0 for any free port)") from None
    try:
        _print_issuer(issuer, audience, out)
        _wait_for_signal()
    finally:
        issuer.stop()
        err_console.print("dev issuer stopped")


def _print_issuer(issuer, audience: str, notes: list[str]) -> None:
    ca = issuer.ca_path.resolve()
    lines = [f"dev issuer: {issuer.issuer}", f"authority:  {issuer.authority}", f"CA:         {ca}",
             "", "policy.toml:", "  [oidc]", f'  issuer = "{issuer.issuer}"',
             f'  audience = "{audience}"', f'  ca_bundle = "{ca}"', ""]
    lines += notes
    clients = issuer.clients.all()
    if not clients:
        lines.append("no clients yet: restart with --add-client NAME --role ROLE")
    for client in clients:
        lines.append(f"client {client.name}: client id {client.client_id}, "
                     f"roles {', '.join(client.roles) or '-'}")
        if client.secret_file:
            lines.append("  token: bastion token --client-id {} --authority {} "
                         "--client-secret-file {} --ca-bundle {} --scope {}/.default".format(
                             client.client_id, issuer.authority, client.secret_file.resolve(),
                             ca, audience))
        if client.certificate_file:
            lines.append("  token: bastion token --client-id {} --authority {} "
                         "--certificate {} --ca-bundle {} --scope {}/.default".format(
                             client.client_id, issuer.authority,
                             client.certificate_file.resolve(), ca, audience))
    lines += ["", "Ctrl-C to stop."]
    typer.echo("\n".join(lines))


def _wait_for_signal() -> None:
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)


def register(app: typer.Typer) -> None:
    app.command("token")(handle_errors(token))
    app.command("askpass")(askpass)
    app.command("dev-issuer")(handle_errors(dev_issuer))
