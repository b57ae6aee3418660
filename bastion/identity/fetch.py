"""Blocking HTTPS GET of small JSON documents (OIDC discovery, JWKS).

Stdlib ``urllib`` with an ``ssl`` context built from an optional CA bundle; no
redirects (a redirect is refused, not followed); https only, except http to a
loopback host; a response size cap.  Callers in async code run :func:`fetch_json`
with ``asyncio.to_thread``.  Every failure is an :class:`IdentityError` whose
message names the URL and says what went wrong, never a raw urllib traceback.

Not here: caching and refresh policy (:mod:`bastion.identity.jwks`).
"""

from __future__ import annotations

import ipaddress
import json
import ssl
import urllib.error
import urllib.request
from urllib.parse import urlparse

from bastion.errors import IdentityError

MAX_DOCUMENT_BYTES = 1024 * 1024


def is_loopback_host(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(url: str, what: str) -> None:
    """Raise IdentityError unless ``url`` is https, or http to a loopback host."""
    parsed = urlparse(url)
    if parsed.scheme == "https" and parsed.hostname:
        return
    if parsed.scheme == "http" and is_loopback_host(parsed.hostname):
        return
    raise IdentityError(f"{what} {url!r} must be an https URL (http only for a loopback host)")


def ssl_context(ca_bundle: str | None) -> ssl.SSLContext:
    """Default verification (hostname + chain), trusting ``ca_bundle`` instead if given."""
    try:
        return ssl.create_default_context(cafile=ca_bundle) if ca_bundle else \
            ssl.create_default_context()
    except (OSError, ssl.SSLError) as exc:
        raise IdentityError(f"cannot load CA bundle {ca_bundle!r}: {exc}",
                            hint="point ca_bundle at a PEM file holding the issuer's CA") from exc


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: D401
        return None                     # urllib then raises HTTPError for the 3xx


def fetch_json(url: str, *, ca_bundle: str | None = None, timeout: float = 10.0,
               what: str = "document", context: ssl.SSLContext | None = None) -> dict:
    """GET ``url`` and return its JSON object.  Raises IdentityError on any failure."""
    check_url(url, what)
    handlers: list = [_NoRedirect()]
    if url.startswith("https:"):
        handlers.append(urllib.request.HTTPSHandler(context=context or ssl_context(ca_bundle)))
    opener = urllib.request.build_opener(*handlers)
    request = urllib.request.Request(url, headers={"Accept": "application/json",
                                                   "User-Agent": "bastion"})
    try:
        with opener.open(request, timeout=timeout) as response:
            body = response.read(MAX_DOCUMENT_BYTES + 1)
    except urllib.error.HTTPError as exc:
        raise IdentityError(f"{what} {url}: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        hint = None
        if isinstance(reason, ssl.SSLCertVerificationError):
            hint = "the issuer's TLS certificate is not trusted: set oidc.ca_bundle / --ca-bundle"
        raise IdentityError(f"{what} {url}: cannot connect: {reason}", hint=hint) from None
    except (OSError, ValueError) as exc:     # timeouts, resets, bad URLs
        raise IdentityError(f"{what} {url}: {type(exc).__name__}: {exc}") from None
    if len(body) > MAX_DOCUMENT_BYTES:
        raise IdentityError(f"{what} {url}: larger than {MAX_DOCUMENT_BYTES} bytes")
    try:
        doc = json.loads(body)
    except ValueError:
        raise IdentityError(f"{what} {url}: not JSON") from None
    if not isinstance(doc, dict):
        raise IdentityError(f"{what} {url}: not a JSON object")
    return doc
