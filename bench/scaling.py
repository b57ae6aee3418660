"""``python -m bench.scaling``: the bastion at scale on both backends, beside OpenSSH, in one run.

    python -m bench.scaling                   # 500 agents x 10 commands, workers 1 and 2 (long)
    python -m bench.scaling --quick           # 4 agents x 3 commands, workers 1 (seconds)
    python -m bench.scaling --agents 200 --workers 1 --out bench/results/scale.json
    python -m bench.scaling --agents 500 --commands 10 --workers 1 --bulk-mb 200 --bulk-reps 3
    python -m bench.scaling --bulk-mb 0 --parallel-sessions 0     # no bulk sections

Starts on 127.0.0.1: the dev issuer, a private PostgreSQL cluster (fsync on), and two rigs
(bench/scalerig.py): ``bastion serve`` on the SQLite index, and on PostgreSQL; each rig has
its own target sshd and OpenSSH jump host.  Then, each section with every path taking turns:

1. **setup**: ``ssh HOST true``, a fresh client each time: ProxyJump, the bastion on SQLite,
   the bastion on PostgreSQL (p50/p95/p99);
2. **concurrency**: N agents at once x M commands each (bench/concurrency.py: one ``-J``
   ControlMaster session per agent, one exec channel per command), through ProxyJump and
   the bastion on each backend, with ``--workers`` 1 (and 2); after each bastion level the
   index is read: every command must be there (a missing one is a failure);
3. **approvals**: a held command answered on the same node (SQLite) and on another node
   (PostgreSQL, NOTIFY), bench/approvals_nodes.py;
4. **bulk** (run first, while the rigs are fresh and run ``--workers 1``): zero / text /
   upload, both cipher modes, through ProxyJump, the bastion on each backend and the relay
   alone (a bastion that records nothing), c/b per backend and for the relay, CPU per MB
   of each bastion and of the PostgreSQL server (bench/scaling_bulk.py; ``--bulk-mb 0``
   leaves it out);
5. **parallel**: P downloads at once through ProxyJump and each backend's bastion with
   ``--workers 2``, the aggregate rate (``--parallel-sessions 0`` leaves it out);
6. **aims**: issue 20's bulk aims beside what this run measured.

Prints tables, writes a JSON file (default ``bench/results/scaling-YYYYmmdd-HHMMSS.json``).
Exit status 0 when every command succeeded and was indexed and every bulk transfer was whole,
2 otherwise (figures are never gates; failures are), 1 when the rigs could not start.
Figures: docs/SCALING.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

from bench import concurrency, scaling_bulk, scaling_report
from bench.report import machine_meta, write_json
from bench.rig import raise_fd_limit
from bench.scalerig import ScaleRig, make_rigs, postmaster_pid, tree_cpu
from bench.setup_latency import time_setup
from bench.stats import rotated, summary

ROOT = Path(__file__).resolve().parent.parent
INDEX_WAIT_S = 30        # a command's row is committed before its output is shown; slack only


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.scaling", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="4 agents x 3 commands, 3 set-ups, 2 approvals")
    p.add_argument("--agents", type=int, help="agents at once (default 500; quick 4)")
    p.add_argument("--commands", type=int, help="commands per agent (default 10; quick 3)")
    p.add_argument("--workers", help="comma-separated `serve --workers` counts (default 1,2; quick 1)")
    p.add_argument("--setup-runs", type=int, help="set-ups per path (default 50; quick 3)")
    p.add_argument("--approval-rounds", type=int, help="approvals per backend (default 12; quick 2)")
    p.add_argument("--bulk-mb", type=int, help="MB per bulk transfer (default 200; quick 2; 0: "
                                               "no bulk section)")
    p.add_argument("--bulk-reps", type=int, help="bulk transfers per path and row (default 3; "
                                                 "quick 1)")
    p.add_argument("--parallel-sessions", type=int, help="downloads at once through each path "
                   "with --workers 2 (default 8; quick 2; 0: no parallel section)")
    p.add_argument("--parallel-mb", type=int, help="MB per parallel download (default 50; quick 2)")
    p.add_argument("--parallel-rounds", type=int, help="parallel rounds per path (default 3; "
                                                       "quick 1)")
    p.add_argument("--out", type=Path, help="the JSON file to write")
    a = p.parse_args(argv)
    if a.parallel_sessions is None:
        a.parallel_sessions = 2 if a.quick else 8
    a.parallel_mb = a.parallel_mb or (2 if a.quick else 50)
    a.parallel_rounds = a.parallel_rounds or (1 if a.quick else 3)
    a.bulk_mb = (2 if a.quick else 200) if a.bulk_mb is None else a.bulk_mb
    a.bulk_reps = a.bulk_reps or (1 if a.quick else 3)
    a.agents = a.agents or (4 if a.quick else 500)
    a.commands = a.commands or (3 if a.quick else 10)
    a.workers = tuple(int(w) for w in (a.workers or ("1" if a.quick else "1,2")).split(","))
    a.setup_runs = a.setup_runs or (3 if a.quick else 50)
    a.approval_rounds = a.approval_rounds or (2 if a.quick else 12)
    return a


# -- sections ------------------------------------------------------------------------------
def setup_section(rigs: dict[str, ScaleRig], runs: int) -> dict:
    """Interleaved ``ssh HOST true`` through ProxyJump and each backend's bastion."""
    keys = [("jump", rigs["sqlite"], "jump")] + [(f"bastion/{label}", rig, "bastion")
                                                 for label, rig in rigs.items()]
    times: dict[str, list[float]] = {k[0]: [] for k in keys}
    failures: dict[str, list[str]] = {k[0]: [] for k in keys}
    for i in range(runs):
        for name, rig, path in rotated(keys, i):
            try:
                times[name].append(time_setup(rig, path))
            except Exception as exc:  # noqa: BLE001 - counted and reported, the run goes on
                failures[name].append(str(exc)[:200])
    return {"runs": runs, "unit": "ms",
            "paths": {name: {**summary(times[name], scale=1000, digits=1),
                             "failed": len(failures[name]), "errors": sorted(set(failures[name]))[:3]}
                      for name in times}}


def _wait_indexed(rig: ScaleRig, tag: str, expected: int) -> dict:
    deadline, last = time.monotonic() + INDEX_WAIT_S, None
    while True:
        got = rig.indexed(tag)
        if got["rows"] >= expected or time.monotonic() > deadline:
            return got
        if got != last:                       # still growing: give it the full wait again
            last, deadline = got, time.monotonic() + INDEX_WAIT_S
        time.sleep(0.5)


def bastion_level(rig: ScaleRig, agents: int, commands: int, tag: str, pg_pid: int | None) -> dict:
    """One concurrency level through ``rig``'s bastion, then the index checked for every command."""
    pg_before = tree_cpu(pg_pid) if rig.store_env else None
    out = asyncio.run(concurrency.level(rig, "bastion", agents, commands, tag))
    pg_after = tree_cpu(pg_pid) if rig.store_env else None
    got = _wait_indexed(rig, tag, out["commands"])
    missing = out["commands"] - got["distinct"]
    out["indexed"] = got["rows"]
    out["indexed_distinct"] = got["distinct"]
    out["missing_from_index"] = missing
    # a command not indexed is a failure; a refused command is usually not indexed either, so
    # the larger of the two counts (both are in the JSON)
    out["failed_total"] = max(out["failed"], missing)
    if missing:
        out["errors"].insert(0, f"{missing} commands not in the index")
    if got["rows"] != got["distinct"]:
        out["errors"].insert(0, f"{got['rows'] - got['distinct']} commands indexed twice")
        out["failed_total"] += got["rows"] - got["distinct"]
    b = out.get("bastion") or {}
    if b.get("cpu_s") is not None and out["commands"]:
        b["cpu_ms_per_command"] = round(b["cpu_s"] * 1000 / out["commands"], 2)
    if pg_before is not None and pg_after is not None:
        out["postgresql_cpu_s"] = round(pg_after - pg_before, 2)
    return out


def concurrency_section(rigs: dict[str, ScaleRig], agents: int, commands: int,
                        workers: tuple[int, ...], pg_pid: int | None) -> dict:
    runs: list[dict] = []
    jump = asyncio.run(concurrency.level(rigs["sqlite"], "jump", agents, commands))
    jump["failed_total"] = jump["failed"]
    runs.append({"path": "jump", "backend": None, "workers": None, **jump})
    log(scaling_report.level_line(runs[-1]))
    stamp = time.strftime("%H%M%S")
    for n in workers:
        for label, rig in rigs.items():
            if rig.workers != n:
                rig.restart(n)
            tag = f"t{stamp}{label[0]}w{n}"
            try:
                r = bastion_level(rig, agents, commands, tag, pg_pid)
            except Exception as exc:  # noqa: BLE001 - one broken level must not lose the others
                log(traceback.format_exc())
                r = {"na": f"error: {type(exc).__name__}: {exc}"[:400],
                     "commands": agents * commands, "failed_total": agents * commands}
            runs.append({"path": "bastion", "backend": label, "workers": n, **r})
            log(scaling_report.level_line(runs[-1]))
    return {"agents": agents, "commands_per_agent": commands, "runs": runs}


# -- the run -------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> dict:
    from bastion.identity.devissuer import DevIssuer
    from bench import approvals_nodes
    from tests.pgcluster import start_durable_cluster

    raise_fd_limit()
    results: dict = {"meta": machine_meta(args.quick, ("scaling",))}
    results["meta"].update(agents=args.agents, commands=args.commands, workers=list(args.workers))
    tmp = Path(tempfile.mkdtemp(prefix="bastion-bench-scale-"))
    results["meta"]["rig_dir"] = str(tmp)
    issuer = DevIssuer(tmp / "issuer").start()
    cluster = None
    rigs: dict[str, ScaleRig] = {}
    relay: scaling_bulk.RelayPath | None = None
    try:
        cluster = start_durable_cluster()
        log("starting the rigs (SQLite and PostgreSQL) ...")
        rigs = make_rigs(tmp, issuer, cluster)
        for label, rig in rigs.items():
            for path, why in rig.check_paths().items():
                if why:
                    raise RuntimeError(f"{label} rig: path {path} fails: {why}")
        pg_pid = postmaster_pid(cluster)
        sections = (
            ("setup", lambda: setup_section(rigs, args.setup_runs)),
            ("concurrency", lambda: concurrency_section(rigs, args.agents, args.commands,
                                                        args.workers, pg_pid)),
            ("approvals", lambda: approvals_nodes.measure(tmp / "approvals", issuer, cluster,
                                                         args.approval_rounds)),
        )
        if args.bulk_mb > 0:       # first, while the rigs run --workers 1 and are fresh
            relay = scaling_bulk.RelayPath(rigs["sqlite"], tmp / "relay")
            try:
                relay.start()
            except Exception:  # noqa: BLE001 - the bulk section goes on without that path
                log(traceback.format_exc())
                relay.stop()
                relay = None
            sections = (("bulk", lambda: scaling_bulk.measure(
                rigs, args.bulk_mb * 1_000_000, args.bulk_reps, log, relay, pg_pid)),) + sections
        if args.parallel_sessions > 0:     # after the concurrency levels: --workers 2
            sections = sections[:-1] + (("parallel", lambda: scaling_bulk.parallel(
                rigs, args.parallel_sessions, args.parallel_mb * 1_000_000,
                args.parallel_rounds, log)),) + sections[-1:]
        for name, fn in sections:
            log(f"[{name}] load average {os.getloadavg()[0]:.2f}")
            load = [round(x, 2) for x in os.getloadavg()]
            t0 = time.perf_counter()
            try:
                results[name] = fn()
            except Exception as exc:  # noqa: BLE001 - reported; the other sections go on
                log(traceback.format_exc())
                results[name] = {"na": f"error: {type(exc).__name__}: {exc}"[:500]}
            results[name]["loadavg_before"] = load
            results[name]["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
            results[name]["section_seconds"] = round(time.perf_counter() - t0, 1)
            if name == "bulk" and relay is not None:
                relay.stop()                          # its CPU is not the next sections'
        results["aims"] = scaling_bulk.aims(results.get("bulk"), results.get("parallel"))
        results["meta"]["bastion_log_errors"] = {
            label: [ln for ln in rig.log().splitlines() if " ERROR " in ln][-10:]
            for label, rig in rigs.items()}
    finally:
        if relay is not None:
            relay.stop()
        for rig in rigs.values():
            rig.close()
        if cluster is not None:
            cluster.destroy()
        issuer.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    results["meta"]["loadavg_end"] = list(os.getloadavg())
    return results


def failures(results: dict) -> int:
    """Commands that failed or are missing from the index, over every concurrency run, and
    bulk and parallel transfers that failed."""
    conc = results.get("concurrency") or {}
    if "runs" not in conc or any("na" in results.get(s, {}) for s in ("bulk", "parallel")):
        return -1
    return (sum(r.get("failed_total", 0) for r in conc["runs"])
            + results.get("bulk", {}).get("failed", 0)
            + results.get("parallel", {}).get("failed", 0))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = args.out.resolve() if args.out else (
        ROOT / "bench" / "results" / f"scaling-{time.strftime('%Y%m%d-%H%M%S')}"
        f"{'-quick' if args.quick else ''}.json")
    os.chdir(ROOT)
    try:
        results = run(args)
    except Exception:  # noqa: BLE001 - the rigs did not start
        log(traceback.format_exc())
        return 1
    write_json(results, out)
    scaling_report.render(results)
    log(f"results written to {out}")
    return 0 if failures(results) == 0 else 2


if __name__ == "__main__":
    sys.exit(main())
