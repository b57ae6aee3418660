"""What recording and masking cost on the data path: the same bastion with them on and off.

``bastion serve`` cannot run a session unrecorded, by design, so this benchmark
starts three more bastion processes (``python -m bench.overhead --serve VARIANT``),
each built from the rig's policy and keys and served on its own loopback port,
as ``bastion serve`` would be:

* ``full``: the real recorder and masking (what ``bastion serve`` runs);
* ``no-mask``: the real recorder, maskers that pass bytes through;
* ``bare``: neither (a recorder that writes nothing): the relay alone.

Each variant has its own process (and recording worker) so that what it costs is
its own, not shared with the benchmark that reads the ssh output.  The agent is
the real OpenSSH client (``ssh -J`` with bastion-askpass), the target the rig's
sshd; transfers alternate between OpenSSH ProxyJump and the three variants.
Prints per variant: MB/s (median), CPU per MB of the bastion process, of its
recording worker, of this run's processes (the benchmark's process tree: client,
askpass, both sshd and their session processes, ``cat``, the bastions and their
workers -- not whatever else runs on the machine) and of the whole machine
(/proc/stat, everything, other work included), and the ratios the issues aim at
(recording: no-mask/bare >= 0.85; masking: full/no-mask >= 0.8; bastion/ProxyJump).
Also the recording's floor (bench.floor: the CPU per MB that masking, encoding,
hashing and writing take on their own) and the bound it sets: on cores the transfer
keeps busy, the full bastion reaches at most ProxyJump's CPU per MB / (the relay's +
floor) of ProxyJump's rate, from this run's processes (``bound_full_over_jump``; the
same from machine CPU, which other work on a shared machine inflates, is kept as
``bound_by_machine_cpu``).

    python -m bench.overhead [--quick]     # the last line printed is JSON
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench import floor, procs
from bench.bulk import fetch, make_text_file
from bench.rig import _children, close_rig, make_rig
from bastion.ssh.masking import ChannelMasks

VARIANTS = ("full", "no-mask", "bare")


class _NullChannel:
    id = 0
    def __init__(self): self.closed = False
    async def opened(self, timeout=10.0): return None
    def output(self, data, *, stderr=False): pass
    def input(self, data): pass
    def resize(self, w, h): pass
    def marker(self, label): pass
    def command(self, line, decision, *, approver=None): return 0
    def command_result(self, cid, status): pass
    def command_approver(self, cid, approver): pass
    def close(self, **kw): self.closed = True
    def over_high_water(self): return False
    async def drain(self): return None
    def gate(self, chan, on_failure): return chan      # nothing to wait for


class _NullSession:
    id = 0
    def open_channel(self, kind, **kw): return _NullChannel()
    def close(self, **kw): pass


class NullRecorder:
    """Records nothing.  For this benchmark only; never wired into ``bastion serve``."""
    def start_session(self, **kw): return _NullSession()
    def refused(self, **kw): pass
    def close(self): pass


class _PassMasks(ChannelMasks):
    def feed(self, stream, data): return data
    def flush(self): return []


# -- one variant's process ------------------------------------------------------------

async def _serve(variant: str, policy: Path, data_dir: Path, keys: Path, port_file: Path) -> None:
    from bastion.services import Services
    from bastion.ssh.server import start_listener
    services = Services.build(policy, data_dir, keys)
    if variant == "bare":
        services.recorder.close()
        services.recorder = NullRecorder()
    if variant in ("bare", "no-mask"):
        services.channel_masks = lambda ctx, kind: _PassMasks(())
    acceptor = await start_listener(services, "127.0.0.1", 0)
    tmp = port_file.with_suffix(".tmp")
    tmp.write_text(f"{acceptor.get_port()}\n" + "".join(services.hostkeys.known_hosts_lines()))
    tmp.rename(port_file)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    acceptor.close()
    await services.close()


def _start_variant(variant: str, rig, root: Path) -> tuple[subprocess.Popen, int, str]:
    port_file = root / f"port-{variant}"
    env = dict(os.environ, BASTION_VAULT_PASSPHRASE=rig.env["BASTION_VAULT_PASSPHRASE"])
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.overhead", "--serve", variant, "--policy", str(rig.policy_path),
         "--data-dir", str(root / variant), "--keys-dir", str(rig.keys_dir),
         "--port-file", str(port_file)],
        env=env, stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 60
    while not port_file.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the {variant} bastion did not start (exit {proc.poll()})")
        time.sleep(0.05)
    port, *known_hosts = port_file.read_text().splitlines(keepends=True)
    return proc, int(port), "".join(known_hosts)


# -- measuring -------------------------------------------------------------------------

def _machine_busy_s() -> float:
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def _one(argv: list[str], env: dict, size: int, serve_pid: int | None) -> dict:
    workers = set(_children(serve_pid)) if serve_pid else set()
    busy0 = _machine_busy_s()
    with procs.ProcSampler(root=os.getpid()) as sampler:   # this run's processes only
        rates = fetch(argv, env, size, timeout=600)
        if serve_pid:
            time.sleep(0.5)          # the worker finishes what it was sent
    mb = size / 1e6
    used = sampler.used()
    serve_s = sum(u for pid, _name, u in used if pid == serve_pid)
    worker_s = sum(u for pid, _name, u in used if pid in workers)
    labels = {serve_pid: "bastion-serve", **{w: "recording-worker" for w in workers}}
    top = procs.busiest([(pid, labels.get(pid, name), u) for pid, name, u in used], mb)
    return {"mb_s": rates["mb_s"],
            "busiest_ms_per_mb": top[0]["ms_per_mb"] if top else 0.0,
            "processes": top,
            "serve_ms_per_mb": 1000 * serve_s / mb,
            "worker_ms_per_mb": 1000 * worker_s / mb,
            "tree_ms_per_mb": 1000 * sum(u for _pid, _name, u in used) / mb,
            "machine_ms_per_mb": 1000 * (_machine_busy_s() - busy0) / mb}


def run(quick: bool) -> dict:
    size = 20_000_000 if quick else 300_000_000
    reps = 1 if quick else 3
    rig, issuer, tmp = make_rig()
    servers: dict[str, tuple[subprocess.Popen, int, str]] = {}
    try:
        text = make_text_file(tmp / "text.log", size)
        commands = {"zero": f"head -c {size} /dev/zero", "text": f"cat {text}"}
        # the recording's unavoidable per-byte work, measured before any server runs
        floor_size = min(size, 50_000_000)
        floors = {"zero": floor.measure(bytes(floor_size), tmp),
                  "text": floor.measure(text.read_bytes()[:floor_size], tmp)}
        known_hosts = rig.known_hosts.read_text()
        for v in VARIANTS:
            servers[v] = _start_variant(v, rig, tmp)
            known_hosts += servers[v][2]
        rig.known_hosts.write_text(known_hosts)
        base = rig.config_path("default").read_text()
        argv = {"jump": lambda cmd: rig.argv("jump", cmd)}
        for v, (_, port, _) in servers.items():
            config = tmp / f"ssh_config.{v}"
            config.write_text(base.replace(f"Port {rig.port}", f"Port {port}"))
            argv[v] = lambda cmd, config=config: ["ssh", "-F", str(config), "web1", cmd]
        paths = ("jump", *VARIANTS)
        samples: dict = {k: {p: [] for p in paths} for k in commands}
        for _ in range(reps):
            for kind, command in commands.items():
                for p in paths:
                    pid = servers[p][0].pid if p in servers else None
                    samples[kind][p].append(_one(argv[p](command), rig.client_env(), size, pid))
        out: dict = {"size_bytes": size, "reps": reps}
        for kind in commands:
            med = {p: {key: round(statistics.median(s[key] for s in samples[kind][p]), 2)
                       for key in samples[kind][p][0] if key != "processes"} for p in paths}
            for p in paths:               # the processes of the run with the median busiest one
                runs = sorted(samples[kind][p], key=lambda s: s["busiest_ms_per_mb"])
                med[p]["processes"] = runs[len(runs) // 2]["processes"]
                med[p]["ceiling_mb_s"] = round(1000 / med[p]["busiest_ms_per_mb"], 1) \
                    if med[p]["busiest_ms_per_mb"] else None
            rate = {p: med[p]["mb_s"] for p in paths}
            out[kind] = {"median": med, "mb_per_s": rate,
                         "recording_ratio_no_mask_over_bare": rate["no-mask"] / rate["bare"],
                         "masking_ratio_full_over_no_mask": rate["full"] / rate["no-mask"],
                         "full_over_bare": rate["full"] / rate["bare"],
                         "bare_over_jump": rate["bare"] / rate["jump"],
                         "full_over_jump": rate["full"] / rate["jump"],
                         "floor_ms_per_mb": floors[kind],
                         "bound_full_over_jump": floor.bound(med["jump"]["tree_ms_per_mb"],
                                                             med["bare"]["tree_ms_per_mb"],
                                                             floors[kind]["total"]),
                         "bound_by_machine_cpu": floor.bound(med["jump"]["machine_ms_per_mb"],
                                                             med["bare"]["machine_ms_per_mb"],
                                                             floors[kind]["total"])}
        return out
    finally:
        close_rig(rig, issuer, tmp, servers)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 epilog="Example: python -m bench.overhead --quick")
    ap.add_argument("--quick", action="store_true", help="20 MB, one run each")
    ap.add_argument("--serve", choices=VARIANTS, help=argparse.SUPPRESS)
    ap.add_argument("--policy", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--data-dir", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--keys-dir", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--port-file", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve:
        asyncio.run(_serve(args.serve, args.policy, args.data_dir, args.keys_dir, args.port_file))
        return 0
    out = run(args.quick)
    for kind in ("zero", "text"):
        r = out[kind]
        print(f"{kind}: MB/s " + ", ".join(f"{p} {r['median'][p]['mb_s']:.1f}" for p in r["median"]))
        for p, m in r["median"].items():
            if p != "jump":
                print(f"  {p:8} bastion {m['serve_ms_per_mb']:.1f} + worker {m['worker_ms_per_mb']:.1f} "
                      f"ms CPU/MB; this run's processes {m['tree_ms_per_mb']:.1f} (ProxyJump "
                      f"{r['median']['jump']['tree_ms_per_mb']:.1f}); machine "
                      f"{m['machine_ms_per_mb']:.1f} (ProxyJump "
                      f"{r['median']['jump']['machine_ms_per_mb']:.1f})")
        print(f"  recording keeps {r['recording_ratio_no_mask_over_bare']:.2f} (aim >= 0.85), "
              f"masking {r['masking_ratio_full_over_no_mask']:.2f} (aim >= 0.8); vs ProxyJump: "
              f"bare {r['bare_over_jump']:.2f}, full {r['full_over_jump']:.2f}")
        print("  busiest process, ms CPU/MB (ceiling with a core each): " + ", ".join(
            f"{p} {m['processes'][0]['name']} {m['busiest_ms_per_mb']:.1f} ({m['ceiling_mb_s']} MB/s)"
            for p, m in r["median"].items() if m["processes"]))
        f = r["floor_ms_per_mb"]
        b = r["bound_full_over_jump"]
        print(f"  recording floor {f['total']:.1f} ms CPU/MB (mask {f['mask']:.1f}, encode "
              f"{f['encode']:.1f}, hash {f['hash']:.1f}, write {f['write']:.1f}); on busy cores full can "
              f"reach at most {'n/a' if b is None else f'{b:.2f}'} of ProxyJump "
              f"(ProxyJump's processes / (bare's processes + floor))")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
