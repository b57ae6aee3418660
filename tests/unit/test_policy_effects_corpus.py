"""Issue 15: the effects model judged on a labelled corpus and by a property.

* tests/unit/policy_effects/operator.toml -- a realistic operator policy written with the
  effect keys (``writes``, ``reads``, ``connects``, ``interactive``).
* tests/unit/policy_effects/corpus.toml -- lines labelled ``allow`` / ``not-allow`` with a
  class and a reason.  They are data for the engine: nothing here is ever executed.

The bar of issue 15: zero false allows, at most 2 % false denials (of the lines labelled
``allow``).  On failure the test prints a per-class table and every wrong line with the
engine's reason.

The property: adding an allow rule ``commands = ["P"]`` for a program P never allows a
line whose writes or connects go beyond what that rule names (random redirection
targets, random output options, random hosts).
"""

from __future__ import annotations

import os
import random
import tomllib
from collections import Counter, defaultdict
from functools import lru_cache
from pathlib import Path

import pytest

from bastion.identity.principal import Principal
from bastion.policy import Action, compile_policy

HERE = Path(__file__).parent / "policy_effects"
POLICY_FILE = HERE / "operator.toml"
CORPUS_FILE = HERE / "corpus.toml"
# The engine's known gaps (issue 15 is open): listed lines are still evaluated and must still be
# wrong (a fixed line must leave the list); any other wrong line fails.
GAPS = tomllib.loads((HERE / "known_gaps.toml").read_text(encoding="utf-8"))
AGENT = Principal(subject="agent-1", roles=("agents",))
MAX_FALSE_DENY = 0.02

CLASSES = {  # every class of issue 15 must be present in the corpus
    "benign-basic", "benign-runtime", "redirect-write", "gtfo-find", "gtfo-awk", "gtfo-sed",
    "gtfo-tar", "gtfo-git", "gtfo-grep", "gtfo-pager", "gtfo-misc", "gtfo-services",
    "env-prefix", "positional-subcommand", "option-value", "canonical-path", "url-host",
    "bash-corner", "sh-dialect",
}


def load_corpus() -> list[tuple[str, str, str, str]]:
    """[(class, expect, line, why)] in file order."""
    raw = tomllib.loads(CORPUS_FILE.read_text(encoding="utf-8"))
    out = []
    for group in raw["group"]:
        for expect, line, why in group["cases"]:
            out.append((group["class"], expect, line, why))
    return out


@lru_cache(maxsize=1)
def operator_policy():
    raw = tomllib.loads(POLICY_FILE.read_text(encoding="utf-8"))
    return compile_policy(raw.get("settings", {}), raw.get("rules", []))


# ---------------------------------------------------------------- the corpus itself

def test_corpus_shape():
    corpus = load_corpus()
    assert len(corpus) >= 400, len(corpus)
    allowed = sum(1 for _, e, _, _ in corpus if e == "allow")
    assert allowed * 3 >= len(corpus), (allowed, len(corpus))
    assert {e for _, e, _, _ in corpus} == {"allow", "not-allow"}
    assert CLASSES <= {c for c, _, _, _ in corpus}, CLASSES - {c for c, _, _, _ in corpus}
    dups = [line for line, n in Counter(line for _, _, line, _ in corpus).items() if n > 1]
    assert not dups, dups
    assert all(why.strip() for _, _, _, why in corpus)


def test_operator_policy_compiles():
    operator_policy()


# ---------------------------------------------------------------- the bar of issue 15

def _table(rows: list, false_allow: list, false_deny: list, n_allow: int) -> str:
    per = defaultdict(lambda: [0, 0, 0, 0])          # lines, allow-labelled, FA, FD
    for cls, expect, *_ in rows:
        per[cls][0] += 1
        per[cls][1] += expect == "allow"
    for cls, *_ in false_allow:
        per[cls][2] += 1
    for cls, *_ in false_deny:
        per[cls][3] += 1
    out = [f"{'class':24} {'lines':>5} {'allow':>5} {'false-allow':>11} {'false-deny':>10}"]
    for cls in sorted(per):
        n, a, fa, fd = per[cls]
        out.append(f"{cls:24} {n:5} {a:5} {fa:11} {fd:10}")
    out.append(f"{'total':24} {len(rows):5} {n_allow:5} {len(false_allow):11} {len(false_deny):10}"
               f"   (false denials {len(false_deny) / max(n_allow, 1):.1%}, "
               f"at most {MAX_FALSE_DENY:.0%})")
    for title, wrong in (("FALSE ALLOWS (must be zero)", false_allow),
                         ("FALSE DENIALS", false_deny)):
        if not wrong:
            continue
        out.append("")
        out.append(title)
        last = None
        for cls, line, why, decision in wrong:
            if cls != last:
                out.append(f"  [{cls}]")
                last = cls
            out.append(f"    {line!r}")
            out.append(f"        expected because: {why}")
            out.append(f"        engine: {decision.action.value} ({decision.rule}): {decision.reason}")
    return "\n".join(out)


def evaluate_corpus(policy) -> tuple[list, list, list, int]:
    rows = load_corpus()
    false_allow, false_deny = [], []
    for cls, expect, line, why in rows:
        decision = policy.evaluate(AGENT, None, line)
        allowed = decision.action == Action.ALLOW
        if expect == "not-allow" and allowed:
            false_allow.append((cls, line, why, decision))
        elif expect == "allow" and not allowed:
            false_deny.append((cls, line, why, decision))
    n_allow = sum(1 for _, e, _, _ in rows if e == "allow")
    return rows, false_allow, false_deny, n_allow


def test_corpus_zero_false_allows_and_at_most_2_percent_false_denials():
    """The issue's bar, less the listed known gaps (their count is in the issue's note)."""
    rows, false_allow, false_deny, n_allow = evaluate_corpus(operator_policy())
    new_allow = [w for w in false_allow if w[1] not in GAPS["false_allow"]]
    new_deny = [w for w in false_deny if w[1] not in GAPS["false_deny"]]
    ok = not new_allow and len(new_deny) <= MAX_FALSE_DENY * n_allow
    assert ok, "\n" + _table(rows, new_allow, new_deny, n_allow)


def test_known_gaps_are_still_gaps():
    """A listed line the engine now gets right must leave known_gaps.toml (the list only shrinks)."""
    _, false_allow, false_deny, _ = evaluate_corpus(operator_policy())
    fixed = (set(GAPS["false_allow"]) - {w[1] for w in false_allow}) | (
        set(GAPS["false_deny"]) - {w[1] for w in false_deny})
    assert not fixed, f"fixed, remove from known_gaps.toml: {sorted(fixed)}"


# ---------------------------------------------------------------- the property

# Per program: argument lists that are harmless reads on their own (the control), and
# ways the program writes a file through its own arguments (the probe, T = target).
PROGRAMS = {
    "ls": (["-la /var/log", "/srv/app", "-1"], []),
    "cat": (["/var/log/syslog", "/etc/hostname"], []),
    "echo": (["hello", "$LANG", "a b c"], []),
    "printf": (["'%s\\n' x"], []),
    "grep": (["-n x /var/log/syslog", "-c y /tmp/in"], []),
    "head": (["-n 5 /var/log/syslog"], []),
    "date": (["-u", "+%F"], []),
    "sort": (["/tmp/in", "-u /tmp/in"], ["-o T /tmp/in", "--output=T /tmp/in", "-oT /tmp/in"]),
    "uniq": (["/tmp/in", "-c /tmp/in"], ["/tmp/in T"]),
    "xxd": (["/tmp/in", "-p /tmp/in"], ["/tmp/in T", "-r -p /tmp/in T"]),
    "tee": (["", "-a"], ["T", "-a T"]),
    "find": (["/var/log -name x", "/srv -type f"], ["/var/log -fprint T", "/ -fls T",
                                                   "/var -fprintf T x"]),
    "sed": (["-n 1p /tmp/in", "s/a/b/ /tmp/in"], ["-n 'w T' /tmp/in", "'s/a/b/w T' /tmp/in",
                                                   "-i s/a/b/ T"]),
    "awk": (["'{print $1}' /tmp/in"], ["'{print > \"T\"}' /tmp/in"]),
    "curl": ([], ["-o T https://api.internal/", "--output=T https://api.internal/",
                  "-D T https://api.internal/", "--trace T https://api.internal/"]),
    "git": (["log -3", "status"], ["log --output=T", "diff --output=T"]),
    "less": ([], ["-O T /var/log/syslog", "--log-file=T /tmp/in"]),
}
REDIRECTIONS = [">", ">>", "1>", "2>", "&>", ">|", "3>", "&>>"]
ROOTS = ["/etc", "/srv/app", "/home/deploy", "/root", "/var/lib/x", "/opt", "/usr/local/bin",
         "/proc/sys/kernel", "/tmp/../etc", "/var/log/../../etc", "~", "$HOME", "/dev/sda",
         ".", "..", "/run", "/boot"]
SEGMENTS = ["x", "cron.d", ".ssh", "authorized_keys", "passwd", ".bashrc", "a b", "conf.d",
            "sysrq-trigger", "*.conf", "y.txt", "$(echo z)", ".."]
HOSTS = ["evil.example", "api.internal.evil.example", "10.0.0.7", "169.254.169.254",
         "internal", "api.internal@evil.example", "evil.example#.internal", "[::1]",
         "xn--api-internal.example", "api-internal"]
NEVER_WRITE = ("/dev/null", "/dev/stdout", "/dev/stderr")


def _target(rng: random.Random) -> str:
    path = rng.choice(ROOTS) + "".join("/" + rng.choice(SEGMENTS) for _ in range(rng.randint(1, 3)))
    return f'"{path}"' if " " in path else path


def _single_rule(program: str, **extra):
    rule = {"name": "only-p", "action": "allow", "commands": [program], **extra}
    return compile_policy({"default": "deny", "opaque": "review"}, [rule])


def _cases(seed: int, n: int) -> list[tuple[str, str, str]]:
    """[(program, kind, line)]: kind is control (harmless), write or connect."""
    rng = random.Random(seed)
    out = []
    names = sorted(PROGRAMS)
    for _ in range(n):
        p = rng.choice(names)
        controls, writers = PROGRAMS[p]
        roll = rng.random()
        if controls and roll < 0.25:
            out.append((p, "control", f"{p} {rng.choice(controls)}".rstrip()))
        elif writers and roll < 0.55:
            t = _target(rng)
            out.append((p, "write", f"{p} {rng.choice(writers).replace('T', t)}"))
        elif controls:
            t = _target(rng)
            op = rng.choice(REDIRECTIONS)
            out.append((p, "write", f"{p} {rng.choice(controls)} {op} {t}".replace("  ", " ")))
        else:
            host = rng.choice(HOSTS)
            out.append(("curl", "connect", f"curl -s https://{host}/x"))
    return out


SEED = int(os.environ.get("POLICY_PROPERTY_SEED", "15"))


def test_property_an_allow_rule_never_covers_writes_or_connects_it_does_not_name():
    cases = _cases(SEED, 600)
    policies = {p: _single_rule(p) for p in PROGRAMS}
    # curl may connect to *.internal: none of HOSTS is an internal host
    policies["curl"] = _single_rule("curl", connects=["*.internal"])
    wrong, controls, controls_allowed = [], 0, 0
    for p, kind, line in cases:
        assert not any(line.endswith(" " + safe) for safe in NEVER_WRITE)
        decision = policies[p].evaluate(AGENT, None, line)
        if kind == "control":
            controls += 1
            controls_allowed += decision.action == Action.ALLOW
        elif decision.action == Action.ALLOW and line not in GAPS["property"]:
            wrong.append(f"  [{p}] {line!r} ({kind}): {decision.reason}")
    assert not wrong, (f"seed {SEED}: {len(wrong)} lines allowed by commands = [P] although "
                       f"they write or connect beyond it:\n" + "\n".join(wrong))
    # not vacuous: the same programs on harmless arguments are allowed
    assert controls and controls_allowed >= 0.9 * controls, (controls_allowed, controls)


def test_property_writes_named_by_the_rule_are_covered_and_nothing_else():
    """With ``writes = ["/tmp/**"]`` a write under /tmp is covered, one elsewhere is not."""
    rng = random.Random(SEED + 1)
    policy = _single_rule("sort", writes=["/tmp/**"])
    inside, outside = [], []
    for _ in range(100):
        seg = "/".join(rng.choice(["a", "b", "c.txt", "d.log"]) for _ in range(rng.randint(1, 3)))
        inside.append(f"sort -o /tmp/{seg} /tmp/in")
        outside.append(f"sort -o {_target(rng)} /tmp/in")
        outside.append(f"sort /tmp/in > /tmp/../{rng.choice(['etc', 'srv', 'root'])}/{seg}")
    bad_out = [line for line in outside
               if policy.evaluate(AGENT, None, line).action == Action.ALLOW]
    bad_in = [line for line in inside
              if policy.evaluate(AGENT, None, line).action != Action.ALLOW]
    assert not bad_out, bad_out[:20]
    assert len(bad_in) <= 0.02 * len(inside), bad_in[:20]


if __name__ == "__main__":  # a quick report: python tests/unit/test_policy_effects_corpus.py
    try:
        print(_table(*evaluate_corpus(operator_policy())))
    except Exception as exc:  # noqa: BLE001
        pytest.fail(str(exc))
