"""sftp get and put of one file: (a) direct, (b) OpenSSH ProxyJump, (c) the bastion.

    python -m bench.sftp                 # 100 MB, 3 rounds (about a minute on 2 cores)
    python -m bench.sftp --size 20 --rounds 1
    python -m bench.sftp --size 1000 --rounds 2          # the 1 GB figures
    python -m bench.sftp --rtt-ms 20                     # 20 ms between client and first hop

The real OpenSSH ``sftp -b`` client on every path, the target's ``internal-sftp``
behind them; for (c) the bastion serves SFTP itself and relays each request upstream,
deciding it by path and recording one row per file (docs/TRANSFERS.md).  The paths
take turns in every round (rotated), so drift hits them alike.  The figure is the wall
time of one ``sftp`` run (connect, login, transfer, exit) and the rate it implies
(MB = 10**6 bytes); the login costs the same few tenths of a second on every run, so
at 100 MB the rate is the transfer's.  Every copy is checked byte for byte.  Prints a
table and a JSON line; never fails on time.

With ``--rtt-ms N`` the client reaches each path's first hop (the target for (a), the
jump host for (b), the bastion for (c)) through a userspace delay line of N ms round trip
(:mod:`bench.delayline`; the kernel here has no netem); the hops behind it stay on loopback.
With ``--rtt-where target`` the delay line stands in front of the target instead: every
path's last hop is the long one (the bastion's upstream connection, ProxyJump's second hop).

With ``--store-transfers`` the bastion keeps a masked copy of every file
(``[settings] store_transfers``, its default cap of 16 MiB; docs/TRANSFERS.md), and with
``--store postgresql`` its index is a database on a private PostgreSQL cluster
(:mod:`tests.pgcluster`), where the recording worker also puts each copy into the store
with its row (bastion.store.transfercopies).

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
from typing import Any

from bench.rig import PATHS, BenchRig
from bench.stats import median, ratio, rotated

HOSTS = {"direct": "direct", "jump": "jumped", "bastion": "web1"}


def _sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def run_sftp(rig: BenchRig, path: str, batch: str, mode: str = "default") -> float:
    """Seconds one ``sftp -b`` run took through ``path``; raises on a failed run."""
    with tempfile.NamedTemporaryFile("w", dir=rig.root, suffix=".batch", delete=False) as fh:
        fh.write(batch)
    host = "web1far" if mode == "far" and path == "bastion" else HOSTS[path]
    argv = ["sftp", "-q", "-F", str(rig.config_path(mode)), "-b", fh.name, host]
    t0 = time.perf_counter()
    p = subprocess.run(argv, env=rig.client_env(), capture_output=True, timeout=600,
                       stdin=subprocess.DEVNULL, start_new_session=True)
    took = time.perf_counter() - t0
    os.unlink(fh.name)
    if p.returncode != 0:
        raise RuntimeError(f"sftp through {path} failed ({p.returncode}): "
                           f"{p.stderr.decode(errors='replace').strip()[-300:]}")
    return took


def delayed(rig: BenchRig, rtt_ms: float) -> list[Any]:
    """Delay lines to each path's first hop and an ssh_config (mode ``delay``) using them."""
    from bench.delayline import DelayLine
    assert rig.sshd is not None and rig.jump is not None
    lines, text = [], rig.config_path("default").read_text()
    for host, port in (("direct", rig.sshd.port), ("jumphost", rig.jump.port),
                       ("bastion", rig.port)):
        line = DelayLine(port, rtt_ms / 2000.0).start()
        lines.append(line)
        head = f"Host {host}\n  HostName 127.0.0.1\n"
        old, new = f"{head}  Port {port}\n", f"{head}  Port {line.port}\n"
        if old not in text:
            raise RuntimeError(f"bench ssh_config has no {host} entry on port {port}")
        text = text.replace(old, new)
        for known in (rig.openssh_known_hosts, rig.known_hosts):   # the same keys, new port
            keys = known.read_text()
            extra = "".join(k.replace(f"[127.0.0.1]:{port} ", f"[127.0.0.1]:{line.port} ") + "\n"
                            for k in keys.splitlines() if k.startswith(f"[127.0.0.1]:{port} "))
            known.write_text(keys + ("" if keys.endswith("\n") or not keys else "\n") + extra)
    rig.config_path("delay").write_text(text)
    return lines


def far_target(rig: BenchRig, rtt_ms: float) -> Any:
    """A delay line in front of the target, and target ``web1far`` behind it in the policy
    (call between ``setup()`` and ``start()``): the last hop of every path is the long one."""
    from bench.delayline import DelayLine
    assert rig.sshd is not None
    line = DelayLine(rig.sshd.port, rtt_ms / 2000.0).start()
    rig.extra_targets = (f'\n[[targets]]\nname = "web1far"\nhost = "127.0.0.1"\n'
                         f'port = {line.port}\nuser = "{rig.sshd.user}"\nkey = "web1"\n'
                         f'host_key = "{rig.sshd.host_key_line}"\n')
    rig.write_policy()
    keys = rig.openssh_known_hosts.read_text()
    rig.openssh_known_hosts.write_text(
        keys + f"[127.0.0.1]:{line.port} {rig.sshd.host_key_line}\n")
    return line


def far_config(rig: BenchRig, line: Any) -> None:
    """ssh_config mode ``far``: direct and ProxyJump reach the target through ``line``, the
    bastion's agents name ``web1far``."""
    assert rig.sshd is not None
    text = rig.config_path("default").read_text()
    for host in ("direct", "jumped"):
        head = f"Host {host}\n  HostName 127.0.0.1\n"
        old = f"{head}  Port {rig.sshd.port}\n"
        if old not in text:
            raise RuntimeError(f"bench ssh_config has no {host} entry on the target's port")
        text = text.replace(old, f"{head}  Port {line.port}\n")
    start = text.index("\nHost web1\n")
    end = text.find("\nHost ", start + 1)
    block = text[start:end if end != -1 else len(text)]
    rig.config_path("far").write_text(text + block.replace("Host web1\n", "Host web1far\n"))


def measure(size_mb: int, rounds: int, rtt_ms: float = 0.0, where: str = "client", *,
            store_transfers: bool = False, store: str = "sqlite") -> dict:
    from bastion.identity.devissuer import DevIssuer
    root = Path(tempfile.mkdtemp(prefix="bench-sftp-"))
    issuer = DevIssuer(root / "issuer").start()
    cluster = None
    store_env: dict = {}
    if store == "postgresql":
        from tests.pgcluster import start_cluster
        cluster = start_cluster()
        cluster.create_db("bench_sftp")
        store_env = cluster.store_env("bench_sftp", node="bench")
    rig = BenchRig(root / "rig", issuer, store_env=store_env)
    files = Path(os.path.realpath(root)) / "files"
    files.mkdir()
    rig.extra_policy = (f'[[grants]]\nwho = ["role:agents"]\ntargets = ["web1"]\n'
                        f'channels = ["sftp"]\n\n[[rules]]\nname = "bench-files"\n'
                        f'action = "allow"\nreads = ["{files}/**"]\nwrites = ["{files}/**"]\n')
    results: dict = {"size_mb": size_mb, "rounds": rounds, "rtt_ms": rtt_ms, "get_s": {},
                     "put_s": {}, "store_transfers": store_transfers, "store": store}
    lines: list[Any] = []
    far = bool(rtt_ms) and where == "target"
    mode = ("far" if far else "delay") if rtt_ms else "default"
    results["rtt_where"] = where if rtt_ms else None
    if far:
        rig.extra_policy = rig.extra_policy.replace('targets = ["web1"]',
                                                    'targets = ["web1", "web1far"]')
    try:
        rig.setup()
        if store_transfers:
            from tests.e2e.harness import POLICY_RULES
            rig.write_policy(rig.policy_text(POLICY_RULES.replace(
                'env_allow = ["BASTION_TEST_OK"]',
                'env_allow = ["BASTION_TEST_OK"]\nstore_transfers = true')))
        if far:
            lines = [far_target(rig, rtt_ms)]
        rig.start()
        if far:
            far_config(rig, lines[0])
        elif rtt_ms:
            lines = delayed(rig, rtt_ms)
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
                times["get"][path].append(run_sftp(rig, path, f"get {src} {local}\n", mode))
                if _sha(local) != digest:
                    raise RuntimeError(f"get through {path}: the copy differs")
                dest = files / f"put-{path}"
                times["put"][path].append(run_sftp(rig, path, f"put {local} {dest}\n", mode))
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
        results["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    finally:
        for line in lines:
            line.stop()
        rig.close()
        issuer.stop()
        if cluster is not None:
            cluster.destroy()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sftp",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=100, help="MB (10**6 bytes), default 100")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rtt-ms", type=float, default=0.0,
                        help="round trip added on one hop (see --rtt-where)")
    parser.add_argument("--rtt-where", choices=("client", "target"), default="client",
                        help="client: between the client and each first hop; target: in "
                             "front of the target (the bastion's upstream, ProxyJump's "
                             "second hop)")
    parser.add_argument("--store-transfers", action="store_true",
                        help="keep a masked copy of each file ([settings] store_transfers)")
    parser.add_argument("--store", choices=("sqlite", "postgresql"), default="sqlite",
                        help="the bastion's index: SQLite in its data dir, or a private "
                             "PostgreSQL cluster")
    args = parser.parse_args(argv)
    load = [round(x, 2) for x in os.getloadavg()]
    res = measure(args.size, args.rounds, args.rtt_ms, args.rtt_where,
                  store_transfers=args.store_transfers, store=args.store)
    res["loadavg_before"] = load
    hop = "the first hop" if args.rtt_where == "client" else "the target"
    rtt = f", {args.rtt_ms:g} ms RTT to {hop}" if args.rtt_ms else ""
    kept = ", copies kept (store_transfers)" if args.store_transfers else ""
    print(f"sftp of {args.size} MB, median of {args.rounds} (wall time of one sftp run){rtt}; "
          f"index on {args.store}{kept}; "
          f"load average {load[0]} before, {res['loadavg_after'][0]} after")
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
