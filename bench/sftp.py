"""sftp get and put of one file: (a) direct, (b) OpenSSH ProxyJump, (c) the bastion.

    python -m bench.sftp                 # 100 MB, 3 rounds (about a minute on 2 cores)
    python -m bench.sftp --size 20 --rounds 1

The real OpenSSH ``sftp -b`` client on every path, the target's ``internal-sftp``
behind them; for (c) the bastion serves SFTP itself and relays each request upstream,
deciding it by path and recording one row per file (docs/TRANSFERS.md).  The paths
take turns in every round (rotated), so drift hits them alike.  The figure is the wall
time of one ``sftp`` run (connect, login, transfer, exit) and the rate it implies
(MB = 10**6 bytes); the login costs the same few tenths of a second on every run, so
at 100 MB the rate is the transfer's.  Every copy is checked byte for byte.  Prints a
table and a JSON line; never fails on time.

Not covered: the ``python -m bench`` sections and report (this is a separate, quick
figure), concurrent transfers, resumed ones.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.rig import PATHS, BenchRig
from bench.stats import median, ratio, rotated

HOSTS = {"direct": "direct", "jump": "jumped", "bastion": "web1"}


def _sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def run_sftp(rig: BenchRig, path: str, batch: str) -> float:
    """Seconds one ``sftp -b`` run took through ``path``; raises on a failed run."""
    with tempfile.NamedTemporaryFile("w", dir=rig.root, suffix=".batch", delete=False) as fh:
        fh.write(batch)
    argv = ["sftp", "-q", "-F", str(rig.config_path("default")), "-b", fh.name, HOSTS[path]]
    t0 = time.perf_counter()
    p = subprocess.run(argv, env=rig.client_env(), capture_output=True, timeout=600,
                       stdin=subprocess.DEVNULL, start_new_session=True)
    took = time.perf_counter() - t0
    os.unlink(fh.name)
    if p.returncode != 0:
        raise RuntimeError(f"sftp through {path} failed ({p.returncode}): "
                           f"{p.stderr.decode(errors='replace').strip()[-300:]}")
    return took


def measure(size_mb: int, rounds: int) -> dict:
    from bastion.identity.devissuer import DevIssuer
    root = Path(tempfile.mkdtemp(prefix="bench-sftp-"))
    issuer = DevIssuer(root / "issuer").start()
    rig = BenchRig(root / "rig", issuer)
    files = Path(os.path.realpath(root)) / "files"
    files.mkdir()
    rig.extra_policy = (f'[[grants]]\nwho = ["role:agents"]\ntargets = ["web1"]\n'
                        f'channels = ["sftp"]\n\n[[rules]]\nname = "bench-files"\n'
                        f'action = "allow"\nreads = ["{files}/**"]\nwrites = ["{files}/**"]\n')
    results: dict = {"size_mb": size_mb, "rounds": rounds, "get_s": {}, "put_s": {}}
    try:
        rig.setup().start()
        src = files / "source.bin"
        with open(src, "wb") as fh:
            for _ in range(size_mb):
                fh.write(os.urandom(1_000_000))
        digest = _sha(src)
        times: dict[str, dict[str, list[float]]] = {"get": {p: [] for p in PATHS},
                                                    "put": {p: [] for p in PATHS}}
        for i in range(rounds):
            for path in rotated(PATHS, i):
                local = root / f"got-{path}"
                times["get"][path].append(run_sftp(rig, path, f"get {src} {local}\n"))
                if _sha(local) != digest:
                    raise RuntimeError(f"get through {path}: the copy differs")
                dest = files / f"put-{path}"
                times["put"][path].append(run_sftp(rig, path, f"put {local} {dest}\n"))
                if _sha(dest) != digest:
                    raise RuntimeError(f"put through {path}: the copy differs")
                local.unlink()
                dest.unlink()
        for kind in ("get", "put"):
            for path in PATHS:
                t = median(times[kind][path])
                results[f"{kind}_s"][path] = {"median_s": round(t or 0, 3),
                                             "mb_per_s": round(size_mb / t, 1) if t else None,
                                             "runs": [round(x, 3) for x in times[kind][path]]}
            med = {p: median(times[kind][p]) for p in PATHS}
            # speed of the bastion relative to ProxyJump: >1 is faster, <1 slower
            results[f"{kind}_bastion_vs_jump"] = ratio(med["jump"], med["bastion"])
        results["bastion_usage"] = rig.bastion_usage()
    finally:
        rig.close()
        issuer.stop()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sftp",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=100, help="MB (10**6 bytes), default 100")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    res = measure(args.size, args.rounds)
    print(f"sftp of {args.size} MB, median of {args.rounds} (wall time of one sftp run)")
    print(f"{'':8}{'direct':>16}{'ProxyJump':>16}{'bastion':>16}{'bastion/jump':>14}")
    for kind in ("get", "put"):
        row = res[f"{kind}_s"]
        cells = "".join(f"{row[p]['median_s']:>8.2f}s {row[p]['mb_per_s']:>5}MB/s"
                        for p in PATHS)
        print(f"{kind:8}{cells}{res[f'{kind}_bastion_vs_jump']:>13}x")
    print(json.dumps(res), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
