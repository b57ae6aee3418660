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
old one stays valid until swapped (see ``bastion.ssh.server``).  The sections are parsed by
:mod:`bastion.config.settings` ([oidc], [settings], [store]) and
:mod:`bastion.config.targets` ([[targets]], [[grants]], [[masks]]), problems collected by
:mod:`bastion.config.check`.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bastion.config.check import Checker, table_list
from bastion.config.settings import Settings, answer_trust, parse_oidc, parse_settings, parse_store
from bastion.config.targets import Grant, Mask, Target, parse_grants, parse_masks, parse_targets
from bastion.errors import ConfigError, Problem
from bastion.identity.oidcconfig import OidcConfig  # noqa: F401 - [oidc], re-exported
from bastion.identity.principal import Principal
from bastion.policy import Policy, compile_policy
from bastion.policy.selectors import any_principal_matches, any_target_matches
from bastion.store.location import StoreSettings
from bastion.tomlpos import TomlPositions


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

    @property
    def digest(self) -> str:
        """``sha256:...`` of what every node must enforce alike (bastion.config.digest)."""
        from bastion.config.digest import policy_digest
        return policy_digest(self.raw)

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


TOP_LEVEL = ("oidc", "settings", "targets", "grants", "rules", "masks", "store")


def parse_config(text: str, path: str = "policy.toml") -> BastionConfig:
    """Parse and validate policy.toml text; raise :class:`ConfigError` with every problem."""
    positions = TomlPositions(text)
    try:
        raw: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("not valid TOML", [Problem(str(exc))], path=path) from exc
    c = Checker()
    c.keys(raw, TOP_LEVEL, ())
    base = Path(path).resolve().parent
    oidc = parse_oidc(raw, c, base)
    settings, engine_settings = parse_settings(raw, c)
    settings = answer_trust(settings, oidc, c)
    targets = parse_targets(raw, c, base)
    grants = parse_grants(raw, c, targets)
    masks = parse_masks(raw, c)
    store = parse_store(raw, c, base)
    rules = table_list(raw, "rules", c)
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
