"""An approval's latency end to end: SQLite on one node, and PostgreSQL across two nodes.

    .venv/bin/python -m bench.approvals_nodes [ROUNDS]

The agent's real ssh runs a held ``touch MARKER`` through node A; an approver answers with
the real CLI (``bastion approvals approve``): on the SQLite rig the CLI of the same node,
on the PostgreSQL rig the CLI of node B (another ``bastion serve`` sharing the store).
Measured: from the approver's CLI starting to the marker file existing (the command ran on
the target), and the CLI's own run time beside it; the difference is the wake (SQLite: the
broker's 0.2 s poll; PostgreSQL: NOTIFY) plus running the command.  Prints p50/p90 and the
load average; no threshold (docs/SCALING.md keeps the figures).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.e2e.harness import BASTION, BastionRig  # noqa: E402
from tests.e2e.test_approvals import APPROVAL_RULES  # noqa: E402
from tests.e2e.test_store_pg import _wait_for_request  # noqa: E402


def _rig(root: Path, issuer, store_env: dict | None, node: str) -> BastionRig:
    rig = BastionRig(root / node, issuer, store_env=dict(store_env or {}))
    if store_env:
        rig.store_env["BASTION_NODE"] = node
    rig.log_level = "info"
    rig.setup()
    rig.write_policy(rig.policy_text(APPROVAL_RULES.replace("TIMEOUT", "60")))
    return rig.start()


def _round(holder: BastionRig, answerer: BastionRig, token: str, lead: str, i: int):
    marker = holder.canary_dir / f"bench-approved-{i}"
    proc = holder.ssh_popen(token, f"touch {marker}")
    try:
        rid = _wait_for_request(proc)
        t0 = time.perf_counter()
        cli = subprocess.run([BASTION, "approvals", "approve", str(rid), "--reason", "bench"],
                             env={**answerer.env, "BASTION_TOKEN": lead}, capture_output=True,
                             timeout=60)
        t_cli = time.perf_counter() - t0
        assert cli.returncode == 0, cli.stderr
        while not marker.exists():
            time.sleep(0.0005)
            if time.perf_counter() - t0 > 30:
                raise RuntimeError("the approved command never ran")
        t_ran = time.perf_counter() - t0
        proc.wait(30)
        return t_ran, t_cli
    finally:
        if proc.poll() is None:
            proc.kill()


def _figures(rows: list[tuple[float, float]]) -> dict:
    """p50/p90 (ms) of command-ran and of the answering CLI's own run."""
    from bench.stats import percentile
    ran = [r[0] * 1e3 for r in rows]
    cli = [r[1] * 1e3 for r in rows]
    return {"n": len(rows), "ran_p50_ms": round(percentile(ran, 50), 1),
            "ran_p90_ms": round(percentile(ran, 90), 1),
            "cli_p50_ms": round(percentile(cli, 50), 1)}


def measure(root: Path, issuer, cluster, rounds: int, db: str = "bench_approvals") -> dict:
    """``rounds`` approvals on each backend, interleaved so both see the same load: SQLite
    held and answered on one node; PostgreSQL (database ``db`` on ``cluster``) held on node A,
    answered on node B.  Starts and closes its own three rigs under ``root``."""
    agent = issuer.add_client("bench-approvals-agent", roles=["agents"])
    token = issuer.mint(client=agent)
    lead = issuer.mint(client=issuer.add_client("bench-approvals-lead", roles=["sre-leads"]))
    cluster.create_db(db)
    env = cluster.store_env(db)
    rigs: list[BastionRig] = []
    try:
        lite = _rig(root, issuer, None, "lite")
        rigs.append(lite)
        node_a = _rig(root, issuer, env, "node-a")
        rigs.append(node_a)
        node_b = _rig(root, issuer, env, "node-b")
        rigs.append(node_b)
        lite_rows, pg_rows = [], []
        for i in range(rounds):
            lite_rows.append(_round(lite, lite, token, lead, i))
            pg_rows.append(_round(node_a, node_b, token, lead, i))
    finally:
        for rig in rigs:
            rig.close()
    return {"unit": "ms", "rounds": rounds,
            "sqlite_one_node": _figures(lite_rows), "postgresql_a_to_b": _figures(pg_rows)}


def _line(name: str, f: dict) -> str:
    return (f"{name}: answer CLI start -> command ran p50 {f['ran_p50_ms']:.0f} ms "
            f"p90 {f['ran_p90_ms']:.0f} ms; the CLI itself p50 {f['cli_p50_ms']:.0f} ms "
            f"(n={f['n']})")


def main() -> None:
    from bastion.identity.devissuer import DevIssuer
    from tests.pgcluster import start_durable_cluster
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    root = Path(tempfile.mkdtemp(prefix="bastion-bench-appr-"))
    issuer = DevIssuer(root / "issuer").start()
    cluster = start_durable_cluster()
    try:
        print(f"load average at start: {os.getloadavg()[0]:.2f}")
        out = measure(root, issuer, cluster, rounds)
        print(_line("SQLite, one node (broker polls)     ", out["sqlite_one_node"]))
        print(_line("PostgreSQL, held on A, answered on B", out["postgresql_a_to_b"]))
        print(f"load average at end: {os.getloadavg()[0]:.2f}")
    finally:
        cluster.destroy()
        issuer.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
