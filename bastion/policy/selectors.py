"""Principal and target selectors, shared by ``[[rules]]`` and ``[[grants]]``.

Principal selectors (``who``):

=============  ==========================================
``*``          every principal
``role:NAME``  a value of the ``roles`` claim
``group:ID``   a value of the ``groups`` claim
``app:ID``     the app id (``azp`` / ``appid``)
``sub:ID``     the subject (``oid`` / ``sub``)
``tenant:ID``  the tenant (``tid``)
=============  ==========================================

The value part may be a glob (``role:deploy-*``).  Matching is case-sensitive.

Target selectors (``targets``): ``label:NAME`` matches a target carrying that
label; anything else is a glob on the target name (``web*``).

Pure: no IO.  :func:`check_principal_selector` and :func:`check_target_selector`
return an error message for a selector that can never match anything.
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Iterable, Protocol, Sequence

PRINCIPAL_KINDS = ("role", "group", "app", "sub", "tenant")


class PrincipalLike(Protocol):
    """What selectors read of a principal (read-only: frozen dataclasses fit)."""

    @property
    def subject(self) -> str: ...
    @property
    def tenant(self) -> str: ...
    @property
    def app_id(self) -> str | None: ...
    @property
    def roles(self) -> Sequence[str]: ...
    @property
    def groups(self) -> Sequence[str]: ...


class TargetLike(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def labels(self) -> Sequence[str]: ...


def check_principal_selector(selector: object) -> str | None:
    """Return an error message if ``selector`` is malformed, else ``None``."""
    if not isinstance(selector, str) or not selector:
        return f"principal selector must be a non-empty string, got {selector!r}"
    if selector == "*":
        return None
    kind, sep, value = selector.partition(":")
    if not sep or kind not in PRINCIPAL_KINDS:
        return (f"unknown principal selector {selector!r}: use *, "
                + ", ".join(f"{k}:VALUE" for k in PRINCIPAL_KINDS))
    if not value:
        return f"principal selector {selector!r} names nothing"
    return None


def check_target_selector(selector: object) -> str | None:
    if not isinstance(selector, str) or not selector:
        return f"target selector must be a non-empty string, got {selector!r}"
    if selector.startswith("label:") and not selector[len("label:"):]:
        return f"target selector {selector!r} names no label"
    return None


def principal_matches(selector: str, principal: PrincipalLike) -> bool:
    if selector == "*":
        return True
    kind, _, pattern = selector.partition(":")
    if kind == "role":
        values: Iterable[str] = principal.roles
    elif kind == "group":
        values = principal.groups
    elif kind == "app":
        values = (principal.app_id,) if principal.app_id else ()
    elif kind == "sub":
        values = (principal.subject,)
    elif kind == "tenant":
        values = (principal.tenant,) if principal.tenant else ()
    else:
        return False
    return any(fnmatchcase(v, pattern) for v in values)


def any_principal_matches(selectors: Sequence[str] | None, principal: PrincipalLike) -> bool:
    """``None`` (selector list absent) matches everyone; an empty list matches no one."""
    if selectors is None:
        return True
    return any(principal_matches(s, principal) for s in selectors)


def target_matches(selector: str, target: TargetLike) -> bool:
    if selector.startswith("label:"):
        return selector[len("label:"):] in target.labels
    return fnmatchcase(target.name, selector)


def any_target_matches(selectors: Sequence[str] | None, target: TargetLike | None) -> bool:
    """``None`` matches every target; with no target (``target is None``) only ``None`` or ``*`` match."""
    if selectors is None:
        return True
    if target is None:
        return "*" in selectors
    return any(target_matches(s, target) for s in selectors)
