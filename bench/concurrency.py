"""Concurrency: N agents at once, each with one ``-J`` session running M commands.

Each agent is one OpenSSH ControlMaster connection (``ssh -M -S SOCK -N``), opened
by all agents at the same moment (a login storm), then M ``ssh -S SOCK HOST 'echo
aIcJ'`` commands one after the other on it: every command is one exec channel on
the agent's session, which the bastion evaluates against policy and relays on a
pooled upstream connection.  A command succeeds when it exits 0 and prints exactly
its own marker.  The same is run through the OpenSSH jump host for comparison.

Reported per level and path: success rate, p50/p99 command latency (the wall time
of the ``ssh -S`` client, process start included), session-open latency, and for
the bastion its RSS (peak sampled every 0.25 s, and the kernel's high-water mark)
and CPU seconds used during the level (from /proc; no psutil needed).

Not covered: agents that open a new connection per command (see set-up latency),
interactive shells under load.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from pathlib import Path

from bench.rig import BenchRig, proc_usage
from bench.stats import rotated, summary

FULL_LEVELS = (50, 100, 200)
FULL_COMMANDS = 20
QUICK_LEVELS = (3,)
QUICK_COMMANDS = 3
OPEN_TIMEOUT_S = 180
COMMAND_TIMEOUT_S = 120
SAMPLE_EVERY_S = 0.25
LEVEL_TIMEOUT_S = 900


async def _wait(proc: asyncio.subprocess.Process, timeout: float) -> int:
    try:
        return await asyncio.wait_for(proc.wait(), timeout)
    except asyncio.TimeoutError:
        proc.kill()
        return await proc.wait()


async def _agent(rig: BenchRig, path: str, i: int, commands: int, ctl: Path,
                 result: dict, tag: str = "") -> None:
    sock = str(ctl / f"{path[0]}{i}")
    env = rig.client_env()
    err = tempfile.TemporaryFile()
    t0 = time.perf_counter()
    master = await asyncio.create_subprocess_exec(
        *rig.argv(path, None, args=("-M", "-S", sock, "-N", "-o", "ControlPersist=no")),
        env=env, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=err, start_new_session=True)
    try:
        deadline = t0 + OPEN_TIMEOUT_S
        while not os.path.exists(sock):
            if master.returncode is not None or time.perf_counter() > deadline:
                err.seek(0)
                lines = err.read().decode(errors="replace").strip().splitlines()
                why = lines[-1] if lines else f"master exited {master.returncode}"
                result["errors"].append(f"session {i}: {why}"[:300])
                result["failed"] += commands
                return
            await asyncio.sleep(0.05)
        result["open"].append(time.perf_counter() - t0)
        for j in range(commands):
            marker = f"{tag}a{i}c{j}"
            t1 = time.perf_counter()
            p = await asyncio.create_subprocess_exec(
                *rig.argv(path, f"echo {marker}", args=("-S", sock)), env=env,
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, start_new_session=True)
            try:
                out, errb = await asyncio.wait_for(p.communicate(), COMMAND_TIMEOUT_S)
            except asyncio.TimeoutError:
                p.kill()
                await p.wait()
                out, errb = b"", b"timed out"
            except BaseException:          # cancelled (level timeout, Ctrl-C): leave nothing behind
                if p.returncode is None:
                    p.kill()
                raise
            dt = time.perf_counter() - t1
            if p.returncode == 0 and out == f"{marker}\n".encode():
                result["ok"] += 1
                result["latency"].append(dt)
            else:
                result["failed"] += 1
                msg = errb.decode(errors="replace").strip().splitlines()
                result["errors"].append(f"{marker}: exit {p.returncode}: "
                                        f"{msg[-1] if msg else repr(out[:60])}"[:300])
    finally:
        try:
            if master.returncode is None and os.path.exists(sock):
                ex = await asyncio.create_subprocess_exec(
                    *rig.argv(path, None, args=("-S", sock, "-O", "exit")), env=env,
                    stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.DEVNULL)
                await _wait(ex, 15)
            if master.returncode is None:
                await _wait(master, 5)
        finally:
            if master.returncode is None:
                master.kill()
            err.close()


async def _sample(pid: int, peak: dict, stop: asyncio.Event) -> None:
    while not stop.is_set():
        rss = proc_usage(pid).get("rss_mb")
        if rss is not None:
            peak["rss_mb"] = max(peak.get("rss_mb") or 0.0, rss)
        try:
            await asyncio.wait_for(stop.wait(), SAMPLE_EVERY_S)
        except asyncio.TimeoutError:
            pass


async def level(rig: BenchRig, path: str, agents: int, commands: int, tag: str = "") -> dict:
    """One level: ``agents`` sessions at once, ``commands`` each; ``tag`` prefixes every
    marker (``echo TAGaIcJ``), so a caller can find this level's commands in the index."""
    ctl = Path(tempfile.mkdtemp(prefix="ctl", dir=rig.root))
    result: dict = {"ok": 0, "failed": 0, "latency": [], "open": [], "errors": []}
    pid = rig.proc.pid
    before = proc_usage(pid) if path == "bastion" else {}
    peak: dict = {}
    stop = asyncio.Event()
    sampler = asyncio.ensure_future(_sample(pid, peak, stop)) if path == "bastion" else None
    t0 = time.perf_counter()
    timed_out = False
    try:
        await asyncio.wait_for(asyncio.gather(
            *(_agent(rig, path, i, commands, ctl, result, tag) for i in range(agents))),
            LEVEL_TIMEOUT_S)
    except asyncio.TimeoutError:
        timed_out = True
    wall = time.perf_counter() - t0
    stop.set()
    if sampler:
        await sampler
    total = agents * commands
    out = {
        "agents": agents, "commands_per_agent": commands, "commands": total,
        "ok": result["ok"], "failed": result["failed"],
        "success_rate": round(result["ok"] / total, 4) if total else None,
        "command_ms": summary(result["latency"], scale=1000, digits=1),
        "session_open_ms": summary(result["open"], scale=1000, digits=1),
        "wall_s": round(wall, 2),
        "errors": sorted(set(result["errors"]))[:5],
    }
    if timed_out:
        missing = total - result["ok"] - result["failed"]
        out["failed"] += missing
        out["errors"].insert(0, f"level stopped after {LEVEL_TIMEOUT_S}s: {missing} commands not run")
    if path == "bastion":
        after = proc_usage(pid)
        out["bastion"] = {
            "rss_peak_mb": round(peak["rss_mb"], 1) if peak.get("rss_mb") else None,
            "rss_after_mb": round(after["rss_mb"], 1) if after.get("rss_mb") else None,
            "hwm_mb": round(after["hwm_mb"], 1) if after.get("hwm_mb") else None,
            "cpu_s": (round(after["cpu_s"] - before["cpu_s"], 2)
                      if after.get("cpu_s") is not None and before.get("cpu_s") is not None
                      else None),
        }
    return out


def run(rig: BenchRig, *, quick: bool = False, levels: tuple[int, ...] | None = None,
        commands: int | None = None, paths: tuple[str, ...] = ("jump", "bastion"),
        log=print) -> dict:
    levels = levels or (QUICK_LEVELS if quick else FULL_LEVELS)
    commands = commands or (QUICK_COMMANDS if quick else FULL_COMMANDS)
    rows = []
    for n, agents in enumerate(levels):
        row: dict = {"agents": agents}
        for path in rotated(paths, n):
            try:
                row[path] = asyncio.run(level(rig, path, agents, commands))
            except OSError as exc:
                row[path] = {"na": f"error: {exc}"[:300]}
            r = row[path]
            log(f"  concurrency {agents} agents via {path}: "
                + (f"{r['ok']}/{r['commands']} ok, p50 {r['command_ms']['median']} ms, "
                   f"p99 {r['command_ms']['p99']} ms"
                   + (f", bastion peak RSS {r['bastion']['rss_peak_mb']} MB, "
                      f"CPU {r['bastion']['cpu_s']} s" if "bastion" in r else "")
                   if "na" not in r else f"n/a ({r['na']})"))
        rows.append(row)
    return {"commands_per_agent": commands, "unit": "ms", "levels": rows}
