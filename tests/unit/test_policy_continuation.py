"""needs_more: does a shell ask for more lines of this text?  (Never run: data only.)"""

from __future__ import annotations

import pytest

from bastion.policy.continuation import needs_more

MORE = [
    "echo 'a", 'echo "a', "echo `ls", "echo $(ls", "echo $(echo ')'", "echo ${x",
    "echo $'a", "echo a |", "echo a &&", "echo a ||", "echo a |&", "echo a \\",
    "for i in 1 2; do", "for i in 1 2; do\necho $i", "while true", "while true; do",
    "until false; do", "if true; then", "if true; then\necho\nelse", "case x in",
    "case x in\na) echo;;", "{ echo", "( echo", "f() {", "f() {\necho", "cat <<EOF\nhi",
    "cat <<EOF", "cat <<-EOF\n\thi", "cat <<'EOF'\n$(x)", "echo \"a\nb", "echo a &&\n",
    "if true; then\n  for i in 1; do\n    echo\n  done", "(( x +", "echo \"$(echo 'x\")\"",
]
DONE = [
    "", "echo hi", "echo 'a'", 'echo "a"', "echo `ls`", "echo $(ls)", "echo ${x}", "echo $'a'",
    "echo a | cat", "echo a && echo b", "echo a\\ b", "for i in 1 2; do echo $i; done",
    "for i in 1 2; do\necho $i\ndone", "if true; then echo; fi", "case x in a) echo;; esac",
    "case x in\n(a) echo;;\nesac", "{ echo; }", "( echo )", "f() { echo; }", "cat <<EOF\nhi\nEOF",
    "cat <<-EOF\n\thi\n\tEOF", "cat <<'EOF'\n$(x\nEOF", "echo done", "echo fi if", "echo # if",
    "# if {", "echo a;", "echo a &", "(( x + 1 ))", "echo $((1+2))", "echo ')'", "echo \\'",
    "echo 'it''s'", "x=(a b)", "echo a 2>&1", "cat <<<'here'", "echo }", "fi", "echo )",
    "cat <<EOF\n\\$(\nEOF", "echo \"$(echo 'x')\"", "arr=([0]=a); echo ${arr[0]}",
]


@pytest.mark.parametrize("text", MORE)
def test_unfinished_commands_need_more(text):
    assert needs_more(text)


@pytest.mark.parametrize("text", DONE)
def test_complete_commands_do_not(text):
    assert not needs_more(text)


def test_dash_has_no_dollar_quote():
    assert not needs_more("echo $'a'", "sh")
    assert needs_more("echo $'a", "sh")       # in dash: $ then an open ' quote
