"""The approver's side: where their token comes from, ``bastion login``, and answering.

Token, first match wins (the same order as ``bastion-askpass``):

1. ``BASTION_TOKEN`` -- the token itself;
2. ``--token-file`` / ``BASTION_TOKEN_FILE`` -- a file holding it;
3. the file ``bastion login`` wrote: ``$XDG_CACHE_HOME/bastion/approver-token``
   (else ``~/.cache/bastion/approver-token``), mode 0600.

``bastion login`` runs msal's device-code flow (``PublicClientApplication``,
``instance_discovery=False``) against the policy's ``[oidc]`` issuer (the msal
authority is the issuer without its ``/v2.0``), trusting ``[oidc] ca_bundle`` or
``--ca-bundle``.  Only the access token is kept (no refresh token on disk): when
it expires, log in again.

Every answer validates the token with :class:`bastion.identity.oidc.TokenValidator`
(same ``[oidc]`` as agents), then the store checks ``[settings] approvers``, the
four-eyes rule and the request's state in one transaction (store.py, model.py), and
stores the answer's proof with it: the validated claims that name the approver, when
they were validated and the token's SHA-256 (:class:`bastion.approvals.proof.AnswerProof`,
never the token).  ``bastion serve`` checks all of it again when it acts on the
answer (proof.py, broker.py).

Trust boundary: whoever can write ``index.sqlite`` can write rows without going
through this module.  The broker refuses rows that do not fit (wrong approver, the
requester, oversized windows, late answers, no proof, ...), but a row that copies a
real approver's claims exactly is not told apart (the token is not stored, so its
signature cannot be checked again).  Keep the data dir readable and writable only
by the bastion account and run the approver CLI as that account (e.g. through
sudo).  A multi-node deployment should put answers behind an API of the bastion.

Tokens are never logged, printed or put in an error message.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Callable, Mapping

from bastion.approvals.model import Approver, ApprovalRecord, parse_window
from bastion.approvals.store import ApprovalStore
from bastion.errors import ApprovalError, ConfigError, IdentityError, TokenRejected
from bastion.secret import Secret

TOKEN_FILE_NAME = "approver-token"
MAX_TOKEN_FILE = 64 * 1024


def default_token_path(env: Mapping[str, str] = os.environ) -> Path:
    base = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "bastion" / TOKEN_FILE_NAME


def load_token(token_file: Path | None = None, env: Mapping[str, str] = os.environ) -> Secret:
    """The approver's token (see module doc for the order).  Raises ApprovalError."""
    if env.get("BASTION_TOKEN", "").strip():
        return Secret(env["BASTION_TOKEN"].strip())
    path = Path(token_file).expanduser() if token_file else default_token_path(env)
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_TOKEN_FILE + 1)
    except FileNotFoundError:
        raise ApprovalError(f"no approver token: {path} does not exist",
                            hint="run `bastion login`, or set BASTION_TOKEN / "
                                 "BASTION_TOKEN_FILE") from None
    except OSError as exc:
        raise ApprovalError(f"cannot read the token file {path}: {exc.strerror}") from None
    token = data.decode("ascii", "replace").strip()
    if not token or len(data) > MAX_TOKEN_FILE:
        raise ApprovalError(f"the token file {path} is empty or not a token",
                            hint="run `bastion login` again")
    return Secret(token)


def save_token(token: Secret, path: Path) -> Path:
    """Write the token to ``path`` (0600, parent 0700), atomically."""
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        os.write(fd, token.reveal().encode("ascii") + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return path


def authenticate(config, token: Secret) -> Approver:
    """Validate the token against ``[oidc]``; the approver it names, with the proof that goes
    with each answer (claims, time of validation, token hash).  Raises ApprovalError."""
    from bastion.approvals.proof import AnswerProof
    from bastion.identity.oidc import TokenValidator
    if config.oidc is None:
        raise ConfigError("policy has no [oidc] table: approvers cannot be authenticated",
                          path=config.path, hint="add [oidc] issuer = ... and audience = ...")
    validator = TokenValidator(config.oidc)
    try:
        principal = asyncio.run(validator.validate(token.reveal()))
    except TokenRejected as exc:
        raise ApprovalError(f"your token was rejected: {exc.reason}",
                            hint="run `bastion login` again (or check BASTION_TOKEN)") from None
    proof = AnswerProof.of(principal, token, validated_at=time.time(),
                           subject_claim=config.oidc.subject_claim)
    return Approver.of(principal, proof=proof)


def is_approver(config, approver: Approver) -> bool:
    from bastion.policy.selectors import any_principal_matches
    return any_principal_matches(tuple(config.settings.approvers), approver)


def answer(store: ApprovalStore, config, approver: Approver, request_id: int, *,
           approve: bool, reason: str, window: str | None = None) -> ApprovalRecord:
    """Approve or deny one request as ``approver`` (already authenticated)."""
    return store.answer(request_id, approver, approve=approve, reason=reason,
                        approvers=config.settings.approvers, window=parse_window(window),
                        window_max=config.settings.approval_window_max)


def authority_from_issuer(issuer: str) -> str:
    """msal's authority for an Entra-shaped issuer: ``https://HOST/TENANT`` (no ``/v2.0``)."""
    base = issuer.rstrip("/")
    return base[: -len("/v2.0")] if base.endswith("/v2.0") else base


def default_scope(config) -> str:
    audience = config.oidc.audience[0] if config.oidc and config.oidc.audience else "api://bastion"
    return f"{audience.rstrip('/')}/.default"


def device_login(*, client_id: str, authority: str, scope: str, ca_bundle: str | None,
                 show: Callable[[str], None], timeout: float = 30.0) -> Secret:
    """msal device-code flow: ``show(message)`` tells the user where to sign in; blocks until
    they did (or the code expired).  Raises IdentityError (never with a token in it)."""
    import msal
    import requests

    from bastion.identity.acquire import make_session

    session = make_session(ca_bundle, timeout)
    try:
        app = msal.PublicClientApplication(client_id, authority=authority, http_client=session,
                                           instance_discovery=False)
        flow = app.initiate_device_flow(scopes=[scope])
        if "user_code" not in flow:
            raise IdentityError(f"the issuer refused the device-code flow: "
                                f"{flow.get('error', 'unknown_error')}: "
                                f"{_first_line(flow.get('error_description'))}",
                                hint="check --client-id (a public client app registered for "
                                     "the device-code flow) and --scope")
        show(str(flow.get("message") or f"enter code {flow['user_code']} at "
                                          f"{flow.get('verification_uri')}"))
        result = app.acquire_token_by_device_flow(flow)
    except requests.exceptions.SSLError:
        raise IdentityError(f"TLS verification failed talking to {authority}",
                            hint="pass --ca-bundle with the issuer's CA certificate") from None
    except requests.exceptions.RequestException as exc:
        raise IdentityError(f"cannot reach {authority}: {type(exc).__name__}") from None
    except ValueError as exc:
        raise IdentityError(f"msal refused the configuration: {_first_line(str(exc))}",
                            hint="the authority must be https://HOST/TENANT") from None
    if not result or "access_token" not in result:
        error = (result or {}).get("error", "unknown_error")
        raise IdentityError(f"login failed: {error}: "
                            f"{_first_line((result or {}).get('error_description'))}",
                            hint="run `bastion login` again and complete the sign-in in time")
    return Secret(result["access_token"])


def _first_line(text: str | None) -> str:
    lines = (text or "").strip().splitlines()
    return lines[0] if lines else "-"
