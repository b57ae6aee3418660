"""The README's first command: `bastion demo` runs the whole data path and its scripted agent."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_demo_runs_allowed_denied_and_held_commands(tmp_path):
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
    # the token it printed is not in its log nor in its data dir
    token = (tmp_path / "demo" / "agent.token").read_text().strip()
    assert token not in (tmp_path / "demo" / "bastion.log").read_text()
    for path in (tmp_path / "demo" / "data").rglob("*"):
        if path.is_file():
            assert token.encode() not in path.read_bytes()
