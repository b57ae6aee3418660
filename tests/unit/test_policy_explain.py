"""`bastion policy explain`: each command's effects and the rule that decided it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "policy.toml"
BASTION = Path(sys.executable).parent / "bastion"


def run(*args) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    env.pop("BASTION_POLICY", None)
    return subprocess.run([str(BASTION), "policy", "explain", "--policy", str(EXAMPLE), *args],
                          capture_output=True, text=True, env=env, timeout=60)


def test_explain_json_lists_effects_and_rules():
    r = run("--json", "sort -o /etc/passwd x; curl -o /tmp/d https://docs.example.com/a")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["action"] == "deny"
    sort, curl = data["commands"]
    assert sort["effects"]["writes"] == ["/etc/passwd"] and sort["rule"] == "no-system-writes"
    assert sort["effects"]["reads"] == ["x"] and sort["effects"]["table"] is True
    assert curl["effects"]["connects"] == ["docs.example.com"]
    assert curl["rule"] == "fetch-internal-docs" and curl["action"] == "allow"


def test_explain_human_output_and_help_example():
    r = run("git log --oneline > /dev/null")
    assert r.returncode == 0, r.stderr
    assert "allow" in r.stdout and "subcommand: log" in r.stdout
    h = subprocess.run([str(BASTION), "policy", "explain", "--help"], capture_output=True,
                       text=True, env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"})
    assert "Example: bastion policy explain" in h.stdout
