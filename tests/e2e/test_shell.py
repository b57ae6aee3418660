"""Interactive shells through the bastion: each line decided with its Enter held back.

The agent here is the real ssh client on a real pseudo-terminal."""

from __future__ import annotations

import time

import pytest

from tests.e2e.harness import PtyAgent


@pytest.fixture
def agent(rig, token):
    a = PtyAgent(rig, token)
    a.wait_ready()
    yield a
    a.close()


def test_pty_shell_runs_allowed_lines_and_clears_denied_ones(rig, agent):
    agent.send(b"echo marker-$((6*7))\r")
    agent.read_until(b"marker-42")
    canary = rig.canary_dir / "canary.txt"
    agent.send(f"rm -rf {rig.canary_dir}\r".encode())
    agent.read_until(b"denied by rule no-recursive-delete")
    agent.send(b"echo after-$((1+1))-denial\r")
    agent.read_until(b"after-2-denial")
    assert canary.read_text() == "still here\n"
    agent.send(b"exit 7\r")
    assert agent.wait() == 7


def test_a_line_edited_with_cursor_keys_is_decided_as_edited(rig, agent):
    canary = rig.canary_dir / "canary.txt"
    # "rm X" typed, the cursor moved back over X, "-rf " inserted: the bastion edits the line
    # itself, so it decides on exactly "rm -rf X" and refuses it by its rule.
    target = str(rig.canary_dir).encode()
    agent.send(b"rm " + target + b"\x1b[D" * len(target) + b"-rf \r")
    agent.read_until(b"denied by rule no-recursive-delete")
    agent.send(b"echo still-$((2+2))-alive\r")
    agent.read_until(b"still-4-alive")
    assert canary.exists()
    agent.send(b"exit\r")
    agent.wait()


def test_window_size_and_changes_reach_the_host(agent):
    agent.send(b"stty size\r")
    agent.read_until(b"24 80")
    agent.resize(132, 40)
    # ssh sends the window change when it handles SIGWINCH: ask until it has arrived
    for _ in range(20):
        agent.send(b"stty size\r")
        out = agent.read_until(b"$ ")
        if b"40 132" in out:
            break
        time.sleep(0.2)
    assert b"40 132" in agent.buf
    agent.send(b"exit\r")
    agent.wait()


def test_ctrl_c_interrupts_the_running_command(agent):
    agent.send(b"sleep 30; echo not-$((4+5))-interrupted\r")
    agent.read_until(b"sleep 30")
    time.sleep(0.5)
    agent.send(b"\x03")
    agent.send(b"echo back-$((3+3))-at-prompt\r")
    agent.read_until(b"back-6-at-prompt")
    assert b"not-9-interrupted" not in agent.buf
    agent.send(b"exit\r")
    agent.wait()


def test_a_shell_without_a_terminal_is_refused_with_advice(rig, token):
    r = rig.ssh(token, None, args=("-T",), input=b"echo hi\n")
    assert r.returncode == 126
    assert "needs a terminal" in r.err
