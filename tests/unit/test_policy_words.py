"""Word decoding (quote removal, escapes, run-time parts) and path normalisation."""

from __future__ import annotations

import pytest

from bastion.policy.parse import parse_raw
from bastion.policy.words import WordProblem, ansi_c_decode, norm_path


def words(line: str) -> list:
    raws, problems = parse_raw(line)
    assert not problems, problems
    return raws[-1].words


@pytest.mark.parametrize("line, values", [
    ("echo plain", ["echo", "plain"]),
    ("echo 'a b' \"c d\"", ["echo", "a b", "c d"]),
    ("echo a'b'\"c\"$'d'", ["echo", "abcd"]),
    ("echo \\a\\ b", ["echo", "a b"]),
    ("echo \"a\\\"b\\$c\\\\d\\e\"", ["echo", 'a"b$c\\d\\e']),
    ("echo 'a\\b'", ["echo", "a\\b"]),
    ("echo \"a\\\nb\"", ["echo", "ab"]),
    ("echo $'a\\nb\\tc\\\\d\\'e'", ["echo", "a\nb\tc\\d'e"]),
    ("echo $'\\x41\\101\\u00e9\\U0001F600'", ["echo", "AAé😀"]),
    ("echo $'\\cA\\e\\E\\a'", ["echo", "\x01\x1b\x1b\x07"]),
    ("echo $'\\q'", ["echo", "\\q"]),
    ('echo $"hi"', ["echo", "hi"]),
    ("echo a$ \"$\" '$x'", ["echo", "a$", "$", "$x"]),
    ("echo {} {x} a,b", ["echo", "{}", "{x}", "a,b"]),
    ("echo a[ ]b", ["echo", "a[", "]b"]),
    ("echo '*' \"?\" \\*", ["echo", "*", "?", "*"]),
    ("echo a~b 1=~ x:~", ["echo", "a~b", "1=~", "x:~"]),
])
def test_static_values(line, values):
    assert [w.value for w in words(line)] == values


@pytest.mark.parametrize("word, template, why, split", [
    ("$x", (None,), "variable", True),
    ('"$x"', (None,), "variable", False),
    ("a${x}b", ("a", None, "b"), "variable", True),
    ("$(ls)", (None,), "command substitution", True),
    ('"$(ls)"', (None,), "command substitution", False),
    ("`ls`", (None,), "command substitution", True),
    ("$((1+2))", (None,), "arithmetic", True),
    ("*.log", (None, ".log"), "glob", True),
    ("a?c", ("a", None, "c"), "glob", True),
    ("[ab]c", (None, "c"), "glob", True),
    ("x{a,b}y", ("x", None, "y"), "brace expansion", True),
    ("{1..3}", (None,), "brace expansion", True),
    ("~/x", (None, "/x"), "tilde", False),
    ("~root", (None,), "tilde", False),
    ("x=~/a", ("x=", None, "/a"), "tilde", False),
    ("<(ls)", (None,), "process substitution", False),
    ("/etc/$f", ("/etc/", None), "variable", True),
])
def test_run_time_words(word, template, why, split):
    w = words("echo " + word)[1]
    assert (w.value, w.template, w.why, w.split) == (None, template, why, split)


@pytest.mark.parametrize("word", ["${PATH:=/x}", "${LD_PRELOAD:=x}", "${x@P}"])
def test_words_bash_would_evaluate_as_code_are_problems(word):
    """(the problem makes the command opaque)"""
    raws, _ = parse_raw("echo " + word)
    assert raws[0].problem


@pytest.mark.parametrize("body", [b"a\\0b", b"\\x00", b"\\u0000", b"\\c@"])
def test_ansi_c_nul_is_refused(body):
    with pytest.raises(WordProblem):
        ansi_c_decode(body)


@pytest.mark.parametrize("path, expected", [
    ("/etc//shadow", "/etc/shadow"),
    ("/etc/./shadow", "/etc/shadow"),
    ("/etc/x/../shadow", "/etc/shadow"),
    ("/../../etc/shadow", "/etc/shadow"),
    ("//etc/shadow/", "/etc/shadow"),
    ("/", "/"),
    ("a/b/../c", "a/c"),
    ("../x", "../x"),
    ("./x", "x"),
    ("./-rf", "./-rf"),
    ("x/..", "."),
    ("plain", "plain"),
    ("https://h//a/../b", "https://h//a/../b"),
    ("a b/../c", "a b/../c"),
])
def test_norm_path(path, expected):
    assert norm_path(path) == expected


@pytest.mark.parametrize("line", ["echo [ ]", "echo $'unterminated"])
def test_words_the_grammar_reads_differently_make_the_line_opaque(line):
    assert parse_raw(line)[1]
