"""bastion.transfer.decide: file operations decided by effect and resolved path."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from bastion.policy import compile_policy
from bastion.transfer.decide import META, READS, WRITES, decide, legacy_scp, names_of

PRINCIPAL = SimpleNamespace(subject="s1", tenant="t", app_id="a", roles=("agents",), groups=())
WEB1 = SimpleNamespace(name="web1", labels=("prod",))
DB1 = SimpleNamespace(name="db1", labels=())

RULES = [
    {"name": "logs", "action": "allow", "reads": ["/var/log/**"]},
    {"name": "releases", "action": "allow", "writes": ["/srv/app/releases/**"]},
    {"name": "curl-tmp", "action": "allow", "commands": ["curl"], "writes": ["/tmp/**"]},
    {"name": "no-keys", "action": "deny", "writes": ["~/.ssh/**", "/etc/**"]},
    {"name": "no-secrets", "action": "deny", "reads": ["/var/log/secret/**"]},
    {"name": "held", "action": "review", "writes": ["/srv/app/releases/prod/**"]},
    {"name": "held-reads", "action": "review", "reads": ["/srv/held/**"]},
    {"name": "web-only", "action": "allow", "targets": ["web*"], "writes": ["/opt/web/**"]},
]


def verdict(effect, path, *, default="deny", target=WEB1, listing=False):
    policy = compile_policy({"default": default}, RULES)
    return decide(policy, PRINCIPAL, target, effect, path, home="/home/deploy",
                  what="sftp op", listing=listing)


@pytest.mark.parametrize("effect, path, allowed, rule", [
    (READS, "/var/log/syslog", True, "logs"),
    (READS, "/var/log/secret/token", False, "no-secrets"),      # deny wins over allow
    (WRITES, "/var/log/syslog", False, "<default>"),             # reads do not allow writes
    (WRITES, "/srv/app/releases/v2/app.tgz", True, "releases"),
    (WRITES, "/srv/app/releases/prod/app.tgz", False, "held"),  # held until approved
    (WRITES, "/home/deploy/.ssh/authorized_keys", False, "no-keys"),   # matched as ~/.ssh/...
    (WRITES, "/etc/passwd", False, "no-keys"),
    (WRITES, "/tmp/x", False, "<default>"),          # an allow rule with commands is not for sftp
    (WRITES, "/opt/web/index.html", True, "web-only"),
    (META, "/etc/passwd", True, "<metadata>"),
    (META, "/var/log/secret/token", False, "no-secrets"),
    (WRITES, "/var/log/../../etc/x", False, "no-keys"),          # canonical before matching
])
def test_table(effect, path, allowed, rule):
    v = verdict(effect, path)
    assert (v.allowed, v.rule) == (allowed, rule), v.reason
    assert path in v.reason or v.rule == "<default>"


def test_review_is_not_allowed_until_approved_and_names_its_rule():
    v = verdict(WRITES, "/srv/app/releases/prod/x")
    assert v.action == "review" and not v.allowed and "held" in v.reason
    # metadata of a held path is not held (the open is): only deny rules refuse it
    m = verdict(META, "/srv/held/x")
    assert m.allowed and m.rule == "<metadata>"
    r = verdict(READS, "/srv/held/x")
    assert (r.allowed, r.action, r.rule) == (False, "review", "held-reads")


def test_rules_for_other_targets_do_not_apply():
    assert verdict(WRITES, "/opt/web/x", target=DB1).rule == "<default>"


def test_default_allow_allows_what_no_rule_names_but_deny_rules_still_win():
    assert verdict(WRITES, "/srv/other", default="allow").allowed
    assert not verdict(WRITES, "/etc/x", default="allow").allowed


def test_a_listing_reads_the_directory_names():
    assert verdict(READS, "/var/log", listing=True).allowed
    assert not verdict(READS, "/var/log/secret", listing=True).allowed
    assert not verdict(READS, "/var", listing=True).allowed


def test_names_under_home_also_match_as_tilde():
    assert names_of("/home/deploy/.ssh/x", "/home/deploy") == ("/home/deploy/.ssh/x", "~/.ssh/x")
    assert names_of("/home/deployer/x", "/home/deploy") == ("/home/deployer/x",)


@pytest.mark.parametrize("command, legacy", [
    ("scp -t /srv/x", True), ("scp -f /srv/x", True), ("scp -v -r -t -- /srv", True),
    ("scp -o x=y -f /srv", True),
    ("/usr/bin/scp -pt .", True), ("scp a b", False), ("scpx -t", False), ("ls -t", False),
    ("scp -oStrictHostKeyChecking=no a b", False), ("scp -i ~/.ssh/id_t a b", False),
    ("scp a -t", False),
])
def test_legacy_scp(command, legacy):
    assert legacy_scp(command) is legacy
