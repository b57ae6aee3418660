"""The read-only web viewer under ``/ui/`` on the API's listener (docs/API.md "Web viewer").

Pages (static files of ``bastion/web/static``; the scripts fetch JSON and recordings as data):

=========================  ==================================================================
``/ui/``                   sessions, with the filters of ``sessions list``
``/ui/session?id=N``       one session: channels, the command timeline (click: seek), the
                           player, or the live view of a running channel
``/ui/login``              to the issuer (authorization code + PKCE, :mod:`bastion.web.signin`)
``/ui/callback``           back from the issuer; ``/ui/logout`` signs out
``/ui/static/NAME``        scripts, styles, the vendored asciinema-player and its licence
``/ui/data/...``           ``GET /api/v1/...`` (whoami, sessions, one session, recording,
                           live, commands) answered by the API's own routes with the
                           browser's token, so roles and reviewer scope are the server's
=========================  ==================================================================

Every ``/ui`` answer carries :data:`CSP`: scripts and styles only from this origin, no
inline script or style, no framing.  ``'wasm-unsafe-eval'`` is there because
asciinema-player 3.x runs its terminal emulator as WebAssembly compiled from bytes in its
own script; it allows compiling WebAssembly, not ``eval`` of JavaScript.  The session cookie
is HttpOnly, Secure, SameSite=Strict and only read on GETs; the token stays on the server.
Not covered: the API's routes and roles (``bastion.api.routes``).
"""

from __future__ import annotations

import asyncio
import html
import json
import logging
import re
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from importlib import resources
from typing import Any

from bastion.api.http import Request, Response, error
from bastion.errors import BastionError, TokenRejected
from bastion.logfmt import fields as log_fields
from bastion.secret import Secret
from bastion.web.signin import Browsers, Logins

log = logging.getLogger("bastion.web")
audit = logging.getLogger("bastion.audit")

CSP = ("default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; "
       "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; base-uri 'none'; "
       "form-action 'self'; frame-ancestors 'none'")
COOKIE = "bastion_ui"
LOGIN_COOKIE = "bastion_ui_login"
STATIC = {"app.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8",
          "asciinema-player.min.js": "text/javascript; charset=utf-8",
          "asciinema-player.css": "text/css; charset=utf-8",
          "asciinema-player.LICENSE": "text/plain; charset=utf-8"}
PAGES = {"/ui": "index.html", "/ui/session": "session.html"}
_DATA = re.compile(r"/ui/data/(whoami|sessions|commands|sessions/\d+|sessions/\d+/live|"
                   r"sessions/\d+/channels/\d+/recording)")
_HOST = re.compile(r"[A-Za-z0-9.\-]+(:\d{1,5})?|\[[0-9A-Fa-f:.]+\](:\d{1,5})?")
DISCOVERY_TTL = 3600.0


def _cookies(req: Request) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in req.headers.get("cookie", "").split(";"):
        name, sep, value = part.strip().partition("=")
        if sep:
            out[name] = value
    return out


def _cookie(name: str, value: str, path: str, max_age: int, same_site: str = "Strict") -> bytes:
    return (f"{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; Secure; "
            f"SameSite={same_site}").encode()


def _page(status: int, title: str, text: str, link: tuple[str, str] | None = None,
          refresh: str | None = None) -> Response:
    """A small HTML page from server text (escaped); no script."""
    head = f'<meta http-equiv="refresh" content="0;url={html.escape(refresh)}">' if refresh else ""
    body = f"<h1>{html.escape(title)}</h1><p>{html.escape(text)}</p>"
    if link:
        body += f'<p><a href="{html.escape(link[0])}">{html.escape(link[1])}</a></p>'
    doc = (f'<!doctype html><html lang="en"><head><meta charset="utf-8">{head}'
           f'<title>{html.escape(title)}</title><link rel="stylesheet" href="/ui/static/app.css">'
           f"</head><body>{body}</body></html>")
    return _ui(Response(status, doc.encode(), content_type="text/html; charset=utf-8"))


def _ui(resp: Response) -> Response:
    resp.headers += [(b"content-security-policy", CSP.encode()), (b"x-frame-options", b"DENY"),
                     (b"cross-origin-opener-policy", b"same-origin")]
    return resp


def _redirect(location: str, *cookies: bytes) -> Response:
    resp = Response(302, b"", content_type="text/plain; charset=utf-8",
                    headers=[(b"location", location.encode())])
    resp.headers += [(b"set-cookie", c) for c in cookies]
    return _ui(resp)


class WebUi:
    """The ``/ui`` handler of one API (``Api(services, ui=WebUi)``)."""

    def __init__(self, api: Any) -> None:
        self.api = api
        self.services = api.services
        self.logins = Logins()
        self.browsers = Browsers()
        self._discovery: tuple[str, float, dict[str, Any]] | None = None

    async def __call__(self, req: Request) -> Response:
        path = req.path.rstrip("/") or "/"
        if req.method != "GET":
            return _ui(error(405, "the web viewer is read-only: GET only"))
        if path.startswith("/ui/static/"):
            return self._static(path[len("/ui/static/"):])
        if path == "/ui/login":
            return await self._login(req)
        if path == "/ui/callback":
            return await self._callback(req)
        if path == "/ui/logout":
            self.browsers.close(_cookies(req).get(COOKIE))
            return _with_cookies(_page(200, "Signed out", "You are signed out of the bastion "
                                       "viewer.", link=("/ui/login", "Sign in again")),
                                 _cookie(COOKIE, "", "/ui", 0))
        browser = self.browsers.get(_cookies(req).get(COOKIE), time.time())
        if path in PAGES:
            if browser is None:
                return _redirect("/ui/login")
            return self._static(PAGES[path], page=True)
        if _DATA.fullmatch(path):
            if browser is None:
                return _ui(error(401, "not signed in", hint="open /ui/login"))
            site = req.headers.get("sec-fetch-site")
            if site not in (None, "same-origin", "none"):
                return _ui(error(403, "cross-site request refused"))
            headers = {"authorization": f"Bearer {browser.token.reveal()}"}
            if "range" in req.headers:
                headers["range"] = req.headers["range"]
            inner = Request(method="GET", path="/api/v1/" + path[len("/ui/data/"):],
                            query=req.query, headers=headers, body=b"", client=req.client)
            return _ui(await self.api(inner))
        return _ui(error(404, f"no such page: {path}"))

    # -- files -----------------------------------------------------------------------
    def _static(self, name: str, page: bool = False) -> Response:
        ctype = "text/html; charset=utf-8" if page else STATIC.get(name)
        if ctype is None:
            return _ui(error(404, f"no such file: {name}"))
        data = resources.files("bastion.web").joinpath("static", name).read_bytes()
        resp = Response(200, data, content_type=ctype)
        if not page:
            resp.headers.append((b"cache-control", b"private, max-age=3600"))
        return _ui(resp)

    # -- sign-in ---------------------------------------------------------------------
    async def _endpoints(self, oidc: Any) -> dict[str, Any]:
        from bastion.identity.fetch import fetch_json
        cached = self._discovery
        if cached and cached[0] == oidc.issuer and cached[1] > time.time():
            return cached[2]
        url = oidc.issuer.rstrip("/") + "/.well-known/openid-configuration"
        doc = await asyncio.to_thread(fetch_json, url, ca_bundle=oidc.ca_bundle,
                                      timeout=oidc.timeout, what="OIDC discovery")
        self._discovery = (oidc.issuer, time.time() + DISCOVERY_TTL, doc)
        return doc

    def _redirect_uri(self, req: Request) -> str | None:
        host = req.headers.get("host", "")
        return f"https://{host}/ui/callback" if _HOST.fullmatch(host) else None

    async def _login(self, req: Request) -> Response:
        oidc = self.services.config.oidc
        if oidc is None or not oidc.web_client_id:
            return _page(503, "Web sign-in is off",
                         "Set [oidc] web_client_id in policy.toml to the issuer's client for "
                         "this viewer (authorization code with PKCE, redirect URI "
                         "https://HOST:PORT/ui/callback).")
        redirect_uri = self._redirect_uri(req)
        if redirect_uri is None:
            return _page(400, "Bad request", "The Host header is missing or malformed.")
        try:
            endpoint = (await self._endpoints(oidc))["authorization_endpoint"]
        except (BastionError, KeyError) as exc:
            return _page(503, "The issuer cannot be reached", str(exc))
        state, challenge = self.logins.start(redirect_uri, time.time())
        query = urllib.parse.urlencode({
            "client_id": oidc.web_client_id, "response_type": "code",
            "redirect_uri": redirect_uri, "scope": f"{oidc.audience[0]}/.default openid profile",
            "state": state, "code_challenge": challenge, "code_challenge_method": "S256"})
        sep = "&" if "?" in endpoint else "?"
        # Lax: the issuer's redirect back is a cross-site top-level GET
        return _redirect(endpoint + sep + query,
                         _cookie(LOGIN_COOKIE, state, "/ui/callback", 600, same_site="Lax"))

    async def _callback(self, req: Request) -> Response:
        clear = _cookie(LOGIN_COOKIE, "", "/ui/callback", 0, same_site="Lax")
        again = ("/ui/login", "Sign in again")
        login = self.logins.finish(req.arg("state") or "", _cookies(req).get(LOGIN_COOKIE),
                                   time.time())
        if login is None:
            return _with_cookies(_page(400, "Sign-in failed", "This sign-in was not started "
                                       "from this browser, was used already or is too old.",
                                       link=again), clear)
        if req.arg("error"):
            return _with_cookies(_page(403, "Sign-in refused by the issuer",
                                       f"{req.arg('error')}: {req.arg('error_description') or ''}",
                                       link=again), clear)
        oidc = self.services.config.oidc
        if oidc is None or not oidc.web_client_id:
            return _with_cookies(_page(503, "Web sign-in is off", "[oidc] web_client_id is not "
                                       "set in policy.toml."), clear)
        try:
            endpoint = (await self._endpoints(oidc))["token_endpoint"]
            tokens = await asyncio.to_thread(_post_form, endpoint, {
                "grant_type": "authorization_code", "client_id": oidc.web_client_id,
                "code": req.arg("code") or "", "redirect_uri": login.redirect_uri,
                "code_verifier": login.verifier.reveal()}, oidc)
            token = Secret(str(tokens["access_token"]))
            principal = await self.services.validator.validate(token.reveal())
        except TokenRejected as exc:
            return _with_cookies(_page(403, "Sign-in failed", f"token rejected: {exc.reason}",
                                       link=again), clear)
        except (BastionError, KeyError, TypeError) as exc:
            return _with_cookies(_page(502, "Sign-in failed", str(exc), link=again), clear)
        exp = principal.claims.get("exp")
        sid, lasts = self.browsers.open(token, str(principal.label),
                                        float(exp) if isinstance(exp, (int, float)) else None,
                                        time.time())
        audit.info("web sign-in by %s", principal.subject,
                   extra=log_fields("web_signin", principal=principal.subject, client=req.client))
        # a page of our own, not a redirect: the Strict cookie is sent on the next,
        # same-site navigation (not on a redirect chain that started at the issuer)
        return _with_cookies(_page(200, "Signed in", f"Signed in as {principal.label}.",
                                   link=("/ui/", "Continue"), refresh="/ui/"),
                             clear, _cookie(COOKIE, sid, "/ui", int(lasts)))


def _with_cookies(resp: Response, *cookies: bytes) -> Response:
    resp.headers += [(b"set-cookie", c) for c in cookies]
    return resp


def _post_form(url: str, form: dict[str, str], oidc: Any) -> dict[str, Any]:
    """POST a form to the issuer's token endpoint; its JSON answer, or BastionError."""
    from bastion.identity.fetch import check_url, ssl_context
    check_url(url, "token endpoint")
    ctx = ssl_context(oidc.ca_bundle) if url.startswith("https:") else None
    request = urllib.request.Request(url, data=urllib.parse.urlencode(form).encode(),
                                     headers={"Accept": "application/json",
                                              "Content-Type": "application/x-www-form-urlencoded"})
    try:
        with urllib.request.urlopen(request, timeout=oidc.timeout, context=ctx) as resp:
            doc = json.loads(resp.read(1 << 20))
    except urllib.error.HTTPError as exc:
        try:
            info = json.loads(exc.read(1 << 16))
        except ValueError:
            info = {}
        raise BastionError(f"the issuer refused the code: {info.get('error', exc.code)} "
                           f"{info.get('error_description', '')}".strip()) from None
    except (urllib.error.URLError, OSError, ValueError, ssl.SSLError) as exc:
        raise BastionError(f"cannot reach the token endpoint {url}: {exc}") from None
    if not isinstance(doc, dict):
        raise BastionError("the token endpoint did not answer a JSON object")
    return doc
