"""``python -m bench.recording_open`` small, on both backends, so the benchmark never rots.

Real properties only, never timings: every open succeeded and every command is in the index
(the exit status says so), on SQLite and on PostgreSQL (the bench starts its own cluster)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_the_recording_open_bench_runs_on_both_backends():
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_STORE")}
    p = subprocess.run([sys.executable, "-m", "bench.recording_open", "--sessions", "6",
                        "--commands", "2"], cwd=ROOT, env=env, capture_output=True,
                       timeout=300, stdin=subprocess.DEVNULL)
    out = p.stdout.decode(errors="replace")
    assert p.returncode == 0, out + p.stderr.decode(errors="replace")[-3000:]
    lines = [line for line in out.splitlines() if "6x2" in line]
    assert [line.split()[0] for line in lines] == ["sqlite", "postgresql"], out
    assert all("failed 0/12; indexed 12;" in line for line in lines), out
