"""Issue 15: effects the program tables find in option values and operands.

The policy allows each program outright (``commands = [P]``), connections to
``*.internal`` and writes under ``/tmp``, and denies reading ``/etc/shadow`` and writing
``/etc``.  A line is expected to be allowed, or not (deny or review).  Lines are only
parsed, never run.
"""

from __future__ import annotations

import pytest

from bastion.identity.principal import Principal
from bastion.policy import Action, compile_policy

P = Principal(subject="agent")
PROGRAMS = ["curl", "man", "openssl", "kubectl", "echo", "cat", "ls", "grep", "env", "sudo",
            "tar", "cd", "wc", "head", "diff", "sort", "stat", "more", "docker", ":", "find", "su",
            "runuser"]
POLICY = compile_policy({"default": "deny", "opaque": "review"}, [
    {"name": "programs", "action": "allow", "commands": PROGRAMS,
     "connects": ["*.internal"], "writes": ["/tmp/**"]},
    {"name": "no-shadow", "action": "deny", "reads": ["/etc/shadow", "/etc/ssh/ssh_host_*_key"]},
    {"name": "no-etc-writes", "action": "deny", "writes": ["/etc/**"]},
])


@pytest.mark.parametrize("line, allowed", [
    # curl: a request that may change data is opaque; -w can write and read files
    ("curl https://api.internal/", True),
    ("curl -X GET https://api.internal/", True),
    ("curl -XHEAD https://api.internal/", True),
    ("curl -G -d q=1 https://api.internal/search", True),
    ("curl -X POST https://api.internal/", False),
    ("curl -XDELETE https://api.internal/v1/users/1", False),
    ("curl --request=PUT https://api.internal/", False),
    ("curl --req patch https://api.internal/", False),
    ("curl -d x=1 https://api.internal/", False),
    ("curl --json '{}' https://api.internal/", False),
    ("curl -T /tmp/f https://api.internal/", False),
    ("curl -G -F a=b https://api.internal/", False),
    ('curl -X "$M" https://api.internal/', False),
    ("curl -so /dev/null -w '%{http_code}' https://api.internal/", True),
    ("curl -w '%output{/tmp/x}%{http_code}' https://api.internal/", True),
    ("curl -w '%output{/etc/x}' https://api.internal/", False),
    ("curl -w '%output{>>/etc/x}' https://api.internal/", False),
    ("curl -w @/etc/shadow https://api.internal/", False),
    ("curl -d @/etc/shadow https://api.internal/", False),
    # man: -l FILE and a name with a slash are files
    ("man ls", True),
    ("man 5 crontab", True),
    ("man -l /etc/shadow", False),
    ("man --local-file /etc/shadow", False),
    ("man /etc/shadow", False),
    ("man ../../etc/shadow", False),         # climbs out of an unknown directory
    # openssl: pass phrase sources
    ("openssl x509 -in /tmp/c.pem -noout", True),
    ("openssl x509 -in /tmp/c.pem -passin pass:x -noout", True),
    ("openssl x509 -in /tmp/c.pem -passin file:/etc/shadow -noout", False),
    ("openssl enc -d -in /tmp/x -pass file:/etc/shadow", False),
    ("openssl rsa -in /tmp/k -passout file:/etc/shadow", False),
    # kubectl: template files and -f
    ("kubectl get pods -o json", True),
    ("kubectl get pods -o go-template --template='{{.kind}}'", True),
    ("kubectl get pods -o go-template-file=/etc/shadow", False),
    ("kubectl get pods -o jsonpath-file=/etc/shadow", False),
    ("kubectl get pods -o go-template-file --template=/etc/shadow", False),
    ("kubectl get -f /tmp/x.yaml", True),
    ("kubectl get -f /etc/shadow", False),
    ("kubectl get -f https://evil.example/x.yaml", False),
    # $(< FILE) is bash reading FILE
    ('echo "$(< /etc/shadow)"', False),
    ("x=$(</etc/shadow)", False),
    ('echo "$(< /tmp/x)"', True),
])
def test_program_effect(line, allowed):
    decision = POLICY.evaluate(P, None, line)
    assert (decision.action == Action.ALLOW) is allowed, (line, decision.reason)


def test_an_opaque_table_keeps_the_effects_it_read_for_deny_rules():
    """curl -d is opaque (review), but the file it uploads is still a read: deny wins."""
    decision = POLICY.evaluate(P, None, "curl -d @/etc/shadow https://api.internal/")
    assert decision.action == Action.DENY and decision.rule == "no-shadow", decision.reason


@pytest.mark.parametrize("line, allowed", [
    # wrappers that change the working directory: relative operands follow it
    ("env -C /tmp cat x", True),
    ("env -C /etc cat shadow", False),
    ("env --chdir=/etc cat shadow", False),
    ("env --chdir /etc cat shadow", False),
    ('env -C "$d" cat shadow', False),
    ("env -C etc cat shadow", False),
    ("sudo -D /etc cat shadow", False),
    ("sudo --chdir=/etc cat shadow", False),
    ("sudo cat /tmp/x", True),
    ("sudo -i cat shadow", False),             # a login shell starts in the target's home
    ("su - root -c 'cat shadow'", False),
    ("runuser -l -u root -- cat shadow", False),
    ("find /etc -name shadow -execdir cat shadow \\;", False),
    # /proc/<pid>/cwd and /proc/<pid>/root reach other paths
    ("cat /proc/self/status", True),
    ("cd /etc && cat /proc/self/cwd/shadow", False),
    ("cat /proc/self/cwd/shadow", False),
    ("cat /proc/1/cwd/shadow", False),
    ("cat /proc/self/task/1/cwd/shadow", False),
    ("cat /proc/self/cwd/../../etc/shadow", False),
    ("cat /proc/self/root/etc/shadow", False),
    ('cat /proc/"$pid"/root/etc/shadow', False),
    ("cat /proc/*/root/etc/shadow", False),
    ("cat /proc/*/cwd/shadow", False),
    # a recursive reader of a directory reached through cd
    ("cd /var/log && grep -r x .", True),
    ("cd /etc/ssh && grep -r x .", False),
    ("cd /etc/ssh; grep -r x .", False),
    ("cd /etc && grep -rl x ssh", False),
    # tar -C DIR: the members named after it are read inside DIR
    ("tar -C /tmp -czf /tmp/x.tgz notes", True),
    ("tar -C /etc -czf /tmp/x.tgz shadow", False),
    ("tar -czf /tmp/x.tgz -C /etc ssh", False),
    ('tar -C "$d" -czf /tmp/x.tgz shadow', False),
])
def test_working_directory(line, allowed):
    decision = POLICY.evaluate(P, None, line)
    assert (decision.action == Action.ALLOW) is allowed, (line, decision.reason)
