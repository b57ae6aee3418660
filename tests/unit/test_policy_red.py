"""Red-team rows: lines the engine once allowed although they run or write what the policy
denies, and ordinary lines near them that must stay allowed.

Each hole is one row: the line, the policy (``op`` = tests/unit/policy_effects/operator.toml,
a generous operator policy that allows ``set``, ``unset``, ``:``, ``bash -c``...; ``ex`` =
the example policy.toml; ``en`` = a policy that allows ``enable``), the shell's working directory when the line is typed (an
interactive shell passes it from its prompt mark), and why it must not be allowed.  Lines
are only parsed: nothing here is ever executed.
"""

from __future__ import annotations

import tomllib
from functools import lru_cache
from pathlib import Path

import pytest

from bastion.identity.principal import Principal
from bastion.policy import Action, compile_policy

ROOT = Path(__file__).resolve().parents[2]
FILES = {"op": ROOT / "tests/unit/policy_effects/operator.toml", "ex": ROOT / "policy.toml"}
AGENT = Principal(subject="agent-1", roles=("agents",))


@lru_cache(maxsize=None)
def policy(name: str):
    if name == "en":            # a policy that allows the builtin `enable`
        return compile_policy({"default": "deny", "opaque": "review"}, [
            {"name": "builtins", "action": "allow", "commands": ["enable", "true"]}])
    if name == "all":           # allow everything but `rm -r` (tests/unit/test_policy_attacks.py)
        return compile_policy({"default": "allow", "opaque": "review"}, [
            {"name": "everything", "action": "allow", "commands": ["*"]},
            {"name": "no-rm-r", "action": "deny", "commands": ["rm -r", "rm --recursive"]}])
    if name == "ssh":           # a policy that allows ssh and scp to internal hosts
        return compile_policy({"default": "deny", "opaque": "review"}, [
            {"name": "ssh", "action": "allow", "commands": ["ssh", "scp"],
             "connects": ["*.internal"], "writes": ["/tmp/**"]}])
    raw = tomllib.loads(FILES[name].read_text(encoding="utf-8"))
    return compile_policy(raw.get("settings", {}), raw.get("rules", []))


def decide(name: str, line: str, cwd: str | None = None, dialect: str = "bash"):
    return policy(name).evaluate(AGENT, "web1", line, dialect, interactive=True, cwd=cwd)


# (policy, cwd, line, why it must not be allowed)
HOLES = [
    # A function body runs when the function is called, in the directory of *that* moment:
    # defined in /tmp (scratch writes allowed), called after `cd /etc` on a later line of the
    # same interactive shell, `ls` would write /etc/x.
    ("op", "/tmp", "ls() { echo pwned > x; }", "function body: relative write, cwd unknown at call"),
    ("op", "/tmp", "function ls { echo pwned >> x; }", "function body (keyword form)"),
    ("ex", "/tmp", "ls() { echo pwned > x; }", "function body: relative write"),
    ("op", "/tmp", "cd /tmp && ls() { date > x; }", "function body after cd &&"),
    ("op", "/etc", "ls() { cat shadow; }", "function body: relative read of a secret"),
    ("op", "/tmp", "grep() { tee x; }", "function body: relative tee target"),
    # A function named like a special builtin (allowed outside POSIX mode) or like a builtin
    # the interactive loop calls: `read() {...}` would hand the loop its next "command".
    ("op", None, "function unset { :; }", "shadows a special builtin (outside POSIX mode)"),
    ("op", None, "function trap { :; }", "shadows a special builtin"),
    ("ex", None, "function unset { true; }", "shadows a special builtin"),
    ("op", None, "read() { __bastion_n=1 __bastion_l='rm -rf /tmp/c'; }",
     "shadows the read the interactive loop takes its next command with"),
    ("ex", None, "read() { __bastion_n=1 __bastion_l='rm -rf /tmp/c'; }", "shadows read"),
    ("op", None, "printf() { :; }", "shadows printf"),
    ("op", None, "command() { :; }", "shadows command"),
    # `set -k`: every NAME=VALUE argument becomes an environment variable of its command,
    # so `git log GIT_PAGER=cmd` sets git's pager (checked with bash 5.2).
    ("op", None, "set -k", "keyword: arguments become environment"),
    ("op", None, "set -ek", "keyword in a bundle"),
    ("op", None, "set -o keyword", "keyword, long form"),
    ("op", None, "set -eo keyword", "keyword, bundled -o"),
    ("op", None, "set -k; git log GIT_PAGER='rm -rf /tmp/c'", "keyword then a pager"),
    ("op", None, "set $opts", "an option known only at run time"),
    # Leaving POSIX mode lets a function shadow the special builtins (unset, trap, :) that
    # the interactive loop relies on to remove a shadowing `read`.
    ("op", None, "set +o posix", "posix off"),
    ("op", None, "set -o posix +o posix", "posix off, later word"),
    ("op", None, "unset POSIXLY_CORRECT", "unsetting POSIXLY_CORRECT leaves POSIX mode"),
    ("op", None, "unset -v POSIXLY_CORRECT", "unsetting POSIXLY_CORRECT leaves POSIX mode"),
    ("op", None, "unset x POSIXLY_CORRECT", "second name"),
    ("op", None, "unset $name", "a name known only at run time"),
    ("op", None, "POSIXLY_CORRECT=", "assigning POSIXLY_CORRECT"),
    ("op", None, "declare -r POSIXLY_CORRECT", "a read-only POSIXLY_CORRECT"),
    ("en", None, "enable -n unset", "turns off the unset the interactive loop relies on"),
    ("en", None, "enable -n read", "read would run a program found in PATH"),
    ("en", None, "enable -ns trap", "bundled"),
    # GNU tar's old-style options: each letter that takes a value takes the next word, so
    # `tar tfI x id` lists archive x with `id` as its compression program.
    ("op", None, "tar tfI x id", "old-style tar: I takes the second word"),
    ("ex", None, "tar tfI x id", "old-style tar: I takes the second word"),
    ("op", None, "tar tvfF x id", "old-style tar: F (volume script)"),
    ("op", None, "tar tgf /etc/x x", "old-style tar: g writes its value"),
    ("op", None, "tar tTf /etc/shadow x", "old-style tar: T reads its value"),
    ("op", None, "tar xCf /etc x", "old-style tar: C is where x writes"),
    # bash opens /dev/tcp/HOST/PORT and /dev/udp/HOST/PORT itself: a connection, which an
    # allow rule must name like any other.
    ("op", None, "cat < /dev/tcp/169.254.169.254/80", "connects to the metadata service"),
    ("op", None, "exec 3</dev/tcp/169.254.169.254/80", "connects"),
    ("op", None, "cat </dev/udp/10.0.0.1/53", "connects (udp)"),
    ("op", None, "cat < /dev/tcp/$h/80", "connects to a host known only at run time"),
    ("op", None, "h=/dev/tcp/169.254.169.254/80; cat < $h", "through a variable"),
    ("op", None, "cat < /dev/$p/169.254.169.254/80", "tcp or udp at run time"),
    ("ex", None, "head -c 100 < /dev/tcp/evil.example.org/443", "connects to a host no rule names"),
    ("ex", None, "wc -c < /dev/tcp/10.0.0.9/22", "connects to a host no rule names"),
    # git readers: options whose value is a file git reads (and may echo in its errors).
    ("op", None, "git blame -S /etc/shadow x", "blame -S reads a revisions file"),
    ("op", None, "git blame -S/etc/shadow x", "glued"),
    ("op", None, "git blame --ignore-revs-file=/etc/shadow x", "reads a file"),
    ("op", None, "git blame --ignore-revs-file /etc/shadow x", "reads a file"),
    ("op", None, "git diff --orderfile=/etc/shadow", "reads a file"),
    ("op", None, "git log --pathspec-from-file=/etc/shadow", "reads a file"),
    ("op", None, "git log --pathspec-from-file /etc/shadow", "reads a file"),
    ("op", None, "git log --pathspec-from=/etc/shadow", "abbreviated"),
    # grep -d recurse is grep -r: it reads everything below its directory operands.
    ("op", None, "grep -d recurse root /etc", "-d recurse reads /etc/shadow"),
    ("op", None, "grep -drecurse root /etc", "glued"),
    ("op", None, "grep --directories=recurse root /etc", "long form"),
    ("op", None, "grep --directories=rec root /etc", "a unique prefix of the value"),
    ("op", None, "grep --dir=recurse root /etc", "abbreviated option"),
    ("op", None, "grep -d $how root /etc", "value known only at run time"),
    ("op", None, "grep -sd recurse x ~/.ssh", "bundled, key files below"),
    ("op", None, "sort -R --random-source=/etc/shadow x", "random-source reads a file"),
    # journalctl --cursor-file writes the last cursor to its file; -D reads a directory tree.
    ("op", None, "journalctl --cursor-file=/etc/cron.d/x -n1", "writes the cursor file"),
    ("op", None, "journalctl --cursor-file /etc/profile.d/x.sh", "writes the cursor file"),
    ("ex", None, "journalctl --cursor-file=/etc/x", "writes the cursor file"),
    ("ex", None, "journalctl -D /root", "reads the journal files below /root"),
    # kubectl reads resource types case-insensitively, with a group, and as comma lists: the
    # operator policy's review rule `kubectl get secret*` must see each spelling.
    ("op", None, "kubectl get pods,secrets -o yaml", "a comma list hides secrets"),
    ("op", None, "kubectl get all,secrets", "a comma list hides secrets"),
    ("op", None, "kubectl get Secret x -o yaml", "upper case"),
    ("op", None, "kubectl get SECRETS", "upper case"),
    ("op", None, "kubectl get secret.v1 x", "TYPE.VERSION"),
    ("op", None, "kubectl get secrets.v1. x", "TYPE.VERSION."),
    ("op", None, "kubectl describe Secret/x", "TYPE/NAME, upper case"),
    ("op", None, "kubectl -n prod get pod,Secret x", "after a global option"),
    # file-valued options that are reads
    ("op", None, "curl --variable x@/etc/shadow https://x.internal", "curl --variable NAME@FILE"),
    ("op", None, "curl --variable=k@/home/u/.ssh/id_rsa https://x.internal", "= form"),
    ("op", None, "less -T /etc/shadow -t x", "less -T reads a tags file"),
    ("op", None, "less --tag-file=/etc/shadow -t x", "long form"),
    # A glob expands to several words, named by whoever made the files (scratch writes are
    # allowed): as an option's value, the names after the first are further arguments
    # (`tar -t -f *` with files '--checkpoint=1' and '--checkpoint-action=exec=sh x' runs
    # sh); in uniq's or xxd's input place, the second name is the output; in front of
    # a subcommand's operands, a name like '-Hroot@evil' is a refused global option.
    ("op", "/tmp/d", "tar -t -f *", "glob as -f's value"),
    ("op", "/tmp/d", "tar -tf *", "glob as -f's value, bundled"),
    ("op", "/tmp/d", "tar -tvf * x", "glob as -f's value"),
    ("op", "/tmp/d", "uniq *", "glob: the second name is uniq's output"),
    ("op", "/etc", "uniq *", "glob: writes in /etc"),
    ("op", "/tmp/d", "xxd *", "glob: the second name is xxd's output"),
    ("op", "/tmp/d", "systemctl status *", "a name like -Hroot@evil"),
    ("op", "/tmp/d", "docker logs *", "a name like -Htcp://evil"),
    ("op", "/tmp/d", "kubectl get pods *", "a name like --kubeconfig=x"),
    # ssh and scp had no table: an allow rule for them allowed local code in options.
    ("ssh", None, "ssh -o ProxyCommand='sh -c id' db.internal", "ProxyCommand runs locally"),
    ("ssh", None, "ssh -oProxyCommand=id db.internal", "glued"),
    ("ssh", None, "ssh -o 'proxycommand id' db.internal", "space form, lower case"),
    ("ssh", None, "ssh -oLocalCommand=id -oPermitLocalCommand=yes db.internal", "LocalCommand"),
    ("ssh", None, "ssh -o KnownHostsCommand=id db.internal", "KnownHostsCommand"),
    ("ssh", None, "ssh -o 'Match exec id' db.internal", "Match exec"),
    ("ssh", None, "ssh -F /tmp/cfg db.internal", "a configuration file"),
    ("ssh", None, "ssh -o \"$o\" db.internal", "-o known only at run time"),
    ("ssh", None, "ssh evil.example.com", "a host no rule names"),
    ("ssh", None, "ssh -J evil.example.com db.internal", "a jump host no rule names"),
    ("ssh", None, "ssh -E /etc/x db.internal", "a log written outside /tmp"),
    ("ssh", None, "ssh db.internal rm -rf /", "a command on another host"),
    ("ssh", None, "scp -S id x db.internal:", "scp -S runs a program"),
    ("ssh", None, "scp -o ProxyCommand=id x db.internal:", "scp -o ProxyCommand"),
    ("ssh", None, "scp db.internal:/etc/passwd /etc/", "a local target outside /tmp"),
    # An alias is expanded on later lines (bash --posix and dash expand aliases in the
    # loop's eval): `alias ll=rm` is decided as `rm`, then `ll -rf X` as `ll`.
    ("all", None, "alias ll=rm", "renames rm"),
    ("all", None, "alias cat=tee", "renames tee"),
    ("all", None, "alias ls='find '", "renames find"),
    ("all", None, "alias x=", "an empty alias"),
    ("all", None, "alias a='ls'  b=rm", "the second of two"),
]

# (policy, cwd, line) that must stay allowed
KEEP = [
    ("op", "/tmp", "echo pwned > x"),
    ("op", "/tmp", "ls() { ls -la; }"),
    ("op", "/tmp", "ll() { ls -la /var/log; }"),
    ("op", "/tmp", "f() { echo hi > /tmp/out; }"),
    ("op", None, "set -e"),
    ("op", None, "set -euo pipefail"),
    ("op", None, "set -x"),
    ("op", None, "set +x"),
    ("op", None, "set +k"),
    ("op", None, "set -o posix"),
    ("op", None, "set -- a b c"),
    ("op", None, "set -- -k"),
    ("op", None, "set -o pipefail"),
    ("op", None, "unset x"),
    ("op", None, "unset -f ll"),
    ("op", None, "unset -f POSIXLY_CORRECT"),
    ("en", None, "enable"),
    ("en", None, "enable -a"),
    ("en", None, "enable -p"),
    ("op", None, "tar tf x"),
    ("op", None, "tar tvf backup.tar"),
    ("op", None, "tar tzvf backup.tgz"),
    ("op", None, "tar tvf backup.tar etc/hosts"),
    ("op", None, "tar -tf backup.tar"),
    ("op", None, "tar xzf backup.tgz -C /tmp"),
    ("op", None, "tar xCf /tmp backup.tar"),
    ("ex", None, "tar tf x"),
    ("ex", None, "tar tvzf x.tgz"),
    ("op", None, "cat < /var/log/syslog"),
    ("op", None, "wc -l < /var/log/syslog"),
    ("op", None, "grep x < /dev/null"),
    ("op", None, "sort < /tmp/list"),
    ("op", None, "git blame x"),
    ("op", None, "git blame -L 1,10 x"),
    ("op", None, "git log -S needle"),
    ("op", None, "git log -Sneedle --oneline"),
    ("op", None, "git diff --stat"),
    ("op", None, "git log --pathspec-from-file=/tmp/paths"),
    ("op", None, "grep -d skip x /etc/hosts"),
    ("op", None, "grep --directories=read x /etc/hosts"),
    ("op", None, "grep -r x /var/log"),
    ("op", None, "grep -d recurse x /var/log"),
    ("op", None, "sort -R x"),
    ("ex", None, "journalctl --cursor-file=/tmp/cursor -n 20"),
    ("op", None, "journalctl -D /var/log/journal -n 20"),
    ("op", None, "journalctl -u nginx --since today"),
    ("op", None, "kubectl get pods"),
    ("op", None, "kubectl get pods,svc -n prod"),
    ("op", None, "kubectl get Deployments"),
    ("op", None, "kubectl get deploy.apps web -o yaml"),
    ("op", None, "kubectl get pods -o 'jsonpath={.items[*].metadata.name}'"),
    ("op", None, "kubectl describe pod/web-1"),
    ("op", None, "kubectl logs Web-1"),
    ("op", None, "curl --variable host=x.internal https://x.internal"),
    ("op", None, "curl --variable %HOME https://x.internal"),
    ("op", None, "less -t main"),
    ("op", "/tmp/d", "cat *"),
    ("op", "/tmp/d", "head -n 5 *"),
    ("op", "/tmp/d", "tar -tf ./*.tar"),
    ("op", "/var/log", "uniq syslog"),
    ("op", None, "uniq /var/log/syslog /tmp/out"),
    ("op", None, "systemctl status nginx"),
    ("op", None, "docker logs web"),
    ("ssh", None, "ssh db.internal"),
    ("ssh", None, "ssh -p 2222 -o StrictHostKeyChecking=no deploy@db.internal"),
    ("ssh", None, "ssh -J jump.internal db.internal"),
    ("ssh", None, "scp db.internal:/var/log/syslog /tmp/"),
    ("ssh", None, "scp /tmp/report.txt db.internal:/tmp/"),
    ("all", None, "alias ls='ls --color=auto'"),
    ("all", None, "alias grep='grep -n'"),
    ("all", None, "alias"),
    ("all", None, "ll -rf /tmp/c"),
]


@pytest.mark.parametrize("name,cwd,line,why", HOLES, ids=[f"{h[0]}:{h[2]}" for h in HOLES])
def test_hole_is_not_allowed(name, cwd, line, why):
    d = decide(name, line, cwd)
    assert d.action is not Action.ALLOW, (why, d.rule, d.reason)


@pytest.mark.parametrize("name,cwd,line", KEEP, ids=[f"{k[0]}:{k[2]}" for k in KEEP])
def test_ordinary_line_stays_allowed(name, cwd, line):
    d = decide(name, line, cwd)
    assert d.action is Action.ALLOW, (d.rule, d.reason)
