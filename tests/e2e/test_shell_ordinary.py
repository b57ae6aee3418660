"""Everyday interactive use through the bastion: each action must simply work.

The real ``ssh -tt`` client on a pty, the bastion's own line editor and history, a real sshd
with bash (target web1) and, where the build accepts ``shell = "sh"``, dash (web1sh).
Outputs that prove a command ran are computed by the shell (``$((6*7))`` -> 42), so the echo
of what was typed can never satisfy an assertion.  One session is shared while it stays
usable; tests that end a session use their own.
"""

from __future__ import annotations

import re
import shutil

import pytest

from tests.e2e.ptydriver import TARGETS, Term, start_shell_rig

ORDINARY_RULES = """
[settings]
default = "deny"
opaque = "review"

[[rules]]
name = "everyday-tools"
action = "allow"
commands = ["echo", "cat", "ls", "sleep", "read", "printf", "true", "false", "cd", "pwd", "head",
            "tail", "seq", "wc", "test", "exit", "stty", "tr", "id", "date"]

[[rules]]
name = "scratch-writes"
action = "allow"
writes = ["/tmp/**"]                # `cat > f` in the test's work directory (docs/POLICY.md)

[[rules]]
name = "no-recursive-delete"
action = "deny"
commands = ["rm -r", "rm -R", "rm --recursive"]
"""
INTERACTIVE = ["less", "top", "vi -R"]

HAVE_VI = shutil.which("vi") is not None
LEFT = "<Left>"


@pytest.fixture(scope="module")
def orig(tmp_path_factory, issuer):
    rig, features = start_shell_rig(tmp_path_factory.mktemp("ordinary"), issuer,
                                    rules=ORDINARY_RULES, interactive_commands=INTERACTIVE)
    rig.features = features
    rig.work = rig.root / "work"
    rig.work.mkdir()
    yield rig
    rig.close()


class Shared:
    def __init__(self, rig, token):
        self.rig, self.token, self.terms = rig, token, {}
        self.broken: dict[str, str] = {}

    def get(self, shell: str) -> Term:
        if shell == "sh" and "sh" not in self.rig.features:
            pytest.skip('this build does not accept the target option shell = "sh"')
        if shell in self.broken:
            pytest.fail(f"no usable session on the {shell} target: {self.broken[shell]}",
                        pytrace=False)
        term = self.terms.get(shell)
        if term is None or not term.alive:
            if term is not None:
                term.close()
            term = Term(self.rig, self.token, target=TARGETS[shell])
            try:
                term.ready(timeout=20)
            except AssertionError as exc:
                term.close()
                self.broken[shell] = str(exc)[-600:]
                raise
            self.terms[shell] = term
        return term


@pytest.fixture(scope="module")
def shared(orig, token):
    s = Shared(orig, token)
    yield s
    for term in s.terms.values():
        term.close()


@pytest.fixture
def term(shared, request):
    """The shared bash session, back at a fresh prompt; dropped if a test leaves it unusable."""
    shell = getattr(request, "param", "bash")
    t = shared.get(shell)
    t.quiet_screen()
    t.mark = len(t.text)
    yield t
    if t.alive:
        try:
            t.send(b"\x03")
            t.sync(timeout=10)
        except AssertionError:
            t.close()
    

both = pytest.mark.parametrize("term", ["bash", "sh"], indirect=True)


def out_lines(text: str) -> list[str]:
    return [line.rstrip() for line in text.split("\n")]


# -- typing and editing ---------------------------------------------------------------------

@both
def test_type_a_command_and_run_it(term):
    term.run("echo hello-$((6*7))", r"hello-42\n")


def test_fix_a_typo_with_left_arrow_and_insert(term):
    tail = " left-$((30+3))"
    term.send("ech" + tail + LEFT * len(tail) + "o<CR>")
    term.expect(r"left-33\n")
    term.at_prompt()


def test_backspace(term):
    term.send("echo bsxy<BS><BS>-$((1+1))<CR>")
    term.expect(r"\nbs-2\n")
    term.at_prompt()


def test_home_and_end(term):
    term.send("cho he-$((2+3))<Home>e<End>0<CR>")
    term.expect(r"\nhe-50\n")
    term.at_prompt()


def test_ctrl_a_and_ctrl_e(term):
    term.send("cho ae-$((3+4))<C-a>e<C-e>1<CR>")
    term.expect(r"\nae-71\n")
    term.at_prompt()


def test_delete_key(term):
    term.send("echo dlX-$((7+7))<Home>" + "<Right>" * 7 + "<Del><CR>")
    term.expect(r"\ndl-14\n")
    term.at_prompt()


def test_ctrl_u_erases_the_line(term):
    term.send("some words that are not a command<C-u>echo cu-$((4+4))<CR>")
    term.expect(r"\ncu-8\n")
    term.at_prompt()
    assert "bastion: denied" not in term.text[term.mark - 400:]


def test_ctrl_w_erases_a_word(term):
    term.send("echo cw-$((5+5)) junkword<C-w><CR>")
    term.expect(r"\ncw-10\n")
    term.at_prompt()


def test_ctrl_k_then_ctrl_y(term):
    # kill the tail of the line, type a new head, yank the tail back after it
    term.send("echo XX ky-$((6+6))<Home>" + "<Right>" * 5 + "<C-k>")
    term.send("<C-y><Home>" + "<Right>" * 5 + "<Del><Del><Del><CR>")
    term.expect(r"\nky-12\n")
    term.at_prompt()


def test_utf8_text(term):
    term.run("echo héllo-wörld-$((1+1))", r"héllo-wörld-2\n")


def test_utf8_backspace_erases_one_character(term):
    term.send("echo zé<BS>e-$((2+2))<CR>")
    term.expect(r"\nze-4\n")
    term.at_prompt()


def test_a_500_character_line(term):
    body = "x" * 500
    term.run(f"echo {body}-$((2+3))", rf"\n{body}-5\n")


def test_ctrl_c_discards_the_line(term):
    term.send("echo nope-$((9+9))<C-c>")
    term.at_prompt()
    term.run("echo yes-$((9+1))", r"\nyes-10\n")
    assert "nope-18" not in term.text


def test_ctrl_l_clears_and_redraws(term):
    raw_before = len(term.raw)
    term.send("echo cl-$((2*50))<C-l>")
    term.expect(r"echo cl-\$\(\(2\*50\)\)\Z")        # the line is drawn again after the clear
    assert re.search(rb"\x1b\[[0-9;]*[HJ]", term.raw[raw_before:]), "no clear-screen sequence"
    term.send("<CR>")
    term.expect(r"\ncl-100\n")
    term.at_prompt()


# -- history --------------------------------------------------------------------------------

def test_up_arrow_then_enter_reruns_the_previous_command(term):
    term.run("echo up-$((8+8))", r"\nup-16\n")
    term.send("<Up><CR>")
    term.expect(r"\nup-16\n")
    term.at_prompt()


def test_up_twice_and_down(term):
    term.run("echo first-$((1+10))", r"\nfirst-11\n")
    term.run("echo second-$((2+20))", r"\nsecond-22\n")
    term.send("<Up><Up><CR>")
    term.expect(r"\nfirst-11\n")
    term.at_prompt()
    # history is now: first, second, first; Up Up Down is the last one but... first again
    term.run("echo third-$((3+30))", r"\nthird-33\n")
    term.send("<Up><Up><Down><CR>")
    term.expect(r"\nthird-33\n")
    term.at_prompt()


def test_ctrl_r_finds_an_earlier_command_and_enter_runs_it(term):
    term.run("echo rsearch-$((5+5))", r"\nrsearch-10\n")
    term.run("echo other-$((1+1))", r"\nother-2\n")
    term.send("<C-r>rsearch")
    term.expect(r"reverse-i-search\)`rsearch': echo rsearch")
    term.send("<CR>")
    term.expect(r"\nrsearch-10\n")
    term.at_prompt()


# -- paste and multi-line commands ------------------------------------------------------------

def test_paste_one_line(term):
    term.send("<PS>echo pasted-$((3*11))<PE><CR>")
    term.expect(r"\npasted-33\n")
    term.at_prompt()


def test_paste_two_lines(term):
    term.send("<PS>echo p1-$((1*5))<CR>echo p2-$((2*5))<CR><PE>")
    term.expect(r"\np1-5\n")
    term.expect(r"\np2-10\n")
    term.at_prompt()


@both
def test_multi_line_for_loop(term):
    term.send("for i in 1 2 3; do<CR>")
    term.at_continuation()
    term.send("echo loop-$((i*7))<CR>")
    term.at_continuation()
    term.send("done<CR>")
    term.expect(r"\nloop-7\nloop-14\nloop-21\n")
    term.at_prompt()


@both
def test_if_block(term):
    for part in ("if true; then", "echo if-$((5*5))", "else", "echo else-$((1+1))"):
        term.send(part + "<CR>")
        term.at_continuation()
    term.send("fi<CR>")
    term.expect(r"\nif-25\n")
    term.at_prompt()
    assert "else-2" not in term.text[term.mark - 200:]


@both
def test_here_document(term):
    term.send("cat <<END<CR>")
    term.at_continuation()
    term.send("here-$((4*4))<CR>")
    term.at_continuation()
    term.send("END<CR>")
    term.expect(r"\nhere-16\n")
    term.at_prompt()


def test_trailing_backslash_continuation(term):
    term.send("echo bs \\<CR>")
    term.at_continuation()
    term.send("cont-$((3*3))<CR>")
    term.expect(r"\nbs cont-9\n")
    term.at_prompt()


def test_open_quote_continuation(term):
    term.send('echo "oq-$((1+1))<CR>')
    term.at_continuation()
    term.send('two-$((1+2))"<CR>')
    term.expect(r"\noq-2\ntwo-3\n")
    term.at_prompt()


# -- programs that read the terminal -------------------------------------------------------------

@both
def test_read_is_answered(term):
    term.send('read -r x; echo "got-$x-$((1+1))"<CR>')
    term.send("hello<CR>")
    term.expect(r"\ngot-hello-2\n")
    term.at_prompt()


def test_cat_into_a_file_then_ctrl_d(term, orig):
    path = orig.work / "typed.txt"
    term.line(f"cat > {path}")
    term.send("some typed text<CR>")
    term.expect(r"some typed text\n")              # the terminal echoes it
    term.send("<C-d>")
    term.at_prompt()
    assert path.read_text() == "some typed text\n"
    term.run(f"cat {path}; echo cat-done-$((2+2))", r"some typed text\ncat-done-4\n")


def test_less_search_then_quit_then_next_command(term, orig):
    path = orig.work / "long.txt"
    path.write_text("".join(f"line-{i}\n" if i != 250 else "the needle-line-250\n"
                            for i in range(1, 400)))
    term.line(f"less {path}")
    term.expect(r"line-1\n")
    term.send("/needle<CR>")
    term.expect(r"the needle-line-250")
    term.send("q")
    term.at_prompt()
    term.run("echo after-less-$((2+2))", r"\nafter-less-4\n")


def test_top_then_q(term):
    term.line("top")
    term.expect(r"(?i)load average|tasks:")
    term.send("q")
    term.at_prompt()
    term.run("echo after-top-$((3+3))", r"\nafter-top-6\n")


@pytest.mark.skipif(not HAVE_VI, reason="vi is not installed on this machine")
def test_vi_readonly_then_quit(term, orig):
    path = orig.work / "vi.txt"
    path.write_text("vi-content-line\n")
    term.line(f"vi -R {path}")
    term.expect(r"vi-content-line")
    term.send(":q<CR>")
    term.at_prompt()
    term.run("echo after-vi-$((4+4))", r"\nafter-vi-8\n")


def test_ctrl_c_interrupts_a_running_command(term):
    term.line("sleep 30; echo not-$((4+5))-interrupted")
    term.expect(r"sleep 30.*\n")
    term.send("<C-c>")
    term.at_prompt()
    term.run("echo back-$((3+3))", r"\nback-6\n")
    assert "not-9-interrupted" not in term.text


def test_ctrl_c_and_the_next_command_sent_at_once(term):
    # (an agent writes both without waiting: the next command must not be lost to the
    # program dying of the interrupt)
    term.line("sleep 30")
    term.expect(r"sleep 30.*\n")
    term.send("<C-c>echo quick-$((2+5))<CR>")
    term.expect(r"\nquick-7\n")
    term.at_prompt()


# -- shell state and output ----------------------------------------------------------------------

@both
def test_tab_completes_a_file_name(term, orig):
    d = orig.work / "tabdir"
    d.mkdir(exist_ok=True)
    (d / "report-2026.txt").write_text("tab-ok\n")
    (d / "other file").write_text("spaced\n")
    term.send(f"cat {d}/rep<Tab>")
    term.expect(r"report-2026\.txt ")                   # completed by the bastion
    term.send("<CR>")
    term.expect(r"\ntab-ok\n")
    term.at_prompt()
    term.send(f"cat {d}/oth<Tab><CR>")                  # a blank in the name comes escaped
    term.expect(r"\nspaced\n")
    term.at_prompt()


def test_tab_twice_lists_the_choices_and_a_command_name_completes(term, orig):
    d = orig.work / "tabtwo"
    d.mkdir(exist_ok=True)
    for name in ("alpha-one", "alpha-two"):
        (d / name).write_text(name + "\n")
    term.send(f"head -n1 {d}/al<Tab>")                  # common prefix "alpha-"
    term.expect(r"alpha-")
    term.send("<Tab><Tab>")
    term.expect(r"alpha-one\s+alpha-two")               # listed under the line
    term.send("t<Tab><CR>")
    term.expect(r"\nalpha-two\n")
    term.at_prompt()
    term.send("pw<Tab><CR>")                              # "pwd" from the policy's names
    term.expect(r"\n/\S*\n")
    term.at_prompt()


def test_cd_then_pwd(term):
    term.run("cd /tmp", None)
    out = term.run("pwd; echo pwd-done-$((1+1))", r"\n/tmp\npwd-done-2\n")
    assert re.search(r"@web1:/tmp\$ \Z", term.text), f"prompt does not show /tmp: {out[-200:]!r}"
    term.run("cd", None)


@both
def test_exit_status_of_false(term):
    term.run("false", None)
    term.run("echo st-$?", r"\nst-1\n")


def test_pipeline(term):
    term.run("seq 1 12 | wc -l", r"\n12\n")


def test_long_output(term):
    term.line("seq 1 20000; echo seq-done-$((10+10))")
    term.expect(r"\n19999\n20000\nseq-done-20\n", timeout=30)
    term.at_prompt()
    text = term.text[-200000:]
    assert "\n10000\n" in text


def test_a_denied_command_says_why_and_the_session_goes_on(term, orig):
    term.line(f"rm -rf {orig.canary_dir}")
    term.expect(r"bastion: denied by rule no-recursive-delete")
    term.at_prompt()
    assert (orig.canary_dir / "canary.txt").exists()
    term.run("echo still-$((2+2))-alive", r"\nstill-4-alive\n")


def test_the_prompt_shows_user_target_and_cwd(term, orig):
    term.run("cd /usr", None)
    assert re.search(rf"{orig.sshd.user}@web1:/usr\$ \Z", term.text), term.tail(200)
    term.run("cd", None)


# -- ending the session ---------------------------------------------------------------------------

@pytest.fixture
def fresh(orig, token):
    terms = []

    def make(shell: str = "bash") -> Term:
        if shell == "sh" and "sh" not in orig.features:
            pytest.skip('this build does not accept the target option shell = "sh"')
        t = Term(orig, token, target=TARGETS[shell]).ready()
        terms.append(t)
        return t
    yield make
    for t in terms:
        t.close()


@pytest.mark.parametrize("shell", ["bash", "sh"])
def test_exit_ends_the_session_with_status_0(fresh, shell):
    t = fresh(shell)
    t.line("exit")
    assert t.wait_exit() == 0


@pytest.mark.parametrize("shell", ["bash", "sh"])
def test_exit_3_ends_the_session_with_status_3(fresh, shell):
    t = fresh(shell)
    t.line("exit 3")
    assert t.wait_exit() == 3


def test_ctrl_d_on_an_empty_line_ends_the_session(fresh):
    t = fresh()
    t.send("<C-d>")
    assert t.wait_exit() == 0


def test_ctrl_d_on_a_non_empty_line_does_not_end_the_session(fresh):
    t = fresh()
    t.send("echo kept-$((5+6))<C-d>")
    t.send("<CR>")
    t.expect(r"\nkept-11\n")
    t.at_prompt()
    t.line("exit 4")
    assert t.wait_exit() == 4
