"""Deciding one file operation by its effect and path, with the rules commands use.

An sftp operation has one or more *effects*, each on a path the bastion resolved on the
target first (``realpath``, so a symlink is judged by what it points to):

* ``reads``  -- open for reading; a directory listing reads ``DIR/`` (so a rule
  ``reads = ["/var/log/**"]`` allows ``ls /var/log``);
* ``writes`` -- open for writing, create, truncate, mkdir, setstat, symlink (the new
  link), remove, rmdir, and both ends of a rename or hard link;
* ``meta``   -- stat, lstat, realpath, readlink: allowed unless a deny rule's ``reads``
  names the path (metadata is what navigation needs; a review rule holds the open, not
  the stat before it).

How one path is decided (``decide``), most restrictive first, like commands:

1. a deny or review rule whose ``reads`` / ``writes`` glob names the path: denied, with
   that rule (review is not offered for file operations yet: it is refused and says so);
2. an allow rule *without* ``commands`` whose globs name the path: allowed, with that
   rule (an allow rule with ``commands`` covers those commands' effects only);
3. otherwise ``[settings] default`` (rule ``<default>``): allow allows, deny and review
   refuse.

A path under the target user's home directory is also matched as ``~/REST``, so rules
written as ``~/.ssh/**`` apply.  Rules whose ``who`` / ``targets`` do not cover the
principal and target are skipped.  Pure: no IO.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any

from bastion.policy.effects import canonical_path
from bastion.policy.rules import Action, Rule
from bastion.policy.selectors import any_principal_matches, any_target_matches

READS = "reads"
WRITES = "writes"
META = "meta"


@dataclass(frozen=True)
class Verdict:
    """What policy says about one effect on one path."""

    allowed: bool          # False for a review until it is approved
    action: str            # "allow" | "deny" | "review"
    rule: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"action": self.action, "rule": self.rule, "reason": self.reason}


def names_of(path: str, home: str | None) -> tuple[str, ...]:
    """The names a resolved path is matched by: itself, and ``~/REST`` under ``home``."""
    canon = canonical_path(path)
    if home and home != "/":
        home = home.rstrip("/")
        if canon == home:
            return (canon, "~")
        if canon.startswith(home + "/"):
            return (canon, "~" + canon[len(home):])
    return (canon,)


def _applies(rule: Rule, principal: Any, target: Any) -> bool:
    return any_principal_matches(rule.who, principal) and any_target_matches(rule.targets,
                                                                             target)


def decide(policy: Any, principal: Any, target: Any, effect: str, path: str, *,
           home: str | None = None, what: str = "", listing: bool = False) -> Verdict:
    """The verdict on ``effect`` (READS, WRITES or META) of ``path`` (resolved, absolute).

    ``policy`` is a :class:`bastion.policy.Policy`; ``what`` names the operation in
    the reason (``"sftp put"``); ``listing``: ``path`` is a directory whose names are
    read (it is matched as ``path/``)."""
    names = names_of(path, home)
    if listing:
        names = tuple(n.rstrip("/") + "/" for n in names)
    shown = f"{what} {path}".strip()
    effect_key = READS if effect == META else effect
    rules: tuple[Rule, ...] = tuple(policy.rules)
    strict = sorted((r for r in rules if r.action is not Action.ALLOW),
                    key=lambda r: (-r.severity, r.index))
    for rule in strict:
        globs = getattr(rule, effect_key)
        if globs and _applies(rule, principal, target) and any(
                g.match(n) for g in globs for n in names):
            extra = f": {rule.description}" if rule.description else ""
            if rule.action is Action.REVIEW:
                if effect == META:        # metadata of a held path: the hold is at open
                    continue
                return Verdict(False, "review", rule.name,
                               f"{shown} {effect_key} a path rule {rule.name} holds for "
                               f"review{extra}")
            return Verdict(False, "deny", rule.name,
                           f"{shown} {effect_key} a path rule {rule.name} denies{extra}")
    if effect == META:
        return Verdict(True, "allow", "<metadata>",
                       f"{shown}: metadata, allowed unless a deny rule's reads names it")
    for rule in rules:
        globs = getattr(rule, effect_key)
        if (rule.action is Action.ALLOW and not rule.patterns and globs
                and _applies(rule, principal, target)
                and any(g.match(n) for g in globs for n in names)):
            extra = f": {rule.description}" if rule.description else ""
            return Verdict(True, "allow", rule.name,
                           f"{shown} {effect_key} a path rule {rule.name} allows{extra}")
    default = Action(policy.default)
    if default is Action.ALLOW:
        return Verdict(True, "allow", "<default>",
                       f"{shown}: no rule names this {effect_key[:-1]} (default: allow)")
    return Verdict(False, default.value, "<default>",
                   f"{shown}: no allow rule's {effect_key} names this path "
                   f"(default: {default.value}); add a rule with {effect_key} = [\"...\"]")


def decide_tree(policy: Any, principal: Any, target: Any, effect: str, path: str, *,
                home: str | None = None, what: str = "") -> Verdict:
    """The verdict on ``effect`` (READS or WRITES) of ``path`` *and everything below it*
    (an rsync whose files the bastion does not see one by one).

    Refused when a deny or review rule's glob names the path or *could* name something
    below it (``**/.ssh/**`` could, under any directory); allowed only when an allow rule
    without ``commands`` has a glob that covers the whole tree (``/srv/up/**`` covers
    ``/srv/up/v2/...``), or by ``[settings] default = "allow"``."""
    names = names_of(path, home)
    below = tuple((n.rstrip("/") + "/", None) for n in names)
    shown = f"{what} {path}".strip()
    rules: tuple[Rule, ...] = tuple(policy.rules)
    strict = sorted((r for r in rules if r.action is not Action.ALLOW),
                    key=lambda r: (-r.severity, r.index))
    for rule in strict:
        globs = getattr(rule, effect)
        if not globs or not _applies(rule, principal, target):
            continue
        if any(g.match(n) for g in globs for n in names) or any(
                g.could_match(t) for g in globs for t in below):
            extra = f": {rule.description}" if rule.description else ""
            if rule.action is Action.REVIEW:
                return Verdict(False, "review", rule.name,
                               f"{shown} {effect} a tree a path rule {rule.name} holds for "
                               f"review{extra}")
            return Verdict(False, "deny", rule.name,
                           f"{shown} {effect} a tree where a path rule {rule.name} denies "
                           f"some paths{extra}")
    for rule in rules:
        globs = getattr(rule, effect)
        if (rule.action is Action.ALLOW and not rule.patterns and globs
                and _applies(rule, principal, target)
                and any(g.covers(t) for g in globs for t in below)):
            extra = f": {rule.description}" if rule.description else ""
            return Verdict(True, "allow", rule.name,
                           f"{shown} {effect} a tree a path rule {rule.name} allows{extra}")
    default = Action(policy.default)
    if default is Action.ALLOW:
        return Verdict(True, "allow", "<default>",
                       f"{shown}: no rule names this tree (default: allow)")
    return Verdict(False, default.value, "<default>",
                   f"{shown}: no allow rule's {effect} covers the whole tree {path}/** "
                   f"(default: {default.value}); add a rule with {effect} = "
                   f"[\"{path.rstrip('/')}/**\"]")


_SCP_ARG_OPTIONS = frozenset("cDFiJloPSX")       # scp options that take a value


def legacy_scp(command: str) -> bool:
    """Is this exec command the server side of legacy scp (``scp -t`` / ``scp -f``)?"""
    try:
        words = shlex.split(command)
    except ValueError:
        words = command.split()
    if not words or words[0].rsplit("/", 1)[-1] != "scp":
        return False
    rest = iter(words[1:])
    for word in rest:
        if word == "--" or not word.startswith("-") or word == "-":
            break
        for i, ch in enumerate(word[1:], 2):
            if ch in "tf":
                return True
            if ch in _SCP_ARG_OPTIONS:          # the rest of the word (or the next) is its value
                if i == len(word):
                    next(rest, None)
                break
    return False


LEGACY_SCP_MESSAGE = ("legacy scp (scp -O, the exec form `scp -t`/`scp -f`) is not supported "
                      "through the bastion; use scp without -O (it speaks sftp, decided per "
                      "file) or sftp")


def legacy_scp_decision() -> Any:
    """The policy Decision recorded for a legacy scp command (denied, rule ``<legacy-scp>``)."""
    from bastion.policy import Decision
    return Decision(Action.DENY, "<legacy-scp>", LEGACY_SCP_MESSAGE)
