"""Aggregate bulk throughput of P parallel sessions: ProxyJump vs ``bastion serve --workers N``.

Each round starts P real ``ssh`` downloads of ``head -c SIZE /dev/zero`` at once (the
``zero`` kind of :mod:`bench.bulk`, client default ciphers) and takes the aggregate rate:
all bytes over the time from the first launch to the last byte (set-up included, the
same for every path).  Paths, interleaved round by round: ``jump`` (OpenSSH ProxyJump
through a plain sshd), and the bastion with each worker count asked for (one rig each,
recording on).  MB = 10**6 bytes.

    python -m bench.workers_bulk --parallel 8 --size 50000000 --rounds 3 --workers 1 2

Not covered: uploads, text (see bench.bulk for the single-session figures).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from statistics import median

from bench.bulk import fetch
from bench.rig import BenchRig


def _round(rig: BenchRig, path: str, parallel: int, size: int) -> float:
    argv = rig.argv(path, f"head -c {size} /dev/zero")
    env = rig.client_env()
    t0 = time.perf_counter()
    with ThreadPoolExecutor(parallel) as pool:
        list(pool.map(lambda _i: fetch(argv, env, size, 600), range(parallel)))
    return parallel * size / (time.perf_counter() - t0) / 1e6


def main(argv: list[str] | None = None) -> None:
    from bastion.identity.devissuer import DevIssuer
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--size", type=int, default=50_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bastion-bench-workers-"))
    issuers: list[DevIssuer] = []
    rigs: dict[int, BenchRig] = {}
    try:
        for n in args.workers:                  # an issuer each: one "bench-agent" client per rig
            issuers.append(DevIssuer(tmp / f"issuer{n}").start())
            rigs[n] = BenchRig(tmp / f"rig{n}", issuers[-1], workers=n).setup().start()
            rigs[n].wait_log("bastion listening on", timeout=60)
        results: dict[str, list[float]] = {"jump": []}
        results.update({f"bastion --workers {n}": [] for n in args.workers})
        load = [os.getloadavg()[0]]
        first = rigs[args.workers[0]]
        for _ in range(args.rounds):
            results["jump"].append(_round(first, "jump", args.parallel, args.size))
            for n, rig in rigs.items():
                results[f"bastion --workers {n}"].append(
                    _round(rig, "bastion", args.parallel, args.size))
            load.append(os.getloadavg()[0])
        jump = median(results["jump"])
        print(f"{args.parallel} parallel downloads of {args.size / 1e6:g} MB, {args.rounds} "
              f"rounds, load average {min(load):.1f}-{max(load):.1f}, {os.cpu_count()} cores")
        print("| path | aggregate MB/s (median) | rounds | x ProxyJump |\n|---|---:|---|---:|")
        for name, rates in results.items():
            print(f"| {name} | {median(rates):.0f} | {', '.join(f'{r:.0f}' for r in rates)} | "
                  f"{median(rates) / jump:.2f} |")
        print(json.dumps({"results": results, "load": load}))
    finally:
        for rig in rigs.values():
            rig.close()
        for issuer in issuers:
            issuer.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
