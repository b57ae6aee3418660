"""A local OIDC issuer shaped like Entra ID, for first runs and tests.

Serves over https on loopback, with its own CA (``<state>/ca.pem``)::

    GET  /{tenant}/v2.0/.well-known/openid-configuration   discovery
    GET  /{tenant}/discovery/v2.0/keys                      JWKS
    POST /{tenant}/oauth2/v2.0/token                        client credentials (secret or
                                                            certificate assertion), device code
    POST /{tenant}/oauth2/v2.0/devicecode                   device authorization
    GET  /{tenant}/oauth2/v2.0/authorize                    authorization code + PKCE
                                                            (bastion.identity.devauthz)

The issuer is ``https://127.0.0.1:PORT/{tenant}/v2.0`` and the msal authority
``https://127.0.0.1:PORT/{tenant}``: msal's tenant discovery asks for
``{authority}/v2.0/.well-known/openid-configuration``, which is served here, as
long as msal skips instance discovery (``instance_discovery=False``, which
``bastion token`` passes) and trusts ``ca.pem`` (``verify=``/``--ca-bundle``).

Library use (tests, ``bastion demo``)::

    with DevIssuer(tmp_path) as issuer:             # start() / stop()
        client = issuer.add_client("agent1", roles=["agents"])
        token = issuer.mint(client=client)          # or arbitrary claims / headers / keys
        config = issuer.oidc_config()               # an OidcConfig trusting ca.pem

Device codes are approved from code (:meth:`DevIssuer.approve_device_code`) or
automatically (``auto_approve=``).  Issued tokens are never stored or logged.
Not a production issuer: no rate limits, no assertion replay check, no consent.
"""

from __future__ import annotations

import json
import logging
import secrets
import ssl
import string
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable
from urllib.parse import parse_qs, urlsplit

from bastion.identity.devauthz import AuthorizationCodes
from bastion.identity.devca import ensure_tls, write_private
from bastion.identity.devflows import TokenEndpoint
from bastion.identity.devtokens import ClientRegistry, DevClient, Signer, SigningKey, b64url

log = logging.getLogger("bastion.identity.devissuer")

STATE_FILE = "issuer.json"
DEFAULT_AUDIENCE = "api://bastion"
MAX_BODY = 64 * 1024


@dataclass
class DeviceCode:
    device_code: str = field(repr=False)
    user_code: str
    client_id: str
    scopes: tuple[str, ...]
    expires_at: float
    status: str = "pending"               # pending | approved | denied | used
    user: dict = field(default_factory=dict)


class DevIssuer:
    """The dev issuer.  ``port=0`` picks a free port at :meth:`start`."""

    def __init__(self, state_dir: str | Path, host: str = "127.0.0.1", port: int = 0, *,
                 tenant_id: str | None = None, token_lifetime: int = 3600,
                 auto_approve: dict | None = None,
                 now: Callable[[], float] = time.time) -> None:
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        state = self._load_state()
        self.host = host
        self.port = port
        self.tenant_id = tenant_id or state.get("tenant_id") or str(uuid.uuid4())
        self.token_lifetime = token_lifetime
        self.auto_approve = auto_approve
        self.now = now
        hosts = (host,) if host == "localhost" else (host, "localhost")
        self.ca_path, self._cert_path, self._key_path = ensure_tls(self.state_dir, hosts)
        self.signer = Signer(self.state_dir)
        self.clients = ClientRegistry(self.state_dir)
        self.hits: Counter = Counter()
        self._devices: dict[str, DeviceCode] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._endpoint = TokenEndpoint(self)
        self.authz = AuthorizationCodes(self)
        self._save_state()

    # -- state ------------------------------------------------------------------------------

    def _load_state(self) -> dict:
        try:
            return json.loads((self.state_dir / STATE_FILE).read_text())
        except (OSError, ValueError):
            return {}

    def _save_state(self) -> None:
        data = {"tenant_id": self.tenant_id, "host": self.host, "port": self.port}
        write_private(self.state_dir / STATE_FILE, json.dumps(data, indent=2).encode())

    @staticmethod
    def saved_port(state_dir: str | Path) -> int | None:
        """The port a previous run listened on (so its issuer URL stays valid), if any."""
        try:
            return int(json.loads((Path(state_dir) / STATE_FILE).read_text()).get("port") or 0) \
                or None
        except (OSError, ValueError, TypeError):
            return None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> "DevIssuer":
        """Listen and serve in a background thread.  Returns self."""
        if self._server is not None:
            return self
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self._cert_path, self._key_path)
        server = _Server((self.host, self.port), _Handler)
        server.dev_issuer = self
        server.tls = context
        self._server = server
        self.port = server.server_address[1]
        self._save_state()
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="bastion-dev-issuer", daemon=True)
        self._thread.start()
        log.info("dev issuer listening: %s", self.issuer)
        return self

    def stop(self) -> None:
        """Stop serving and close the socket.  :meth:`start` may be called again."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    @property
    def running(self) -> bool:
        return self._server is not None

    def __enter__(self) -> "DevIssuer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- URLs --------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        if not self.port:
            raise RuntimeError("the dev issuer has no port yet: call start() first")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.port}"

    @property
    def authority(self) -> str:
        """What msal takes as ``authority`` (``--authority`` of ``bastion token``)."""
        return f"{self.base_url}/{self.tenant_id}"

    @property
    def issuer(self) -> str:
        return f"{self.authority}/v2.0"

    @property
    def token_endpoint(self) -> str:
        return f"{self.authority}/oauth2/v2.0/token"

    @property
    def device_endpoint(self) -> str:
        return f"{self.authority}/oauth2/v2.0/devicecode"

    @property
    def jwks_uri(self) -> str:
        return f"{self.authority}/discovery/v2.0/keys"

    def discovery(self) -> dict:
        return {
            "issuer": self.issuer,
            "authorization_endpoint": f"{self.authority}/oauth2/v2.0/authorize",
            "token_endpoint": self.token_endpoint,
            "device_authorization_endpoint": self.device_endpoint,
            "jwks_uri": self.jwks_uri,
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "response_modes_supported": ["query", "fragment", "form_post"],
            "code_challenge_methods_supported": ["S256"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nbf", "name", "oid", "tid",
                                 "preferred_username", "roles", "groups"],
            "request_uri_parameter_supported": False,
            "tenant_region_scope": None,
            "cloud_instance_name": "bastion.dev",
        }

    def oidc_config(self, audience: str = DEFAULT_AUDIENCE, **overrides):
        """An :class:`~bastion.identity.oidcconfig.OidcConfig` for this issuer, trusting its CA."""
        from bastion.identity.oidcconfig import OidcConfig
        values = {"issuer": self.issuer, "audience": (audience,), "ca_bundle": str(self.ca_path)}
        values.update(overrides)
        return OidcConfig(**values)

    # -- clients, keys, tokens ---------------------------------------------------------------

    def add_client(self, name: str, *, roles=(), secret: bool | str = True,
                   certificate: bool | bytes = False, client_id: str | None = None,
                   oid: str | None = None, write_files: bool = True) -> DevClient:
        """Register a client for client credentials (and device code).

        ``secret``: True generates one (returned once as ``client.secret`` and
        written to ``clients/NAME.secret``), a string sets it, False means none.
        ``certificate``: True generates a key + self-signed certificate (written
        to ``clients/NAME.pem``, also ``client.private_key_pem``), or pass a PEM
        certificate (bytes) whose key you hold.  Stored: hashes and certificates.
        """
        return self.clients.add(name, roles=roles, secret=secret, certificate=certificate,
                                client_id=client_id, oid=oid, write_files=write_files)

    def add_signing_key(self, alg: str = "RS256", *, published: bool = True,
                        kid: str | None = None) -> SigningKey:
        """A new signing key; published keys appear in the JWKS at once."""
        return self.signer.add_key(alg, kid=kid, published=published)

    def app_claims(self, client: DevClient | None, audience: str, now: float,
                   lifetime: int) -> dict:
        """Entra-shaped claims of an app-only (client credentials) access token."""
        if client is None:
            client_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{self.tenant_id}/test-client"))
            client = DevClient(client_id=client_id, name="test-client",
                               oid=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{client_id}/oid")))
        claims = {
            "aud": audience, "iss": self.issuer, "iat": int(now), "nbf": int(now),
            "exp": int(now) + lifetime, "azp": client.client_id, "appid": client.client_id,
            "azpacr": "1", "idtyp": "app", "name": client.name, "app_displayname": client.name,
            "oid": client.oid, "sub": client.oid, "tid": self.tenant_id,
            "uti": b64url(secrets.token_bytes(16)), "ver": "2.0",
        }
        if client.roles:
            claims["roles"] = list(client.roles)
        return claims

    def user_claims(self, user: dict, client_id: str, audience: str, scopes, now: float,
                    lifetime: int) -> dict:
        """Claims of a delegated (device code) access token for ``user``."""
        oid = user.get("oid") or str(uuid.uuid5(uuid.NAMESPACE_URL,
                                                 f"{self.tenant_id}/user/{user.get('name')}"))
        claims = {
            "aud": audience, "iss": self.issuer, "iat": int(now), "nbf": int(now),
            "exp": int(now) + lifetime, "azp": client_id, "azpacr": "0", "idtyp": "user",
            "name": user.get("name", "Dev User"),
            "preferred_username": user.get("username") or user.get("preferred_username")
            or "dev.user@bastion.dev",
            "oid": oid, "sub": oid, "tid": self.tenant_id, "scp": " ".join(scopes) or "access",
            "uti": b64url(secrets.token_bytes(16)), "ver": "2.0",
        }
        for key in ("roles", "groups"):
            if user.get(key):
                claims[key] = list(user[key])
        claims.update(user.get("claims") or {})
        return claims

    def mint(self, claims: dict | None = None, *, client: DevClient | None = None,
             audience: str = DEFAULT_AUDIENCE, lifetime: int | None = None,
             now: float | None = None, alg: str | None = None, kid: str | None = None,
             key=None, headers: dict | None = None, pad_to: int | None = None) -> str:
        """Mint a token.  Starts from :meth:`app_claims` for ``client``; ``claims``
        override them (a value of None removes that claim).  ``kid``/``alg``/``key``/
        ``headers`` pick the signing key and header (see :meth:`Signer.sign`).
        ``pad_to``: add an ``xms_pad`` claim until the token is at least that long.
        """
        now = self.now() if now is None else now
        body = self.app_claims(client, audience, now, lifetime or self.token_lifetime)
        for name, value in (claims or {}).items():
            if value is None:
                body.pop(name, None)
            else:
                body[name] = value
        token = self.signer.sign(body, kid=kid, alg=alg, key=key, headers=headers)
        if pad_to and len(token) < pad_to:
            body["xms_pad"] = ""
            base = len(self.signer.sign(body, kid=kid, alg=alg, key=key, headers=headers))
            pad = max(0, (pad_to - base) * 3 // 4)
            while True:
                body["xms_pad"] = "x" * pad
                token = self.signer.sign(body, kid=kid, alg=alg, key=key, headers=headers)
                if len(token) >= pad_to:
                    break
                pad += 1
        return token

    # -- device codes ------------------------------------------------------------------------

    def new_device_code(self, client_id: str, scopes: tuple[str, ...], lifetime: int = 900
                        ) -> DeviceCode:
        alphabet = string.ascii_uppercase.replace("O", "").replace("I", "") + "23456789"
        code = DeviceCode(device_code=secrets.token_urlsafe(32),
                          user_code="".join(secrets.choice(alphabet) for _ in range(9)),
                          client_id=client_id, scopes=scopes, expires_at=self.now() + lifetime)
        if self.auto_approve is not None:
            code.status, code.user = "approved", dict(self.auto_approve)
        with self._lock:
            self._devices[code.device_code] = code
        return code

    def device_code(self, device_code: str) -> DeviceCode | None:
        with self._lock:
            return self._devices.get(device_code)

    def pending_device_codes(self) -> list[DeviceCode]:
        with self._lock:
            return [c for c in self._devices.values()
                    if c.status == "pending" and c.expires_at > self.now()]

    def approve_device_code(self, user_code: str, *, name: str = "Dev User",
                            username: str | None = None, oid: str | None = None, roles=(),
                            groups=(), claims: dict | None = None) -> None:
        """Approve the pending device code ``user_code`` as this user.  KeyError if unknown."""
        user = {"name": name, "username": username, "oid": oid, "roles": list(roles),
                "groups": list(groups), "claims": dict(claims or {})}
        self._decide(user_code, "approved", user)

    def deny_device_code(self, user_code: str) -> None:
        self._decide(user_code, "denied", {})

    def _decide(self, user_code: str, status: str, user: dict) -> None:
        with self._lock:
            for code in self._devices.values():
                if code.user_code == user_code.replace("-", "").upper() and \
                        code.status == "pending":
                    code.status, code.user = status, user
                    return
        raise KeyError(f"no pending device code {user_code!r}")

    # -- HTTP --------------------------------------------------------------------------------

    def handle(self, method: str, path: str, form: dict[str, str]) -> tuple[int, dict]:
        """Route one request: (status, JSON body), or (302, {"location": URL}).  Pure apart
        from the issuer's state; a GET's ``form`` is its query."""
        prefix = f"/{self.tenant_id}"
        if method == "GET" and path == "/device":        # the device flow's verification_uri
            self.hits["device"] += 1
            return 200, {"message": "bastion dev issuer: there is no sign-in page; device codes "
                                    "are approved by the issuer process (dev-issuer "
                                    "--approve-as NAME, or DevIssuer.approve_device_code)"}
        if not path.startswith(prefix + "/"):
            self.hits["other"] += 1
            return 404, {"error": "invalid_tenant", "error_description": "unknown tenant or path"}
        route = path[len(prefix):]
        if method == "GET" and route == "/v2.0/.well-known/openid-configuration":
            self.hits["discovery"] += 1
            return 200, self.discovery()
        if method == "GET" and route == "/discovery/v2.0/keys":
            self.hits["jwks"] += 1
            return 200, self.signer.jwks()
        if method == "POST" and route == "/oauth2/v2.0/token":
            self.hits["token"] += 1
            return self._endpoint.token(form)
        if method == "GET" and route == "/oauth2/v2.0/authorize":
            self.hits["authorize"] += 1
            return self.authz.authorize(form)
        if method == "POST" and route == "/oauth2/v2.0/devicecode":
            self.hits["devicecode"] += 1
            return self._endpoint.devicecode(form)
        self.hits["other"] += 1
        return 404, {"error": "not_found", "error_description": f"{method} {route} is not served"}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    dev_issuer: DevIssuer
    tls: ssl.SSLContext

    def handle_error(self, request, client_address) -> None:  # TLS failures, resets
        log.debug("dev issuer: request from %s failed", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    server_version = "bastion-dev-issuer"
    timeout = 10

    def setup(self) -> None:
        self.request.settimeout(self.timeout)
        self.request = self.server.tls.wrap_socket(self.request, server_side=True)
        super().setup()

    def do_GET(self) -> None:  # noqa: N802
        query = parse_qs(urlsplit(self.path).query, keep_blank_values=True)
        self._dispatch("GET", {k: v[-1] for k, v in query.items()})

    def do_POST(self) -> None:  # noqa: N802
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY:
            self._send(413, {"error": "invalid_request", "error_description": "body too large"})
            return
        raw = parse_qs(self.rfile.read(length).decode("utf-8", "replace"), keep_blank_values=True)
        if any(len(v) > 1 for v in raw.values()):
            self._send(400, {"error": "invalid_request",
                             "error_description": "a parameter was repeated"})
            return
        self._dispatch("POST", {k: v[0] for k, v in raw.items()})

    def _dispatch(self, method: str, form: dict[str, str]) -> None:
        status, body = self.server.dev_issuer.handle(method, urlsplit(self.path).path, form)
        self._send(status, body)

    def _send(self, status: int, body: dict) -> None:
        if status == 302:
            self.send_response(302)
            self.send_header("Location", body["location"])
            self.send_header("Content-Length", "0")
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            return
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args) -> None:  # noqa: A002
        # The request line holds only method and path (tokens travel in bodies).
        log.debug("dev issuer: %s %s", self.command, urlsplit(self.path or "").path)
