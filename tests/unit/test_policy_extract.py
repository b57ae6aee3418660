"""Which simple commands a line runs, normalised (bastion.policy.commands.extract).

Table-driven: each row is a line and the commands we expect, in order, as
``(argv..., )`` tuples (prefixed with ``"!"`` when the command is opaque, and
suffixed with ``"@via"`` when it was found inside a wrapper).  Never executed.
"""

from __future__ import annotations

import pytest

from bastion.policy.commands import (
    MAX_DEPTH, MAX_LINE, _Extractor, extract, fast_commands, fast_words, history_expansion,
)
from bastion.policy.parse import parse_raw


def found(line: str, **kw) -> list:
    out = []
    for c in extract(line, **kw).commands:
        row = (("!",) if c.opaque else ()) + tuple(c.argv)
        if c.via:
            row += ("@" + c.via,)
        out.append(row)
    return out


CASES = [
    # lists, pipelines, groups
    ("ls; rm x", [("ls",), ("rm", "x")]),
    ("ls && rm x || cat y & echo z", [("ls",), ("rm", "x"), ("cat", "y"), ("echo", "z")]),
    ("ls | grep a |& tee b", [("ls",), ("grep", "a"), ("tee", "b")]),
    ("ls\nrm x\n", [("ls",), ("rm", "x")]),
    ("(cd /tmp; rm x)", [("cd", "/tmp"), ("rm", "x")]),
    ("{ rm x; }", [("rm", "x")]),
    ("! rm x", [("rm", "x")]),
    # compound commands and functions
    ("if a; then b; elif c; then d; else e; fi", [("a",), ("b",), ("c",), ("d",), ("e",)]),
    ("for i in 1 2; do rm $i; done", [("rm", "$i")]),
    ("for ((i=0;i<3;i++)); do rm x; done", [("rm", "x")]),
    ("while a; do b; done", [("a",), ("b",)]),
    ("until a; do b; done", [("a",), ("b",)]),
    ("case $x in a|b) rm a;; *) rm b;; esac", [("rm", "a"), ("rm", "b")]),
    ("select x in a b; do rm $x; done", [("rm", "$x")]),
    ("f() { rm x; }; f", [("rm", "x"), ("f",)]),
    ("function g { rm x; }", [("rm", "x")]),
    # time / coproc: keywords before compound commands
    ("time rm x", [("time", "rm", "x"), ("rm", "x", "@time")]),
    ("time -p { rm x; }", [("rm", "x")]),
    ("time ! rm x", [("rm", "x")]),
    ("coproc rm x", [("coproc", "rm", "x"), ("rm", "x", "@coproc")]),
    ("coproc { rm x; }", [("rm", "x")]),
    ("coproc worker { rm x; }", [("rm", "x")]),
    ("coproc (rm x)", [("rm", "x")]),
    # substitutions everywhere
    ("echo $(rm a)", [("rm", "a"), ("echo", "$(rm a)")]),
    ("echo `rm a`", [("rm", "a"), ("echo", "`rm a`")]),
    ('echo "x$(rm a)y"', [("rm", "a"), ("echo", '"x$(rm a)y"')]),
    ('echo "$(echo "$(rm a)")"', [("rm", "a"), ("echo", '"$(rm a)"'),
                                  ("echo", '"$(echo "$(rm a)")"')]),
    ("echo ${x:-$(rm a)}", [("rm", "a"), ("echo", "${x:-$(rm a)}")]),
    ("echo $(( $(rm a) + 1 ))", [("rm", "a"), ("echo", "$(( $(rm a) + 1 ))")]),
    ("echo $[ $(rm a) ]", [("rm", "a"), ("echo", "$[ $(rm a) ]")]),
    ("x=$(rm a)", [("rm", "a")]),
    ("x=1 y=$(rm a) ls", [("rm", "a"), ("ls",)]),
    ("a[$(rm a)]=1", [("rm", "a")]),
    ("cat <(rm a) >(rm b)", [("rm", "a"), ("rm", "b"), ("cat", "<(rm a)", ">(rm b)")]),
    ("cat <<< $(rm a)", [("rm", "a"), ("cat",)]),
    ("cat <<EOF\n$(rm a) `rm b`\nEOF\n", [("rm", "a"), ("rm", "b"), ("cat",)]),
    ("cat <<-EOF\n\t${x:-`rm a`} ${y}\n\tEOF\n", [("rm", "a"), ("cat",)]),
    ("cat <<EOF\n<(rm a) \\`rm b\\`\nEOF\n", [("cat",)]),
    ("cat <<'EOF'\n$(rm a)\nEOF\n", [("cat",)]),
    ('cat <<"EOF"\n$(rm a)\nEOF\n', [("cat",)]),
    ("cat <<\\EOF\n$(rm a)\nEOF\n", [("cat",)]),
    ("cat <<EOF | sh\nrm a\nEOF\n", [("cat",), ("!", "sh")]),
    ("cat <<EOF > /tmp/out && rm b\nx\nEOF\n", [("cat", ">/tmp/out"), ("rm", "b")]),
    ("echo `echo \\`rm a\\``", [("echo", "`rm", "a`"), ("rm", "a"), ("echo", "`rm a`"),
                                ("echo", "`echo \\`rm a\\``")]),
    # redirections are arguments
    ("cat < /etc/shadow", [("cat", "</etc/shadow")]),
    ("ls > /tmp/x 2>&1 2>&- >&2", [("ls", ">/tmp/x")]),
    ("{ ls; cat; } > /tmp/x", [("ls", ">/tmp/x"), ("cat", ">/tmp/x")]),
    ("> /tmp/x", [(":", ">/tmp/x")]),
    ("while read l; do echo $l; done < /tmp/in", [("read", "l", "</tmp/in"),
                                                  ("echo", "$l", "</tmp/in")]),
    # quoting and normalisation
    ("r''m x", [("rm", "x")]),
    ('"r"m x', [("rm", "x")]),
    ("\\rm x", [("rm", "x")]),
    ("$'rm' x", [("rm", "x")]),
    ("$'\\x72\\u006d' $'a\\tb'", [("rm", "a\tb")]),
    ('$"rm" x', [("rm", "x")]),
    ("/usr/bin/../bin/./rm x", [("/usr/bin/rm", "x")]),
    ("ls \\\n  -l", [("ls", "-l")]),
    ("echo 'a b' \"c d\" e\\ f", [("echo", "a b", "c d", "e f")]),
    ("ls # ; rm -rf /", [("ls",)]),
    ("echo a#b", [("echo", "a#b")]),
    # wrappers
    ("sudo -u root -- rm -rf /x", [("sudo", "-u", "root", "--", "rm", "-rf", "/x"),
                                   ("rm", "-rf", "/x", "@sudo")]),
    ("sudo -e /etc/hosts", [("sudo", "-e", "/etc/hosts"), ("sudoedit", "/etc/hosts", "@sudo")]),
    ("doas -u root rm x", [("doas", "-u", "root", "rm", "x"), ("rm", "x", "@doas")]),
    ("env -i -u HOME A=1 rm x", [("env", "-i", "-u", "HOME", "A=1", "rm", "x"),
                                 ("rm", "x", "@env")]),
    ("nice -n 5 rm x", [("nice", "-n", "5", "rm", "x"), ("rm", "x", "@nice")]),
    ("nice -10 rm x", [("nice", "-10", "rm", "x"), ("rm", "x", "@nice")]),
    ("ionice -c 3 rm x", [("ionice", "-c", "3", "rm", "x"), ("rm", "x", "@ionice")]),
    ("ionice -p 42", [("ionice", "-p", "42")]),
    ("nohup rm x", [("nohup", "rm", "x"), ("rm", "x", "@nohup")]),
    ("timeout --signal=KILL 5s rm x", [("timeout", "--signal=KILL", "5s", "rm", "x"),
                                       ("rm", "x", "@timeout")]),
    ("command -p rm x", [("command", "-p", "rm", "x"), ("rm", "x", "@command")]),
    ("command -v rm", [("command", "-v", "rm")]),
    ("builtin echo x", [("builtin", "echo", "x"), ("echo", "x", "@builtin")]),
    ("exec -a name rm x", [("exec", "-a", "name", "rm", "x"), ("rm", "x", "@exec")]),
    ("stdbuf -o L rm x", [("stdbuf", "-o", "L", "rm", "x"), ("rm", "x", "@stdbuf")]),
    ("setsid -w rm x", [("setsid", "-w", "rm", "x"), ("rm", "x", "@setsid")]),
    ("flock -n /tmp/l rm x", [("flock", "-n", "/tmp/l", "rm", "x"), ("rm", "x", "@flock")]),
    ("flock /tmp/l -c 'rm x'", [("flock", "/tmp/l", "-c", "rm x"), ("rm", "x", "@flock -c")]),
    ("flock 9", [("flock", "9")]),
    ("watch -n1 'rm x; ls'", [("watch", "-n1", "rm x; ls"), ("rm", "x", "@watch"),
                              ("ls", "@watch")]),
    ("watch -x rm x", [("watch", "-x", "rm", "x"), ("rm", "x", "@watch")]),
    ("xargs rm", [("xargs", "rm"), ("rm", "<xargs input>", "@xargs")]),
    ("xargs", [("xargs",), ("echo", "<xargs input>", "@xargs")]),
    ("xargs -I % mv % /tmp", [("xargs", "-I", "%", "mv", "%", "/tmp"), ("mv", "%", "/tmp", "@xargs")]),
    ("find . -name '*.o' -exec rm {} \\; -execdir ls {} +",
     [("find", ".", "-name", "*.o", "-exec", "rm", "{}", ";", "-execdir", "ls", "{}", "+"),
      ("rm", "{}", "@find -exec"), ("ls", "{}", "@find -execdir")]),
    ("find . -okdir rm {} \\;", [("find", ".", "-okdir", "rm", "{}", ";"),
                                 ("rm", "{}", "@find -okdir")]),
    ("find . -ok rm {} ;", [("find", ".", "-ok", "rm", "{}"), ("rm", "{}", "@find -ok")]),
    ("busybox rm x", [("busybox", "rm", "x"), ("rm", "x", "@busybox")]),
    ("busybox --list", [("busybox", "--list")]),
    ("su -c 'rm x' bob", [("su", "-c", "rm x", "bob"), ("rm", "x", "@su -c")]),
    ("su - bob --command='rm x'", [("su", "-", "bob", "--command=rm x"), ("rm", "x", "@su -c")]),
    ("runuser -u bob -- rm x", [("runuser", "-u", "bob", "--", "rm", "x"),
                                ("rm", "x", "@runuser")]),
    ("runuser -l bob -c 'rm x'", [("runuser", "-l", "bob", "-c", "rm x"),
                                  ("rm", "x", "@runuser -c")]),
    ("bash -c 'rm x'", [("bash", "-c", "rm x"), ("rm", "x", "@bash -c")]),
    ("sh -ec 'rm x' name arg", [("sh", "-ec", "rm x", "name", "arg"), ("rm", "x", "@sh -c")]),
    ("bash --norc -o pipefail -c 'rm x'", [("bash", "--norc", "-o", "pipefail", "-c", "rm x"),
                                           ("rm", "x", "@bash -c")]),
    ("/bin/dash -c 'rm x'", [("/bin/dash", "-c", "rm x"), ("rm", "x", "@dash -c")]),
    ("zsh -c 'rm x'", [("zsh", "-c", "rm x"), ("rm", "x", "@zsh -c")]),
    ("ksh -c 'rm x'", [("ksh", "-c", "rm x"), ("rm", "x", "@ksh -c")]),
    ("bash --version", [("bash", "--version")]),
    ("sudo -u bob bash -c 'nice rm x'", [
        ("sudo", "-u", "bob", "bash", "-c", "nice rm x"), ("bash", "-c", "nice rm x", "@sudo"),
        ("nice", "rm", "x", "@sudo > bash -c"), ("rm", "x", "@sudo > bash -c > nice")]),
    ("eval 'rm x'", [("!", "eval", "rm x"), ("rm", "x", "@eval")]),
    ("alias ll='ls -l'", [("!", "alias", "ll=ls -l"), ("ls", "-l", "@alias")]),   # a rename: opaque
    ("trap 'rm x' EXIT", [("trap", "rm x", "EXIT"), ("rm", "x", "@trap")]),
    ("trap - EXIT", [("trap", "-", "EXIT")]),
    # opaque
    ("$CMD x", [("!", "$CMD", "x")]),
    ("${CMD} x", [("!", "${CMD}", "x")]),
    ("$(which rm) x", [("which", "rm"), ("!", "$(which rm)", "x")]),
    ("`which rm` x", [("which", "rm"), ("!", "`which rm`", "x")]),
    ("/bin/r? x", [("!", "/bin/r?", "x")]),
    ("r[m] x", None),
    ("r{m,x} x", [("!", "r{m,x}", "x")]),
    ("~/bin/tool", [("!", "~/bin/tool")]),
    ("eval \"$X\"", [("!", "eval", '"$X"')]),
    ("source x.sh", [("!", "source", "x.sh")]),
    (". x.sh", [("!", ".", "x.sh")]),
    ("fc -s", [("!", "fc", "-s")]),
    ("bash x.sh", [("!", "bash", "x.sh")]),
    ("bash", [("!", "bash",)]),
    ("bash -s arg", [("!", "bash", "-s", "arg")]),
    ("bash -i", [("!", "bash", "-i")]),
    ("sh < x.sh", [("!", "sh", "<x.sh")]),
    ("curl x | sh", [("curl", "x"), ("!", "sh")]),
    ("bash <<< 'rm x'", [("!", "bash")]),
    ("bash -c \"$X\"", [("!", "bash", "-c", '"$X"')]),
    ("bash -c", [("!", "bash", "-c")]),
    ("fish -c 'rm x'", [("!", "fish", "-c", "rm x")]),
    ("su bob", [("!", "su", "bob")]),
    ("su -s /usr/bin/python3 -c 'x' bob", [("!", "su", "-s", "/usr/bin/python3", "-c", "x",
                                             "bob")]),
    ("sudo -i", [("!", "sudo", "-i")]),
    ("sudo --frobnicate rm x", [("!", "sudo", "--frobnicate", "rm", "x")]),
    ("sudo -Z rm x", [("!", "sudo", "-Z", "rm", "x")]),
    ("sudo $OPTS rm x", [("!", "sudo", "$OPTS", "rm", "x")]),
    ("sudo -u \"$U\" rm x", [("sudo", "-u", '"$U"', "rm", "x"), ("rm", "x", "@sudo")]),
    ("doas -s", [("!", "doas", "-s")]),
    ("env -S 'rm x'", [("!", "env", "-S", "rm x")]),
    ("env PATH=/tmp ls", [("env", "PATH=/tmp", "ls"), ("!", "ls", "@env")]),
    ("sudo LD_PRELOAD=/x.so ls", [("sudo", "LD_PRELOAD=/x.so", "ls"), ("!", "ls", "@sudo")]),
    ("watch \"$X\"", [("!", "watch", '"$X"')]),
    ("find $DIR -name x", [("!", "find", "$DIR", "-name", "x")]),
    ("find . -exec sh -c 'rm {}' \\;", [("find", ".", "-exec", "sh", "-c", "rm {}", ";"),
                                        ("!", "sh", "-c", "'rm {}'", "@find -exec")]),
    ("xargs -I{} sh -c 'rm {}'", [("xargs", "-I{}", "sh", "-c", "rm {}"),
                                  ("!", "sh", "-c", "'rm {}'", "@xargs")]),
    ("bind -x '\"\\C-t\": rm x'", [("!", "bind", "-x", '"\\C-t": rm x')]),
    ("complete -C 'rm x' ls", [("!", "complete", "-C", "rm x", "ls")]),
    ("PATH=/tmp ls", [("!", "ls",)]),
    ("LD_PRELOAD=/tmp/x.so ls", [("!", "ls",)]),
    ("IFS=/ ls", [("!", "ls",)]),
    ("GIT_SSH_COMMAND='rm x' git fetch", [("!", "git", "fetch")]),
    ("FOO=bar ls", [("ls",)]),
    ("PATH=/tmp", [("!", "PATH=/tmp")]),
    ("PATH+=:/tmp; ls", [("!", "PATH+=:/tmp"), ("ls",)]),
    ("export PATH=/tmp", [("!", "export", "PATH=/tmp")]),
    ("export FOO=1", [("export", "FOO=1")]),
    ("declare -n ref=PATH", [("!", "declare", "-n", "ref=PATH")]),
    ("read -r PATH", [("!", "read", "-r", "PATH")]),
    ("printf -v PATH %s /tmp", [("!", "printf", "-v", "PATH", "%s", "/tmp")]),
    ("printf '%s' '$(x)'", [("printf", "%s", "$(x)")]),
    ("for PATH in /tmp; do ls; done", [("!", "for", "PATH"), ("ls",)]),
    ("echo ${PATH:=/tmp}", [("!", "echo", "${PATH:=/tmp}")]),
    ("echo ${x@P}", [("!", "echo", "${x@P}")]),
    ("let 'a[$(rm x)]=1'", [("!", "let", "a[$(rm x)]=1")]),
    ("test -v 'a[$(rm x)]'", [("!", "test", "-v", "a[$(rm x)]")]),
    ("if then", None),
    ("echo 'x", None),
]


@pytest.mark.parametrize("line, expected", CASES, ids=[repr(c[0])[:50] for c in CASES])
def test_found_commands(line, expected):
    if expected is None:
        assert extract(line).problems, "the line should be opaque"
    else:
        assert found(line) == expected


@pytest.mark.parametrize("line", [
    "echo 'unterminated", 'echo "unterminated', "echo $(ls", "echo `ls", "if ls; then ls",
    "for x in a; do ls", "case x in", "ls |", "ls &&", "cat <<EOF\nno end", "(ls", "{ ls",
    "echo ${x", "ls\0rm", "a\x00", "cat 2>&1 <<<x", "ls#x", "ls <> f",
    "[[ -v 'a[$(rm x)]' ]]", "(( a['$(rm x)'] ))", "echo a\\\n$(rm)", "r\\\nm x",
    "cat <<EOF\n`unterminated\nEOF\n",
])
def test_lines_that_cannot_be_read_are_opaque(line):
    assert extract(line).problems


def test_deep_nesting_is_opaque_not_a_crash():
    line = "echo " + "$(" * 200 + "rm x" + ")" * 200
    assert any("nested" in p for p in extract(line).problems)


def test_long_line_is_opaque():
    assert extract("ls " + "a" * MAX_LINE).problems


def test_nested_c_strings_have_a_depth_limit():
    ex = _Extractor(None)
    ex.code("rm x", MAX_DEPTH, "bash -c", [])
    assert [c.opaque for c in ex.commands] == [f"command strings nested deeper than {MAX_DEPTH}"]
    ex = _Extractor(None)
    ex.code("rm x", MAX_DEPTH - 1, "bash -c", [])
    assert [(c.argv, c.opaque) for c in ex.commands] == [(("rm", "x"), None)]


def test_non_text_line_is_opaque():
    assert extract(b"ls").problems      # type: ignore[arg-type]


def test_invalid_unicode_is_opaque():
    assert extract("ls \ud800").problems


@pytest.mark.parametrize("line", [
    "ls -la /var/log", "systemctl status nginx", "git log -n 5 --oneline",
    "kubectl get pods -n kube-system", "df -h", "/usr/bin/ls -l ./x/../y",
    "tail -n 50 /var/log/syslog", "du -sh /tmp", "uptime", "a:b c,d e%f g@h i+j",
    "ls --color=auto -la", "dd if=/dev/zero of=/tmp/x bs=1M count=1", "export FOO=1",
])
def test_fast_path_agrees_with_the_parser(line):
    words = fast_words(line)
    assert words is not None
    raws, problems = parse_raw(line)
    assert not problems and len(raws) == 1
    assert [w.value for w in words] == [w.value for w in raws[0].words]


@pytest.mark.parametrize("line", [
    "ps aux | grep -v grep | grep nginx", "ls; rm x", "ls && rm x || cat y", "ls & rm x",
    "ls |& cat", "ls;", "ls &", "a;b;c", "make -j4 && make install; ls -l",
])
def test_fast_list_path_agrees_with_the_parser(line):
    fast = fast_commands(line)
    assert fast is not None
    raws, problems = parse_raw(line)
    assert not problems
    assert [[w.value for w in ws] for ws in fast] == [[w.value for w in r.words] for r in raws]


@pytest.mark.parametrize("line", [
    "A=1 ls", "if x", "time ls", "coproc ls", "ls ~", "ls *", "ls $x", "ls #x", "ls !x",
    "ls 'a'", "ls;rm", "ls {a,b}", "ls\nrm", "^a^b", "ls > x", "ls <x",
])
def test_fast_path_refuses_anything_special(line):
    assert fast_words(line) is None


@pytest.mark.parametrize("line", [
    "ls |", "ls &&", "| ls", "ls ;; rm", "ls | | rm", "; ls", "ls && if x", "ls; A=1 rm",
    "ls > x | cat", "ls & & rm",
])
def test_fast_list_path_leaves_odd_lists_to_the_parser(line):
    assert fast_commands(line) is None


@pytest.mark.parametrize("line, expanded", [
    ("!!", True), ("sudo !!", True), ("echo !$", True), ("!rm", True), ("^rm^ls", True),
    ("echo hi!", False), ("echo 'hi!x'", False), ("echo \\!x", False), ("[ ! -f x ]", False),
    ("a != b", False), ('echo "!x"', True),
])
def test_history_expansion(line, expanded):
    assert (history_expansion(line) is not None) is expanded
    assert bool(extract(line, interactive=True).problems) is expanded or line.startswith("[")


def test_cd_in_the_line_resolves_later_relative_paths():
    cmds = extract("cd /etc && cat ./shadow").commands
    assert "/etc/shadow" in cmds[1].args[0].views


def test_cwd_argument_resolves_relative_paths():
    cmds = extract("cat shadow", cwd="/etc").commands
    assert "/etc/shadow" in cmds[0].args[0].views


def test_untrusted_program_paths():
    by_line = {line: extract(line).commands[0] for line in
               ("ls", "/bin/ls", "/usr/local/bin/ls", "./ls", "/tmp/ls", "bin/ls")}
    assert {k: v.trusted for k, v in by_line.items()} == {
        "ls": True, "/bin/ls": True, "/usr/local/bin/ls": True, "./ls": False,
        "/tmp/ls": False, "bin/ls": False}
    assert all(v.program == "ls" for v in by_line.values())


class _Span:
    def __init__(self, start: int, end: int) -> None:
        self.start_byte, self.end_byte = start, end


@pytest.mark.parametrize("body, strip_tabs, flagged", [
    (b"x\nEOF\nrm -rf /\n", False, True),       # the grammar ran past the delimiter line
    (b"x\n\tEOF\nrm\n", True, True),
    (b"x\n\tEOF\nrm\n", False, False),          # without <<- a tab-indented EOF is data
    (b"x\nEOF \ny\n", False, False),
    (b"x\nEOFX\n", False, False),
])
def test_a_heredoc_body_that_runs_past_its_delimiter_is_opaque(body, strip_tabs, flagged):
    from bastion.policy.parse import _Walker
    walker = _Walker(body)
    walker.check_heredoc_end(_Span(0, len(body)), b"EOF", strip_tabs)
    assert bool(walker.problems) is flagged


@pytest.mark.parametrize("line", [
    "cat <<'EOF'\nEOF \nrm -rf /x\nEOF\n",        # bash: data; tree-sitter ends early
    "cat <<-'EOF'\n  EOF\nrm -rf /x\n\tEOF\n",
])
def test_the_grammar_ending_a_heredoc_early_only_makes_us_stricter(line):
    assert ("rm", "-rf", "/x") in found(line)
