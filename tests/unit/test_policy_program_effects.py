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
            "runuser", "podman", "git"]
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


@pytest.mark.parametrize("line, allowed", [
    # container runners are wrappers: the command inside is decided too
    ("docker exec web1 cat /etc/hostname", True),
    ("docker container exec web1 ls", True),
    ("podman exec c1 ls /tmp", True),
    ("docker exec web1 cat /etc/shadow", False),
    ("docker exec -it web1 /bin/sh", False),
    ("docker exec -it web1 bash", False),
    ("docker exec web1", False),
    ("docker exec --privileged web1 ls", False),
    ("docker run --rm alpine echo hi", True),
    ("docker run --rm -v data:/data alpine ls /data", True),
    ("docker run --rm -it alpine", False),            # the image's own command
    ("docker run -v /:/mnt --rm -it alpine chroot /mnt /bin/sh", False),
    ("docker run -v /etc:/x alpine ls", False),
    ("docker run --mount type=bind,source=/,target=/mnt alpine ls", False),
    ("docker run --rm -it --privileged -u root alpine", False),
    ("docker run --privileged alpine ls", False),
    ("docker run --pid=host alpine ls", False),
    ("docker run --network host alpine ls", False),
    ("docker run --cap-add SYS_ADMIN alpine ls", False),
    ("docker run --env-file /etc/shadow alpine ls", False),
    ("docker run --entrypoint /bin/sh alpine", False),
    ("docker run --frobnicate alpine ls", False),     # an option the table does not know
    ('docker run "$opts" alpine ls', False),
    ("docker attach web1", False),
    ("docker ps -a", True),
    ("docker logs --tail 100 web", True),
    ("kubectl exec web-1 -- ls /tmp", True),
    ("kubectl -n prod exec web-1 -c app -- ls /tmp", True),
    ("kubectl exec -it web1 -- /bin/sh", False),
    ("kubectl exec web1 -- cat /etc/shadow", False),
    ("kubectl exec web1 ls", False),                  # no --: the command is not told apart
    ("kubectl run x --image=alpine", False),
    ("kubectl run x --image=alpine -- echo hi", True),
    ("kubectl debug node/n1 -it --image=busybox", False),
    ("kubectl attach web1 -it", False),
    ("kubectl get pods -n prod", True),
    # git: options that take a value, optional values, --, output files
    ("git log -S password --oneline", True),
    ("git log -Spassword --oneline", True),
    ("git log --stat", True),
    ("git log --stat=100 --abbrev HEAD", True),
    ("git log -- clean", True),
    ("git diff HEAD~1 -- src/", True),
    ("git -c core.pager=cat log", True),
    ("git -c core.pager=less log", False),
    ("git -c core.pager='sh -c id' log", False),
    ("git diff --output=/tmp/x.diff", True),
    ("git diff --output=/etc/x", False),
    ("git log -o /etc/x", False),
])
def test_containers_and_git(line, allowed):
    decision = POLICY.evaluate(P, None, line)
    assert (decision.action == Action.ALLOW) is allowed, (line, decision.reason)


JOURNAL = compile_policy({"default": "deny", "opaque": "review"}, [
    {"name": "journal", "action": "allow", "commands": ["journalctl", "date", "stat"]},
    {"name": "vacuum", "action": "review", "commands": ["journalctl --vacuum-time"]},
    {"name": "clock", "action": "deny", "commands": ["date -s", "date --set"]},
])


@pytest.mark.parametrize("line, expect", [
    # a run-time word the table read as an option's value cannot be that option
    ('journalctl --since "$(date +%F)"', Action.ALLOW),
    ('journalctl -u nginx --since "$(date -d \'1 hour ago\' \'+%F %T\')"', Action.ALLOW),
    ('date -d "$(stat -c %y /var/log/syslog)" +%s', Action.ALLOW),
    # elsewhere it still could be
    ('journalctl "$opt"', Action.REVIEW),
    ("journalctl --vacuum-time=1d", Action.REVIEW),
    ('date "$x"', Action.DENY),
    ("date -s 12:00", Action.DENY),
])
def test_option_values_are_not_options(line, expect):
    assert JOURNAL.evaluate(P, None, line).action == expect


NESTED = compile_policy({"default": "deny", "opaque": "review"}, [
    {"name": "read", "action": "allow", "commands": ["docker container logs", "docker image ls",
                                                      "docker ps"]},
])


@pytest.mark.parametrize("line, allowed", [
    # nested subcommands are positional too
    ("docker container logs web", True),
    ("docker container logs --tail 5 web", True),
    ("docker image ls", True),
    ("docker container rm logs", False),
    ("docker container exec web logs", False),
    ("docker image rm ls", False),
    ("docker logs web", False),
])
def test_nested_subcommands(line, allowed):
    decision = NESTED.evaluate(P, None, line)
    assert (decision.action == Action.ALLOW) is allowed, (line, decision.reason)


FILES = compile_policy({"default": "deny", "opaque": "review"}, [
    {"name": "tools", "action": "allow", "commands": [
        "cat", "wc", "head", "grep", "ls", "stat", "du", "find", "cd", "realpath", "file",
        "sh -c"]},
    {"name": "secrets", "action": "deny", "reads": [
        "/etc/shadow", "**/id_*", "/home/*/.ssh/id_*", "/etc/ssh/ssh_host_*_key",
        "/etc/ssl/private/**", "**/.aws/credentials"]},
])


@pytest.mark.parametrize("line, allowed", [
    # a glob names files found in its directory: a deny glob reaches it like a recursive
    # read of that directory (its literal head inside), or when the word spells it out
    ("wc -l /var/log/*.log", True),
    ("head -1 /var/log/nginx/*", True),
    ("cat /etc/*", False),
    ("cat /etc/sh*", False),
    ("cat /etc/*/*", False),
    ("cat /etc/ssh/ssh_host_*", False),
    ("cat /etc/ssl/private/x/*", False),
    ("cat /home/*/.ssh/id_*", False),
    ("cat /srv/*/.ssh/id_*", False),
    ("cat /var/log/*/../../etc/shadow", False),
    ("cat /proc/*/root/etc/shadow", False),
    ("cd /var/log && grep -l ERROR *.log", False),    # *.log may expand to -f.log: an option
    ("cd /var/log && grep -l ERROR ./*.log", True),
    ("cd /etc && cat *", False),
    ("cd ~ && cat *", False),
    # loop variables over literal words and globs (quoted: "$f")
    ('for f in /var/log/*.log; do wc -l "$f"; done', True),
    ('for f in /var/log/a.log /var/log/b.log; do head -1 "${f}"; done', True),
    ('for f in /etc/*; do cat "$f"; done', False),
    ('for f in /var/log/*.log /etc/shadow; do cat "$f"; done', False),
    ('for f in /var/log/*.log; do cat $f; done', False),          # unquoted: split and globbed
    ('for f in /var/log/*.log; do f=/etc/shadow; cat "$f"; done', False),
    ('for f in /var/log/*.log; do read f; cat "$f"; done', False),
    ('g(){ f=/etc/shadow; }; for f in /var/log/*.log; do g; cat "$f"; done', False),
    ('for f in $(ls /var/log); do cat "$f"; done', False),
    ('for f in /var/log/*.log; do :; done; cat "$f"', False),     # outside the body
    ("sh -c 'for f in /var/log/*.log; do wc -l \"$f\"; done'", True),
    # find's {} is a path below its roots (ending in a -name it accepts)
    ("find /var/log -name '*.log' -exec wc -l {} +", True),
    ("find /var/log -type f -exec grep -l ERROR {} \\;", True),
    ("find /etc -exec cat {} \\;", False),
    ("find / -name 'id_*' -exec cat {} +", False),
    ("find / -iname 'ID_*' -exec cat {} +", False),
    ("find /srv -name 'id_*' -exec cat {} +", False),
    ("find /home -type f -exec cat {} +", False),
    ("find /var/log -execdir cat {} \\;", False),                   # -execdir: ./NAME anywhere
    ('find "$d" -exec cat {} +', False),
    # names and metadata are no reads
    ("ls -l /etc/shadow", True),
    ("stat /etc/shadow", True),
    ("du -a /etc", True),
    ("find /etc -name '*.conf' -newer /etc/hostname", True),
    ("realpath /etc/shadow", True),
    ("file /etc/shadow", False),                                  # file reads the contents
    ("du --files0-from=/etc/shadow", False),
    ("find . -files0-from /etc/shadow", False),
])
def test_found_names(line, allowed):
    decision = FILES.evaluate(P, None, line)
    assert (decision.action == Action.ALLOW) is allowed, (line, decision.reason)


SCRATCH = compile_policy({"default": "deny", "opaque": "review"}, [
    {"name": "tools", "action": "allow", "commands": [
        "sort", "less", "view", "vim", "date", "journalctl", "awk", "git", "diff", "cat", "tar",
        "curl", "echo", "cd", "ls", "bash -c", "env", "true",
        "git status"], "connects": ["*.internal"]},    # git status runs hooks: named (issue 15)
    {"name": "scratch", "action": "allow", "writes": ["/tmp/**"]},
    # less and vim take keyboard commands (!sh, :!sh): only an interactive rule allows them
    {"name": "pager", "action": "allow", "commands": ["less", "view", "vim"], "interactive": True},
    {"name": "secrets", "action": "deny", "reads": ["/etc/shadow"]},
    {"name": "system", "action": "deny", "writes": ["/etc/**"]},
])


@pytest.mark.parametrize("line, allowed", [
    # a program's own files below a directory are covered by DIR/** (never a name with ..)
    ("sort -S 50% -T /tmp /tmp/big", True),
    ("sort -T /srv /tmp/big", False),
    ("tar -xzf /tmp/x.tgz -C /tmp/unpack", True),
    ("tar -C /tmp/u -xf /tmp/x.tar", True),
    ("tar -xf /tmp/x.tar -C /etc", False),
    ('tar -xf /tmp/x.tar -C "/tmp/$d"', False),
    ("curl --output-dir /tmp -O https://api.internal/x", True),
    ('echo x > "/tmp/$f"', False),                   # $f may hold ../etc/passwd
    # pager and editor start commands that only move or search
    ("less +F /var/log/syslog", True),
    ("less +G /var/log/syslog", True),
    ("less +/ERROR /var/log/syslog", True),
    ("less '+!sh' /etc/hosts", False),
    ("less '+:e /etc/shadow' /etc/hosts", False),
    ("view -R +100 /var/log/syslog", True),
    ("vim +/main /tmp/x.c", True),
    ("vim '+:!id' /tmp/x", False),
    ("vim '+/x|!id' /tmp/x", False),
    # less log files are writes
    ("less -O/tmp/less.log /var/log/syslog", True),
    ("less --log-file=/etc/x /var/log/syslog", False),
    # journalctl -b takes a separate offset or boot id
    ("journalctl -k -b -1 --no-pager", True),
    ("journalctl --boot -1", True),
    ("journalctl -b 0123456789abcdef0123456789abcdef", True),
    ("journalctl -b -u nginx", True),
    # date -r looks at a file's time only
    ("date -r /var/log/syslog", True),
    ("date -r /etc/shadow", True),
    # awk writing to a literal file name
    ("awk 'BEGIN{print \"x\" > \"/dev/stderr\"}'", True),
    ("awk '{print > \"/tmp/out.txt\"}' /var/log/syslog", True),
    ("awk '{print >> \"/etc/x\"}' /var/log/syslog", False),
    ("awk '{print > $2}' /var/log/syslog", False),
    ("awk '{print > \"/tmp/\" $1}' /var/log/syslog", False),
    # a whole-word process substitution is a pipe (/dev/fd/N)
    ("diff <(sort /tmp/a) <(sort /tmp/b)", True),
    ("diff <(cat /etc/shadow) /tmp/b", False),
    # variables set for one command whose value is still harmless
    ("SYSTEMD_PAGER= journalctl -u nginx", True),
    ("GIT_TRACE=1 git status", True),
    ("GIT_TRACE=/tmp/trace.log git status", True),
    ("GIT_TRACE=/etc/x git status", False),
    ("GIT_TRACE=af_unix:/tmp/s git status", False),
    ("env GIT_TRACE=1 git status", True),
    ("LESS=-R less /tmp/x", True),
    ("LESS='-R -O/etc/x' less /tmp/x", False),
    ("LESS='+!sh' less /tmp/x", False),
    ("LESS=-k/tmp/keys less /tmp/x", False),
    ('LESS="$x" less /tmp/x', False),
    ("PAGER=/tmp/x git log", False),
])
def test_scratch_and_pagers(line, allowed):
    decision = SCRATCH.evaluate(P, None, line)
    assert (decision.action == Action.ALLOW) is allowed, (line, decision.reason)


def test_no_corpus_line_is_an_engine_error():
    """Every corpus line evaluates without an internal error (a '<error>' deny hides bugs)."""
    import tomllib
    from pathlib import Path
    here = Path(__file__).parent / "policy_effects"
    raw = tomllib.loads((here / "operator.toml").read_text(encoding="utf-8"))
    policy = compile_policy(raw["settings"], raw["rules"])
    corpus = tomllib.loads((here / "corpus.toml").read_text(encoding="utf-8"))
    errors = [line for group in corpus["group"] for _, line, _ in group["cases"]
              if policy.evaluate(P, None, line).rule == "<error>"]
    assert not errors, errors


@pytest.mark.parametrize("line, cwd, allowed", [
    # relative files of a command whose working directory is sure: `cd /abs &&`, env -C
    ("cd /tmp && echo x > notes.txt", None, True),
    ("cd /tmp && echo x >notes.txt && sort -o out in", None, True),
    ("cd /tmp/unpack && tar -xf /tmp/x.tar", None, True),
    ("cd /tmp && ls | sort -o out", None, True),
    ("env -C /tmp sort -o out in", None, True),
    ("cd /tmp && bash -c 'echo x > n'", None, True),
    ("echo x > notes.txt", "/tmp", True),                    # the cwd the caller gave
    ("cd /tmp; echo x > notes.txt", None, False),             # cd may fail: anywhere
    ("cd /tmp || echo x > notes.txt", None, False),
    ("true || cd /tmp && echo x > notes.txt", None, False),
    ("cd /tmp && cd sub && echo x > notes.txt", None, False),
    ("cd /tmp && (cd /etc; echo x > hosts)", None, False),
    ("f() { cd /etc; }; cd /tmp && f && echo x > hosts", None, False),
    ("cd /etc && echo x > hosts", None, False),
    ("cd /tmp && cd /etc && echo x > hosts", None, False),
    ("cd /etc && tar -xf /tmp/x.tar", None, False),
    ("echo x > notes.txt", None, False),                      # unknown working directory
    ("cd /etc; echo x > hosts", "/tmp", False),
    # the grammar reads `a && b > f` as `(a && b) > f`; bash redirects b only
    ("cd /tmp && echo x > notes.txt", "/srv", True),
    ("echo x > /etc/x && true", None, False),
])
def test_sure_working_directory(line, cwd, allowed):
    decision = SCRATCH.evaluate(P, None, line, cwd=cwd)
    assert (decision.action == Action.ALLOW) is allowed, (line, decision.reason)


@pytest.mark.parametrize("line, allowed", [
    # a path with blanks is still normalised
    ('echo x > "/tmp/../etc/a b"', False),
    ('sort -o "/tmp/../etc/cron.d/a b" /tmp/in', False),
    ('echo x > "/tmp/a b"', True),
    # --name=VALUE with a run-time value is still the option --name
    ('git log --output="$HOME/a b/passwd"', False),
    ("git log --output=/var/lib/x/*.conf/sysrq-trigger", False),
    ('git log "$x"', False),                      # may be --output=... or --ext-diff
    ('git log --format="$f"', True),
])
def test_blank_paths_and_runtime_option_values(line, allowed):
    decision = SCRATCH.evaluate(P, None, line)
    assert (decision.action == Action.ALLOW) is allowed, (line, decision.reason)
