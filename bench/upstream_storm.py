"""``python -m bench.upstream_storm``: many upstream logins to one sshd at once, the bastion's pool
with and without its per-target bound (``[settings] upstream_connects``), beside OpenSSH.

A login storm's first commands need new upstream connections: agents share a connect by eights
(``MAX_SESSIONS_PER_CONNECTION``), so 504 agents at once start 63 connects to the one target.
Each login is CPU-bound (key exchange, authentication, sshd's fork and re-exec), so the more run
at once, the longer each one takes, and ``connect_timeout`` (10 s by default) is counted per
connect.  This runs, against one real sshd on 127.0.0.1 (``MaxStartups`` raised like the
scaling rig's, so nothing is dropped and only the time is measured):

* the bastion's :class:`~bastion.ssh.upstream.UpstreamPool` in this process, for each bound
  (``0``: no bound, every connect at once, as before ``upstream_connects`` existed): all agents
  acquire at once; reported: wall time until every agent had its connection, each connect's
  own duration (what ``connect_timeout`` counts: from when it left the queue) p50/p99/max and
  how many took longer than 10 s (they would fail with the default), the queue waits;
* OpenSSH: as many ``ssh ... true`` logins at once as the pool made connects (the same
  handshakes, OpenSSH's client), wall time and each login's duration.

The pool's connect_timeout here is long (300 s) so that durations are measured, not cut.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import asyncssh

from bastion.config.targets import Target
from bastion.demo.sshd import LocalSshd
from bastion.ssh import upstream
from bastion.ssh.upstream import MAX_SESSIONS_PER_CONNECTION, UpstreamPool
from bastion.metrics import METRICS
from bench.stats import summary

RETRIES = "bastion_upstream_connect_retries_total"

DEFAULT_TIMEOUT = 10.0       # the product's connect_timeout


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def pool_run(sshd: LocalSshd, key: asyncssh.SSHKey, connects: int, bound: int) -> dict:
    durations: list[float] = []
    real_open = upstream.open_connection

    async def timed_open(*args, **kwargs):           # times the real connect, nothing else
        t0 = time.monotonic()
        try:
            return await real_open(*args, **kwargs)
        finally:
            durations.append(time.monotonic() - t0)

    upstream.open_connection = timed_open
    pool = UpstreamPool(load_key=lambda _: key, connect_timeout=300.0,
                        max_connects=bound or 10 ** 6, queue_timeout=300.0)
    target = Target(name="storm", host="127.0.0.1", port=sshd.port, user=sshd.user, key="k",
                    host_key=sshd.host_key_line)
    agents = connects * MAX_SESSIONS_PER_CONNECTION
    failed: list[str] = []

    async def agent() -> None:
        try:
            lease = await pool.acquire(target)
        except Exception as exc:  # noqa: BLE001 - counted and reported
            failed.append(str(exc)[:200])
            return
        lease.release()

    retries = METRICS.value(RETRIES)
    t0 = time.monotonic()
    try:
        await asyncio.gather(*(agent() for _ in range(agents)))
        wall = time.monotonic() - t0
    finally:
        upstream.open_connection = real_open
        await pool.close()
    return {"bound": bound or "none", "agents": agents, "connects": len(durations),
            "wall_s": round(wall, 2), "failed": len(failed), "errors": sorted(set(failed))[:3],
            "connect_s": summary(durations, digits=2),
            "over_default_timeout": sum(1 for d in durations if d > DEFAULT_TIMEOUT),
            "dropped_and_retried": int(METRICS.value(RETRIES) - retries)}


async def openssh_run(sshd: LocalSshd, key_file: Path, known_hosts: Path, n: int) -> dict:
    async def one() -> tuple[float, int]:
        t0 = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            "ssh", "-F", "none", "-i", str(key_file), "-o", "BatchMode=yes",
            "-o", f"UserKnownHostsFile={known_hosts}", "-o", "StrictHostKeyChecking=yes",
            "-o", "ConnectTimeout=300", "-p", str(sshd.port), f"{sshd.user}@127.0.0.1", "true",
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL)
        rc = await proc.wait()
        return time.monotonic() - t0, rc

    t0 = time.monotonic()
    results = await asyncio.gather(*(one() for _ in range(n)))
    wall = time.monotonic() - t0
    return {"logins": n, "wall_s": round(wall, 2), "failed": sum(1 for _, rc in results if rc),
            "login_s": summary([t for t, _ in results], digits=2),
            "over_default_timeout": sum(1 for t, _ in results if t > DEFAULT_TIMEOUT)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--connects", type=int, default=63, help="upstream connects at once (x8 agents)")
    p.add_argument("--bounds", default="0,8", help="upstream_connects values to run (0: none)")
    p.add_argument("--rounds", type=int, default=1, help="rounds, interleaved")
    p.add_argument("--max-startups", default="1000:30:1000", help="the sshd's MaxStartups")
    p.add_argument("--out", type=Path)
    a = p.parse_args(argv)
    bounds = [int(b) for b in a.bounds.split(",")]
    key = asyncssh.generate_private_key("ssh-ed25519")
    tmp = Path(tempfile.mkdtemp(prefix="bastion-bench-upstorm-"))
    key_file = tmp / "id_ed25519"
    key_file.write_bytes(key.export_private_key())
    os.chmod(key_file, 0o600)
    sshd = LocalSshd(tmp / "sshd", [key.export_public_key().decode().strip()],
                     max_startups=a.max_startups).start()
    known_hosts = tmp / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{sshd.port} {sshd.host_key_line}\n")
    out: dict = {"connects": a.connects, "max_startups": a.max_startups,
                 "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "runs": []}
    try:
        for r in range(a.rounds):
            for bound in bounds:
                res = asyncio.run(pool_run(sshd, key, a.connects, bound))
                out["runs"].append({"path": "bastion pool", "round": r, **res})
                log(f"pool, upstream_connects {res['bound']}: {res['connects']} connects for "
                    f"{res['agents']} agents, all in {res['wall_s']} s, failed {res['failed']}; "
                    f"each connect p50/p99/max {res['connect_s'].get('median')}/"
                    f"{res['connect_s'].get('p99')}/{res['connect_s'].get('max')} s, "
                    f"{res['over_default_timeout']} over {DEFAULT_TIMEOUT:g} s; "
                    f"{res['dropped_and_retried']} dropped by sshd and tried again")
                time.sleep(2)                     # sshd's children of the run are gone
            res = asyncio.run(openssh_run(sshd, key_file, known_hosts, a.connects))
            out["runs"].append({"path": "openssh", "round": r, **res})
            log(f"OpenSSH: {res['logins']} logins at once, all in {res['wall_s']} s, failed "
                f"{res['failed']}; each p50/p99/max {res['login_s'].get('median')}/"
                f"{res['login_s'].get('p99')}/{res['login_s'].get('max')} s, "
                f"{res['over_default_timeout']} over {DEFAULT_TIMEOUT:g} s")
            time.sleep(2)
    finally:
        sshd.stop()
    if a.out:
        a.out.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
