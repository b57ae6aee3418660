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
        # the busiest process of each path, named; the bastion's own are labelled
        for p, m in med.items():
            assert m["processes"] and m["busiest_ms_per_mb"] == m["processes"][0]["ms_per_mb"] > 0
            assert m["ceiling_mb_s"] == round(1000 / m["busiest_ms_per_mb"], 1)
        names = {row["name"] for row in med["full"]["processes"]}
        assert "bastion-serve" in names
        floor = result[kind]["floor_ms_per_mb"]
        assert set(floor) == {"mask", "encode", "hash", "write", "total"}
        assert floor["total"] > 0
        # the bound comes from this run's own processes (its process tree), not from the
        # whole machine's CPU, which other work on a shared machine inflates; both are kept
        assert all(med[p]["tree_ms_per_mb"] > 0 for p in med)
        assert result[kind]["bound_full_over_jump"] == (
            med["jump"]["tree_ms_per_mb"] / (med["bare"]["tree_ms_per_mb"] + floor["total"]))
        assert result[kind]["bound_by_machine_cpu"] == (
            med["jump"]["machine_ms_per_mb"] / (med["bare"]["machine_ms_per_mb"] + floor["total"]))
