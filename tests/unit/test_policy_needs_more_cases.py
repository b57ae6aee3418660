"""needs_more: would a shell ask for more lines?  And the sh dialect."""

from __future__ import annotations

import pytest

from bastion.identity.principal import Principal
from bastion.policy import compile_policy
from bastion.policy.continuation import needs_more


@pytest.mark.parametrize("text, more", [
    ("ls", False), ("", False), ("echo 'a", True), ('echo "a', True), ("echo 'a'", False),
    ("echo `date", True), ("ls \\", True), ("ls \\\\", False), ("ls |", True), ("ls &&", True),
    ("ls ||", True), ("ls | wc", False), ("if true; then", True), ("if true; then ls; fi", False),
    ("for f in *; do", True), ("for f in *; do echo $f; done", False), ("while :; do ls", True),
    ("case x in", True), ("case x in a) ls;; esac", False), ("{ ls", True), ("{ ls; }", False),
    ("(ls", True), ("(ls)", False), ("f() {", True), ("function f {", True),
    ("cat <<EOF", True), ("cat <<EOF\nhi\nEOF", False), ("cat <<-'E'\n\thi\n\tE", False),
    ("echo '<<EOF'", False), ("echo fi", False), ("echo done if", False), ("ls # if", False),
    ("echo $'a", True), ("echo 'a\nb'", False), ("ls;", False), ("ls &", False),
])
def test_needs_more(text, more):
    assert needs_more(text) is more


P = Principal(subject="a")
POL = compile_policy({}, [{"name": "ok", "action": "allow", "commands": ["echo", "ls", "sh"]}])


@pytest.mark.parametrize("line, bash, sh", [
    ("echo a", "allow", "allow"),
    ("echo $'a'", "allow", "review"),
    ("echo {a,b}", "allow", "review"),
    ("[[ -f x ]] && ls", "allow", "review"),
    ("ls &> /dev/null", "allow", "review"),
])
def test_dialect(line, bash, sh):
    assert POL.evaluate(P, None, line).action.value == bash
    assert POL.evaluate(P, None, line, dialect="sh").action.value == sh


def test_sh_c_uses_the_sh_dialect():
    assert POL.evaluate(P, None, "sh -c 'echo a'").action.value == "allow"
    assert POL.evaluate(P, None, "sh -c \"echo \\$'a'\"").action.value == "review"
    assert POL.evaluate(P, None, "sh -c 'ls &> /dev/null'").action.value == "review"
    assert POL.evaluate(P, None, "bash -c 'ls &> /dev/null'").action.value == "deny"  # no bash rule
