"""The README's first command: `bastion demo` runs the whole data path and its scripted agent."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path


def test_demo_plays_agent_approver_and_reviewer(tmp_path):
    bastion = Path(sys.executable).parent / "bastion"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BASTION_", "SSH_"))}
    env["COLUMNS"] = "200"
    p = subprocess.run([str(bastion), "demo", "--dir", str(tmp_path / "demo"), "--once",
                        "--listen", "127.0.0.1:0"], env=env, capture_output=True, timeout=180)
    out = p.stdout.decode(errors="replace")
    assert p.returncode == 0, out + p.stderr.decode(errors="replace")
    assert "demo ok" in out
    assert "hello from" in out                                   # the allowed command ran
    assert "denied by rule no-recursive-delete" in out
    assert "held for review by rule restarts-need-review" in out
    assert (tmp_path / "demo" / "scratch" / "canary.txt").exists()
    # the approver role: one held command approved and run, one denied and not run
    assert re.search(r"request 1 approved by demo-approver .*: demo: a harmless pipe", out)
    assert "load average" in out                                  # `echo uptime | sh` ran
    assert re.search(r"request 2 denied by demo-approver", out)
    assert "no restarts during the demo; it was not run" in out
    # the reviewer role: the index lists the four sessions, the two refused ones counted
    table = [line for line in out.splitlines() if re.match(r" *│ +\d+ +\d{4}-", line)]
    assert [line.split()[1] for line in table] == ["4", "3", "2", "1"], table
    assert [line.split()[-2] for line in table] == ["1", "0", "1", "0"], table
    # what it prints for other terminals works as printed
    line = next(l for l in out.splitlines() if "reviewer:" in l).split("reviewer:", 1)[1].split()
    r = subprocess.run(line + ["--json"], env=env, capture_output=True, timeout=60)
    assert r.returncode == 0 and len(json.loads(r.stdout)) == 4, r.stderr
    # the tokens it holds are not in its log nor in its data dir
    for name in ("agent.token", "approver.token"):
        token = (tmp_path / "demo" / name).read_text().strip()
        assert token not in (tmp_path / "demo" / "bastion.log").read_text()
        for path in (tmp_path / "demo" / "data").rglob("*"):
            if path.is_file():
                assert token.encode() not in path.read_bytes()
