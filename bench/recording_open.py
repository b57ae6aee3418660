"""How long a channel's recording takes to be created, under a storm, on SQLite and PostgreSQL.

    .venv/bin/python -m bench.recording_open [--sessions 300] [--commands 5] [--hogs 0] [--rtt MS]

The recording path alone, without SSH: the real ``Recorder`` and its recording worker
process, the index on SQLite (a temp dir) or PostgreSQL (a private cluster on loopback, fsync
on, tests/pgcluster.py).  ``--sessions`` sessions start at the same moment on one event loop
(as ``bench.scaling``'s agents do) and run ``--commands`` commands one after the other, each
as the SSH layer runs an exec channel: open the channel's recording and wait until it is
created (``ChannelRecording.opened()``, the 10 s the bastion allows), record the command,
its output and exit status, wait for the acknowledgement that would show the output to the
agent, close.  ``--hogs`` busy processes (nice 0, as the benchmark's own ssh clients are)
stand for the load of ``bench.scaling`` on the same cores, for the length of each level.
``--rtt`` puts PostgreSQL behind a delay line of that round trip (bench.delayline, in a
process of its own), as a database on another host would be.

Prints, per backend: the open latency p50/p99/max, how many opens failed (not created
within 10 s: the session would be refused), commands per second, the CPU the recording
worker and the PostgreSQL server spent per command (from /proc: the figure that decides
how far behind the worker falls when the cores are saturated, and the one least moved by
other load on a shared machine), and the load average before and after.  No thresholds: docs/SCALING.md keeps the figures.  Exit status 2 when an
open failed or a command is missing from the index (tests/integration/
test_bench_recording_open.py runs it small).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

OPEN_TIMEOUT = 10.0      # ChannelRecording.opened()'s default, what the SSH layer waits


def _hog(stop_at: float) -> None:
    x = 0
    while time.time() < stop_at:
        x += 1


class _Acked:
    """Resolved once ``ticket`` is acknowledged: woken as the SSH layer's gate is
    (bastion.recording.gate, through ``AckQueue.gate_waits``), not by polling."""

    def __init__(self, sup, ticket: int) -> None:
        self.sup, self.ticket = sup, ticket
        self.loop = asyncio.get_running_loop()
        self.fut = self.loop.create_future()
        sup.gate_waits(self, ticket)

    def _release(self, frontier: float) -> None:
        if frontier > self.ticket:
            if not self.fut.done():
                self.fut.set_result(None)
        else:
            self.sup.gate_waits(self, self.ticket)


async def _agent(rec, i: int, commands: int, lat: list[float], fails: list[str]) -> None:
    from bastion.errors import RecordingError
    from bastion.identity.principal import Principal
    from bastion.policy import Action, Decision
    from bastion.proto.masker import BUILTIN
    sup = rec._writer
    s = rec.start_session(principal=Principal(subject=f"agent-{i}", name=f"agent-{i}"),
                          client="127.0.0.1:1", target="web1", login="deploy")
    try:
        for k in range(commands):
            line = f"echo MARKER-{i}-{k}"
            t0 = time.monotonic()
            ch = s.open_channel("exec", command=line, mask=BUILTIN)
            try:
                await ch.opened(OPEN_TIMEOUT)
            except RecordingError as exc:
                fails.append(str(exc))
                ch.close(exit_status=255)
                continue
            lat.append(time.monotonic() - t0)
            cid = ch.command(line, Decision(Action.ALLOW, "r", "bench"))
            ch.output(f"MARKER-{i}-{k}\n".encode())
            ch.command_result(cid, 0)
            await _Acked(sup, sup.last_seq).fut   # the gate: shown once acknowledged
            ch.close(exit_status=0)
    finally:
        s.close()


async def _level(rec, sessions: int, commands: int) -> tuple[list[float], list[str], float]:
    lat: list[float] = []
    fails: list[str] = []
    t = time.monotonic()
    await asyncio.gather(*(_agent(rec, i, commands, lat, fails) for i in range(sessions)))
    return lat, fails, time.monotonic() - t


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * q))] if values else float("nan")


def run_backend(label: str, sessions: int, commands: int, hogs: int,
                server_pid: int | None = None) -> dict:
    from bastion.proto.masker import BUILTIN
    from bastion.recording import Recorder
    from bench.scalerig import tree_cpu
    with tempfile.TemporaryDirectory(prefix="bastion-bench-open-") as tmp:
        rec = Recorder.open(Path(tmp), detectors=BUILTIN)
        rec.wait_state("ok", timeout=60)
        load0 = os.getloadavg()[0]
        procs = []
        if hogs:
            stop_at = time.time() + 600
            procs = [multiprocessing.Process(target=_hog, args=(stop_at,), daemon=True)
                     for _ in range(hogs)]
            for p in procs:
                p.start()
            time.sleep(2)
        worker = rec._writer._worker.pid
        cpu0 = (tree_cpu(worker) or 0.0, tree_cpu(server_pid) or 0.0)
        try:
            lat, fails, wall = asyncio.run(_level(rec, sessions, commands))
            cpu1 = (tree_cpu(worker) or 0.0, tree_cpu(server_pid) or 0.0)
        finally:
            for p in procs:
                p.kill()
                p.join()
        load1 = os.getloadavg()[0]
        rec.close()
        from bastion.recording import schema
        db = schema.connect(Path(tmp), readonly=True)
        (indexed,) = db.execute("SELECT count(*) FROM commands").fetchone()
        db.close()
    n = sessions * commands
    out = {"backend": label, "sessions": sessions, "commands": commands, "hogs": hogs,
           "open_p50_ms": _pct(lat, 0.5) * 1e3, "open_p99_ms": _pct(lat, 0.99) * 1e3,
           "open_max_ms": max(lat, default=float("nan")) * 1e3, "failed": len(fails),
           "indexed": int(indexed),
           "cmds_per_s": (n - len(fails)) / wall, "wall_s": wall,
           "worker_cpu_ms_per_cmd": (cpu1[0] - cpu0[0]) / n * 1e3,
           "server_cpu_ms_per_cmd": (cpu1[1] - cpu0[1]) / n * 1e3,
           "load_before": load0, "load_after": load1}
    print(f"{label:10} {sessions}x{commands} hogs {hogs}: open p50 {out['open_p50_ms']:.0f} ms "
          f"p99 {out['open_p99_ms']:.0f} ms max {out['open_max_ms']:.0f} ms; failed "
          f"{len(fails)}/{n}; indexed {indexed}; {out['cmds_per_s']:.0f} cmd/s; CPU/cmd worker "
          f"{out['worker_cpu_ms_per_cmd']:.2f} ms, PostgreSQL {out['server_cpu_ms_per_cmd']:.2f} ms; "
          f"wall {wall:.1f} s; load "
          f"{load0:.1f} -> {load1:.1f}", flush=True)
    if fails:
        print(f"           first failure: {fails[0]}", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.recording_open",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--sessions", type=int, default=300)
    p.add_argument("--commands", type=int, default=5)
    p.add_argument("--hogs", type=int, default=0)
    p.add_argument("--backends", default="sqlite,postgresql")
    p.add_argument("--rtt", type=float, default=0.0, metavar="MS",
                   help="PostgreSQL behind a delay line of this round trip (bench.delayline)")
    args = p.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from bench.rig import raise_fd_limit
    raise_fd_limit()
    backends = args.backends.split(",")
    results = []
    if "sqlite" in backends:
        os.environ.pop("BASTION_STORE_URL", None)
        results.append(run_backend("sqlite", args.sessions, args.commands, args.hogs))
    if "postgresql" in backends:
        from bench.scalerig import postmaster_pid
        from tests.pgcluster import durable_store
        from bench.delayline import store_behind
        with durable_store() as cluster, store_behind(cluster, args.rtt):
            label = f"pg+{args.rtt:g}ms" if args.rtt else "postgresql"
            results.append(run_backend(label, args.sessions, args.commands, args.hogs,
                                       postmaster_pid(cluster)))
    n = args.sessions * args.commands
    # figures are never gates; a refused open or a command missing from the index is
    return 0 if all(r["failed"] == 0 and r["indexed"] == n for r in results) else 2


if __name__ == "__main__":
    sys.exit(main())
