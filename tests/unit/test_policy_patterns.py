"""Pattern semantics of [[rules]] commands (bastion.policy.patterns), table-driven.

Each row: a pattern, the rule's action, a line, and whether the rule matches some
simple command of the line.  Lines are only parsed, never executed.
"""

from __future__ import annotations

import pytest

from bastion.identity.principal import Principal
from bastion.policy import compile_policy
from bastion.policy.patterns import (
    ANY, STAR, Glob, PatternError, glob_tokens, intersects, parse_pattern, template_tokens,
)

P = Principal(subject="tester")


def matches(pattern: str, action: str, line: str) -> bool:
    policy = compile_policy({"default": "deny", "opaque": "review"},
                            [{"name": "r", "action": action, "commands": [pattern]}])
    decision = policy.evaluate(P, None, line)
    return any(c.rule == "r" for c in decision.commands)


ROWS = [
    # program word: a glob on the normalised program name
    ("rm", "allow", "rm x", True),
    ("rm", "allow", "/bin/rm x", True),
    ("rm", "allow", "/usr/bin/../../bin/rm x", True),
    ("rm", "allow", "rmdir x", False),
    ("rm*", "allow", "rmdir x", True),
    ("systemd-*", "allow", "systemd-analyze", True),
    ("*", "allow", "anything at all", True),
    ("r?", "allow", "rm", True),
    ("[rs]m", "allow", "sm", True),
    ("[!r]m", "allow", "rm", False),
    # allow rules never match a program named by an untrusted path; deny rules do
    ("rm", "allow", "./rm x", False),
    ("rm", "allow", "/tmp/rm x", False),
    ("rm", "deny", "./rm x", True),
    ("rm", "deny", "/tmp/x/../rm x", True),
    # a program path pattern
    ("/opt/app/bin/*", "allow", "/opt/app/bin/deploy --now", True),
    ("/opt/app/bin/*", "allow", "/opt/app/bin/../../../tmp/deploy", False),
    ("/opt/app/bin/*", "allow", "deploy", False),
    # short options: -x matches any cluster holding x, in any position
    ("rm -r", "deny", "rm -r x", True),
    ("rm -r", "deny", "rm -fr x", True),
    ("rm -r", "deny", "rm x -vrf", True),
    ("rm -r", "deny", "rm -f x", False),
    ("rm -r", "deny", "rm --r x", False),
    ("rm -r", "deny", "rm -R x", False),
    ("rm -rf", "deny", "rm -r -f x", True),
    ("rm -rf", "deny", "rm -fr x", True),
    ("rm -rf", "deny", "rm -r x", False),
    ("rm -r", "allow", "rm -- -r", False),
    ("rm -r", "deny", "rm -- -r", True),
    ("rm -r", "allow", "rm ./-r", False),
    # long options: exact, =value, GNU abbreviations
    ("rm --recursive", "deny", "rm --recursive x", True),
    ("rm --recursive", "deny", "rm --recursive=1 x", True),
    ("rm --recursive", "deny", "rm --rec x", True),
    ("rm --recursive", "deny", "rm --r x", True),
    ("rm --recursive", "deny", "rm --recursively x", False),
    ("rm --recursive", "deny", "rm -- x", False),
    ("rm --recursive", "deny", "rm --force x", False),
    ("git --output=/etc/*", "deny", "git log --output=/etc/x", True),
    ("git --output=/etc/*", "deny", "git log --out=/etc//x", True),
    ("git --output=/etc/*", "deny", "git log --output /etc/x", True),
    ("git --output=/etc/*", "deny", "git log --output /tmp/x", False),
    # other words: globs on some argument, in any order
    ("systemctl restart", "review", "systemctl restart nginx", True),
    ("systemctl restart", "review", "systemctl nginx restart", True),
    ("systemctl restart nginx", "review", "systemctl --now restart nginx", True),
    ("systemctl restart nginx", "review", "systemctl restart apache", False),
    ("systemctl restart", "review", "systemctl restarts", False),
    ("systemctl restart*", "review", "systemctl restarts", True),
    ("kubectl delete pod*", "deny", "kubectl -n x delete pods/a", True),
    ("echo 'hello world'", "allow", "echo 'hello world'", True),
    ("echo 'hello world'", "allow", "echo hello world", False),
    ("* /etc/shadow", "deny", "cat /etc/shadow", True),
    ("* /etc/shadow", "deny", "cat /etc//./shadow", True),
    ("* /etc/shadow", "deny", "cat /etc/x/../shadow", True),
    ("* /etc/shadow", "deny", "cat /etc/shadow.bak", False),
    ("* /etc//./shadow", "deny", "cat /etc/shadow", True),
    ("* /etc/*", "deny", "cp x /etc/cron.d/y", True),
    ("* /etc/*", "deny", "cp x /var/etc/y", False),
    # redirection targets are arguments
    ("* /etc/shadow", "deny", "cat < /etc/shadow", True),
    ("* /etc/shadow", "deny", "echo x >> /etc/shadow", True),
    ("* /etc/shadow", "deny", "{ cat; } < /etc/shadow", True),
    ("* /etc/shadow", "deny", "ls 2>&1", False),
    # deny/review rules also read values glued to options and paths after a cd
    ("* /etc/shadow", "deny", "grep --file=/etc/shadow x", True),
    ("* /etc/shadow", "deny", "dd if=/etc/shadow", True),
    ("* /etc/shadow", "deny", "tar -f/etc/shadow", True),
    ("* /etc/shadow", "deny", "scp host:/etc/shadow .", True),
    ("* /etc/shadow", "deny", "cd /etc; cat shadow", True),
    ("* /etc/shadow", "deny", "cd /; cd etc; cat shadow", True),
    ("* /etc/shadow", "deny", "cd $D; cat ../../etc/shadow", True),
    ("* /etc/shadow", "deny", "cat ../../etc/shadow", True),
    ("* /etc/shadow", "deny", "cat shadow", False),
    ("cat /etc/*", "allow", "cat --file=/etc/x", False),
    # run-time arguments: count for deny/review (when they could match), never for allow
    ("rm -r", "deny", "rm $F x", True),
    ("rm -r", "deny", "rm -$F x", True),
    ("rm -r", "deny", "rm x$F", False),
    ("rm -r", "deny", "rm /tmp/$F", False),
    ("rm --recursive", "deny", "rm $F x", True),
    ("rm --recursive", "deny", "rm /x/$F", False),
    ("* /etc/shadow", "deny", "cat /etc/$F", True),
    ("* /etc/shadow", "deny", "cat /et?/sha*", True),
    ("* /etc/shadow", "deny", "cat /e*", True),
    ("* /etc/shadow", "deny", "cat /var/$F", False),
    ("* /etc/shadow", "deny", "cat /etc/{passwd,shadow}", True),
    ("* /etc/shadow", "deny", "cat ~/x", False),
    ("* /etc/shadow", "deny", "cat /etc//$F", True),
    ("* /etc/shadow", "deny", "cat /tmp/$F/../../etc/shadow", True),
    ("* /etc/shadow", "review", "cat $(echo /etc/shadow)", True),
    ("systemctl status", "allow", "systemctl $X", False),
    ("systemctl status", "allow", "systemctl sta*", False),
    ("ls *.log", "allow", "ls *.log", False),
    ("git --output=/tmp/*", "deny", "git log --output $F", True),
    # xargs / find supply run-time arguments
    ("rm -r", "deny", "find . | xargs rm", True),
    ("rm -r", "deny", "find . -exec rm {} +", True),
    ("rm -r", "deny", "xargs -I{} rm /tmp/{}", False),
    # opaque commands: allow rules never match; deny rules match on static words only
    ("ls", "allow", "PATH=/tmp ls", False),
    ("ls", "deny", "PATH=/tmp ls", True),
    ("* /etc/shadow", "deny", "PATH=/x cat /etc/shadow", True),
    ("* /etc/shadow", "deny", 'eval "$X"', False),
    ("* -r", "deny", "$CMD -r /x", True),
    ("rm -r", "deny", "$CMD -r /x", False),
]


@pytest.mark.parametrize("pattern, action, line, expected", ROWS,
                         ids=[f"{r[0]}|{r[1]}|{r[2]}" for r in ROWS])
def test_pattern(pattern, action, line, expected):
    assert matches(pattern, action, line) is expected


@pytest.mark.parametrize("glob, template, expected", [
    ("/etc/shadow", ("/etc/", None), True),
    ("/etc/shadow", ("/var/", None), False),
    ("/etc/shadow", (None, "/shadow"), True),
    ("/etc/shadow", (None, "/passwd"), False),
    ("/etc/shadow", (None,), True),
    ("/etc/shadow", ("/etc/shadow",), True),
    ("/etc/shadow", ("/etc/shadow", None), True),     # None may be empty
    ("/etc/shadow", ("/etc/shadowx",), False),
    ("/etc/*", ("/etc",), False),
    ("/etc/*", ("/e", None), True),
    ("-*r*", ("-", None), True),
    ("-*r*", ("x", None), False),
    ("a?c", ("a", None, "c"), True),
    ("a?c", ("ab", None, "d"), False),
    ("[ab]x", (None, "x"), True),
    ("[ab]x", ("c", None), False),
    ("[!ab]x", ("c", None), True),
    ("*a*b*", (None, "b", None, "a", None), True),
    ("a*", ("b", None), False),
])
def test_intersects(glob, template, expected):
    assert intersects(glob_tokens(glob), template_tokens(template)) is expected


def test_glob_tokens():
    assert glob_tokens("a*?") == (("lit", "a"), STAR, ANY)
    assert glob_tokens("**") == (STAR,)
    assert glob_tokens("\\*") == (("lit", "*"),)
    assert Glob("/etc/shadow").literal == "/etc/shadow"
    assert Glob("/etc/*").literal is None
    assert Glob("[]]").match("]") and not Glob("[]]").match("x")


@pytest.mark.parametrize("source, message", [
    ("", "non-empty"),
    ("   ", "non-empty"),
    ("rm 'x", "does not split"),
    ("ls [abc", "unterminated \\["),
    ("bin/ls", "must be absolute"),
    ("rm ''", "empty word"),
])
def test_bad_patterns(source, message):
    with pytest.raises(PatternError, match=message):
        parse_pattern(source)


def test_parsed_pattern_words():
    pat = parse_pattern("rm -rf --no-preserve-root=* /x//y")
    kinds = [type(w).__name__ for w in pat.words]
    assert kinds == ["Short", "Short", "Long", "Any_"]
    assert pat.words[3].glob.source == "/x/y"
