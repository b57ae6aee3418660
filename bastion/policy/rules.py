"""``[[rules]]`` and the engine keys of ``[settings]``: validation and indexing.

:func:`compile_rules` checks every rule and reports *all* problems at once as
:class:`bastion.errors.ConfigError` problems whose ``where`` is
``("rules", index, key)`` or ``("settings", key)`` (``bastion.config`` turns
those into line numbers).  Checked: unknown keys, missing/invalid ``name``,
duplicate names, bad ``action``, ``who``/``targets`` selectors that name nothing,
empty or malformed ``commands`` (bad globs, unbalanced quotes), ``writes`` /
``reads`` / ``connects`` globs (a rule needs ``commands`` or one of those),
``interactive`` (a boolean).

:class:`RuleIndex` finds the patterns that can apply to a program name quickly:
exact program names in a dict, globbed names checked once per distinct program
(and cached), ``*`` patterns kept apart because they also apply to commands whose
program is unknown.  Candidates come sorted most-restrictive first, then in file
order, so the first match is the deciding one.

Pure: no IO.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from bastion.errors import ConfigError, Problem
from bastion.policy.patterns import Any_, Glob, Pattern, PatternError, parse_pattern
from bastion.policy.effects import canonical_glob
from bastion.policy.selectors import check_principal_selector, check_target_selector


class Action(str, Enum):
    ALLOW = "allow"
    DENY = "deny"
    REVIEW = "review"

    @property
    def severity(self) -> int:
        return _SEVERITY[self]


_SEVERITY = {Action.ALLOW: 0, Action.REVIEW: 1, Action.DENY: 2}
RULE_KEYS = ("name", "action", "who", "targets", "commands", "writes", "reads", "connects",
             "interactive", "description")
EFFECT_KEYS = ("writes", "reads", "connects")
ENGINE_KEYS = ("default", "opaque")
ENGINE_DEFAULTS = {"default": Action.DENY, "opaque": Action.REVIEW}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]*$")


@dataclass(frozen=True)
class Rule:
    index: int
    name: str
    action: Action
    who: tuple | None
    targets: tuple | None
    patterns: tuple
    description: str = ""
    writes: tuple = ()            # Glob on canonical paths the command writes
    reads: tuple = ()             # Glob on canonical paths the command reads
    connects: tuple = ()          # Glob on host names the command connects to
    interactive: bool = False     # the program may get raw terminal input (read by ssh/)

    @property
    def has_effects(self) -> bool:
        return bool(self.writes or self.reads or self.connects)

    @property
    def severity(self) -> int:
        return _SEVERITY[self.action]


@dataclass(frozen=True)
class Candidate:
    rule: Rule
    pattern: Pattern
    allow: bool = False           # rule.action is ALLOW (hot-path copies)
    by_path: bool = False         # pattern.by_path
    lone: bool = False            # a deny/review ``* GLOB``: in RuleIndex.star_rx


def compile_settings(settings: dict) -> tuple[dict, list[Problem]]:
    problems: list[Problem] = []
    out = dict(ENGINE_DEFAULTS)
    if not isinstance(settings, dict):
        return out, [Problem("[settings] must be a table", where=("settings",))]
    for key, value in settings.items():
        if key not in ENGINE_KEYS:
            problems.append(Problem(f"unknown engine setting {key!r} (allowed: default, opaque)",
                                    where=("settings", key)))
            continue
        try:
            out[key] = Action(value)
        except (ValueError, TypeError):
            problems.append(Problem(f"settings.{key} must be \"allow\", \"deny\" or \"review\", "
                                    f"got {value!r}", where=("settings", key)))
    return out, problems


def compile_rules(raw_rules: list) -> tuple[list[Rule], list[Problem]]:
    problems: list[Problem] = []
    rules: list[Rule] = []
    if not isinstance(raw_rules, list):
        return [], [Problem("rules must be an array of tables: write [[rules]]", where=("rules",))]
    names: dict[str, int] = {}
    for i, table in enumerate(raw_rules):
        w = ("rules", i)

        def bad(key, msg):
            problems.append(Problem(f"rules[{i}]" + (f".{key}" if key else "") + f": {msg}",
                                    where=w + ((key,) if key else ())))

        if not isinstance(table, dict):
            bad(None, "must be a table")
            continue
        for key in table:
            if key not in RULE_KEYS:
                bad(key, f"unknown key {key!r} (allowed: {', '.join(RULE_KEYS)})")
        name = table.get("name")
        if name is None:
            bad(None, "missing required key 'name' (e.g. name = \"no-recursive-delete\")")
        elif not isinstance(name, str) or not _NAME.match(name):
            bad("name", f"name must be letters, digits, '.', '_', ':' or '-', got {name!r}")
            name = None
        elif name in names:
            bad("name", f"duplicate rule name {name!r} (first used by rules[{names[name]}])")
        else:
            names[name] = i
        action = None
        if "action" not in table:
            bad(None, "missing required key 'action' (allow, deny or review)")
        else:
            try:
                action = Action(table["action"])
            except (ValueError, TypeError):
                bad("action", f"action must be \"allow\", \"deny\" or \"review\", "
                              f"got {table['action']!r}")
        who = _selectors(table, "who", check_principal_selector, bad)
        targets = _selectors(table, "targets", check_target_selector, bad)
        patterns = []
        effects = {k: _effect_globs(table, k, bad) for k in EFFECT_KEYS}
        cmds = table.get("commands")
        if cmds is None:
            if not any(k in table for k in EFFECT_KEYS):
                bad(None, "missing required key 'commands' (or writes/reads/connects), "
                          "e.g. commands = [\"rm -r\"]")
        elif isinstance(cmds, str):
            cmds = [cmds]
        if cmds is not None and not isinstance(cmds, list):
            bad("commands", "commands must be a list of strings")
        elif cmds is not None:
            if not cmds:
                bad("commands", "commands is empty: the rule would never match")
            for source in cmds:
                try:
                    patterns.append(parse_pattern(source))
                except PatternError as exc:
                    bad("commands", str(exc))
        interactive = table.get("interactive", False)
        if not isinstance(interactive, bool):
            bad("interactive", "interactive must be true or false")
            interactive = False
        desc = table.get("description", "")
        if not isinstance(desc, str):
            bad("description", "description must be a string")
            desc = ""
        if name and action is not None and (patterns or any(effects.values())):
            rules.append(Rule(i, name, action, who, targets, tuple(patterns), desc,
                              effects["writes"], effects["reads"], effects["connects"],
                              interactive))
    return rules, problems


def _effect_globs(table: dict, key: str, bad) -> tuple:
    """``writes`` / ``reads`` (path globs) or ``connects`` (host globs) → compiled Globs."""
    if key not in table:
        return ()
    value = table[key]
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        bad(key, f"{key} must be a list of non-empty strings")
        return ()
    if not value:
        bad(key, f"{key} is empty: leave it out instead")
    out = []
    for v in value:
        try:
            out.append(Glob(v.lower() if key == "connects" else canonical_glob(v)))
        except PatternError as exc:
            bad(key, str(exc))
    return tuple(out)


def _selectors(table: dict, key: str, check, bad) -> tuple | None:
    if key not in table:
        return None
    value = table[key]
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        bad(key, f"{key} must be a list of strings")
        return ()
    if not value:
        bad(key, f"{key} is empty: the rule would apply to nothing (leave it out to mean all)")
    for sel in value:
        msg = check(sel)
        if msg:
            bad(key, msg)
    return tuple(s for s in value if isinstance(s, str))


def raise_if(problems: list[Problem]) -> None:
    if problems:
        raise ConfigError("invalid rules", problems,
                          hint="fix the rules named and run `bastion policy check`")


class RuleIndex:
    """Patterns by program: ``candidates(program, path)`` most restrictive first."""

    def __init__(self, rules: list[Rule]) -> None:
        self.exact: dict[str, list[Candidate]] = {}
        self.globbed: list[Candidate] = []
        self.by_path: list[Candidate] = []
        self.star: list[Candidate] = []
        lone: list[str] = []
        for rule in rules:
            for pat in rule.patterns:
                cand = Candidate(rule, pat, rule.action is Action.ALLOW, pat.by_path)
                if pat.by_path:
                    self.by_path.append(cand)
                elif pat.program.source == "*":
                    if not cand.allow and len(pat.words) == 1 and type(pat.words[0]) is Any_:
                        cand = Candidate(rule, pat, False, False, True)
                        lone.append(pat.words[0].glob.rx.pattern)
                    self.star.append(cand)
                elif pat.program.literal is not None:
                    self.exact.setdefault(pat.program.literal, []).append(cand)
                else:
                    self.globbed.append(cand)
        self.star_sorted = tuple(sorted(self.star, key=_order))
        # Every reading a lone candidate's glob matches, at once: a command none of whose
        # static readings matches it (and that has no run-time template) matches none of
        # them, so _decide skips them (each would test every reading with its own glob).
        self.star_rx = re.compile("|".join(f"(?:{p})" for p in lone), re.DOTALL) \
            if lone else None
        self._cache: dict = {}

    def candidates(self, program: str | None, path: str | None) -> tuple:
        if program is None:
            return self.star_sorted
        key = (program, path)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        found = list(self.exact.get(program, ()))
        found.extend(c for c in self.globbed if c.pattern.program.match(program))
        if path is not None:
            found.extend(c for c in self.by_path if c.pattern.program.match(path))
        found.extend(self.star)
        result = tuple(sorted(found, key=_order))
        if len(self._cache) > 4096:
            self._cache.clear()
        self._cache[key] = result
        return result


def _order(c: Candidate) -> tuple:
    return (-c.rule.severity, c.rule.index)
