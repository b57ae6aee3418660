"""OIDC discovery and the JWKS cache: which public keys may sign tokens.

:class:`KeyCache` fetches ``{issuer}/.well-known/openid-configuration``, checks
that the document's ``issuer`` is exactly the configured one, fetches its
``jwks_uri`` and keeps the signing keys by ``kid``.  Refresh rules:

* first use: fetch (a failed attempt is retried at most every few seconds, and
  with no keys at all the caller gets :class:`IdentityError`);
* unknown ``kid``: refetch, at most once per ``refresh_interval`` seconds, so a
  flood of tokens with made-up kids costs the issuer one request per interval;
* keys older than ``max_age``: refetch on the next use (same rate limit), so a
  key the issuer withdrew stops being accepted;
* the issuer unreachable: the cached keys stay in use, a warning is logged.

Keys kept: ``kty`` RSA, EC or OKP with a string ``kid`` and ``use`` absent or
``sig``; symmetric (``oct``) keys are never kept.  Matching a key to a token's
``alg`` is :mod:`bastion.identity.oidc`'s job.  The clock is injected (``now``)
so tests drive the rate limit without sleeping.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable

from bastion.errors import IdentityError
from bastion.identity.fetch import check_url, fetch_json, ssl_context

log = logging.getLogger("bastion.identity")

KEPT_KTY = ("RSA", "EC", "OKP")
RETRY_WITHOUT_KEYS = 5.0          # seconds between attempts while we hold no keys at all
DEFAULT_MAX_AGE = 24 * 3600       # refetch keys at least daily


def parse_jwks(doc: dict) -> dict[str, dict]:
    """The usable signing keys of a JWKS document, by kid."""
    keys = doc.get("keys")
    if not isinstance(keys, list):
        raise IdentityError("JWKS document has no 'keys' list")
    out: dict[str, dict] = {}
    for jwk in keys:
        if not isinstance(jwk, dict):
            continue
        kid, kty, use = jwk.get("kid"), jwk.get("kty"), jwk.get("use")
        if not isinstance(kid, str) or not kid or kty not in KEPT_KTY:
            continue
        if use is not None and use != "sig":
            continue
        out.setdefault(kid, dict(jwk))
    return out


class KeyCache:
    """Discovery + JWKS for one issuer, cached; see the module doc for refresh rules."""

    def __init__(self, issuer: str, *, ca_bundle: str | None = None, timeout: float = 10.0,
                 refresh_interval: float = 60.0, max_age: float = DEFAULT_MAX_AGE,
                 now: Callable[[], float] = time.time) -> None:
        self.issuer = issuer
        self.discovery_url = issuer.rstrip("/") + "/.well-known/openid-configuration"
        check_url(self.discovery_url, "OIDC discovery URL")
        self._ca_bundle = ca_bundle
        self._timeout = timeout
        self._refresh_interval = refresh_interval
        self._max_age = max_age
        self._now = now
        self._context = None
        self._keys: dict[str, dict] = {}
        self._loaded_at: float | None = None      # last successful fetch
        self._attempted_at: float | None = None   # last attempt, successful or not
        self._last_error: IdentityError | None = None
        self._lock = asyncio.Lock()
        self.fetches = 0                          # completed refresh attempts (for tests/metrics)

    @property
    def kids(self) -> tuple[str, ...]:
        return tuple(self._keys)

    def _fetch(self, url: str, what: str) -> dict:
        if self._context is None and url.startswith("https:"):
            self._context = ssl_context(self._ca_bundle)
        return fetch_json(url, ca_bundle=self._ca_bundle, timeout=self._timeout, what=what,
                          context=self._context)

    def load_blocking(self) -> dict[str, dict]:
        """Fetch discovery, then the JWKS; return the keys.  Raises IdentityError."""
        doc = self._fetch(self.discovery_url, "OIDC discovery")
        if doc.get("issuer") != self.issuer:
            raise IdentityError(
                f"OIDC discovery at {self.discovery_url} names issuer {doc.get('issuer')!r}, "
                f"not the configured {self.issuer!r}",
                hint="set oidc.issuer to exactly the issuer the discovery document names")
        jwks_uri = doc.get("jwks_uri")
        if not isinstance(jwks_uri, str):
            raise IdentityError(f"OIDC discovery at {self.discovery_url} has no jwks_uri")
        check_url(jwks_uri, "jwks_uri")
        keys = parse_jwks(self._fetch(jwks_uri, "JWKS"))
        if not keys:
            raise IdentityError(f"JWKS at {jwks_uri} holds no usable signing key")
        return keys

    async def refresh(self) -> None:
        """Fetch now, ignoring the rate limit.  Raises IdentityError on failure."""
        async with self._lock:
            await self._attempt()
        if self._last_error is not None:
            raise self._last_error

    async def _attempt(self) -> None:
        self._attempted_at = self._now()
        try:
            keys = await asyncio.to_thread(self.load_blocking)
        except IdentityError as exc:
            self._last_error = exc
            if self._keys:
                log.warning("OIDC keys not refreshed, still using %d cached key(s): %s",
                            len(self._keys), exc)
            else:
                log.warning("OIDC keys unavailable: %s", exc)
        else:
            added = set(keys) - set(self._keys)
            removed = set(self._keys) - set(keys)
            if added or removed:
                log.info("OIDC keys from %s: %d key(s), %d new, %d withdrawn",
                         self.issuer, len(keys), len(added), len(removed))
            self._keys = keys
            self._loaded_at = self._now()
            self._last_error = None
        finally:
            self.fetches += 1

    def _may_attempt(self, interval: float) -> bool:
        return self._attempted_at is None or self._now() - self._attempted_at >= interval

    def _stale(self) -> bool:
        return self._loaded_at is None or self._now() - self._loaded_at >= self._max_age

    async def key(self, kid: str) -> dict | None:
        """The JWK for ``kid``, refreshing per the rules above; None if unknown.

        Raises IdentityError only when no keys are held at all and they cannot be
        fetched.
        """
        if kid in self._keys and not self._stale():
            return self._keys[kid]
        async with self._lock:
            if not self._keys:
                if self._may_attempt(min(RETRY_WITHOUT_KEYS, self._refresh_interval)):
                    await self._attempt()
                if not self._keys:
                    raise self._last_error or IdentityError(
                        f"no OIDC signing keys for {self.issuer} yet")
            elif (kid not in self._keys or self._stale()) and \
                    self._may_attempt(self._refresh_interval):
                await self._attempt()
            return self._keys.get(kid)
