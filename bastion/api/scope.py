"""A reviewer's scope: which sessions ``[settings] reviewer_targets`` lets reviewers read.

``reviewer_targets`` is a list of target selectors, the form ``[[grants]]`` and ``[[rules]]``
use (``label:NAME`` for targets carrying that label in ``[[targets]]``, anything else a glob
on the target name).  Empty (the default): reviewers read every session.  Otherwise a session
is readable only when its target matches one selector; a session to a target no longer in
``[[targets]]`` matches name globs only (its labels are unknown).  The server applies the scope
to every listing (``target_in`` of the queries) and every single read (show, recording,
live view), where a session out of scope is answered like an unknown one (404).
Admins and approvers are not limited by it.  Pure: no IO.
"""

from __future__ import annotations

from typing import Any, Iterable

from bastion.policy.selectors import any_target_matches


class ReviewScope:
    def __init__(self, selectors: tuple[str, ...], targets: Iterable[Any]) -> None:
        self.selectors = selectors
        self.targets = {t.name: t for t in targets}

    @classmethod
    def of(cls, config: Any) -> "ReviewScope":
        return cls(tuple(config.settings.reviewer_targets), config.targets.values())

    @property
    def limited(self) -> bool:
        return bool(self.selectors)

    def allows(self, target: str | None) -> bool:
        if not self.selectors:
            return True
        if not target:
            return False
        known = self.targets.get(target)
        if known is not None:
            return any_target_matches(self.selectors, known)
        return any_target_matches(self.selectors, _Gone(target))

    def names(self, seen: Iterable[str]) -> list[str] | None:
        """The targets among ``seen`` this scope allows; None when it allows all."""
        if not self.selectors:
            return None
        return [name for name in seen if self.allows(name)]


class _Gone:
    """A target named by old sessions that ``[[targets]]`` no longer has: no labels."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.labels: tuple[str, ...] = ()
