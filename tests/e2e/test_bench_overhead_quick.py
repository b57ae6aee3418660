"""`python -m bench.overhead --quick` keeps working (no timing assertions)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_overhead_benchmark_runs_and_reports_every_variant():
    p = subprocess.run([sys.executable, "-m", "bench.overhead", "--quick"], cwd=ROOT,
                       capture_output=True, timeout=300)
    assert p.returncode == 0, p.stderr.decode(errors="replace")[-2000:]
    result = json.loads(p.stdout.decode().strip().splitlines()[-1])
    for kind in ("zero", "text"):
        rates = result[kind]["mb_per_s"]
        assert set(rates) == {"jump", "full", "no-mask", "bare"}
        assert all(isinstance(v, float) and v > 0 for v in rates.values())
        med = result[kind]["median"]
        # each variant's own process used CPU; only the recording variants have a worker
        assert all(med[v]["serve_ms_per_mb"] > 0 for v in ("full", "no-mask", "bare"))
        assert med["full"]["worker_ms_per_mb"] > 0 and med["no-mask"]["worker_ms_per_mb"] > 0
        assert med["bare"]["worker_ms_per_mb"] == 0
        assert all(med[p]["machine_ms_per_mb"] > 0 for p in med)
