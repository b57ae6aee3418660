"""Validate an OIDC access token (a signed JWT) and map it to a Principal.

:class:`TokenValidator` is built from :class:`bastion.identity.oidcconfig.OidcConfig`.  The
checks, in order; the first that fails raises :class:`TokenRejected` with a
short reason that is safe to log (the token itself is never logged, not even a
prefix):

======================  ===================================================
size and shape          at most 16 KB, ASCII, three base64url parts: "token
                        too large", "malformed"
header ``alg``          asymmetric only (RS/PS 256-512, ES256/384/512,
                        EdDSA): "alg none not allowed", "symmetric alg not
                        allowed", "unsupported alg"; a ``crit`` header is
                        refused ("unsupported crit header")
header ``kid``          required, must be in the issuer's JWKS (refetched on
                        an unknown kid, rate limited): "missing kid",
                        "unknown kid"
key vs alg              kty/crv must fit the alg and a JWK ``alg`` must equal
                        it; RSA keys of at least 2048 bits: "key/alg mismatch",
                        "weak key"
signature               "bad signature"
``iss``                 exactly the configured issuer; with ``allow_v1`` also
                        ``https://sts.windows.net/{tenant}/``: "wrong issuer"
``aud``                 one of the configured audiences: "wrong audience"
``exp`` ``nbf`` ``iat`` with ``leeway`` seconds: "expired", "not yet valid",
                        "issued in the future"
``tid``                 in ``tenants`` when that list is set: "wrong tenant"
subject                 ``subject_claim``, else ``oid``, else ``sub``:
                        "missing claim oid/sub"
======================  ===================================================

A required claim that is absent gives "missing claim NAME".  When the issuer
cannot be reached and no keys are cached, :class:`IdentityError` is raised (the
caller denies the login).  Discovery, JWKS fetching and caching live in
:mod:`bastion.identity.jwks`.  The clock is injectable (``now=``).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import time
from typing import TYPE_CHECKING, Callable
from urllib.parse import urlparse

import jwt
from jwt.api_jws import PyJWS

from bastion.errors import ConfigError, TokenRejected
from bastion.identity.chunking import MAX_TOKEN_BYTES
from bastion.identity.jwks import DEFAULT_MAX_AGE, KeyCache
from bastion.identity.principal import Principal
from bastion.secret import Secret

if TYPE_CHECKING:
    from bastion.identity.oidcconfig import OidcConfig

log = logging.getLogger("bastion.identity")

ALLOWED_ALGS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
                "ES256", "ES384", "ES512", "EdDSA")
_EC_CURVE = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}
_OKP_CURVES = ("Ed25519", "Ed448")
MIN_RSA_BITS = 2048


def _b64json(segment: str) -> dict:
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        value = json.loads(raw)
    except (binascii.Error, ValueError):
        raise TokenRejected("malformed") from None
    if not isinstance(value, dict):
        raise TokenRejected("malformed")
    return value


def key_fits_alg(jwk: dict, alg: str) -> bool:
    """True if a JWK may verify a signature made with ``alg``."""
    if jwk.get("alg") is not None and jwk.get("alg") != alg:
        return False
    kty = jwk.get("kty")
    if alg[:2] in ("RS", "PS"):
        return kty == "RSA"
    if alg in _EC_CURVE:
        return kty == "EC" and jwk.get("crv") == _EC_CURVE[alg]
    if alg == "EdDSA":
        return kty == "OKP" and jwk.get("crv") in _OKP_CURVES
    return False


def _rsa_bits(jwk: dict) -> int:
    n = jwk.get("n")
    if not isinstance(n, str):
        return 0
    try:
        return int.from_bytes(base64.urlsafe_b64decode(n + "=" * (-len(n) % 4)), "big").bit_length()
    except (binascii.Error, ValueError):
        return 0


def _number(claims: dict, name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            not math.isfinite(value):                 # json.loads accepts NaN and Infinity
        raise TokenRejected("malformed")
    return float(value)


def entra_v1_issuer(issuer: str) -> str | None:
    """``https://sts.windows.net/{tenant}/`` for an issuer whose path starts with the tenant."""
    parts = [p for p in urlparse(issuer).path.split("/") if p]
    if len(parts) >= 1 and parts[0] not in ("common", "organizations", "consumers"):
        return f"https://sts.windows.net/{parts[0]}/"
    return None


class TokenValidator:
    """Validates tokens of one issuer; see the module doc for the checks.

    ``now`` returns the current time in seconds since the epoch; it drives both
    the claim checks and the JWKS refresh rate limit.
    """

    def __init__(self, config: OidcConfig, *, now: Callable[[], float] = time.time,
                 max_key_age: float = DEFAULT_MAX_AGE) -> None:
        self.config = config
        self._now = now
        issuers = {config.issuer}
        if config.allow_v1:
            v1 = entra_v1_issuer(config.issuer)
            if v1 is None:
                raise ConfigError("oidc.allow_v1 needs an issuer whose path starts with the "
                                  "tenant id, e.g. https://login.microsoftonline.com/<tenant>/v2.0")
            issuers.add(v1)
        self.issuers = frozenset(issuers)
        self.keys = KeyCache(config.issuer, ca_bundle=config.ca_bundle, timeout=config.timeout,
                             refresh_interval=config.jwks_refresh_interval,
                             max_age=max_key_age, now=now)
        self._jws = PyJWS()

    async def refresh(self) -> None:
        """Fetch discovery and keys now (e.g. at start-up).  Raises IdentityError."""
        await self.keys.refresh()

    async def validate(self, token: "Secret[str] | str") -> Principal:
        """The Principal a valid token names (``token`` is revealed here and nowhere else).

        Raises TokenRejected(reason) for a bad token, IdentityError when the
        issuer's keys cannot be obtained at all.  The reason is logged (at debug) on
        the ``bastion.identity`` logger; the token never is.
        """
        try:
            principal = await self._validate(token.reveal() if isinstance(token, Secret)
                                             else token)
        except TokenRejected as exc:
            # debug: the caller logs the refusal, rate-limited per source (bastion.ssh.outer)
            log.debug("token rejected: %s", exc.reason)
            raise
        log.info("token accepted: subject=%s app=%s tenant=%s", principal.subject,
                 principal.app_id or "-", principal.tenant or "-")
        return principal

    async def _validate(self, token: str) -> Principal:
        if not isinstance(token, str):
            raise TokenRejected("malformed")
        if len(token) > MAX_TOKEN_BYTES:
            raise TokenRejected("token too large")
        token = token.strip()
        if not token.isascii():
            raise TokenRejected("malformed")
        parts = token.split(".")
        if len(parts) != 3 or not parts[0] or not parts[1]:
            raise TokenRejected("malformed")
        header = _b64json(parts[0])
        alg = header.get("alg")
        if not isinstance(alg, str):
            raise TokenRejected("malformed")
        if alg.lower() == "none":
            raise TokenRejected("alg none not allowed")
        if alg.upper().startswith("HS"):
            raise TokenRejected("symmetric alg not allowed")
        if alg not in ALLOWED_ALGS:
            raise TokenRejected("unsupported alg")
        if "crit" in header or "b64" in header:
            raise TokenRejected("unsupported crit header")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise TokenRejected("missing kid")
        jwk = await self.keys.key(kid)       # IdentityError if no keys can be had at all
        if jwk is None:
            raise TokenRejected("unknown kid")
        return self.check(token, alg, jwk)

    def check(self, token: str, alg: str, jwk: dict) -> Principal:
        """Signature and claims, given the key (synchronous, no IO)."""
        if not key_fits_alg(jwk, alg):
            raise TokenRejected("key/alg mismatch")
        if jwk.get("kty") == "RSA" and _rsa_bits(jwk) < MIN_RSA_BITS:
            raise TokenRejected("weak key")
        try:
            key = jwt.PyJWK(jwk, algorithm=alg).key
        except jwt.PyJWTError:
            raise TokenRejected("key/alg mismatch") from None
        try:
            payload = self._jws.decode_complete(token, key, algorithms=[alg])["payload"]
        except jwt.InvalidSignatureError:
            raise TokenRejected("bad signature") from None
        except jwt.PyJWTError:
            raise TokenRejected("malformed") from None
        try:
            claims = json.loads(payload)
        except ValueError:
            raise TokenRejected("malformed") from None
        if not isinstance(claims, dict):
            raise TokenRejected("malformed")
        self._check_claims(claims)
        try:
            return Principal.from_claims(claims, subject_claim=self.config.subject_claim)
        except KeyError as exc:
            raise TokenRejected(f"missing claim {exc.args[0]}") from None

    def _check_claims(self, claims: dict) -> None:
        cfg = self.config
        for name in ("iss", "aud", "exp"):
            if name not in claims:
                raise TokenRejected(f"missing claim {name}")
        if not isinstance(claims["iss"], str) or claims["iss"] not in self.issuers:
            raise TokenRejected("wrong issuer")
        aud = claims["aud"]
        auds = [aud] if isinstance(aud, str) else aud
        if not isinstance(auds, list) or not all(isinstance(a, str) for a in auds):
            raise TokenRejected("malformed")
        if not set(auds) & set(cfg.audience):
            raise TokenRejected("wrong audience")
        now = self._now()
        exp = _number(claims, "exp")
        nbf = _number(claims, "nbf")
        iat = _number(claims, "iat")
        if now > exp + cfg.leeway:
            raise TokenRejected("expired")
        if nbf is not None and nbf > now + cfg.leeway:
            raise TokenRejected("not yet valid")
        if iat is not None and iat > now + cfg.leeway:
            raise TokenRejected("issued in the future")
        if cfg.tenants:
            tid = claims.get("tid")
            if not tid:
                raise TokenRejected("missing claim tid")
            if tid not in cfg.tenants:
                raise TokenRejected("wrong tenant")
