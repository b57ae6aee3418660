"""Issue 15: bash evaluates a variable's *value* as arithmetic, recursively.

``x='a[$(cmd)]'; echo $((x))`` runs ``cmd``: in ``$((..))``, ``((..))``, ``for ((..))``,
``let``, ``[[ A -eq B ]]``, ``declare -i``, indexed subscripts, substring offsets,
``${!x}`` and ``-v NAME[SUB]``.  The engine allows such a read only when it can prove the
variable holds a plain number: every assignment to it on the line is one, and one of
them surely ran first.  Everything else is opaque (review here), never allowed.

Each "runs" line below was checked against bash 5.2 by hand (with a harmless payload);
this file only parses lines, it never runs them.
"""

from __future__ import annotations

import pytest

from bastion.identity.principal import Principal
from bastion.policy import Action, compile_policy
from bastion.policy import arith

P = Principal(subject="agent")
# Every program is allowed: only the engine's own opacity can stop a line here.
EVERYTHING = compile_policy({"default": "deny", "opaque": "review"},
                            [{"name": "all", "action": "allow", "commands": ["*"]}])

NOT_ALLOWED = [
    # a value from an earlier line (or the environment) is never known
    "echo $((x))",
    "echo $[x]",
    "(( x ))",
    "echo $(( 1 + $x ))",
    'echo $(( "x" ))',
    "[[ $x -eq 0 ]]",
    "[[ x -gt 0 ]]",
    '[[ "$x" -le 1 ]] || echo no',
    "for ((i=x; i<1; i++)); do :; done",
    "let y=x",
    "let 'y = x + 1'",
    "echo ${arr[x]}",
    "echo ${arr[$x]}",
    "[[ -n ${arr[x]} ]]",
    'test -z "${arr[$x]}"',
    "arr[x]=1",
    "arr=([x]=1)",
    "declare -a arr=([x]=1)",
    "echo ${PATH:n}",
    "echo ${PATH:0:n}",
    "echo ${x[@]:n}",
    "set -- 1 2; echo ${@:n}",
    "echo $(( x[0] ))",
    'echo "${!x}"',
    "echo ${!1}",
    "[[ -v $x ]]",
    '[ -v "$x" ]',
    'test -v "$x"',
    "[[ -v a[i] ]]",
    'printf -v "$x" %s 1',
    'read "$x" <<< 1',
    "read 'a[i]' <<< 1",
    'unset "$x"',
    'getopts ab "$x"',
    'wait -p "$x"',
    'declare "$x=1"',
    "export $x",
    "case 1 in $((x))) ;; esac",
    "f(){ echo $(($1)); }; f x",
    "echo $(( $- ))",
    "echo $((RANDOM % 6))",          # RANDOM loses its magic once unset on an earlier line
    # a literal value that is not a number
    "x='a[$(rm -rf /srv)]'; echo $((x))",
    "x='a[$(rm -rf /srv)]'; y=x; echo $((y))",
    "y='a[1]'; echo $((y))",         # a[1] is whatever an earlier line put there
    "x=hello; echo $((x))",
    "x=5; y=$x$z; echo $((y))",
    "n=$(cat /tmp/n); echo $((n))",
    "x=$1; echo $((x))",
    # the number might not be there when the read runs
    "n=3 & let m=n",
    "(n=3); let m=n",
    "{ n=3; }; echo $((n))",
    "false && n=3; let m=n",
    "if true; then n=3; fi; let m=n",
    "let m=n; n=3",
    "n=3; n=$y; let m=n",
    "n=3; read n; let m=n",
    "n=3; for n in a b; do :; done; let m=n",
    "n=3; f(){ n=x; }; f; let m=n",
    "n=3; trap 'n=x' DEBUG; let m=n",
    "n=3; : ${n:=x}; let m=n",
    "x=5; for ((;;)); do echo $((x)); x=$y; done",
    # attributes that outlive the line
    "declare -i y=5",
    "declare -i y; y=x",
    "typeset -i y",
    "f(){ local -i q=$1; }; f x",
    "readonly n",
    "declare -r n=3",
    # an unquoted glob in let becomes a file name, evaluated
    "n=3; let m=n*2",
    "let m=n?2",
    # a callback
    "mapfile -C 'rm -rf /srv' -c 1 a < /dev/null",
    # inside -c strings the same rules hold
    "bash -c 'echo $((x))'",
    "n=3; bash -c 'echo $((n))'",
]

ALLOWED = [
    "echo $((1+2))",
    "x=5; echo $((x+1))",
    "x=5; [[ $x -eq 5 ]] && echo ok",
    "for ((i=0;i<3;i++)); do echo $i; done",
    "for ((i=0; i<3; i++)); do echo $((i*2)); done",
    "for i in 1 2 3; do echo $((i*2)); done",
    "i=2; echo ${PATH:i:5}",
    "a=(1 2 3); echo ${a[1]}",
    "n=3; let 'm=n*2'; echo $m",
    'n=3; let "m = n * 2"; echo $((m))',
    "(( n = 4 )); echo $((n+1))",
    "echo $((n=5))",
    "echo $(( $(date +%s) - 3600 ))",   # command output pasted in: not judged (documented)
    "t=$(date +%s); echo $((t - 60))",
    "t=$(date -d '1 hour ago' +%s); [[ $t -gt 0 ]] && echo ok",
    "c=$(wc -l < /tmp/x); [[ $c -gt 0 ]] && echo some",
    "n=$(nproc); echo $((n/2))",
    "echo ${#x}",
    "[[ ${#x} -gt 2 ]]",
    'echo "${HOSTNAME:-unknown}"',
    "echo ${x:0:3} ${x: -1}",
    "echo ${arr[@]} ${!arr[@]} ${!x@} ${#arr[@]}",
    "test -v HOME && echo set",
    "[[ -v HOME ]]",
    "echo $((UID + 1))",
    "[[ $# -gt 0 ]] || echo none",
    "echo $(( $$ % 10 ))",
    "x=0x1F; echo $((x))",
    "x=; echo $((x))",
    "n=3; m=$n; echo $((m))",
    "n=3; n=$((n+1)); echo $((n))",
    "export n=3; echo $((n))",
    "declare n=3; echo $((n))",
    "n=3 m=4; echo $((n*m))",
    "x=5; y=$x; echo $((y))",
    "read -r line < /tmp/x; echo \"$line\"",
    "printf -v out '%s' x; echo \"$out\"",
    "unset x",
    "declare -i",
    "declare -p x",
    "readonly -p",
    "trap - INT",
    "trap 'echo bye' EXIT; x=5; echo $((x))",
    "x=5; echo ${arr[x]}",
    "[ \"$a\" -eq 1 ]",                 # test/[ do not evaluate -eq operands
    "test 5 -gt 3",
    "sh -c 'echo $((1+2))'",
]


@pytest.mark.parametrize("line", NOT_ALLOWED)
def test_arithmetic_on_an_unknown_value_is_never_allowed(line):
    decision = EVERYTHING.evaluate(P, None, line)
    assert decision.action != Action.ALLOW, (line, decision.reason)


@pytest.mark.parametrize("line", ALLOWED)
def test_arithmetic_on_known_numbers_stays_allowed(line):
    decision = EVERYTHING.evaluate(P, None, line)
    assert decision.action == Action.ALLOW, (line, decision.reason)


def test_the_reason_names_the_variable():
    reason = EVERYTHING.evaluate(P, None, "x=$1; echo $((x))").reason
    assert "x" in reason and "plain number" in reason


@pytest.mark.parametrize("text, reads, assigns, unsafe", [
    ("x+1", ["x"], [], []),
    ("i=0", [], ["i"], []),
    ("i++", ["i"], ["i"], []),
    ("++i", ["i"], ["i"], []),
    ("n += 2", ["n"], ["n"], []),
    ("a == b", ["a", "b"], [], []),
    ("0x1F + 16#ff + 2#101", [], [], []),
    ("$x * ${y}", ["x", "y"], [], []),
    ("${x:-z}", ["x", "z"], [], []),
    ("$1 + $@", [], [], ["$1", "$@"]),
    ("a[i] + 1", ["i"], [], ["a[...]"]),
    ("a[i] = 2", ["i"], [], []),
    ("$(( k ))", ["k"], [], []),
    ("$(cmd) + `cmd`", [], [], []),
    ("UID + EUID + PPID + $# + $$ + $?", [], [], []),
    ("${a[1]}", [], [], ["${a[1]}"]),
])
def test_scan_arith(text, reads, assigns, unsafe):
    scan = arith.scan_arith(text)
    assert (scan.reads, scan.assigns, scan.unsafe) == (reads, assigns, unsafe)


@pytest.mark.parametrize("text, literal, expect", [
    ("5", True, (True, ())),
    ("-3", True, (True, ())),
    ("", True, (True, ())),
    ("1 + 2", True, (True, ())),
    ("a[1]", True, (False, ())),
    ("$x", True, (False, ())),
    ("$x", False, (True, ("x",))),
    ('"$a$b"', False, (True, ("a", "b"))),
    ("$((x+1))", False, (True, ())),
    ("$(date +%s)", False, (True, ())),
    ("$(cat /tmp/n)", False, (False, ())),
    ("$1", False, (False, ())),
    ("${a[1]}", False, (False, ())),
    ("${#s}", False, (True, ())),
])
def test_value_refs(text, literal, expect):
    assert arith.value_refs(text, literal) == expect


@pytest.mark.parametrize("text, arith_texts, indirect, unsafe, assign", [
    ("${x}", [], None, None, None),
    ("${a[i+1]}", ["i+1"], None, None, None),
    ("${a[@]}", [], None, None, None),
    ("${!a[@]}", [], None, None, None),
    ("${!pre@}", [], None, None, None),
    ("${!x}", [], "x", None, None),
    ("${!1}", [], None, "${!1}", None),
    ("${!#}", [], None, None, None),
    ("${s:n}", ["n"], None, None, None),
    ("${s:0:n}", ["0:n"], None, None, None),
    ("${s: -1}", [" -1"], None, None, None),
    ("${s:-d}", [], None, None, None),
    ("${s:=5}", [], None, None, ("s", "5")),
    ("${#a[k]}", ["k"], None, None, None),
    ("${x//a/b}", [], None, None, None),
])
def test_expansion(text, arith_texts, indirect, unsafe, assign):
    info = arith.expansion(text)
    assert (info.arith, info.indirect, info.unsafe, info.assign) == (
        arith_texts, indirect, unsafe, assign)


@pytest.mark.parametrize("inner, expect", [
    ("date +%s", True),
    ("date -u +%Y%m%d", True),
    ("date -d '1 hour ago' '+%F %T'", True),
    ("date +%A", False),              # a day name: letters, a variable name in arithmetic
    ("date", False),
    ("wc -l", True),
    ("wc -l < /tmp/x", True),
    ("wc -l /tmp/x", False),          # "3 /tmp/x"
    ("nproc", True),
    ("id -u", True),
    ("id -un", False),
    ("cat /tmp/n", False),
    ("echo 5", False),
])
def test_int_output(inner, expect):
    assert arith.int_output(inner) is expect


@pytest.mark.parametrize("raw, expect", [
    ("m=n*2", True), ("m=n?2", True), ("x[1]=2", True), ("'m=n*2'", False),
    ('"m=n*2"', False), ("m=$((n*2))", False), ("m=${a[1]}", False), ("m=\\*", False),
])
def test_unquoted_glob(raw, expect):
    assert arith.unquoted_glob(raw) is expect
