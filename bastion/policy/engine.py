"""The policy: ``evaluate(principal, target, line) -> Decision``.

For each simple command of the line (see :mod:`bastion.policy.commands`):

1. the rules that apply to this principal (``who``) and target (``targets``);
2. their patterns for this program (index by name; ``*`` patterns always);
3. the most restrictive matching rule decides (deny > review > allow; in a tie,
   the first in the file).  Allow rules never match an opaque command, nor a
   program named by an untrusted path; deny and review rules match
   conservatively (other readings of an argument count, and on a known
   command, so do run-time arguments that could match);
   Deny/review rules with ``writes``/``reads``/``connects`` also match when one of
   the command's effects matches (see :mod:`bastion.policy.effects`);
4. an allow decision holds only if every write (other than ``/dev/null``,
   ``/dev/stdout``, ``/dev/stderr``, ``/dev/fd/N``) and every connection of the
   command is named by the ``writes``/``connects`` of the deciding rule, of an
   allow rule with no ``commands``, or of another allow rule whose ``commands``
   match the command; otherwise ``settings.default``, naming the write;
5. no rule: ``settings.default``; an opaque command: ``settings.opaque`` unless a
   deny/review rule matched that is at least as restrictive.

The line's action is the most restrictive of its commands'; the first command
with that action (preferring one decided by a named rule) decides (``Decision.rule``/``reason``/``command``).  A line with
nothing to run (empty, comments, plain assignments) is allowed with the
synthetic rule ``<empty>``.  A line that does not parse gets the opaque action
(rule ``<opaque>``) unless a command found in it is denied.  Any internal error
is caught and turned into a deny (rule ``<error>``): evaluation never raises.

Deterministic, no clock, no IO.  Parsed lines are cached (LRU, shared by all
policies), and each Policy caches its decisions per (line, set of rules that
apply to the principal and target); caches are bounded and cleared when full.
A Policy may be shared between threads (the caches are plain dicts whose
worst case under a race is a recomputation).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bastion.policy.commands import Command, extract
from bastion.policy.effects import any_hits, harmless_write, host_hits, shown_arg
from bastion.policy.patterns import Sub
from bastion.policy.rules import (
    Action, Rule, RuleIndex, compile_rules, compile_settings, raise_if,
)
from bastion.policy.selectors import any_principal_matches, any_target_matches

_SEV = {Action.ALLOW: 0, Action.REVIEW: 1, Action.DENY: 2}
_DECISION_CACHE = 8192


@dataclass(frozen=True)
class CommandDecision:
    """The decision on one simple command of a line."""

    argv: tuple
    action: Action
    rule: str | None
    opaque: bool = False
    why: str | None = None          # why it is opaque
    via: str | None = None          # wrapper chain (``sudo``, ``bash -c``, ``sudo > bash -c``)
    reason: str = ""

    def to_dict(self) -> dict:
        return {"argv": list(self.argv), "action": self.action.value, "rule": self.rule,
                "opaque": self.opaque, "why": self.why, "via": self.via, "reason": self.reason}


@dataclass(frozen=True)
class Decision:
    action: Action
    rule: str | None
    reason: str
    command: tuple | None = None
    commands: tuple = ()

    def to_dict(self) -> dict:
        return {"action": self.action.value, "rule": self.rule, "reason": self.reason,
                "command": list(self.command) if self.command is not None else None,
                "commands": [c.to_dict() for c in self.commands]}


class Policy:
    """Compiled rules plus the engine settings; see the module docstring."""

    def __init__(self, rules: list[Rule], default: Action = Action.DENY,
                 opaque: Action = Action.REVIEW) -> None:
        self.rules = tuple(rules)
        self.default = Action(default)
        self.opaque = Action(opaque)
        self._index = RuleIndex(list(rules))
        self._restricted = tuple(r for r in rules if r.who is not None or r.targets is not None)
        self._effect_checks = tuple(sorted((r for r in rules if r.action is not Action.ALLOW
                                            and r.has_effects),
                                           key=lambda r: (-r.severity, r.index)))
        self._allow_writes = tuple(r for r in rules if r.action is Action.ALLOW and r.writes)
        self._allow_connects = tuple(r for r in rules if r.action is Action.ALLOW and r.connects)
        self._interactive_rules = tuple(r for r in rules if r.action is Action.ALLOW
                                        and r.interactive and r.patterns)
        self._naming: dict[str, list[tuple[Rule, Any]]] = {}   # subcommand -> rules naming it
        for r in rules:
            if r.action is Action.ALLOW:
                for p in r.patterns:
                    for w in p.words:
                        if isinstance(w, Sub) and w.level == 0 and w.glob.literal is not None:
                            self._naming.setdefault(w.glob.literal, []).append((r, p))
        self._skip_cache: dict = {}
        self._decisions: dict = {}      # (line, interactive, cwd, skip) -> Decision

    def clear_cache(self) -> None:
        """Forget cached decisions (they never go stale; this is for measurements)."""
        self._decisions.clear()

    def counts(self) -> dict:
        out = {a.value: 0 for a in Action}
        for r in self.rules:
            out[r.action.value] += 1
        return out

    def evaluate(self, principal, target, line: str, dialect: str = "bash", *,
                 interactive: bool = False, cwd: str | None = None) -> Decision:
        """Decide on ``line`` for ``principal`` on ``target`` (``None``: no target).

        ``interactive``: the line comes from an interactive shell (history
        expansion ``!`` / ``^`` makes it opaque).  ``cwd``: the working directory,
        when known, to resolve relative paths.  ``dialect``: ``"bash"`` (default) or
        ``"sh"`` (the target's shell is dash/POSIX sh: text bash and dash read
        differently is opaque).  Never raises.
        """
        try:
            return self._evaluate(principal, target, line, interactive, cwd, dialect)
        except Exception as exc:  # fail closed; the reason names the error, not the data
            return Decision(Action.DENY, "<error>",
                            f"policy engine error ({type(exc).__name__}); denied to be safe")

    def _evaluate(self, principal, target, line, interactive, cwd, dialect="bash") -> Decision:
        skip = self._skip(principal, target)
        key = (line, interactive, cwd, skip, dialect)
        hit = self._decisions.get(key)
        if hit is not None:
            return hit
        decision = self._decide_line(extract(line, interactive=interactive, cwd=cwd, dialect=dialect), skip)
        if len(self._decisions) >= _DECISION_CACHE:
            self._decisions.clear()
        self._decisions[key] = decision
        return decision

    def _decide_line(self, extraction, skip: frozenset) -> Decision:
        decided: list[CommandDecision] = []
        for cmd in extraction.commands:
            decided.append(self._decide(cmd, skip))
        best: CommandDecision | None = None
        best_key = (-1, False)
        for d in decided:   # most restrictive; among equals, a named rule over <default>
            key = (_SEV[d.action], not d.rule.startswith("<"))
            if key > best_key:
                best, best_key = d, key
        if extraction.problems:
            why = extraction.problems[0]
            if best is None or _SEV[self.opaque] > _SEV[best.action]:
                return Decision(self.opaque, "<opaque>",
                                f"{why}; lines that cannot be read are {self.opaque.value}",
                                None, tuple(decided))
        if best is None:
            return Decision(Action.ALLOW, "<empty>", "nothing to run", None, ())
        reason = best.reason
        if best.action is Action.ALLOW and len(decided) > 1:
            reason = f"all {len(decided)} commands allowed; first: {reason}"
        return Decision(best.action, best.rule, reason, best.argv, tuple(decided))

    def _skip(self, principal, target) -> frozenset:
        """Indexes of rules that do not apply to this principal on this target."""
        if not self._restricted:
            return frozenset()
        pkey = (principal.subject, principal.tenant, principal.app_id, tuple(principal.roles),
                tuple(principal.groups))
        tkey = None if target is None else (target.name, tuple(target.labels))
        key = (pkey, tkey)
        hit = self._skip_cache.get(key)
        if hit is None:
            hit = frozenset(r.index for r in self._restricted
                            if not (any_principal_matches(r.who, principal)
                                    and any_target_matches(r.targets, target)))
            if len(self._skip_cache) > 1024:
                self._skip_cache.clear()
            self._skip_cache[key] = hit
        return hit

    def _decide(self, cmd: Command, skip: frozenset) -> CommandDecision:
        opaque = cmd.opaque is not None
        soft = cmd.soft                 # opaque only to its program table
        would_allow = False
        matched = None
        pattern = None
        has_path = cmd.path is not None
        trusted = cmd.trusted
        lone_miss = None              # no lone `* GLOB` candidate can match (RuleIndex.star_rx)
        for cand in self._index.candidates(cmd.program, cmd.path):
            rule = cand.rule
            if skip and rule.index in skip:
                continue
            if cand.lone:
                if lone_miss is None:
                    star = self._index.star_rx
                    lone_miss = star is not None and not cmd.templates and not any(
                        star.fullmatch(t) is not None for t in cmd.readings)
                if lone_miss:
                    continue
            if cand.by_path and not has_path:
                continue
            if cand.allow:
                if not (trusted or cand.by_path):
                    continue
                if opaque:
                    if soft and not would_allow and cand.pattern.matches(cmd, 0):
                        would_allow = True
                    continue
                level = 0
            else:
                level = 1 if opaque and not cmd.soft else 2
            if cand.pattern.matches(cmd, level):
                matched, pattern = rule, cand.pattern
                break
        hit = None
        if self._effect_checks:
            level = 1 if opaque and not cmd.soft else 2
            for rule in self._effect_checks:
                if matched is not None and (matched.severity, -matched.index) >= (
                        rule.severity, -rule.index):
                    break
                if skip and rule.index in skip:
                    continue
                hit = effect_hit(rule, cmd, level)
                if hit:
                    matched = rule
                    break
        shown = cmd.shown
        base: dict[str, Any] = dict(argv=cmd.argv, opaque=opaque, why=cmd.opaque, via=cmd.via)
        if soft and matched is None and not would_allow:
            return CommandDecision(action=self.default, rule="<default>", **base,
                                   reason=f"{shown} matches no rule "
                                          f"(default: {self.default.value})")
        if opaque and (matched is None or _SEV[self.opaque] > matched.severity):
            return CommandDecision(action=self.opaque, rule="<opaque>", **base,
                                   reason=f"{shown} is opaque ({cmd.opaque}); "
                                          f"opaque commands are {self.opaque.value}")
        if matched is None:
            return CommandDecision(action=self.default, rule="<default>", **base,
                                   reason=f"{shown} matches no rule "
                                          f"(default: {self.default.value})")
        if matched.action is Action.ALLOW:
            missing = self._uncovered(cmd, matched, skip)
            if missing is None and cmd.interactive and not self._interactive_ok(cmd, matched,
                                                                                skip):
                return CommandDecision(action=self.default, rule="<default>", **base,
                                       reason=f"{shown} is interactive ({cmd.interactive}), "
                                              f"and no allow rule with interactive = true "
                                              f"names it (default: {self.default.value})")
            if missing:
                return CommandDecision(action=self.default, rule="<default>", **base,
                                       reason=f"{shown} {missing}, which no allow rule names "
                                              f"(default: {self.default.value})")
            if cmd.named and not self._named_ok(cmd, pattern, skip):
                sub = f"{cmd.program} {cmd.sub}"
                return CommandDecision(action=self.default, rule="<default>", **base,
                                       reason=f"{shown}: {sub} {cmd.named}; only an allow rule "
                                              f"that names {sub!r} allows it "
                                              f"(default: {self.default.value})")
        extra = f": {matched.description}" if matched.description else ""
        what = f" ({hit})" if hit else ""
        return CommandDecision(action=matched.action, rule=matched.name, **base,
                               reason=f"{shown}{what} matches rule {matched.name} "
                                      f"({matched.action.value}){extra}")

    def _uncovered(self, cmd: Command, allowed: Rule, skip: frozenset) -> str | None:
        """The first write or connection of an allowed command no allow rule names."""
        for a in cmd.writes:
            if harmless_write(a.text):
                continue
            if a.text is not None and self._covers(self._allow_writes, allowed, cmd, skip,
                                                   lambda r: any(g.match(a.text)
                                                                 for g in r.writes)):
                continue
            if getattr(a, "generated", False) and all(   # tar -x -C /tmp/u: /tmp/u/…
                    self._covers(self._allow_writes, allowed, cmd, skip,
                                 lambda r, t=t: any(g.covers(t) for g in r.writes))
                    for t in a.templates):
                continue
            return f"writes {shown_arg(a)}"
        for h in cmd.connects:
            if h is not None and self._covers(self._allow_connects, allowed, cmd, skip,
                                              lambda r: any(g.match(h) for g in r.connects)):
                continue
            return f"connects to {h or 'a host known only at run time'}"
        return None

    def _interactive_ok(self, cmd: Command, allowed: Rule, skip: frozenset[int]) -> bool:
        """Does an allow rule with ``interactive = true`` name this command?"""
        if allowed.interactive:
            return True
        for r in self._interactive_rules:
            if not (skip and r.index in skip) and cmd.trusted and any(
                        p.program.match(cmd.program or "") and p.matches(cmd, 0)
                        for p in r.patterns):
                return True
        return False

    def _named_ok(self, cmd: Command, pattern: Any, skip: frozenset[int]) -> bool:
        """Does the deciding pattern, or another allow rule's, name the subcommand itself
        (``git commit``, not ``git`` nor ``git *``)?"""
        if names_sub(pattern, cmd.sub):
            return True
        for r, p in self._naming.get(cmd.sub or "", ()):
            if not (skip and r.index in skip) and cmd.trusted and \
                    p.program.match(cmd.program or "") and p.matches(cmd, 0):
                return True
        return False

    @staticmethod
    def _covers(rules: tuple, allowed: Rule, cmd: Command, skip: frozenset, names) -> bool:
        for r in rules:
            if skip and r.index in skip:
                continue
            if not names(r):
                continue
            if r is allowed or not r.patterns:
                return True
            if cmd.trusted and any(p.matches(cmd, 0) for p in r.patterns
                                   if p.program.match(cmd.program or "")):
                return True
        return False


def effect_hit(rule: Rule, cmd: Command, level: int) -> str | None:
    """Which effect of ``cmd`` a deny/review rule's ``writes``/``reads``/``connects`` names."""
    if rule.writes:
        a = any_hits(rule.writes, cmd.writes + cmd.deletes if cmd.deletes else cmd.writes, level)
        if a is not None:
            return f"writes {shown_arg(a)}"
    if rule.reads:
        a = any_hits(rule.reads, cmd.reads if cmd.known else cmd.reads + cmd.args, level,
                     cmd.recursive)
        if a is not None:
            return f"reads {shown_arg(a)}"
    if rule.connects:
        h = host_hits(rule.connects, cmd.connects)
        if h is not None:
            return f"connects to {h}"
    return None


def names_sub(pattern: Any, sub: str | None) -> bool:
    """Does this pattern name subcommand ``sub`` literally (its first subcommand word)?"""
    if pattern is None or sub is None:
        return False
    return any(isinstance(w, Sub) and w.level == 0 and w.glob.literal == sub
               for w in pattern.words)


def compile_policy(settings: dict, rules: list) -> Policy:
    """Validate and compile; raise ConfigError listing every problem."""
    engine, problems = compile_settings(settings if settings is not None else {})
    compiled, more = compile_rules(rules if rules is not None else [])
    raise_if(problems + more)
    return Policy(compiled, engine["default"], engine["opaque"])
