"""Mediated shells end to end: what the design promises beyond ordinary use.

Typed secrets stored nowhere, exit statuses per command in the index, exec with a pty,
type-ahead that becomes the next (decided) line, dash as the host shell, forged marks.
The agent is the real ssh client on a real pty; the host a real sshd."""

from __future__ import annotations

import re

import pytest

from tests.e2e.harness import POLICY_RULES, BastionRig, PtyAgent

SECRET = "hunter2-Typed-Secret-7731"
PROMPT = b"\x1b[?2004h"                                  # the bastion shows its prompt again
# The e2e rules without `* /etc/shadow`, which (for now) also refuses `echo $X` because a
# run-time argument could be that path; this module is about the shell, not that rule.
RULES = (POLICY_RULES.replace('commands = ["* /etc/shadow"]', 'commands = ["cat /etc/shadow"]')
         .replace('"seq", "od"]', '"seq", "od", "read", "cd", "pwd"]'))


@pytest.fixture(scope="module")
def rig(tmp_path_factory, issuer):
    r = BastionRig(tmp_path_factory.mktemp("mediated"), issuer).setup()
    r.extra_targets = f"""
[[targets]]
name = "web2"
host = "127.0.0.1"
port = {r.sshd.port}
user = "{r.sshd.user}"
key = "web1"
host_key = "{r.sshd.host_key_line}"
shell = "sh"
"""
    r.write_policy(r.policy_text(RULES))
    r.start()
    yield r
    r.close()


def open_agent(rig, token, **kw) -> PtyAgent:
    agent = PtyAgent(rig, token, **kw)
    agent.wait_ready()
    agent.read_until(b"$ ")                               # the bastion's prompt: input is ours
    return agent


def run_line(agent, line: bytes) -> None:
    """Type a line and wait until the bastion has sent it (its paste mode goes off)."""
    agent.send(line + b"\r")
    agent.read_until(line + b"\r\n\x1b[?2004l")


def every_stored_text(rig) -> str:
    texts = [rig.log()]
    for path in rig.data_dir.rglob("*"):
        if path.is_file():
            texts.append(path.read_bytes().decode("utf-8", "replace"))
    return "\n".join(texts)


def test_a_secret_typed_at_an_echo_off_prompt_is_stored_nowhere(rig, token):
    agent = open_agent(rig, token)
    run_line(agent, b"read -rsp Password: pw; echo len=${#pw}")
    agent.read_until(b"Password:")                        # echo is off from here on
    agent.send(SECRET.encode() + b"\r")
    agent.read_until(f"len={len(SECRET)}".encode())
    agent.send(b"exit\r")
    assert agent.wait() == 0
    rig.cli("sessions", "list")                            # the index is flushed and readable
    stored = every_stored_text(rig)
    assert SECRET not in stored
    # the keys are counted, not kept (the count may include `exit`, typed ahead of the prompt)
    counts = [int(n) for n in re.findall(r"(\d+) bytes typed into the running command", stored)]
    assert counts and max(counts) >= len(SECRET) + 1


def test_each_command_has_its_exit_status_in_the_index(rig, token):
    agent = open_agent(rig, token)
    agent.send(b"false\r")
    agent.send(b"echo st-$?-x\r")
    agent.read_until(b"st-1-x")
    agent.send(b"sh -c 'exit 7'\r")
    agent.send(b"echo done-$((1+1))\r")
    agent.read_until(b"done-2")
    agent.send(b"exit 3\r")
    assert agent.wait() == 3
    db = rig.index()
    rows = dict(db.execute("SELECT line, exit_status FROM commands WHERE line IN "
                           "('false', 'sh -c ''exit 7''', 'echo st-$?-x')").fetchall())
    db.close()
    assert rows == {"false": 1, "sh -c 'exit 7'": 7, "echo st-$?-x": 0}


def test_lines_sent_at_once_run_in_turn_and_each_is_decided(rig, token):
    agent = open_agent(rig, token)
    agent.send(b"sleep 0.2\recho one-$((0+1))\rread x; echo got-$x\rtyped-answer\r")
    agent.read_until(b"got-typed-answer")
    assert b"one-1" in agent.buf
    agent.send(b"exit\r")
    assert agent.wait() == 0


def test_type_ahead_during_a_command_becomes_the_next_decided_line(rig, token):
    agent = open_agent(rig, token)
    canary = rig.canary_dir / "canary.txt"
    run_line(agent, b"sleep 1")
    agent.send(b"echo typed-$((3+4))-ahead\r")            # typed while sleep runs
    agent.read_until(b"typed-7-ahead\r\n")
    run_line(agent, b"sleep 1")
    agent.send(f"rm -rf {rig.canary_dir}\r".encode())      # type-ahead is decided like typing
    agent.read_until(b"denied by rule no-recursive-delete")
    assert canary.read_text() == "still here\n"
    agent.send(b"exit\r")
    agent.wait()


def test_exec_with_a_pty_runs_the_decided_command_and_gives_it_the_keys(rig, token):
    agent = PtyAgent(rig, token, command="read x; echo got-$x-end")
    agent.send(b"abc\r")                                  # may arrive before it starts: kept
    agent.read_until(b"got-abc-end")
    assert agent.wait() == 0
    denied = PtyAgent(rig, token, command=f"rm -rf {rig.canary_dir}")
    assert denied.wait() == 126
    assert b"no-recursive-delete" in denied.buf
    assert (rig.canary_dir / "canary.txt").exists()


def test_a_forged_mark_prints_nothing_and_runs_nothing(rig, token):
    agent = open_agent(rig, token)
    agent.send(b"printf '\\033]6973;0000;P;0;/\\007forged-%s\\n' ok\r")
    agent.read_until(b"forged-ok")
    agent.send(b"echo still-$((5+5))\r")
    agent.read_until(b"still-10")
    agent.send(b"exit\r")
    assert agent.wait() == 0


def test_multi_line_commands_are_decided_and_run_whole(rig, token):
    agent = open_agent(rig, token)
    agent.send(b"for i in 1 2; do\r")
    agent.read_until(b"> ")
    agent.send(b"echo n$((i*10)); done\r")
    agent.read_until(b"n20")
    agent.send(b"echo 'open\r")
    agent.read_until(b"> ")
    agent.send(b"close'; echo q-$((2*3))\r")
    agent.read_until(b"q-6")
    agent.send(b"exit\r")
    assert agent.wait() == 0
    db = rig.index()
    lines = [r[0] for r in db.execute("SELECT line FROM commands")]
    db.close()
    assert "for i in 1 2; do\necho n$((i*10)); done" in lines


def test_dash_hosts_the_session_when_the_target_says_sh(rig, token):
    agent = open_agent(rig, token, host="web2")
    agent.send(b"echo $0-x; cd /tmp; echo in-$(pwd)\r")
    agent.read_until(b"in-/tmp")
    assert b"bastion-shell-x" in agent.buf
    agent.read_until(b"web2:/tmp$ ")
    agent.send(b"false\r")
    agent.read_until(b"false\r\n")
    agent.read_until(PROMPT)            # dash cannot give type-ahead back: wait for the prompt
    agent.send(b"echo st-$?\r")
    agent.read_until(b"st-1")
    agent.read_until(PROMPT)
    agent.send(b"exit 4\r")
    assert agent.wait() == 4
    rig.cli("sessions", "list")                            # the index is flushed and readable
    assert "mediated shell: sh" in every_stored_text(rig)


@pytest.mark.parametrize("line, survives", [
    (b"read() { echo rm -rf x; }", True),          # shadows a builtin the loop calls: removed
    (b"printf() { echo; }", True),
    (b"__bastion_check='-c true'", True),          # a read-only loop variable: that command
                                                    # fails (command eval), the shell goes on
    (b"eval() { echo; }", True),                   # a special builtin: the policy refuses a
                                                    # function of that name (it would end a
                                                    # POSIX shell, and outside POSIX mode
                                                    # shadow the builtin); never sent
    (b"/bin/sh() { echo; }", False),               # not a valid name in POSIX mode
    (b"echo 'unclosed\r'; if then fi", True),       # a syntax error: opaque, never sent
])
def test_commands_cannot_subvert_the_shell_that_runs_them(rig, token, line, survives):
    """Whatever a command does to the shell's state, the next command still comes only from
    the bastion; where POSIX rules end the shell instead, the session ends and nothing ran."""
    agent = open_agent(rig, token)
    canary = rig.canary_dir / "canary.txt"
    agent.send(line + b"\r")
    agent.send(b"echo alive-$((6*7))\r")
    if survives:
        agent.read_until(b"alive-42")
        agent.send(b"exit\r")
        assert agent.wait() == 0
    else:
        assert agent.wait() != 0
        assert b"alive-42" not in agent.buf
    assert canary.read_text() == "still here\n"
