"""`python -m bench.ab_bulk` keeps working: two bastions and ProxyJump in one rig (no timing assertions)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_ab_bulk_reports_both_revisions_and_proxyjump(tmp_path):
    out = tmp_path / "ab.json"
    p = subprocess.run([sys.executable, "-m", "bench.ab_bulk", "--base", str(ROOT), "--size", "20",
                        "--reps", "1", "--kinds", "zero,upload", "--modes", "default",
                        "--out", str(out)], cwd=ROOT, capture_output=True, timeout=300)
    assert p.returncode == 0, p.stderr.decode(errors="replace")[-2000:]
    result = json.loads(out.read_text())
    assert [(r["kind"], r["cipher"]) for r in result["rows"]] == [("zero", "default"),
                                                                  ("upload", "default")]
    for row in result["rows"]:
        for path in ("jump", "base", "this"):
            assert row[path]["mb_s"] > 0 and row[path]["tree_ms_per_mb"] > 0
        for path in ("base", "this"):          # each bastion's own process and worker used CPU
            assert row[path]["serve_ms_per_mb"] > 0 and row[path]["worker_ms_per_mb"] > 0
        assert row["c_b_this"] == round(row["this"]["mb_s"] / row["jump"]["mb_s"], 3)
    assert len(result["meta"]["loadavg_start"]) == 3
