"""policy.toml → frozen, validated configuration objects.

The file has these parts (see the example ``policy.toml`` at the top of the repo):

``[oidc]``        how agent and approver tokens are validated (:class:`OidcConfig`)
``[settings]``    engine defaults (``default``, ``opaque``) and bastion settings
``[[targets]]``   the hosts agents may reach, with the vault key and pinned host key
``[[grants]]``    which principals may open which channel kinds on which targets
                  (``channels``: exec, shell, sftp, forward; left out, exec and shell only:
                  sftp must be named, docs/TRANSFERS.md)
``[[rules]]``     command rules, compiled by :func:`bastion.policy.compile_policy`
``[[masks]]``     custom secret detectors (regexes)

:func:`load_config` validates everything once and raises :class:`ConfigError`
listing every problem with its line number.  Reloading builds a new object; the
old one stays valid until swapped (see ``bastion.ssh.server``).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from bastion.errors import ConfigError, Problem
from bastion.identity.fetch import is_loopback_host
from bastion.identity.oidcconfig import OidcConfig  # noqa: F401 - [oidc], re-exported
from bastion.identity.principal import Principal
from bastion.policy import Policy, compile_policy
from bastion.proto.detectors import detectors_from_config
from bastion.store.location import StoreSettings, check as check_store
from bastion.policy.selectors import (
    any_principal_matches, any_target_matches, check_principal_selector, check_target_selector,
)
from bastion.tomlpos import TomlPositions

CHANNEL_KINDS = ("exec", "shell", "sftp", "forward")
ENGINE_SETTINGS = ("default", "opaque")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


@dataclass(frozen=True)
class Target:
    name: str
    host: str
    user: str
    key: str
    port: int = 22
    host_key: str | None = None         # "ssh-ed25519 AAAA..." pinned key
    known_hosts: str | None = None      # or a known_hosts file (absolute path once loaded)
    labels: tuple[str, ...] = ()
    shell: str = "auto"                 # mediated pty sessions: "auto" (bash, else sh), "bash", "sh"


@dataclass(frozen=True)
class Grant:
    who: tuple[str, ...] | None
    targets: tuple[str, ...] | None
    channels: tuple[str, ...]
    mask_live: bool = False
    forward: tuple[str, ...] = ()    # "HOST:PORT" globs the target may connect to for ssh -L


@dataclass(frozen=True)
class Mask:
    name: str
    regex: str
    replace: str


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


@dataclass(frozen=True)
class BastionConfig:
    path: str
    oidc: OidcConfig | None
    settings: Settings
    targets: dict[str, Target]
    grants: tuple[Grant, ...]
    masks: tuple[Mask, ...]
    policy: Policy
    raw: dict = field(default_factory=dict, repr=False, compare=False)
    store: StoreSettings | None = None      # [store]: None keeps SQLite (or BASTION_STORE_URL)

    def target(self, name: str) -> Target | None:
        return self.targets.get(name)

    def grant_for(self, principal: Principal, target: Target, channel: str) -> Grant | None:
        """The first grant letting ``principal`` open ``channel`` on ``target``, else None."""
        for grant in self.grants:
            if (channel in grant.channels and any_principal_matches(grant.who, principal)
                    and any_target_matches(grant.targets, target)):
                return grant
        return None

    def forward_for(self, principal: Principal, target: Target, host: str,
                    port: int) -> str | None:
        """The grant entry that lets ``principal`` forward to ``host:port`` from ``target``
        (``ssh -L``), else None.  Hosts are matched as given (never resolved here)."""
        import fnmatch
        for grant in self.grants:
            if not (grant.forward and any_principal_matches(grant.who, principal)
                    and any_target_matches(grant.targets, target)):
                continue
            for dest in grant.forward:
                ghost, _, gport = dest.rpartition(":")
                if (gport == "*" or gport == str(port)) and \
                        fnmatch.fnmatchcase(host.lower(), ghost.lower()):
                    return dest
        return None

    def mask_live_for(self, principal: Principal, target: Target, channel: str) -> bool:
        """Live masking: on in [settings], or on any grant covering this channel (strictest wins)."""
        if self.settings.mask_live:
            return True
        return any(g.mask_live and channel in g.channels
                   and any_principal_matches(g.who, principal) and any_target_matches(g.targets, target)
                   for g in self.grants)

    def may_reach(self, principal: Principal, target: Target) -> bool:
        return any(any_principal_matches(g.who, principal) and any_target_matches(g.targets, target)
                   for g in self.grants)


class _Checker:
    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def add(self, where: tuple, message: str) -> None:
        self.problems.append(Problem(message=message, where=where))

    def keys(self, table: dict, allowed: tuple[str, ...], where: tuple) -> None:
        for key in table:
            if key not in allowed:
                self.add(where + (key,), f"unknown key {'.'.join(map(str, where + (key,)))!r}"
                         f" (allowed: {', '.join(allowed)})")

    def string(self, table: dict, key: str, where: tuple, *, required: bool = False,
               default: str | None = None) -> str | None:
        value = table.get(key, default)
        if value is None:
            if required:
                self.add(where, f"{_w(where)}: missing required key {key!r}")
            return None
        if not isinstance(value, str) or not value:
            self.add(where + (key,), f"{_w(where)}.{key} must be a non-empty string")
            return None
        return value

    def strings(self, table: dict, key: str, where: tuple) -> tuple[str, ...] | None:
        if key not in table:
            return None
        value = table[key]
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.add(where + (key,), f"{_w(where)}.{key} must be a list of strings")
            return None
        return tuple(value)

    def number(self, table: dict, key: str, where: tuple, default, *, minimum=0):
        value = table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
            self.add(where + (key,), f"{_w(where)}.{key} must be a number >= {minimum}")
            return default
        return value

    def boolean(self, table: dict, key: str, where: tuple, default: bool) -> bool:
        value = table.get(key, default)
        if not isinstance(value, bool):
            self.add(where + (key,), f"{_w(where)}.{key} must be true or false")
            return default
        return value


def _w(where: tuple) -> str:
    if len(where) >= 2 and isinstance(where[1], int):
        return f"{where[0]}[{where[1]}]"
    return ".".join(map(str, where))


def _valid_public_key(text: str) -> bool:
    import asyncssh
    try:
        asyncssh.import_public_key(text)
    except (asyncssh.KeyImportError, ValueError, TypeError):
        return False
    return True


def _table_list(raw: dict, key: str, c: _Checker) -> list[dict]:
    value = raw.get(key, [])
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        c.add((key,), f"{key} must be an array of tables: write [[{key}]]")
        return []
    return value


def _oidc(raw: dict, c: _Checker, base: Path) -> OidcConfig | None:
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


def _settings(raw: dict, c: _Checker) -> tuple[Settings, dict]:
    table = raw.get("settings", {})
    w = ("settings",)
    if not isinstance(table, dict):
        c.add(w, "[settings] must be a table")
        return Settings(), {}
    own = ("approvers", "reviewers", "reviewer_targets", "admins", "approval_timeout", "mask_live", "env_allow", "connect_timeout",
           "recording_max_bytes", "ciphers", "approval_window_max", "approval_webhook",
           "upstream_idle_timeout",
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
        recording_max_bytes=int(c.number(table, "recording_max_bytes", w, 256 * 1024 * 1024,
                                         minimum=1024)),
        ciphers=c.strings(table, "ciphers", w),
        approval_window_max=_duration(c, table, "approval_window_max", w),
        approval_webhook=_webhook(c, table, w),
        approval_allow_unproven=c.boolean(table, "approval_allow_unproven", w, False),
        max_auth_tries=_whole(c, table, "max_auth_tries", w, 6),
        login_grace_time=float(c.number(table, "login_grace_time", w, 30.0, minimum=1)),
        max_startups=_whole(c, table, "max_startups", w, 100),
        max_startups_per_source=_whole(c, table, "max_startups_per_source", w, 10),
        session_max_after_expiry=int(c.number(table, "session_max_after_expiry", w, 300,
                                              minimum=0)),
        store_transfers=c.boolean(table, "store_transfers", w, False),
        store_transfers_max=_whole(c, table, "store_transfers_max", w, 16 * 1024 * 1024),
    )
    if settings.max_startups_per_source > settings.max_startups:
        c.add(w + ("max_startups_per_source",),
              f"settings.max_startups_per_source ({settings.max_startups_per_source}) must not "
              f"exceed settings.max_startups ({settings.max_startups})")
    return settings, {k: v for k, v in table.items() if k in ENGINE_SETTINGS}


def _answer_trust(settings: Settings, oidc: OidcConfig | None, c: _Checker) -> Settings:
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


def _whole(c: _Checker, table: dict, key: str, where: tuple, default: int) -> int:
    """A whole number >= 1 (a limit; 0 or a fraction would be a mistake, not "off")."""
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        c.add(where + (key,), f"{_w(where)}.{key} must be a whole number >= 1")
        return default
    return value


_DURATION = re.compile(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


def _duration(c: _Checker, table: dict, key: str, where: tuple) -> int:
    """Seconds from an integer or a string like ``"15m"``, ``"1h30m"``, ``"90s"``."""
    value = table.get(key, 0)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    m = _DURATION.fullmatch(value.strip()) if isinstance(value, str) else None
    if m is None or not value.strip():
        c.add(where + (key,), f"{_w(where)}.{key} must be seconds (an integer >= 0) or a "
                              "duration like \"15m\", \"1h30m\"")
        return 0
    hours, minutes, seconds = (int(g or 0) for g in m.groups())
    return hours * 3600 + minutes * 60 + seconds


def _webhook(c: _Checker, table: dict, where: tuple) -> str | None:
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


def _targets(raw: dict, c: _Checker, base: Path) -> dict[str, Target]:
    targets: dict[str, Target] = {}
    for i, table in enumerate(_table_list(raw, "targets", c)):
        w = ("targets", i)
        c.keys(table, ("name", "host", "port", "user", "key", "host_key", "known_hosts", "labels",
                       "shell"), w)
        name = c.string(table, "name", w, required=True)
        host = c.string(table, "host", w, required=True)
        user = c.string(table, "user", w, required=True)
        key = c.string(table, "key", w, required=True)
        port = c.number(table, "port", w, 22, minimum=1)
        if isinstance(port, float) or port > 65535:
            c.add(w + ("port",), f"{_w(w)}.port must be an integer 1-65535")
        host_key = c.string(table, "host_key", w)
        known_hosts = c.string(table, "known_hosts", w)
        if not host_key and not known_hosts:
            c.add(w, f"{_w(w)}: pin the upstream host key with host_key = \"ssh-ed25519 AAAA...\""
                     " or known_hosts = \"path\" (bastion never trusts on first use)")
        if host_key and not _valid_public_key(host_key):
            c.add(w + ("host_key",), f"{_w(w)}.host_key is not an OpenSSH public key "
                                     "(\"ssh-ed25519 AAAA...\", e.g. from ssh-keyscan)")
        if known_hosts:
            known_hosts = str((base / known_hosts).resolve())
        labels = c.strings(table, "labels", w) or ()
        shell = c.string(table, "shell", w) or "auto"
        if shell not in ("auto", "bash", "sh"):
            c.add(w + ("shell",), f"{_w(w)}.shell must be \"auto\", \"bash\" or \"sh\" "
                                  "(the shell that runs a mediated pty session)")
        if name and not _NAME.fullmatch(name):
            c.add(w + ("name",), f"{_w(w)}.name {name!r} may hold only letters, digits, . _ -")
        if name and name in targets:
            c.add(w + ("name",), f"duplicate target name {name!r}")
        if name and host and user and key:
            targets[name] = Target(name=name, host=host, port=int(port), user=user, key=key,
                                   host_key=host_key, known_hosts=known_hosts, labels=labels,
                                   shell=shell)
    return targets


def _grants(raw: dict, c: _Checker, targets: dict[str, Target]) -> tuple[Grant, ...]:
    grants = []
    for i, table in enumerate(_table_list(raw, "grants", c)):
        w = ("grants", i)
        c.keys(table, ("who", "targets", "channels", "mask_live", "forward"), w)
        who = c.strings(table, "who", w)
        for sel in who or ():
            msg = check_principal_selector(sel)
            if msg:
                c.add(w + ("who",), f"{_w(w)}.who: {msg}")
        tsel = c.strings(table, "targets", w)
        for sel in tsel or ():
            msg = check_target_selector(sel)
            if msg:
                c.add(w + ("targets",), f"{_w(w)}.targets: {msg}")
            elif targets and not any(any_target_matches((sel,), t) for t in targets.values()):
                c.add(w + ("targets",), f"{_w(w)}.targets: {sel!r} matches no [[targets]] entry")
        channels = c.strings(table, "channels", w)
        if channels is None:
            channels = ("exec", "shell")
        for ch in channels:
            if ch not in CHANNEL_KINDS:
                c.add(w + ("channels",), f"{_w(w)}.channels: unknown kind {ch!r}"
                                         f" (use {', '.join(CHANNEL_KINDS)})")
        forward = c.strings(table, "forward", w) or ()
        for dest in forward:
            host, sep, port = dest.rpartition(":")
            if not sep or not host or not (port == "*" or (port.isdigit() and 0 < int(port) < 65536)):
                c.add(w + ("forward",), f"{_w(w)}.forward: {dest!r} must be HOST:PORT "
                                        f"(HOST may be a glob, PORT a number or *), "
                                        f"e.g. \"127.0.0.1:5432\"")
        grants.append(Grant(who=who, targets=tsel, channels=channels,
                            mask_live=c.boolean(table, "mask_live", w, False),
                            forward=forward))
    return tuple(grants)


def _masks(raw: dict, c: _Checker) -> tuple[Mask, ...]:
    masks = []
    names = set()
    for i, table in enumerate(_table_list(raw, "masks", c)):
        w = ("masks", i)
        c.keys(table, ("name", "regex", "replace"), w)
        name = c.string(table, "name", w, required=True)
        regex = c.string(table, "regex", w, required=True)
        if name in names:
            c.add(w + ("name",), f"duplicate mask name {name!r}")
        names.add(name)
        if regex:
            try:
                re.compile(regex)
            except re.error as exc:
                c.add(w + ("regex",), f"{_w(w)}.regex is not a valid regular expression: {exc}")
                regex = None
            except (RecursionError, OverflowError, MemoryError) as exc:
                c.add(w + ("regex",), f"{_w(w)}.regex is too complex to compile "
                                      f"({type(exc).__name__}): simplify it")
                regex = None
        replace = c.string(table, "replace", w, default=f"[MASKED:{name}]")
        if name and regex:
            mask = Mask(name=name, regex=regex, replace=replace or f"[MASKED:{name}]")
            try:                    # the masker compiles it as a bytes pattern: check that too
                detectors_from_config([mask])
            except ConfigError as exc:
                for p in exc.problems or [Problem(str(exc))]:
                    c.add(w + ("regex",), f"{_w(w)}.regex: {p.message}")
                continue
            masks.append(mask)
    return tuple(masks)


TOP_LEVEL = ("oidc", "settings", "targets", "grants", "rules", "masks", "store")


def _store(raw: dict[str, Any], c: _Checker, base: Path) -> StoreSettings | None:
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


def parse_config(text: str, path: str = "policy.toml") -> BastionConfig:
    """Parse and validate policy.toml text; raise :class:`ConfigError` with every problem."""
    positions = TomlPositions(text)
    try:
        raw: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("not valid TOML", [Problem(str(exc))], path=path) from exc
    c = _Checker()
    c.keys(raw, TOP_LEVEL, ())
    base = Path(path).resolve().parent
    oidc = _oidc(raw, c, base)
    settings, engine_settings = _settings(raw, c)
    settings = _answer_trust(settings, oidc, c)
    targets = _targets(raw, c, base)
    grants = _grants(raw, c, targets)
    masks = _masks(raw, c)
    store = _store(raw, c, base)
    rules = _table_list(raw, "rules", c)
    policy = None
    try:
        policy = compile_policy(engine_settings, rules)
    except ConfigError as exc:
        c.problems.extend(exc.problems)
    if c.problems:
        problems = [Problem(p.message, line=p.line or positions.line(p.where), where=p.where)
                    for p in c.problems]
        problems.sort(key=lambda p: (p.line or 0))
        raise ConfigError(f"{len(problems)} problem(s)", problems, path=path,
                          hint="fix the lines named and run `bastion policy check`")
    return BastionConfig(path=path, oidc=oidc, settings=settings, targets=targets,
                         grants=grants, masks=masks, policy=policy, raw=raw, store=store)


def load_config(path: str | Path) -> BastionConfig:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError("policy file not found", path=str(p),
                          hint="pass --policy PATH or set BASTION_POLICY") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read policy file: {exc.strerror}", path=str(p)) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"policy file is not UTF-8 text (byte {exc.start})", path=str(p),
                          hint="save it as UTF-8") from exc
    return parse_config(text, str(p))
