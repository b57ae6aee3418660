"""The dev issuer's authorization code flow with PKCE (RFC 6749 4.1, RFC 7636), for the web viewer.

``GET {authority}/oauth2/v2.0/authorize`` with ``response_type=code``, ``client_id``,
``redirect_uri`` (compared **exactly** with the URIs registered for that client by
:meth:`AuthorizationCodes.register`), ``scope`` (``RESOURCE/NAME``, as for the device code),
``state`` and ``code_challenge`` with ``code_challenge_method=S256`` (``plain`` is refused).
The dev issuer has no sign-in page: the user is the one of ``auto_approve`` (``dev-issuer
--approve-as NAME``); without one the request is refused with a message saying so.

A code is one-time and lives :data:`CODE_LIFETIME` seconds; the token endpoint
(``grant_type=authorization_code``) checks the client, the redirect URI, that
``BASE64URL(SHA256(code_verifier)) == code_challenge``, and burns the code whatever the
outcome.  An unknown client or redirect URI is never redirected to (RFC 6749 4.1.2.1): it gets
a 400 of its own.  No HTTP here: see :mod:`bastion.identity.devissuer`.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from bastion.identity.devflows import user_tokens
from bastion.identity.devtokens import b64url

if TYPE_CHECKING:
    from bastion.identity.devissuer import DevIssuer

CODE_LIFETIME = 60                     # seconds between the redirect and the exchange
RESERVED_SCOPES = ("openid", "profile", "offline_access", "email")
_VERIFIER = re.compile(r"[A-Za-z0-9\-._~]{43,128}")     # RFC 7636 4.1
_CHALLENGE = re.compile(r"[A-Za-z0-9\-_]{43}")          # BASE64URL(SHA-256), no padding


def s256(verifier: str) -> str:
    """The S256 code challenge of ``verifier``."""
    return b64url(hashlib.sha256(verifier.encode("ascii")).digest())


@dataclass
class _Code:
    client_id: str
    redirect_uri: str
    challenge: str
    scopes: tuple[str, ...]
    user: dict[str, Any]
    expires_at: float
    code: str = field(repr=False, default="")


def _error(status: int, error: str, description: str) -> tuple[int, dict[str, Any]]:
    return status, {"error": error, "error_description": description}


class AuthorizationCodes:
    """Registered redirect URIs and the codes handed out, for one dev issuer."""

    def __init__(self, issuer: "DevIssuer") -> None:
        self.issuer = issuer
        self.redirects: dict[str, set[str]] = {}
        self._codes: dict[str, _Code] = {}
        self._lock = threading.Lock()

    def register(self, client_id: str, redirect_uri: str) -> None:
        """Allow ``redirect_uri`` (exactly) for ``client_id``."""
        self.redirects.setdefault(client_id, set()).add(redirect_uri)

    def authorize(self, query: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """(302, {"location": URL}) back to the client, or (status, error body) when the
        client or redirect URI cannot be trusted with a redirect."""
        client_id = query.get("client_id", "")
        redirect_uri = query.get("redirect_uri", "")
        if self.issuer.clients.get(client_id) is None:
            return _error(400, "unauthorized_client",
                          f"AADSTS700016: application {client_id!r} not found in the dev issuer")
        if redirect_uri not in self.redirects.get(client_id, ()):
            return _error(400, "invalid_request",
                          "AADSTS50011: the redirect URI does not match the ones registered for "
                          "the application (dev-issuer --web-redirect NAME=URI)")
        state = query.get("state", "")

        def back(**params: str) -> tuple[int, dict[str, Any]]:
            if state:
                params["state"] = state
            sep = "&" if "?" in redirect_uri else "?"
            return 302, {"location": redirect_uri + sep + urlencode(params)}

        if query.get("response_type") != "code":
            return back(error="unsupported_response_type",
                        error_description="only response_type=code is supported")
        if query.get("code_challenge_method") != "S256" or \
                not _CHALLENGE.fullmatch(query.get("code_challenge", "")):
            return back(error="invalid_request",
                        error_description="PKCE is required: code_challenge with "
                                          "code_challenge_method=S256")
        scopes = tuple(s for s in query.get("scope", "").split() if s not in RESERVED_SCOPES)
        if len(scopes) < 1 or any("/" not in s for s in scopes) or \
                len({s.rsplit("/", 1)[0] for s in scopes}) != 1:
            return back(error="invalid_scope",
                        error_description="give scopes of one resource, e.g. api://bastion/access")
        user = self.issuer.auto_approve
        if user is None:
            return back(error="access_denied",
                        error_description="the dev issuer has no sign-in page: start it with "
                                          "--approve-as NAME")
        code = secrets.token_urlsafe(32)
        with self._lock:
            now = self.issuer.now()
            self._codes = {k: v for k, v in self._codes.items() if v.expires_at > now}
            self._codes[code] = _Code(client_id=client_id, redirect_uri=redirect_uri,
                                      challenge=query["code_challenge"], scopes=scopes,
                                      user=dict(user), expires_at=now + CODE_LIFETIME)
        return back(code=code)

    def exchange(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """The token endpoint's ``grant_type=authorization_code``."""
        bad = _error(400, "invalid_grant", "AADSTS70008: the authorization code is invalid, "
                                           "used or expired")
        with self._lock:
            entry = self._codes.pop(form.get("code", ""), None)       # one use, whatever happens
        if entry is None or entry.expires_at <= self.issuer.now():
            return bad
        if form.get("client_id") != entry.client_id or \
                form.get("redirect_uri") != entry.redirect_uri:
            return bad
        verifier = form.get("code_verifier", "")
        if not _VERIFIER.fullmatch(verifier):
            return _error(400, "invalid_grant", "AADSTS501481: the code_verifier is missing or "
                                                "malformed")
        if not hmac.compare_digest(s256(verifier), entry.challenge):
            return _error(400, "invalid_grant", "AADSTS501481: the code_verifier does not match "
                                                "the code_challenge")
        return 200, user_tokens(self.issuer, entry.user, entry.client_id, entry.scopes)
