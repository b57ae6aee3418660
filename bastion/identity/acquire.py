"""Agent-side token acquisition with msal (``bastion token``, ``bastion-askpass``).

Client credentials with a secret (read from a file) or a certificate (one PEM
file holding the private key and the certificate; msal signs a client
assertion), or an Azure managed identity.  msal's token cache is kept in a 0600
file (default ``$XDG_CACHE_HOME/bastion/msal-token-cache.json``, else
``~/.cache/bastion/``), so repeated calls return the same token until msal
considers it near expiry (5 minutes before ``exp``).

msal skips instance discovery here (``instance_discovery=False``): the
authority given is used as is, which is what lets the dev issuer
(``https://127.0.0.1:PORT/<tenant>``) work with only ``--ca-bundle``; for
``login.microsoftonline.com`` msal would skip it anyway.

Environment (used by ``bastion-askpass`` and as defaults of ``bastion token``):
``BASTION_CLIENT_ID``, ``BASTION_AUTHORITY``, ``BASTION_CLIENT_SECRET_FILE``,
``BASTION_CERTIFICATE``, ``BASTION_MANAGED_IDENTITY`` (1 to use it),
``BASTION_SCOPE`` (default ``api://bastion/.default``), ``BASTION_CA_BUNDLE``,
``BASTION_TOKEN_CACHE`` (a path, or ``off``).

Tokens, secrets and keys are never logged or put in an error message.  msal is
imported lazily: importing this module stays cheap.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from bastion.errors import IdentityError
from bastion.secret import Secret

DEFAULT_SCOPE = "api://bastion/.default"
CACHE_OFF = "off"
_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----.+?-----END \1-----\r?\n?", re.S)


@dataclass(frozen=True)
class AcquireOptions:
    client_id: str | None = None
    authority: str | None = None
    scope: str = DEFAULT_SCOPE
    client_secret_file: str | None = None
    certificate: str | None = None
    managed_identity: bool = False
    ca_bundle: str | None = None
    cache: str | None = None          # path; None → default; "off" → no cache file
    timeout: float = 30.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> "AcquireOptions":
        def get(name: str) -> str | None:
            return env.get(name) or None
        return cls(client_id=get("BASTION_CLIENT_ID"), authority=get("BASTION_AUTHORITY"),
                   scope=get("BASTION_SCOPE") or DEFAULT_SCOPE,
                   client_secret_file=get("BASTION_CLIENT_SECRET_FILE"),
                   certificate=get("BASTION_CERTIFICATE"),
                   managed_identity=(get("BASTION_MANAGED_IDENTITY") or "").lower()
                   in ("1", "true", "yes"),
                   ca_bundle=get("BASTION_CA_BUNDLE"), cache=get("BASTION_TOKEN_CACHE"))

    @property
    def configured(self) -> bool:
        """Enough settings to try an acquisition."""
        return self.managed_identity or bool(self.client_id and self.authority and
                                             (self.client_secret_file or self.certificate))


def default_cache_path(env: Mapping[str, str] = os.environ) -> Path:
    base = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "bastion" / "msal-token-cache.json"


def _read_private(path: str, what: str) -> bytes:
    try:
        return Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise IdentityError(f"cannot read {what} {path!r}: {exc.strerror}") from None


def load_certificate(path: str) -> dict:
    """msal's client_credential for a PEM file holding a private key and its certificate."""
    data = _read_private(path, "certificate file")
    key = cert = None
    for block in _PEM_BLOCK.finditer(data):
        kind = block.group(1)
        if kind.endswith(b"PRIVATE KEY") and key is None:
            key = block.group(0)
        elif kind == b"CERTIFICATE" and cert is None:
            cert = block.group(0)
    if key is None or cert is None:
        raise IdentityError(f"{path}: needs both a PEM private key and a PEM certificate",
                            hint="concatenate the key and the certificate into one file")
    if b"ENCRYPTED" in key:
        raise IdentityError(f"{path}: the private key is encrypted; give an unencrypted key")
    return {"private_key": key.decode(), "public_certificate": cert.decode()}


class _FileCache:
    """msal's SerializableTokenCache persisted to a 0600 file (atomic replace)."""

    def __init__(self, path: Path | None) -> None:
        import msal
        self.path = path
        self.cache = msal.SerializableTokenCache()
        if path is not None and path.is_file():
            try:
                self.cache.deserialize(path.read_text())
            except (OSError, ValueError):
                pass                     # a damaged cache is ignored and rewritten

    def save(self) -> None:
        if self.path is None or not self.cache.has_state_changed:
            return
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + f".{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, self.cache.serialize().encode())
        finally:
            os.close(fd)
        os.replace(tmp, self.path)


def _cache_path(opts: AcquireOptions) -> Path | None:
    if opts.cache == CACHE_OFF:
        return None
    return Path(opts.cache).expanduser() if opts.cache else default_cache_path()


def make_session(ca_bundle: str | None, timeout: float):
    """A requests session for msal that really uses ``ca_bundle``.

    requests lets ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE`` from the environment
    override a session's ``verify`` (psf/requests#3829), which would silently
    ignore ``--ca-bundle``; this session pins it.  Proxy settings from the
    environment still apply.
    """
    import requests

    class _Session(requests.Session):
        def request(self, method, url, **kwargs):
            kwargs.setdefault("timeout", timeout)
            return super().request(method, url, **kwargs)

        def merge_environment_settings(self, url, proxies, stream, verify, cert):
            settings = super().merge_environment_settings(url, proxies, stream, verify, cert)
            if ca_bundle:
                settings["verify"] = ca_bundle
            return settings

    session = _Session()
    if ca_bundle:
        session.verify = ca_bundle
    adapter = requests.adapters.HTTPAdapter(max_retries=1)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def _result_token(result: dict | None, where: str) -> Secret:
    if not result:
        raise IdentityError(f"{where}: no token and no error returned")
    if "access_token" in result:
        return Secret(result["access_token"])
    error = result.get("error", "unknown_error")
    description = (result.get("error_description") or "").strip().splitlines()
    detail = f": {description[0]}" if description else ""
    raise IdentityError(f"{where} failed: {error}{detail}",
                        hint="check the client id, its secret or certificate, the scope and "
                             "that the app is granted access to the API")


def acquire_token(opts: AcquireOptions) -> Secret:
    """An access token for ``opts.scope``, from the cache or the token endpoint.

    Raises IdentityError with msal's error and description (never secrets).
    """
    import requests
    import msal

    cache = _FileCache(_cache_path(opts))
    session = make_session(opts.ca_bundle, opts.timeout)
    try:
        if opts.managed_identity:
            identity = (msal.UserAssignedManagedIdentity(client_id=opts.client_id)
                        if opts.client_id else msal.SystemAssignedManagedIdentity())
            app = msal.ManagedIdentityClient(identity, http_client=session,
                                             token_cache=cache.cache)
            resource = opts.scope.removesuffix("/.default")
            result = app.acquire_token_for_client(resource=resource)
            where = "managed identity token request"
        else:
            if not opts.client_id or not opts.authority:
                raise IdentityError("a client id and an authority are needed",
                                    hint="pass --client-id and --authority (or set "
                                         "BASTION_CLIENT_ID and BASTION_AUTHORITY)")
            if opts.certificate:
                credential = load_certificate(opts.certificate)
            elif opts.client_secret_file:
                secret = _read_private(opts.client_secret_file, "client secret file")
                credential = secret.decode("utf-8", "replace").strip()
                if not credential:
                    raise IdentityError(f"client secret file {opts.client_secret_file!r} is empty")
            else:
                raise IdentityError("no client credential given",
                                    hint="pass --client-secret-file, --certificate or "
                                         "--managed-identity")
            app = msal.ConfidentialClientApplication(
                opts.client_id, client_credential=credential, authority=opts.authority,
                token_cache=cache.cache, http_client=session, instance_discovery=False)
            result = app.acquire_token_for_client(scopes=[opts.scope])
            where = f"token request to {opts.authority}"
    except IdentityError:
        raise
    except requests.exceptions.SSLError:
        raise IdentityError(f"TLS verification failed talking to {opts.authority}",
                            hint="pass --ca-bundle (BASTION_CA_BUNDLE) with the issuer's CA "
                                 "certificate") from None
    except requests.exceptions.RequestException as exc:
        raise IdentityError(f"cannot reach {opts.authority or 'the managed identity endpoint'}: "
                            f"{type(exc).__name__}") from None
    except ValueError as exc:           # msal: bad authority, discovery failed, bad key
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise IdentityError(f"msal refused the configuration: {first}",
                            hint="the authority must be https://HOST/TENANT") from None
    token = _result_token(result, where)
    cache.save()
    return token
