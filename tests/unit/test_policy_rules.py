"""compile_policy validation, precedence, who/targets, decisions, fail-closed."""

from __future__ import annotations

import json
import random

import pytest

from bastion.config import parse_config
from bastion.config.targets import Target
from bastion.errors import ConfigError
from bastion.identity.principal import Principal
from bastion.policy import Action, Decision, compile_policy
from bastion.policy.engine import Policy

AGENT = Principal(subject="agent-1", tenant="t1", app_id="app-1", roles=("agents",),
                  groups=("g-ops",))
OTHER = Principal(subject="someone")
WEB1 = Target(name="web1", host="h", user="u", key="k", labels=("prod",))
DB1 = Target(name="db1", host="h", user="u", key="k", labels=("staging",))


def rule(name, action, *commands, **kw):
    return {"name": name, "action": action, "commands": list(commands), **kw}


def problems(settings, rules):
    with pytest.raises(ConfigError) as info:
        compile_policy(settings, rules)
    return [(p.where, p.message) for p in info.value.problems]


# ---- validation -----------------------------------------------------------------

@pytest.mark.parametrize("settings, rules, where, fragment", [
    ({"default": "maybe"}, [], ("settings", "default"), "must be"),
    ({"opaque": 3}, [], ("settings", "opaque"), "must be"),
    ({"colour": "red"}, [], ("settings", "colour"), "unknown engine setting"),
    ({}, [rule("a", "block", "ls")], ("rules", 0, "action"), "action must be"),
    ({}, [{"action": "allow", "commands": ["ls"]}], ("rules", 0), "missing required key 'name'"),
    ({}, [{"name": "a", "commands": ["ls"]}], ("rules", 0), "missing required key 'action'"),
    ({}, [{"name": "a", "action": "allow"}], ("rules", 0), "missing required key 'commands'"),
    ({}, [rule("a", "allow")], ("rules", 0, "commands"), "empty"),
    ({}, [rule("a", "allow", "")], ("rules", 0, "commands"), "non-empty"),
    ({}, [rule("a", "allow", "ls [x")], ("rules", 0, "commands"), "unterminated"),
    ({}, [rule("a", "allow", "echo 'x")], ("rules", 0, "commands"), "does not split"),
    ({}, [{"name": "a", "action": "allow", "commands": "ls", "colour": 1}],
     ("rules", 0, "colour"), "unknown key"),
    ({}, [rule("a", "allow", "ls"), rule("a", "deny", "rm")], ("rules", 1, "name"), "duplicate"),
    ({}, [rule("bad name", "allow", "ls")], ("rules", 0, "name"), "name must be"),
    ({}, [rule("a", "allow", "ls", who=["role:"])], ("rules", 0, "who"), "names nothing"),
    ({}, [rule("a", "allow", "ls", who=["team:x"])], ("rules", 0, "who"), "unknown principal"),
    ({}, [rule("a", "allow", "ls", who=[])], ("rules", 0, "who"), "empty"),
    ({}, [rule("a", "allow", "ls", targets=["label:"])], ("rules", 0, "targets"), "no label"),
    ({}, [rule("a", "allow", "ls", targets=[""])], ("rules", 0, "targets"), "non-empty"),
    ({}, [rule("a", "allow", "ls", description=3)], ("rules", 0, "description"), "string"),
    ({}, ["not a table"], ("rules", 0), "must be a table"),
])
def test_each_problem_is_reported_with_where(settings, rules, where, fragment):
    found = problems(settings, rules)
    assert any(w == where and fragment in m for w, m in found), found


def test_all_problems_are_reported_at_once():
    found = problems({"default": "x"}, [rule("a", "nope", "ls [", who=["role:"]),
                                        rule("a", "allow", "")])
    assert len(found) == 6, found


def test_config_turns_where_into_line_numbers():
    text = """
[settings]
default = "deny"

[[rules]]
name = "ok"
action = "allow"
commands = ["ls"]

[[rules]]
name = "broken"
action = "sometimes"
commands = ["rm [x"]
"""
    with pytest.raises(ConfigError) as info:
        parse_config(text, "policy.toml")
    lines = sorted(p.line for p in info.value.problems)
    assert lines == [12, 13]


def test_settings_defaults_are_deny_and_review():
    policy = compile_policy({}, [])
    assert (policy.default, policy.opaque) == (Action.DENY, Action.REVIEW)
    assert policy.evaluate(AGENT, None, "ls").action is Action.DENY
    assert policy.evaluate(AGENT, None, "$X").action is Action.REVIEW


@pytest.mark.parametrize("default, opaque, line, expected", [
    ("allow", "review", "ls", "allow"),
    ("review", "deny", "ls", "review"),
    ("allow", "deny", "$X", "deny"),
    ("allow", "allow", "$X", "allow"),
    ("deny", "allow", "((x", "allow"),
    ("deny", "review", "((x", "review"),
    ("allow", "review", "echo 'unterminated", "review"),
])
def test_settings_decide_unmatched_and_opaque(default, opaque, line, expected):
    policy = compile_policy({"default": default, "opaque": opaque}, [])
    assert policy.evaluate(AGENT, None, line).action.value == expected


# ---- precedence -----------------------------------------------------------------

def test_most_restrictive_wins_regardless_of_order():
    rules = [rule("allow-all", "allow", "*"), rule("review-sys", "review", "systemctl"),
             rule("deny-stop", "deny", "systemctl stop")]
    for ordering in (rules, rules[::-1]):
        policy = compile_policy({}, ordering)
        assert policy.evaluate(AGENT, None, "systemctl stop x").rule == "deny-stop"
        assert policy.evaluate(AGENT, None, "systemctl status x").rule == "review-sys"
        assert policy.evaluate(AGENT, None, "uptime").rule == "allow-all"


def test_ties_go_to_the_first_rule_in_the_file():
    policy = compile_policy({}, [rule("first", "deny", "rm"), rule("second", "deny", "rm -r")])
    assert policy.evaluate(AGENT, None, "rm -r x").rule == "first"


def test_line_action_is_the_most_restrictive_command():
    policy = compile_policy({}, [rule("ls", "allow", "ls"), rule("cat", "review", "cat"),
                                 rule("rm", "deny", "rm")])
    d = policy.evaluate(AGENT, None, "ls; cat x; rm y; ls")
    assert (d.action, d.rule, d.command) == (Action.DENY, "rm", ("rm", "y"))
    assert [c.action.value for c in d.commands] == ["allow", "review", "deny", "allow"]
    d = policy.evaluate(AGENT, None, "ls; cat x")
    assert (d.action, d.rule) == (Action.REVIEW, "cat")
    d = policy.evaluate(AGENT, None, "ls -l | ls")
    assert d.action is Action.ALLOW and d.reason.startswith("all 2 commands allowed")


def test_a_named_rule_is_preferred_over_default_for_the_reason():
    policy = compile_policy({}, [rule("rm", "deny", "rm")])
    d = policy.evaluate(AGENT, None, "nice rm x")
    assert d.rule == "rm" and "via nice" in d.reason


# ---- who / targets ----------------------------------------------------------------

@pytest.mark.parametrize("who, principal, applies", [
    (["*"], OTHER, True),
    (["role:agents"], AGENT, True),
    (["role:agents"], OTHER, False),
    (["role:age*"], AGENT, True),
    (["group:g-ops"], AGENT, True),
    (["app:app-1"], AGENT, True),
    (["sub:agent-1"], AGENT, True),
    (["tenant:t1"], AGENT, True),
    (["tenant:t2", "sub:agent-1"], AGENT, True),
    (["tenant:t2"], AGENT, False),
])
def test_who(who, principal, applies):
    policy = compile_policy({}, [rule("r", "allow", "ls", who=who)])
    assert (policy.evaluate(principal, None, "ls").rule == "r") is applies


@pytest.mark.parametrize("targets, target, applies", [
    (None, None, True),
    (None, WEB1, True),
    (["web*"], WEB1, True),
    (["web*"], DB1, False),
    (["label:prod"], WEB1, True),
    (["label:prod"], DB1, False),
    (["web1"], None, False),
    (["*"], None, True),
])
def test_targets(targets, target, applies):
    extra = {} if targets is None else {"targets": targets}
    policy = compile_policy({}, [rule("r", "allow", "ls", **extra)])
    assert (policy.evaluate(AGENT, target, "ls").rule == "r") is applies


def test_rule_sets_are_cached_per_principal_and_target_correctly():
    policy = compile_policy({}, [rule("r", "allow", "ls", who=["role:agents"],
                                      targets=["label:prod"])])
    seq = [(AGENT, WEB1, "r"), (OTHER, WEB1, "<default>"), (AGENT, DB1, "<default>"),
           (AGENT, WEB1, "r"), (AGENT, None, "<default>")]
    for principal, target, expected in seq * 2:
        assert policy.evaluate(principal, target, "ls").rule == expected


# ---- decisions --------------------------------------------------------------------

def test_decision_to_dict_is_json():
    policy = compile_policy({}, [rule("rm", "deny", "rm -r", description="use trash")])
    d = policy.evaluate(AGENT, None, "sudo rm -rf /x")
    data = json.loads(json.dumps(d.to_dict()))
    assert data["action"] == "deny" and data["rule"] == "rm"
    assert data["command"] == ["rm", "-rf", "/x"]
    assert data["reason"] == "rm -rf /x (via sudo) matches rule rm (deny): use trash"
    assert [c["argv"] for c in data["commands"]] == [["sudo", "rm", "-rf", "/x"],
                                                     ["rm", "-rf", "/x"]]
    assert data["commands"][1]["via"] == "sudo"
    assert set(data) >= {"action", "rule", "reason", "command", "commands"}


def test_empty_lines_are_allowed_with_a_synthetic_rule():
    policy = compile_policy({}, [])
    for line in ("", "   ", "# comment", "\n\n", "X=1; Y=2"):
        d = policy.evaluate(AGENT, None, line)
        assert (d.action, d.rule, d.commands) == (Action.ALLOW, "<empty>", ())


def test_unparsable_line_reason_names_the_problem():
    d = compile_policy({}, [rule("echo", "allow", "echo")]).evaluate(AGENT, None, "echo 'oops")
    assert (d.action, d.rule) == (Action.REVIEW, "<opaque>")
    assert "does not parse" in d.reason
    assert [(c.argv, c.rule) for c in d.commands] == [(("echo",), "echo")]


def test_denied_command_beats_an_unparsable_line():
    policy = compile_policy({}, [rule("rm", "deny", "rm")])
    d = policy.evaluate(AGENT, None, "rm x; echo 'oops")
    assert (d.action, d.rule) == (Action.DENY, "rm")


def test_evaluation_is_deterministic():
    policy = compile_policy({}, [rule("rm", "deny", "rm -r"), rule("ls", "allow", "ls")])
    lines = ["ls", "rm -rf x", "ls; $X", "echo 'x"]
    first = [policy.evaluate(AGENT, None, line) for line in lines]
    again = [policy.evaluate(AGENT, None, line) for line in lines]
    assert first == again


# ---- fail closed ------------------------------------------------------------------

def test_internal_errors_deny():
    policy = compile_policy({}, [rule("ls", "allow", "ls", who=["role:agents"])])
    d = policy.evaluate(object(), None, "ls")     # not a principal at all
    assert isinstance(d, Decision)
    assert (d.action, d.rule) == (Action.DENY, "<error>")
    assert "AttributeError" in d.reason


def test_random_input_never_raises_nor_errors():
    policy = compile_policy({}, [rule("d", "deny", "rm -r", "* /etc/shadow", "x --long=/a*"),
                                 rule("a", "allow", "ls", "echo x")])
    alphabet = list("ab -=/$(){}[]`'\"\\;|&<>!#~*?,.:\n\t\r\x00é") + [
        "$(", "${", "$((", "<<", "<<<", "<<'E'\n", "\nE\n", "sudo ", "bash -c ", "if ", "then ",
        "fi", "for ", "do ", "done", "case ", " in ", "esac", "$'", "\\x41", "time ", "coproc ",
        "<(", ">(", "--", "-c", "xargs ", "find . -exec ", "env ", "eval ", "\udcff", "\ud800"]
    rng = random.Random(1234)
    for _ in range(3000):
        line = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 30)))
        d = policy.evaluate(AGENT, None, line)
        assert d.rule != "<error>", (line, d.reason)
        assert d.action in (Action.ALLOW, Action.DENY, Action.REVIEW)


def test_policy_counts():
    policy = Policy([])
    assert policy.counts() == {"allow": 0, "deny": 0, "review": 0}
