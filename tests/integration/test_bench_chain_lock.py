"""``python -m bench.chain_lock`` small, so the benchmark never rots.

Real properties only, never timings: the run ends with ``verify`` accepting the chain every
writer joined (exit 0), every writer recorded sessions both ways, and a batch waited for
the round trips each way of locking implies (one exec session: 10 syncs when the lock is
taken at BEGIN and every seal reads its row back; 6 when the seals wait for the end)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_the_chain_lock_bench_runs_and_counts_its_round_trips(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_STORE")}
    out = tmp_path / "out.json"
    p = subprocess.run([sys.executable, "-m", "bench.chain_lock", "--writers", "2", "--rounds",
                        "1", "--seconds", "0.5", "--rtt", "0", "--out", str(out)], cwd=ROOT,
                       env=env, capture_output=True, timeout=300, stdin=subprocess.DEVNULL)
    text = p.stdout.decode(errors="replace")
    assert p.returncode == 0, text + p.stderr.decode(errors="replace")[-3000:]
    assert "verify: ok" in text, text
    figures = json.loads(out.read_text())
    assert figures["verify_ok"] is True
    by = figures["results"]["2"]
    assert by["begin"]["sessions_per_s"] > 0 and by["end"]["sessions_per_s"] > 0
    assert by["begin"]["syncs_per_batch"] == 10.0
    assert by["end"]["syncs_per_batch"] == 6.0
