"""The ``[oidc]`` table of policy.toml as a value: which issuer's tokens the bastion trusts.

Parsed and checked by :mod:`bastion.config` (which re-exports it); used by
:class:`bastion.identity.oidc.TokenValidator` and the dev issuer.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class OidcConfig:
    issuer: str
    audience: tuple[str, ...]
    tenants: tuple[str, ...] = ()
    subject_claim: str | None = None
    ca_bundle: str | None = None        # absolute path once loaded
    allow_v1: bool = False              # accept Entra v1 (sts.windows.net) tokens
    leeway: int = 60                    # seconds of clock skew for exp/nbf/iat
    jwks_refresh_interval: int = 60     # min seconds between JWKS refreshes on unknown kid
    timeout: float = 10.0               # HTTP timeout for discovery/JWKS
    web_client_id: str | None = None    # the web viewer's client (authorization code + PKCE)
