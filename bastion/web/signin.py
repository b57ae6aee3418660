"""The web viewer's sign-in state: PKCE pairs, logins under way, and signed-in browsers.

Authorization code + PKCE (RFC 7636, S256) against the ``[oidc]`` issuer, with the bastion
as the client (``[oidc] web_client_id``).  :class:`Logins` keeps, per ``state``, the
``code_verifier`` and redirect URI of a login that went to the issuer (10 minutes, one use);
the browser carries only ``state``, in a cookie bound to the callback path, so a callback
from another browser (login CSRF) finds no match.  :class:`Browsers` maps the opaque session
cookie to the reviewer's access token, held here (a :class:`Secret`), never given to the page:
the page's scripts cannot read it (the cookie is HttpOnly) and send nothing but GETs.  A
browser session ends with its token (``exp``), at sign-out, or after :data:`MAX_SESSION`.

Every read through the viewer is the API's own route called with that token
(:mod:`bastion.web.app`), so the server decides roles and reviewer scope the same way for
both.  Pure apart from ``secrets``: the clock is passed in.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass, field

from bastion.secret import Secret

LOGIN_LIFETIME = 600.0          # s from the redirect to the issuer to the callback
MAX_SESSION = 8 * 3600.0        # a browser session never outlives this, whatever the token says
MAX_PENDING = 1000              # logins under way (older ones are dropped first)


def pkce_pair() -> tuple[str, str]:
    """(code_verifier, S256 code_challenge)."""
    verifier = secrets.token_urlsafe(48)                                 # 64 characters
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


@dataclass
class Login:
    verifier: Secret[str] = field(repr=False)
    redirect_uri: str
    expires: float


class Logins:
    def __init__(self) -> None:
        self._pending: dict[str, Login] = {}

    def start(self, redirect_uri: str, now: float) -> tuple[str, str]:
        """A new login: (state, code_challenge)."""
        self._pending = {k: v for k, v in self._pending.items() if v.expires > now}
        while len(self._pending) >= MAX_PENDING:
            self._pending.pop(next(iter(self._pending)))
        verifier, challenge = pkce_pair()
        state = secrets.token_urlsafe(24)
        self._pending[state] = Login(Secret(verifier), redirect_uri, now + LOGIN_LIFETIME)
        return state, challenge

    def finish(self, state: str, cookie_state: str | None, now: float) -> Login | None:
        """The login of ``state`` (once) if this browser started it and it is not stale."""
        login = self._pending.pop(state, None) if state else None
        if login is None or login.expires <= now:
            return None
        if not cookie_state or not secrets.compare_digest(cookie_state, state):
            return None
        return login


@dataclass
class Browser:
    token: Secret[str] = field(repr=False)
    label: str
    expires: float


class Browsers:
    def __init__(self) -> None:
        self._by_id: dict[str, Browser] = {}

    def open(self, token: Secret[str], label: str, token_exp: float | None,
             now: float) -> tuple[str, float]:
        """A signed-in browser: (cookie value, seconds it lasts)."""
        self._by_id = {k: v for k, v in self._by_id.items() if v.expires > now}
        expires = min(now + MAX_SESSION, token_exp if token_exp else now + MAX_SESSION)
        sid = secrets.token_urlsafe(32)
        self._by_id[_key(sid)] = Browser(token, label, expires)
        return sid, max(0.0, expires - now)

    def get(self, sid: str | None, now: float) -> Browser | None:
        if not sid:
            return None
        browser = self._by_id.get(_key(sid))
        if browser is None or browser.expires <= now:
            return None
        return browser

    def close(self, sid: str | None) -> None:
        if sid:
            self._by_id.pop(_key(sid), None)


def _key(sid: str) -> str:
    """Stored by hash: a dump of this table holds no usable cookie."""
    return hashlib.sha256(sid.encode("utf-8", "replace")).hexdigest()
