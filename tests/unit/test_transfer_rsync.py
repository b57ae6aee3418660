"""bastion.transfer.rsync and decide_tree: rsync server commands parsed strictly, trees decided."""

from __future__ import annotations

import shlex
from types import SimpleNamespace

import pytest

from bastion.policy import compile_policy
from bastion.transfer.decide import READS, WRITES, decide_tree
from bastion.transfer.rsync import RsyncRefused, from_home, parse

PRINCIPAL = SimpleNamespace(subject="s1", tenant="t", app_id="a", roles=("agents",), groups=())
WEB1 = SimpleNamespace(name="web1", labels=("prod",))


# what the rsync 3.2.7 client sends (captured with a fake -e program)
@pytest.mark.parametrize("command, sender, paths", [
    ("rsync --server -vlogDtpre.iLsfxCIvu . /tmp/x", False, ("/tmp/x",)),
    ("rsync --server --sender -vlogDtpre.iLsfxCIvu . /tmp/x", True, ("/tmp/x",)),
    ("rsync --server -logDtpre.iLsfxCIvu --delete . /tmp/e/", False, ("/tmp/e/",)),
    ("rsync --server --sender -rze.iLsfxCIvu . /a /b", True, ("/a", "/b")),
    ("rsync --server -logDtpre.iLsfxCIvu --inplace . /tmp/x\\ y", False, ("/tmp/x y",)),
    ("rsync --server -lHogDtpAXre.iLsfxCIvu --numeric-ids . /t", False, ("/t",)),
    ("rsync --server -e.LsfxCIvu . .", False, (".",)),
    ("rsync --server -e.LsfxCIvu . ~/x", False, ("~/x",)),
    ("rsync --server -e.LsfxCIvu --log-format=X --partial . /t", False, ("/t",)),
    ("rsync --server --sender -unlWHogDtUpAXrcIxSze.LsfxCIvu --ignore-errors . /a", True,
     ("/a",)),
    ("/usr/bin/rsync --server -e.LsfxCIvu --timeout=30 --max-size=10485760 . /t", False,
     ("/t",)),
])
def test_accepted(command, sender, paths):
    call = parse(command)
    assert call is not None and call.sender is sender and call.paths == paths
    assert call.effect == (READS if sender else WRITES)
    rebuilt = call.command(("/resolved dir/x",))
    words = shlex.split(rebuilt)
    assert words[0] == "rsync" and words[-2:] == [".", "/resolved dir/x"]
    extra = [] if sender else ["--no-devices", "--no-specials"]
    assert words[1:-2] == list(call.options) + extra


@pytest.mark.parametrize("command", [
    "rsync -a /a /b", "ls /srv", "echo rsync", "scp -t /x", "rsync --version",
])
def test_not_an_rsync_server(command):
    assert parse(command) is None


@pytest.mark.parametrize("command, why", [
    ("sudo rsync --server -e.Ls . /t", "plain"),                 # --rsync-path="sudo rsync"
    ("rsync --server --daemon .", "daemon"),
    ("rsync --server -e ssh . /t", "-e"),
    ("rsync --server -vlogDtpr -e . /t", "-e"),
    ("rsync --server -Le.Ls . /t", "-L"),
    ("rsync --server -Ke.Ls . /t", "-K"),
    ("rsync --server -ke.Ls . /t", "-k"),
    ("rsync --server -se.Ls . /t", "-s"),
    ("rsync --server -Re.Ls . /t", "-R"),
    ("rsync --server -blogDtpre.iLs --backup-dir /x . /t", "-b"),
    ("rsync --server -e.Ls --temp-dir /x . /t", "--temp-dir"),
    ("rsync --server -e.Ls --partial-dir /x . /t", "--partial-dir"),
    ("rsync --server -e.Ls --files-from=- . /t", "--files-from"),
    ("rsync --server -e.Ls --include-from=/etc/x . /t", "--include-from"),
    ("rsync --server -e.Ls --exclude-from=/etc/x . /t", "--exclude-from"),
    ("rsync --server -e.Ls --log-file=/x . /t", "--log-file"),
    ("rsync --server -e.Ls --rsync-path=/x . /t", "--rsync-path"),
    ("rsync --server -e.Ls --link-dest=/etc . /t", "--link-dest"),
    ("rsync --server -e.Ls --mkpath . /t/u/", "--mkpath"),
    ("rsync --server --sender -e.Ls --remove-source-files . /a", "--remove-source-files"),
    ("rsync --server -e.Ls --timeout=1x . /t", "value"),
    ("rsync --server -e.Ls . /t --log-file=/x", "option after"),
    ("rsync --server -e.Ls . '/a*b'", "glob"),
    ("rsync --server --sender -e.Ls . /a/[x]", "glob"),
    ("rsync --server -e.Ls . /t; id", "shell"),
    ("rsync --server -e.Ls . /t && id", "shell"),
    ("rsync --server -e.Ls . '$(id)'", "shell"),
    ("rsync --server -e.Ls . /a /b", "exactly one"),
    ("rsync --server -e.Ls . ~root/x", "~user"),
    ("rsync --server -e.Ls /t", "."),
    ("rsync --server --server -e.Ls . /t", "once"),
    ("rsync --server -e.Ls . 'unterminated", "parsed"),
])
def test_refused_naming_sftp(command, why):
    with pytest.raises(RsyncRefused) as err:
        parse(command)
    message = str(err.value)
    assert "sftp" in message
    assert why.split()[0].lower() in message.lower() or why in (
        "plain", "shell", "glob", "option after", "value", "parsed", "."), message


def test_from_home():
    assert from_home("~/x", "/home/d") == "/home/d/x"
    assert from_home("~", "/home/d") == "/home/d"
    assert from_home("rel/x", "/home/d") == "/home/d/rel/x"
    assert from_home("/abs", "/home/d") == "/abs"


RULES = [
    {"name": "up", "action": "allow", "reads": ["/srv/up/**"], "writes": ["/srv/up/**"]},
    {"name": "logs", "action": "allow", "reads": ["/var/log/**"]},
    {"name": "no-secret", "action": "deny", "reads": ["/var/log/secret/**"]},
    {"name": "no-keys", "action": "deny", "writes": ["~/.ssh/**", "/etc/**"]},
    {"name": "no-dotssh", "action": "deny", "writes": ["/srv/up/*/.ssh/**"]},
    {"name": "held", "action": "review", "writes": ["/srv/held/**"]},
    {"name": "held-allow", "action": "allow", "writes": ["/srv/held/**"]},
]


def tree(effect, path, default="deny"):
    policy = compile_policy({"default": default}, RULES)
    return decide_tree(policy, PRINCIPAL, WEB1, effect, path, home="/home/deploy",
                       what="rsync")


@pytest.mark.parametrize("effect, path, allowed, rule", [
    (WRITES, "/srv/up/v2", False, "no-dotssh"),       # a deny glob could match below
    (WRITES, "/srv/up/v2/app", False, "no-dotssh"),
    (READS, "/srv/up/v2", True, "up"),
    (READS, "/var/log", False, "no-secret"),         # the tree holds a denied subtree
    (READS, "/var/log/nginx", True, "logs"),
    (READS, "/var/log/secret", False, "no-secret"),
    (WRITES, "/home/deploy/.ssh", False, "no-keys"),    # as ~/.ssh
    (WRITES, "/home/deploy", False, "no-keys"),         # ~/.ssh is below
    (WRITES, "/etc", False, "no-keys"),
    (WRITES, "/srv", False, "no-dotssh"),
    (WRITES, "/srv/held/x", False, "held"),
    (READS, "/srv", False, "<default>"),              # /srv/up/** does not cover /srv/**
    (WRITES, "/opt/x", False, "<default>"),
])
def test_tree_table(effect, path, allowed, rule):
    v = tree(effect, path)
    assert (v.allowed, v.rule) == (allowed, rule), v.reason


def test_tree_review_is_review():
    assert tree(WRITES, "/srv/held/x").action == "review"


def test_tree_allowed_when_nothing_below_is_denied():
    policy = compile_policy({"default": "deny"}, [RULES[0]])
    v = decide_tree(policy, PRINCIPAL, WEB1, WRITES, "/srv/up/v2", home="/home/deploy")
    assert v.allowed and v.rule == "up"


def test_tree_default_allow_still_refuses_denied_subtrees():
    assert tree(READS, "/opt", default="allow").allowed
    assert not tree(READS, "/var", default="allow").allowed


def test_the_rebuilt_command_uses_the_resolved_paths_and_keeps_a_trailing_slash():
    from bastion.ssh.rsyncexec import Plan, _combine
    from bastion.transfer.decide import Verdict
    call = parse("rsync --server --sender -rze.iLsfxCIvu . ~/src/ 'odd name'")
    allow = Verdict(True, "allow", "up", "ok")
    p = Plan(call, ("/home/d/real src", "/srv/x"), (allow, allow), _combine([allow, allow]))
    assert shlex.split(p.command) == ["rsync", "--server", "--sender", "-rze.iLsfxCIvu", ".",
                                      "/home/d/real src/", "/srv/x"]
    assert p.command.count("'") >= 2                     # quoted for the target's shell


@pytest.mark.parametrize("verdicts, action, rule", [
    ([("allow", "a"), ("allow", "b")], "allow", "a"),
    ([("allow", "a"), ("review", "r")], "review", "r"),
    ([("review", "r"), ("deny", "d")], "deny", "d"),            # a deny wins over a review
    ([("allow", "a"), ("deny", "<default>")], "deny", "<default>"),
    ([("review", "<default>")], "review", "<default>"),
])
def test_the_command_is_allowed_only_when_every_path_is(verdicts, action, rule):
    from bastion.ssh.rsyncexec import _combine
    from bastion.transfer.decide import Verdict
    d = _combine([Verdict(a == "allow", a, r, f"{a} by {r}") for a, r in verdicts])
    assert (d.action.value, d.rule) == (action, rule)
    if action == "deny" and rule != "<default>":
        assert "sftp decides file by file" in d.reason
