"""``python -m bench.startup``: how long the CLI's entry points take to start, in ms.

    python -m bench.startup               # 20 runs each
    python -m bench.startup --runs 5

Times, in fresh processes of this venv: one ``bastion-askpass`` round (what OpenSSH
spawns per token prompt: must stay fast), ``bastion --help``, ``bastion policy check`` of
the repository's example ``policy.toml``, and ``bastion serve`` from exec until its
"bastion listening" log line (a policy with an unreachable loopback issuer, a fresh data
dir and vault in a temporary directory; SIGTERM after the line).  Runs are interleaved;
prints the median and p95 of each.  ``python -X importtime`` says where the time goes.
Never fails on time.  Figures and what changed them: docs/BENCHMARKS.md ("Start-up").
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from bench.stats import median, percentile

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
POLICY = """
[oidc]
issuer = "http://127.0.0.1:9/issuer"
audience = "api://bastion"
timeout = 0.5

[[targets]]
name = "web1"
host = "127.0.0.1"
user = "deploy"
key = "web1"
host_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIN6hGegfdxPvbo1EcXEbNFvrlXaq3EpoPVTs2rPKUGlb"
"""


def _timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   check=True)
    return (time.perf_counter() - start) * 1000


def _serve(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if "bastion listening" in line:
                return (time.perf_counter() - start) * 1000
        raise RuntimeError(f"bastion serve exited {proc.wait()} before listening")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.startup", description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, BASTION_TOKEN="t" * 900, BASTION_VAULT_PASSPHRASE="bench-passphrase")
        policy = Path(tmp, "policy.toml")
        policy.write_text(POLICY)
        bastion = str(BIN / "bastion")
        subprocess.run([bastion, "keys", "generate", "web1", "--keys-dir", f"{tmp}/keys"],
                       env=env, check=True, capture_output=True)
        serve = [bastion, "serve", "--policy", str(policy), "--listen", "127.0.0.1:0",
                 "--data-dir", f"{tmp}/data", "--keys-dir", f"{tmp}/keys", "--workers", "1"]
        cases: dict[str, Callable[[], float]] = {
            "bastion-askpass (one round)": lambda: _timed([str(BIN / "bastion-askpass"),
                                                           "OIDC token: "], env),
            "bastion --help": lambda: _timed([bastion, "--help"], env),
            "bastion policy check": lambda: _timed(
                [bastion, "policy", "check", "--policy", str(ROOT / "policy.toml")], env),
            "bastion serve to listening": lambda: _serve(serve, env),
        }
        results: dict[str, list[float]] = {name: [] for name in cases}
        for run in cases.values():               # one warm-up each (page cache, .pyc)
            run()
        for _ in range(args.runs):
            for name, run in cases.items():
                results[name].append(run())
    print(f"| command ({args.runs} runs) | median ms | p95 ms |\n|---|---:|---:|")
    for name, values in results.items():
        print(f"| {name} | {median(values):.1f} | {percentile(values, 95):.1f} |")


if __name__ == "__main__":
    main()
