"""Effect keys of [[rules]]: writes / reads / connects / interactive, and redirections as writes."""

from __future__ import annotations

import pytest

from bastion.errors import ConfigError
from bastion.identity.principal import Principal
from bastion.policy import Action, compile_policy
from bastion.policy.effects import canonical_path

P = Principal(subject="agent")

BASE = [
    {"name": "read-only", "action": "allow", "commands": ["ls", "echo", "cat", "grep"]},
    {"name": "tmp-writes", "action": "allow", "commands": ["echo"], "writes": ["/tmp/**"]},
    {"name": "logs-anyone", "action": "allow", "writes": ["/var/tmp/out-*"]},
    {"name": "no-etc-writes", "action": "deny", "writes": ["/etc/**", "~/.ssh/**"]},
    {"name": "no-secrets", "action": "deny", "reads": ["/etc/shadow", "**/id_*"]},
    {"name": "review-internal", "action": "review", "connects": ["*.internal"]},
]


def decide(line, rules=BASE):
    return compile_policy({}, rules).evaluate(P, None, line)


@pytest.mark.parametrize("line, action, rule", [
    ("ls > /etc/passwd", "deny", "no-etc-writes"),
    ("ls > /dev/null", "allow", "read-only"),
    ("ls 2>&1", "allow", "read-only"),
    ("ls >&2", "allow", "read-only"),
    ("ls 2>/dev/stderr >/dev/stdout", "allow", "read-only"),
    ("ls 2>/dev/fd/3", "allow", "read-only"),
    ("ls > /tmp/x", "deny", "<default>"),           # read-only names no write
    ("echo hi > /tmp/x", "allow", "read-only"),       # tmp-writes names the write
    ("echo hi >> /tmp/a/b", "allow", "read-only"),
    ("ls > /var/tmp/out-1", "allow", "read-only"),    # an effect-only allow covers it
    ("ls &> /srv/x", "deny", "<default>"),
    ("ls >| /srv/x", "deny", "<default>"),
    ("ls > $OUT", "deny", "no-etc-writes"),            # could be /etc/...
    ("echo k >> ~/.ssh/authorized_keys", "deny", "no-etc-writes"),
    ("echo x > /proc/self/root/etc/cron.d/x", "deny", "no-etc-writes"),
    ("echo x > //etc/./cron.d/../passwd", "deny", "no-etc-writes"),
    ("cat < /etc/shadow", "deny", "no-secrets"),
    ("cat /home/u/.ssh/id_ed25519", "deny", "no-secrets"),
    ("cat /proc/1/root/etc/shadow", "deny", "no-secrets"),
    ("cat /etc/hosts", "allow", "read-only"),
    ("ls", "allow", "read-only"),
    ("{ ls; echo; } > /etc/x", "deny", "no-etc-writes"),
])
def test_effect_decisions(line, action, rule):
    d = decide(line)
    assert (d.action.value, d.rule) == (action, rule), d.reason


def test_uncovered_write_reason_names_it():
    d = decide("ls > /srv/data")
    assert d.action is Action.DENY
    assert "writes /srv/data, which no allow rule names" in d.reason


def test_runtime_write_reason_says_so():
    rules = [{"name": "ls", "action": "allow", "commands": ["ls"]}]
    d = decide("ls > $F", rules)
    assert d.action is Action.DENY and "only known at run time" in d.reason


def test_most_restrictive_wins_over_named_write():
    rules = BASE + [{"name": "etc-ok", "action": "allow", "commands": ["echo"],
                     "writes": ["/etc/motd"]}]
    assert decide("echo hi > /etc/motd", rules).rule == "no-etc-writes"
    rules = [r for r in rules if r["name"] != "no-etc-writes"]
    assert decide("echo hi > /etc/motd", rules).action is Action.ALLOW


def test_commands_rule_writes_do_not_cover_other_programs():
    rules = [{"name": "ro", "action": "allow", "commands": ["ls", "echo"]},
             {"name": "echo-tmp", "action": "allow", "commands": ["echo"], "writes": ["/tmp/*"]}]
    assert decide("ls > /tmp/x", rules).action is Action.DENY
    assert decide("echo > /tmp/x", rules).action is Action.ALLOW


def test_interactive_flag_and_effect_only_rule_compile():
    pol = compile_policy({}, [
        {"name": "vim", "action": "allow", "commands": ["vim"], "interactive": True},
        {"name": "w", "action": "deny", "writes": "/etc/*"},
        {"name": "old", "action": "allow", "commands": ["ls"]},
    ])
    assert [r.interactive for r in pol.rules] == [True, False, False]
    assert pol.rules[1].patterns == () and pol.rules[1].has_effects


@pytest.mark.parametrize("program, line", [
    ("more", "more /etc/hosts"),                 # !cmd at its prompt, no secure mode
    ("vim", "vim /etc/hosts"),                   # :!sh, :terminal
    ("vim", "vim -R /var/log/syslog"),           # read-only mode still runs :!sh
    ("view", "view /etc/hosts"),
])
def test_programs_with_keyboard_escapes_need_an_interactive_rule(program, line):
    # an allow rule for the program alone does not allow it; one with interactive = true
    # (or another such rule naming it) does
    plain = [{"name": "tools", "action": "allow", "commands": [program, "cat", "echo"]}]
    d = decide(line, plain)
    assert d.action is Action.DENY and "interactive = true" in d.reason, d.reason
    assert decide("cat /etc/hosts", plain).action is Action.ALLOW
    flagged = [{"name": "tty", "action": "allow", "commands": [program, "echo"],
                "interactive": True}]
    assert decide(line, flagged).action is Action.ALLOW
    both = plain + [{"name": "tty", "action": "allow", "commands": [program],
                     "interactive": True}]
    assert decide(line, both).action is Action.ALLOW


@pytest.mark.parametrize("rule, fragment", [
    ({"name": "a", "action": "allow"}, "missing required key 'commands'"),
    ({"name": "a", "action": "deny", "writes": []}, "empty"),
    ({"name": "a", "action": "deny", "writes": [1]}, "non-empty strings"),
    ({"name": "a", "action": "deny", "reads": ["/x[a"]}, "unterminated"),
    ({"name": "a", "action": "allow", "commands": ["ls"], "interactive": "yes"}, "true or false"),
])
def test_effect_key_validation(rule, fragment):
    with pytest.raises(ConfigError) as info:
        compile_policy({}, [rule])
    assert any(fragment in p.message for p in info.value.problems)


@pytest.mark.parametrize("path, canon", [
    ("/proc/self/root/etc/shadow", "/etc/shadow"),
    ("/proc/12/root/etc/shadow", "/etc/shadow"),
    ("/proc/thread-self/root/proc/self/root/x", "/x"),
    ("//etc/./shadow", "/etc/shadow"),
    ("/etc/x/../shadow", "/etc/shadow"),
    ("/proc/self/status", "/proc/self/status"),
])
def test_canonical_path(path, canon):
    assert canonical_path(path) == canon


def test_example_policy_denies_redirect_writes():
    import tomllib
    from pathlib import Path
    data = tomllib.loads((Path(__file__).resolve().parents[2] / "policy.toml").read_text())
    pol = compile_policy(data.get("settings", {}), data["rules"])
    for line in ("ls > /etc/passwd", "echo x >> ~/.ssh/authorized_keys", "> /etc/cron.d/x",
                 "echo c > /proc/sysrq-trigger"):
        assert pol.evaluate(P, None, line).action is Action.DENY, line
    for line in ("ls > /dev/null", "ls 2>&1", "ls -la"):
        assert pol.evaluate(P, None, line).action is Action.ALLOW, line
