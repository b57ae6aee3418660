"""``bastion policy check | eval | test`` run as real commands against temp files.

The lines given to ``eval`` are only parsed by bastion, never executed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent / "policy_cases"
POLICY = HERE / "policy.toml"
BASTION = Path(sys.executable).parent / "bastion"
AGENT = json.dumps({"sub": "agent-1", "roles": ["agents"]})


def run(*args, stdin: str | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    full_env.pop("BASTION_POLICY", None)
    full_env.update(env or {})
    return subprocess.run([str(BASTION), "policy", *args], input=stdin, capture_output=True,
                          text=True, env=full_env, timeout=60)


@pytest.fixture
def policy(tmp_path) -> Path:
    dest = tmp_path / "policy.toml"
    shutil.copy(POLICY, dest)
    return dest


def test_check_ok_prints_a_summary(policy):
    r = run("check", "--policy", str(policy))
    assert r.returncode == 0, r.stderr
    assert "2 target(s), 1 grant(s), 7 rule(s) (3 allow, 1 review, 3 deny)" in r.stdout
    assert "default=deny opaque=review" in r.stdout


def test_check_json_for_a_valid_and_an_invalid_file(policy, tmp_path):
    r = run("check", "--policy", str(policy), "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["ok"] is True and data["problems"] == []
    assert (data["counts"]["rules"], data["counts"]["allow"], data["counts"]["deny"]) == (7, 3, 3)
    bad = tmp_path / "bad.toml"
    bad.write_text('[settings]\ndefault = "maybe"\n[[rules]]\nname = "x"\n')
    r = run("check", "--policy", str(bad), "--json")
    assert r.returncode == 2
    data = json.loads(r.stdout)
    assert data["ok"] is False and [p["line"] for p in data["problems"]] == [2, 3, 3]
    assert "settings.default" in data["problems"][0]["message"]


def test_check_reports_every_problem_with_its_line(tmp_path):
    bad = tmp_path / "policy.toml"
    bad.write_text('[settings]\ndefault = "maybe"\n\n[[rules]]\nname = "a"\naction = "deny"\n'
                   'commands = ["rm -r"]\n\n[[rules]]\nname = "a"\naction = "block"\n'
                   'who = ["role:"]\ncommands = ["ls [x"]\ncolour = 1\n', encoding="utf-8")
    r = run("check", "--policy", str(bad))
    assert r.returncode == 2
    lines = [ln.strip() for ln in r.stderr.splitlines()]
    assert "error: " + str(bad) + ": 6 problem(s)" in lines
    for expected in ("line 2: settings.default", "line 10: rules[1].name: duplicate",
                     "line 11: rules[1].action", "line 12: rules[1].who",
                     "line 13: rules[1].commands: unterminated", "line 14: rules[1].colour"):
        assert any(ln.startswith(expected) for ln in lines), (expected, r.stderr)


def test_check_uses_bastion_policy_env(policy, tmp_path):
    r = subprocess.run([str(BASTION), "policy", "check"], capture_output=True, text=True,
                       cwd=tmp_path, env={**os.environ, "BASTION_POLICY": str(policy)}, timeout=60)
    assert r.returncode == 0 and "7 rule(s)" in r.stdout


def test_check_missing_file(tmp_path):
    r = run("check", "--policy", str(tmp_path / "nope.toml"))
    assert r.returncode == 2 and "policy file not found" in r.stderr


def test_eval_human_output(policy):
    r = run("eval", "--policy", str(policy), "sudo rm -rf /x; ls")
    assert r.returncode == 0, r.stderr
    out = r.stdout.splitlines()
    assert out[0].split() == ["deny", "rule:", "no-recursive-delete"]
    assert "rm -rf /x (via sudo) matches rule no-recursive-delete (deny)" in out[1]
    assert [ln.split()[0] for ln in out[2:]] == ["allow", "deny", "allow"]


def test_eval_json_with_claims_and_target(policy):
    r = run("eval", "--policy", str(policy), "--claims", AGENT, "--target", "web1", "--json",
            "grep x /var/log/syslog; reboot")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert (data["action"], data["rule"], data["command"]) == ("deny", "no-reboot-in-prod",
                                                              ["reboot"])
    assert [(c["argv"], c["rule"]) for c in data["commands"]] == [
        (["grep", "x", "/var/log/syslog"], "agents-may-grep"), (["reboot"], "no-reboot-in-prod")]


def test_eval_claims_from_file(policy, tmp_path):
    claims = tmp_path / "claims.json"
    claims.write_text(AGENT, encoding="utf-8")
    r = run("eval", "--policy", str(policy), "--claims", f"@{claims}", "--json", "grep x")
    assert json.loads(r.stdout)["rule"] == "agents-may-grep"


@pytest.mark.parametrize("args, message", [
    (["--target", "nope", "ls"], "unknown target 'nope'"),
    (["--claims", "{not json", "ls"], "--claims is not valid JSON"),
    (["--claims", '{"roles": ["x"]}', "ls"], "claims have no subject"),
    ([], "no LINE given"),
])
def test_eval_errors(policy, args, message):
    r = run("eval", "--policy", str(policy), *args)
    assert r.returncode != 0 and message in r.stderr, r.stderr


def test_eval_sanitises_agent_text_in_human_output(policy):
    r = run("eval", "--policy", str(policy), "echo '\x1b]0;pwned\x07\x1b[2J' \u202egnp.exe")
    assert r.returncode == 0
    assert "\x1b" not in r.stdout and "\x07" not in r.stdout and "\u202e" not in r.stdout
    assert "␛" in r.stdout
    j = run("eval", "--policy", str(policy), "--json", "echo '\x1b[2J'")
    assert json.loads(j.stdout)["command"] == ["echo", "\x1b[2J"]     # JSON keeps the data


def test_batch_from_file_keeps_order_and_reports_bad_lines(policy, tmp_path):
    batch = tmp_path / "in.jsonl"
    batch.write_text("\n".join([
        json.dumps({"command": "ls"}),
        json.dumps({"command": "reboot", "target": "web1"}),
        "not json",
        json.dumps({"command": "grep x", "claims": {"sub": "a", "roles": ["agents"]}}),
        json.dumps({"command": "ls", "target": "nope"}),
        json.dumps({"command": "rm -rf /x"}),
    ]) + "\n", encoding="utf-8")
    r = run("eval", "--policy", str(policy), "--batch", str(batch))
    assert r.returncode == 1
    out = [json.loads(ln) for ln in r.stdout.splitlines()]
    assert [o.get("action") or "error" for o in out] == ["allow", "deny", "error", "allow",
                                                         "error", "deny"]
    assert out[2]["line"] == 3 and out[4]["error"] == "unknown target 'nope'"
    assert "2 batch line(s) could not be evaluated" in r.stderr


def test_batch_from_stdin_uses_default_claims(policy):
    lines = "".join(json.dumps({"command": c}) + "\n" for c in ["grep a", "grep b", "cat x"])
    r = run("eval", "--policy", str(policy), "--claims", AGENT, "--batch", "-", stdin=lines)
    assert r.returncode == 0, r.stderr
    assert [json.loads(ln)["rule"] for ln in r.stdout.splitlines()] == [
        "agents-may-grep", "agents-may-grep", "read-only-tools"]


def test_policy_test_runs_the_fixture_cases(policy):
    r = run("test", str(HERE / "cases.toml"), "--policy", str(policy))
    assert r.returncode == 0, r.stdout
    assert r.stdout.strip().endswith("passed, 0 failed")


def test_policy_test_prints_failures_and_exits_1(policy, tmp_path):
    cases = tmp_path / "cases.toml"
    cases.write_text('[[cases]]\nline = "ls"\nexpect = "allow"\n\n'
                     '[[cases]]\nname = "rm must be reviewed"\nline = "rm -rf /x"\n'
                     'expect = "review"\n\n'
                     '[[cases]]\nline = "rm -rf /x"\naction = "deny"\nrule = "wrong-rule"\n',
                     encoding="utf-8")
    r = run("test", str(cases), "--policy", str(policy))
    assert r.returncode == 1
    assert "FAIL rm must be reviewed: rm -rf /x" in r.stdout
    assert "expected review, got deny by rule no-recursive-delete" in r.stdout
    assert "FAIL cases[2]" in r.stdout and "expected deny by rule wrong-rule" in r.stdout
    assert "1 passed, 2 failed" in r.stdout


def test_policy_test_rejects_a_malformed_case_file(policy, tmp_path):
    cases = tmp_path / "cases.toml"
    cases.write_text('[[cases]]\nline = "ls"\nexpect = "maybe"\ncolour = 1\n', encoding="utf-8")
    r = run("test", str(cases), "--policy", str(policy))
    assert r.returncode == 2
    assert "line 3: cases[0]: expect must be allow, deny or review" in r.stderr
    assert "line 4: cases[0]: unknown key 'colour'" in r.stderr


@pytest.mark.parametrize("command", ["check", "eval", "test"])
def test_help_ends_with_an_example(command):
    r = subprocess.run([str(BASTION), "policy", command, "--help"], capture_output=True,
                       text=True, env={**os.environ, "COLUMNS": "200"}, timeout=60)
    assert r.returncode == 0 and "Example: bastion policy " + command in r.stdout
