"""``[oidc]``, ``[settings]`` and ``[store]`` of policy.toml → :class:`OidcConfig`,
:class:`Settings` and :class:`StoreSettings`, each problem collected with where it is."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from bastion.config.check import Checker, duration, whole_number
from bastion.errors import ConfigError
from bastion.identity.fetch import is_loopback_host
from bastion.identity.oidcconfig import OidcConfig
from bastion.policy.selectors import check_principal_selector, check_target_selector
from bastion.store.location import StoreSettings, check as check_store

ENGINE_SETTINGS = ("default", "opaque")


@dataclass(frozen=True)
class Settings:
    approvers: tuple[str, ...] = ()
    reviewers: tuple[str, ...] = ()            # who may read sessions through the API
    reviewer_targets: tuple[str, ...] = ()     # target selectors reviewers are limited to
    admins: tuple[str, ...] = ()               # who may terminate sessions through the API
    approval_timeout: int = 300
    mask_live: bool = False
    env_allow: tuple[str, ...] = ()            # env requests passed upstream (others dropped)
    connect_timeout: float = 10.0
    upstream_idle_timeout: float = 30.0        # an upstream connection without channels is closed
    upstream_connects: int = 8                 # upstream connects in progress per target, then queued
    upstream_queue_timeout: float = 60.0       # longest wait in that queue, then refused
    recording_max_bytes: int = 256 * 1024 * 1024
    ciphers: tuple[str, ...] | None = None     # None: bastion.ssh.algs.DEFAULT_CIPHERS
    approval_window_max: int = 0               # longest grant window (s) approvers may give
    approval_webhook: str | None = None        # POSTed a JSON body when a request is created
    # answers without a token proof (bastion.approvals.proof) are refused unless this is
    # on, which only a loopback (dev/demo) [oidc] issuer allows
    approval_allow_unproven: bool = False
    # not a key: the issuers an answer's proof may come from, filled from [oidc] (the issuer,
    # and its Entra v1 form with allow_v1); empty: every proven answer is refused
    approval_issuers: tuple[str, ...] = ()
    # login abuse limits (bastion.ssh.limits), OpenSSH-like
    max_auth_tries: int = 6                    # failed logins on one connection, then disconnect
    login_grace_time: float = 30.0             # seconds to log in, then disconnect
    max_startups: int = 100                    # unauthenticated connections, all sources together
    max_startups_per_source: int = 10          # unauthenticated connections from one address
    session_max_after_expiry: int = 300        # s an open channel outlives its token (identity.expiry)
    store_transfers: bool = False              # keep sftp file contents, masked (docs/TRANSFERS.md)
    store_transfers_max: int = 16 * 1024 * 1024   # bytes kept per file; beyond: truncated


def parse_oidc(raw: dict, c: Checker, base: Path) -> OidcConfig | None:
    table = raw.get("oidc")
    if table is None:
        return None
    w = ("oidc",)
    if not isinstance(table, dict):
        c.add(w, "[oidc] must be a table")
        return None
    c.keys(table, ("issuer", "audience", "tenants", "subject_claim", "ca_bundle", "allow_v1",
                   "leeway", "jwks_refresh_interval", "timeout", "web_client_id"), w)
    issuer = c.string(table, "issuer", w, required=True)
    if issuer:
        url = urlparse(issuer)
        if url.scheme == "http" and not is_loopback_host(url.hostname):
            c.add(w + ("issuer",), "oidc.issuer must use https (http only for a loopback issuer)")
        elif url.scheme not in ("http", "https") or not url.hostname:
            c.add(w + ("issuer",), f"oidc.issuer is not an http(s) URL: {issuer!r}")
    audience = c.strings(table, "audience", w)
    if not audience:
        c.add(w + ("audience",), "oidc.audience is required (e.g. \"api://bastion\")")
    ca_bundle = c.string(table, "ca_bundle", w)
    if ca_bundle:
        ca_path = (base / ca_bundle).resolve()
        if not ca_path.is_file():
            c.add(w + ("ca_bundle",), f"oidc.ca_bundle {str(ca_path)!r} does not exist")
        ca_bundle = str(ca_path)
    if not issuer or not audience:
        return None
    return OidcConfig(
        issuer=issuer.rstrip("/") if issuer.endswith("//") else issuer,
        audience=audience,
        tenants=c.strings(table, "tenants", w) or (),
        subject_claim=c.string(table, "subject_claim", w),
        ca_bundle=ca_bundle,
        allow_v1=c.boolean(table, "allow_v1", w, False),
        leeway=int(c.number(table, "leeway", w, 60)),
        jwks_refresh_interval=int(c.number(table, "jwks_refresh_interval", w, 60)),
        timeout=float(c.number(table, "timeout", w, 10.0, minimum=0.1)),
        web_client_id=c.string(table, "web_client_id", w),
    )


def parse_settings(raw: dict, c: Checker) -> tuple[Settings, dict]:
    table = raw.get("settings", {})
    w = ("settings",)
    if not isinstance(table, dict):
        c.add(w, "[settings] must be a table")
        return Settings(), {}
    own = ("approvers", "reviewers", "reviewer_targets", "admins", "approval_timeout", "mask_live", "env_allow", "connect_timeout",
           "recording_max_bytes", "ciphers", "approval_window_max", "approval_webhook",
           "upstream_idle_timeout", "upstream_connects", "upstream_queue_timeout",
           "approval_allow_unproven",
           "max_auth_tries", "login_grace_time", "max_startups", "max_startups_per_source",
           "session_max_after_expiry", "store_transfers", "store_transfers_max")
    c.keys(table, own + ENGINE_SETTINGS, w)
    approvers = c.strings(table, "approvers", w) or ()
    reviewers = c.strings(table, "reviewers", w) or ()
    admins = c.strings(table, "admins", w) or ()
    reviewer_targets = c.strings(table, "reviewer_targets", w) or ()
    for sel in reviewer_targets:
        msg = check_target_selector(sel)
        if msg:
            c.add(w + ("reviewer_targets",), f"settings.reviewer_targets: {msg}")
    for key, selectors in (("approvers", approvers), ("reviewers", reviewers), ("admins", admins)):
        for sel in selectors:
            msg = check_principal_selector(sel)
            if msg:
                c.add(w + (key,), f"settings.{key}: {msg}")
    settings = Settings(
        approvers=approvers,
        reviewers=reviewers,
        reviewer_targets=reviewer_targets,
        admins=admins,
        approval_timeout=int(c.number(table, "approval_timeout", w, 300, minimum=1)),
        mask_live=c.boolean(table, "mask_live", w, False),
        env_allow=c.strings(table, "env_allow", w) or (),
        connect_timeout=float(c.number(table, "connect_timeout", w, 10.0, minimum=0.1)),
        upstream_idle_timeout=float(c.number(table, "upstream_idle_timeout", w, 30.0, minimum=0.1)),
        upstream_connects=whole_number(c, table, "upstream_connects", w, 8),
        upstream_queue_timeout=float(c.number(table, "upstream_queue_timeout", w, 60.0,
                                              minimum=0.1)),
        recording_max_bytes=int(c.number(table, "recording_max_bytes", w, 256 * 1024 * 1024,
                                         minimum=1024)),
        ciphers=c.strings(table, "ciphers", w),
        approval_window_max=duration(c, table, "approval_window_max", w),
        approval_webhook=_webhook(c, table, w),
        approval_allow_unproven=c.boolean(table, "approval_allow_unproven", w, False),
        max_auth_tries=whole_number(c, table, "max_auth_tries", w, 6),
        login_grace_time=float(c.number(table, "login_grace_time", w, 30.0, minimum=1)),
        max_startups=whole_number(c, table, "max_startups", w, 100),
        max_startups_per_source=whole_number(c, table, "max_startups_per_source", w, 10),
        session_max_after_expiry=int(c.number(table, "session_max_after_expiry", w, 300,
                                              minimum=0)),
        store_transfers=c.boolean(table, "store_transfers", w, False),
        store_transfers_max=whole_number(c, table, "store_transfers_max", w, 16 * 1024 * 1024),
    )
    if settings.max_startups_per_source > settings.max_startups:
        c.add(w + ("max_startups_per_source",),
              f"settings.max_startups_per_source ({settings.max_startups_per_source}) must not "
              f"exceed settings.max_startups ({settings.max_startups})")
    return settings, {k: v for k, v in table.items() if k in ENGINE_SETTINGS}


def answer_trust(settings: Settings, oidc: OidcConfig | None, c: Checker) -> Settings:
    """``approval_issuers`` from ``[oidc]``; ``approval_allow_unproven`` only for a dev issuer.

    Unproven answers (no validated token behind them) are a convenience for a dev or
    demo issuer on this machine; with a real issuer they would let anyone who can
    write the index approve, so the setting is refused there.
    """
    from dataclasses import replace
    issuers: tuple[str, ...] = ()
    if oidc is not None:
        issuers = (oidc.issuer,)
        if oidc.allow_v1:
            from bastion.identity.oidc import entra_v1_issuer
            v1 = entra_v1_issuer(oidc.issuer)
            issuers += (v1,) if v1 else ()
    if settings.approval_allow_unproven and (
            oidc is None or not is_loopback_host(urlparse(oidc.issuer).hostname)):
        c.add(("settings", "approval_allow_unproven"),
              "settings.approval_allow_unproven is only for a dev issuer on a loopback "
              "address: with a real [oidc] issuer every answer must carry its token proof")
    return replace(settings, approval_issuers=issuers)


def _webhook(c: Checker, table: dict, where: tuple) -> str | None:
    url = c.string(table, "approval_webhook", where)
    if not url:
        return None
    parsed = urlparse(url)
    if parsed.scheme == "http" and not is_loopback_host(parsed.hostname):
        c.add(where + ("approval_webhook",),
              "settings.approval_webhook must use https (http only for a loopback host)")
    elif parsed.scheme not in ("http", "https") or not parsed.hostname:
        c.add(where + ("approval_webhook",), f"settings.approval_webhook is not an http(s) URL: "
                                             f"{url!r}")
    elif parsed.username or parsed.password:
        c.add(where + ("approval_webhook",), "settings.approval_webhook must not carry "
                                             "credentials in the URL")
    else:
        return url
    return None


def parse_store(raw: dict[str, Any], c: Checker, base: Path) -> StoreSettings | None:
    """``[store]`` url / password_file / node (bastion.store.location); env overrides it."""
    table = raw.get("store")
    if table is None:
        return None
    if not isinstance(table, dict):
        c.add(("store",), "[store] must be a table")
        return None
    c.keys(table, ("url", "password_file", "node"), ("store",))
    values = {}
    for key in ("url", "password_file", "node"):
        value = table.get(key)
        if value is not None and not isinstance(value, str):
            c.add(("store", key), f"[store] {key} must be a string")
            return None
        values[key] = value
    if values["password_file"]:
        values["password_file"] = str(base / values["password_file"])
    try:
        return check_store(values["url"], values["password_file"], values["node"], "[store]")
    except ConfigError as exc:
        c.add(("store",), str(exc))
        return None
