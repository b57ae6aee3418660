"""Bulk A/B of two revisions of the bastion, side by side with OpenSSH ProxyJump, in one run.

On a machine shared with other work, figures from two separate runs compare the load of
two moments, not two revisions.  This benchmark starts one rig (bench.rig: the target
sshd, the OpenSSH jump host) and two bastions with recording and masking on, each served
as ``bastion serve`` would be (``python -m bench.overhead --serve full``, the real
Services, recorder and masking), one from this checkout and one from ``--base`` (a tree of
the other revision, e.g. ``git archive main | tar -x -C DIR``), each with its own data dir
and recording worker.  Transfers (bench.bulk's zero / text / upload) alternate between
ProxyJump and the two bastions in a rotating order, so drift hits all three alike.

Per transfer: MB/s (bench.bulk's streaming rate), the 1-minute load average when it
started, and CPU per MB of this run's own processes (bench.procs with this process as
root: client, askpass, both sshd, ``cat``/``wc``, the bastion and its worker; not other
work on the machine), of the bastion process and of its recording worker.  On cores the
run keeps busy, throughput follows CPU per MB, which a busy neighbour disturbs far less
than it disturbs MB/s.

    python -m bench.ab_bulk --base /tmp/main-tree [--size 100] [--reps 3] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench import bulk, procs
from bench.rig import CIPHER_MODES, _children, close_rig, make_rig
from bench.stats import rotated

HERE = Path(__file__).resolve().parents[1]
PATHS = ("jump", "base", "this")


def _start(name: str, tree: Path, rig, root: Path) -> tuple[subprocess.Popen, int, str]:
    port_file = root / f"port-{name}"
    env = dict(os.environ, BASTION_VAULT_PASSPHRASE=rig.env["BASTION_VAULT_PASSPHRASE"],
               PYTHONPATH=str(tree))
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.overhead", "--serve", "full", "--policy",
         str(rig.policy_path), "--data-dir", str(root / name), "--keys-dir", str(rig.keys_dir),
         "--port-file", str(port_file)],
        env=env, cwd=tree, stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 60
    while not port_file.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the {name} bastion did not start (exit {proc.poll()})")
        time.sleep(0.05)
    port, *known_hosts = port_file.read_text().splitlines(keepends=True)
    return proc, int(port), "".join(known_hosts)


class _Paths:
    """What bench.bulk's transfers need of a rig, with the two bastions as paths."""

    def __init__(self, rig, configs: dict) -> None:
        self.rig, self.configs = rig, configs

    def client_env(self) -> dict:
        return self.rig.client_env()

    def argv(self, path: str, command: str, mode: str = "default") -> list[str]:
        if path == "jump":
            return self.rig.argv("jump", command, mode=mode)
        return ["ssh", "-F", str(self.configs[path, mode]), "web1", command]


def run(base: Path, size: int, reps: int, kinds: tuple[str, ...], modes: tuple[str, ...],
        log=print) -> dict:
    rig, issuer, tmp = make_rig()
    servers: dict[str, tuple[subprocess.Popen, int, str]] = {}
    try:
        text = bulk.make_text_file(tmp / "text.log", size)
        upload = memoryview(text.read_bytes())
        known_hosts = rig.known_hosts.read_text()
        for name, tree in (("base", base), ("this", HERE)):
            servers[name] = _start(name, tree, rig, tmp)
            known_hosts += servers[name][2]
        rig.known_hosts.write_text(known_hosts)
        configs = {}
        for name, (_, port, _) in servers.items():
            for mode in modes:
                config = tmp / f"ssh_config.{name}.{mode}"
                config.write_text(rig.config_path(mode).read_text()
                                  .replace(f"Port {rig.port}", f"Port {port}"))
                configs[name, mode] = config
        paths = _Paths(rig, configs)
        commands = {"zero": f"head -c {size} /dev/zero", "text": f"cat {text}"}
        samples: dict[str, list[dict]] = {}
        mb = size / 1e6
        for rep in range(reps):
            for k, kind in enumerate(kinds):
                for mode in modes:
                    for path in rotated(PATHS, rep + k):
                        pid = servers[path][0].pid if path in servers else None
                        workers = set(_children(pid)) if pid else set()
                        load = os.getloadavg()[0]
                        with procs.ProcSampler(root=os.getpid()) as sampler:
                            if kind == "upload":
                                r = bulk._upload(paths, path, upload, mode, 600)   # type: ignore[arg-type]
                            else:
                                r = bulk._download(paths, path, commands[kind], mode, size,  # type: ignore[arg-type]
                                                   600)
                            if pid:
                                time.sleep(0.3)          # the worker finishes what it was sent
                        used = sampler.used()
                        rec = {"mb_s": r["mb_s"], "load1": round(load, 2),
                               "tree_ms_per_mb": round(1000 * sum(u for _, _, u in used) / mb, 2)}
                        if pid:
                            rec["serve_ms_per_mb"] = round(
                                1000 * sum(u for p, _, u in used if p == pid) / mb, 2)
                            rec["worker_ms_per_mb"] = round(
                                1000 * sum(u for p, _, u in used if p in workers) / mb, 2)
                        samples.setdefault(f"{kind}/{mode}/{path}", []).append(rec)
                        log(f"  {kind}/{mode}/{path} rep {rep + 1}: {rec}")
        upload.release()
        return summarize(samples, size=size, reps=reps, kinds=kinds, modes=modes)
    finally:
        close_rig(rig, issuer, tmp, servers)


def summarize(samples: dict, *, size: int, reps: int, kinds, modes) -> dict:
    rows = []
    for kind in kinds:
        for mode in modes:
            row: dict = {"kind": kind, "cipher": mode}
            for path in PATHS:
                runs = samples[f"{kind}/{mode}/{path}"]
                row[path] = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
                row[path]["runs"] = runs
            jump = row["jump"]["mb_s"]
            row["c_b_base"] = round(row["base"]["mb_s"] / jump, 3)
            row["c_b_this"] = round(row["this"]["mb_s"] / jump, 3)
            rows.append(row)
    return {"size_bytes": size, "reps": reps, "unit": "MB/s (10^6 bytes), streaming, median; "
            "ms CPU per MB", "rows": rows}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", type=Path, required=True, help="a tree of the other revision")
    ap.add_argument("--size", type=int, default=100, help="MB per transfer (default 100)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--kinds", default=",".join(bulk.KINDS))
    ap.add_argument("--modes", default=",".join(CIPHER_MODES))
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    load0 = os.getloadavg()
    out = run(args.base.resolve(), args.size * 1_000_000, args.reps,
              tuple(args.kinds.split(",")), tuple(args.modes.split(",")))
    out["meta"] = {"started": started, "loadavg_start": list(load0),
                   "loadavg_end": list(os.getloadavg()), "base": str(args.base),
                   "cores": os.cpu_count()}
    for row in out["rows"]:
        b, t, j = row["base"], row["this"], row["jump"]
        print(f"{row['kind']:6} {row['cipher']:10} ProxyJump {j['mb_s']:6.1f}  base {b['mb_s']:6.1f} "
              f"(c/b {row['c_b_base']:.2f})  this {t['mb_s']:6.1f} (c/b {row['c_b_this']:.2f})  "
              f"ms CPU/MB: run {j['tree_ms_per_mb']:.1f} / {b['tree_ms_per_mb']:.1f} -> "
              f"{t['tree_ms_per_mb']:.1f}, serve {b['serve_ms_per_mb']:.1f} -> "
              f"{t['serve_ms_per_mb']:.1f}, worker {b['worker_ms_per_mb']:.1f} -> "
              f"{t['worker_ms_per_mb']:.1f}")
    if args.out:
        args.out.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
