"""``python -m bench.scaling --quick`` in the test suite, so the scaling benchmark never rots.

Real properties only, never timings: every command of every path succeeded, every bastion
command is in the index (SQLite and PostgreSQL), set-up, approvals, bulk (the relay alone
included) and parallel bulk with ``--workers 2`` have figures for every path (every transfer
whole: bench.bulk checks the byte counts), the bulk aims are read off them, and nothing the
run started is left behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("scale") / "quick.json"
    env = {k: v for k, v in os.environ.items() if k != "BASTION_TEST_STORE"}   # both backends, labelled
    p = subprocess.run([sys.executable, "-m", "bench.scaling", "--quick", "--out", str(out)],
                       cwd=ROOT, env=env, capture_output=True, timeout=600,
                       stdin=subprocess.DEVNULL)
    assert out.exists(), p.stderr.decode(errors="replace")[-3000:]
    return (p.returncode, json.loads(out.read_text()), p.stderr.decode(errors="replace"),
            p.stdout.decode(errors="replace"))


def test_every_command_succeeds_and_is_indexed_on_both_backends(quick):
    rc, data, err, _ = quick
    conc = data["concurrency"]
    assert "runs" in conc, conc
    runs = conc["runs"]
    assert [(r["path"], r["backend"]) for r in runs] == [
        ("jump", None), ("bastion", "sqlite"), ("bastion", "postgresql")]
    for r in runs:
        assert r["commands"] == conc["agents"] * conc["commands_per_agent"] > 0
        assert r["ok"] == r["commands"] and r["failed"] == 0, r.get("errors")
        assert r["failed_total"] == 0, r.get("errors")
    for r in runs[1:]:
        assert r["indexed"] == r["indexed_distinct"] == r["commands"], r
        assert r["missing_from_index"] == 0
        assert r["bastion"]["rss_peak_mb"] > 0 and r["bastion"]["cpu_s"] >= 0
    assert runs[2]["postgresql_cpu_s"] >= 0
    assert rc == 0, err[-3000:]


def test_setup_and_approvals_have_figures_for_every_path(quick):
    _, data, _, _ = quick
    setup = data["setup"]["paths"]
    assert set(setup) == {"jump", "bastion/sqlite", "bastion/postgresql"}
    for name, entry in setup.items():
        assert entry["failed"] == 0, (name, entry["errors"])
        assert entry["n"] == data["setup"]["runs"] and entry["median"] > 0
    appr = data["approvals"]
    for key in ("sqlite_one_node", "postgresql_a_to_b"):
        assert appr[key]["n"] == appr["rounds"] and appr[key]["ran_p50_ms"] > 0, appr


def test_bulk_has_every_kind_and_cipher_through_proxyjump_and_both_backends(quick):
    _, data, _, _ = quick
    bulk = data["bulk"]
    assert bulk["failed"] == 0 and bulk["paths"] == ["jump", "bastion/sqlite",
                                                      "bastion/postgresql", "relay"], bulk
    assert [(r["kind"], r["cipher"]) for r in bulk["rows"]] == [
        (kind, mode) for kind in ("zero", "text", "upload") for mode in ("default", "aes128-gcm")]
    for r in bulk["rows"]:
        for name in bulk["paths"]:
            assert len(r[name]["runs"]) == bulk["reps"] and r[name]["mb_s"] > 0, (r, name)
        for backend in ("sqlite", "postgresql"):
            assert r[f"c_b/{backend}"] == round(
                r[f"bastion/{backend}"]["mb_s"] / r["jump"]["mb_s"], 3)
        assert r["relay/jump"] == round(r["relay"]["mb_s"] / r["jump"]["mb_s"], 3)
        # CPU per MB of each bastion, and of the PostgreSQL server for the rig on it
        assert set(r["bastion/sqlite"]["cpu_ms_per_mb"]) == {"bastion"}, r
        assert set(r["bastion/postgresql"]["cpu_ms_per_mb"]) == {"bastion", "postgresql"}, r
        assert set(r["relay"]["cpu_ms_per_mb"]) == {"bastion"}, r
        assert "cpu_ms_per_mb" not in r["jump"]
        for name in bulk["paths"][1:]:
            assert all(v is not None and v >= 0 for v in r[name]["cpu_ms_per_mb"].values()), r


def test_parallel_runs_every_path_with_two_workers_and_the_aims_are_read_off(quick):
    _, data, _, _ = quick
    par = data["parallel"]
    assert par["failed"] == 0 and par["workers"] == 2, par
    assert list(par["paths"]) == ["jump", "bastion/sqlite", "bastion/postgresql"]
    for name, entry in par["paths"].items():
        assert len(entry["runs"]) == par["rounds"] and entry["mb_s"] > 0, (name, entry)
    for backend in ("sqlite", "postgresql"):
        assert par[f"x_jump/{backend}"] == round(
            par["paths"][f"bastion/{backend}"]["mb_s"] / par["paths"]["jump"]["mb_s"], 3)
    by_aim = {a["aim"]: a for a in data["aims"]}
    assert set(by_aim) == {
        *(f"bulk c/b, {b}, {m} ciphers" for b in ("sqlite", "postgresql")
          for m in ("default", "aes128-gcm")),
        "full path / ProxyJump, sqlite", "full path / ProxyJump, postgresql",
        "relay alone / ProxyJump", f"{par['sessions']} parallel sessions, --workers 2 / ProxyJump"}
    for a in by_aim.values():
        assert a["met"] == all(v >= a["target"] for v in a["measured"].values()), a


def test_the_tables_are_printed_and_nothing_is_left_running(quick):
    _, data, _, stdout = quick
    for title in ("sizing:", "set-up:", "approvals:", "bulk, MB/s", "CPU per MB carried",
                  "parallel:", "bulk aims"):
        assert title in stdout, title
    rig_dir = data["meta"]["rig_dir"].encode()
    left = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmdline = fh.read()
        except OSError:
            continue
        if rig_dir in cmdline:
            left.append(cmdline.replace(b"\0", b" ")[:200])
    assert not left, left
    assert not os.path.exists(rig_dir)
