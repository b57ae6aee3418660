"""Trying hard to sneak ``rm -r`` past ``allow *``: every wrapper inside every construct.

The policy allows everything except ``rm -r``; each generated line hides a
recursive rm behind one wrapper and one shell construct (and a quoting trick).
None may be allowed.  The same grid with a harmless ``ls -l`` must stay allowed
(only ``eval``, opaque by definition, goes to review).  Lines are only parsed.
"""

from __future__ import annotations

import itertools
import shlex

import pytest

from bastion.identity.principal import Principal
from bastion.policy import compile_policy

P = Principal(subject="attacker")
POLICY = compile_policy({"default": "allow", "opaque": "review"}, [
    {"name": "everything", "action": "allow", "commands": ["*"]},
    {"name": "no-rm-r", "action": "deny", "commands": ["rm -r", "rm --recursive"]},
])
q = shlex.quote

WRAPPERS = {
    "plain": lambda c: c, "sudo": lambda c: "sudo " + c,
    "sudo-u": lambda c: "sudo -u root -E -- " + c, "doas": lambda c: "doas -u root " + c,
    "env": lambda c: "env -i A=1 " + c, "nice": lambda c: "nice -n 5 " + c,
    "ionice": lambda c: "ionice -c3 " + c, "nohup": lambda c: "nohup " + c,
    "timeout": lambda c: "timeout -k 1 5 " + c, "time": lambda c: "time -p " + c,
    "command": lambda c: "command " + c, "builtin": lambda c: "builtin command " + c,
    "exec": lambda c: "exec -a x " + c, "stdbuf": lambda c: "stdbuf -o L " + c,
    "setsid": lambda c: "setsid -f " + c, "flock": lambda c: "flock -n /tmp/l " + c,
    "flock-c": lambda c: "flock /tmp/l -c " + q(c), "watch": lambda c: "watch -n1 " + q(c),
    "watch-x": lambda c: "watch -x " + c, "xargs": lambda c: "echo x | xargs -0 " + c,
    "find": lambda c: "find . -exec " + c + " {} \\;", "busybox": lambda c: "busybox " + c,
    "su": lambda c: "su - root -c " + q(c), "runuser": lambda c: "runuser -u u -- " + c,
    "sh": lambda c: "sh -c " + q(c), "bash": lambda c: "bash -ec " + q(c),
    "dash": lambda c: "/bin/dash -c " + q(c), "zsh": lambda c: "zsh -c " + q(c),
    "ksh": lambda c: "ksh -c " + q(c), "eval": lambda c: "eval " + q(c),
    "coproc": lambda c: "coproc " + c, "sudo-bash": lambda c: "sudo bash -c " + q(c),
    "alias": lambda c: "alias ll=" + q(c), "trap": lambda c: "trap " + q(c) + " EXIT",
}
CONSTRUCTS = {
    "bare": lambda c: c, "seq": lambda c: "ls; " + c, "and": lambda c: "ls && " + c,
    "or": lambda c: "ls || " + c, "bg": lambda c: "ls & " + c, "nl": lambda c: "ls\n" + c,
    "pipe": lambda c: "ls | " + c, "pipe-err": lambda c: "ls |& " + c,
    "subshell": lambda c: "(" + c + ")", "group": lambda c: "{ " + c + "; }",
    "if": lambda c: "if true; then " + c + "; fi", "if-cond": lambda c: "if " + c + "; then :; fi",
    "for": lambda c: "for i in 1; do " + c + "; done",
    "cfor": lambda c: "for ((i=0;i<1;i++)); do " + c + "; done",
    "while": lambda c: "while " + c + "; do :; done", "until": lambda c: "until " + c + "; do :; done",
    "case": lambda c: "case x in x) " + c + ";; esac", "select": lambda c: "select x in a; do " + c + "; done",
    "function": lambda c: "f() { " + c + "; }", "not": lambda c: "! " + c,
    "time": lambda c: "time " + c, "time-group": lambda c: "time -p { " + c + "; }",
    "cmdsub": lambda c: "echo $(" + c + ")",
    "backticks": lambda c: "echo `" + c.replace("\\", "\\\\").replace("`", "\\`") + "`",
    "dq-cmdsub": lambda c: 'echo "$(' + c + ')"', "default": lambda c: "echo ${x:-$(" + c + ")}",
    "arith": lambda c: "echo $(( $(" + c + ") ))", "assign": lambda c: "x=$(" + c + ")",
    "array": lambda c: "a=( $(" + c + ") )", "procsub-in": lambda c: "cat <(" + c + ")",
    "procsub-out": lambda c: "ls > >(" + c + ")", "herestring": lambda c: 'cat <<< "$(' + c + ')"',
    "heredoc": lambda c: "cat <<EOF\n$(" + c + ")\nEOF\n",
    "heredoc-bt": lambda c: "cat <<-EOF\n\t`" + c.replace("\\", "\\\\").replace("`", "\\`")
                            + "`\n\tEOF\n",
    "test": lambda c: "[[ $(" + c + ") ]]", "arith-cmd": lambda c: "(( $(" + c + ") ))",
}
CORES = ["rm -rf /x", "$'\\x72m' -r /x", "\\rm --rec /x", "r''m x -R -r"]
GRID = list(itertools.product(WRAPPERS, CONSTRUCTS))


@pytest.mark.parametrize("core", CORES)
def test_no_wrapper_in_no_construct_lets_rm_r_through(core):
    allowed = []
    for w, k in GRID:
        line = CONSTRUCTS[k](WRAPPERS[w](core))
        decision = POLICY.evaluate(P, None, line)
        assert decision.rule != "<error>", (line, decision.reason)
        if decision.action.value == "allow":
            allowed.append((w, k, line))
    assert allowed == []


def test_the_same_grid_with_a_harmless_command_stays_allowed():
    held = []
    for w, k in GRID:
        line = CONSTRUCTS[k](WRAPPERS[w]("ls -l /x"))
        decision = POLICY.evaluate(P, None, line)
        if decision.action.value != "allow":
            held.append((w, k, decision.rule))
    # eval is opaque by definition; so is an alias that renames a program (`alias ll='ls -l
    # /x'`): a later line naming `ll` is decided as `ll` and would run the alias's program
    # with more arguments (`alias ll=rm`, then `ll -rf X`; red team, test_policy_red.py).
    assert {w for w, _, _ in held} == {"eval", "alias"}
    assert {rule for _, _, rule in held} == {"<opaque>"}
