"""PLACEHOLDER interface — the policy helper replaces this with the real engine."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class Action(str, Enum):
    ALLOW = "allow"
    DENY = "deny"
    REVIEW = "review"


@dataclass(frozen=True)
class Decision:
    action: Action
    rule: str | None
    reason: str
    command: tuple[str, ...] | None = None
    commands: tuple = ()


class Policy:
    def evaluate(self, principal, target, line: str) -> Decision:
        return Decision(Action.DENY, None, "policy engine not built yet")


def compile_policy(settings: dict, rules: list[dict]) -> Policy:
    return Policy()
