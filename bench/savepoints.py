"""What a savepoint around every row-writing operation of a normal batch costs the recording
worker (bastion.recording.quarantine), on SQLite and on PostgreSQL.

    .venv/bin/python -m bench.savepoints [--rounds 8] [--seconds 0.6] [--rtt MS]

The batches go through a real :class:`bastion.recording.writer.Applier` in this process, as
the worker applies them (each operation, the recording buffers written, one commit per
batch), with ``Applier.savepoints`` set to none (as before: a normal batch had none), every
row-writing operation, and those that carry values from outside (``quarantine.GUARDED``,
what ``bastion serve`` runs), alternating round by round in one run.  Three shapes of batch, as the worker gets them:

* ``interactive``: one command per batch (its row, its output, its exit status: 3
  operations, 2 of them writing rows) -- a person or an agent typing;
* ``exec``: one whole exec session per batch (start, channel open, one command, output,
  result, channel close, session close: 7 operations, 6 writing rows);
* ``flood``: 50 commands per batch (150 operations, 100 writing rows) -- the most the
  pump ships while the worker is busy.

Bulk output (``OP_DATA`` only) writes no rows: no savepoint, nothing to measure.

Per variant: the median over rounds of this process's CPU per row-writing operation
(``time.process_time``; the divisor is every row-writing operation, whichever variant), on PostgreSQL also the server backend's CPU (``/proc/PID/stat``),
and operations per second of wall time.  PostgreSQL: a private cluster on loopback with
fsync on (tests/pgcluster.py), the worker's connection pipelined as ``bastion serve`` runs
it; with ``--rtt`` behind a delay line of that round trip (bench.delayline, in a process of
its own), as a database on another host would be: the rate then follows the round trips a
batch waits for.  Prints the 1-min load average before and after; no threshold.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from bastion.proto import asciicast
from bastion.recording.ops import (OP_CHANNEL_CLOSE, OP_CHANNEL_OPEN, OP_COMMAND,
                                   OP_COMMAND_RESULT, OP_DATA, OP_SESSION_CLOSE,
                                   OP_SESSION_START)
from bastion.recording.quarantine import GUARDED, ROW_OPS
from bench import delayline

Op = tuple[Any, ...]
#: the operations a normal batch runs in a savepoint: none (before), every row-writing one,
#: those that carry values from outside (bastion.recording.quarantine.GUARDED)
VARIANTS = {"none": frozenset(), "all": ROW_OPS, "guarded": GUARDED}
PRINCIPAL = {"subject": "oid-bench", "name": "bench", "roles": ["agent"]}
OUTPUT = b"Active: active (running) since Mon 2026-12-07 05:00:00 UTC; 1h ago\n" * 4


class Ids:
    def __init__(self) -> None:
        self.n = 0

    def __call__(self) -> int:
        self.n += 1
        return self.n


def _open(ids: Ids, sid: int) -> tuple[int, Op]:
    cid = ids()
    wall = time.time()
    rel = f"recordings/bench/s{sid}-c{cid}.cast"
    header = asciicast.header_line(width=80, height=24, timestamp=int(wall), title="bench",
                                   term=None, command="systemctl status nginx",
                                   extra={"session": sid, "channel": cid, "kind": "exec",
                                          "started": wall})
    return cid, (OP_CHANNEL_OPEN, cid, sid, "exec", "systemctl status nginx", None, None,
                 None, None, wall, rel, header, None)


def _command(ids: Ids, sid: int, cid: int, t: float) -> list[Op]:
    cmd = ids()
    line = f"systemctl status nginx-{cmd}"
    return [(OP_COMMAND, cmd, sid, cid, time.time(), t, line, '["systemctl"]', "allow",
             "ops", "read-only", None, f"command {cmd}: allow [ops]: {line}"),
            (OP_DATA, cid, "o", t, OUTPUT, 0, len(OUTPUT)),
            (OP_COMMAND_RESULT, cmd, 0)]


def _session(ids: Ids) -> tuple[int, Op]:
    sid = ids()
    return sid, (OP_SESSION_START, sid, time.time(), PRINCIPAL, "127.0.0.1:1", "web1",
                 "deploy")


def shapes() -> dict[str, Callable[[Ids], tuple[list[Op], list[list[Op]], list[Op]]]]:
    """Each shape: (set-up ops, batches, tear-down ops)."""
    def interactive(ids: Ids) -> tuple[list[Op], list[list[Op]], list[Op]]:
        sid, start = _session(ids)
        cid, opened = _open(ids, sid)
        batches = [_command(ids, sid, cid, float(i)) for i in range(40)]
        close = [(OP_CHANNEL_CLOSE, cid, 99.0, time.time(), 0, None, 0, 0, None),
                 (OP_SESSION_CLOSE, sid, time.time(), "closed")]
        return [start, opened], batches, close

    def exec_(ids: Ids) -> tuple[list[Op], list[list[Op]], list[Op]]:
        batches = []
        for _ in range(20):
            sid, start = _session(ids)
            cid, opened = _open(ids, sid)
            batches.append([start, opened, *_command(ids, sid, cid, 0.1),
                            (OP_CHANNEL_CLOSE, cid, 0.2, time.time(), 0, None, 0, 0, None),
                            (OP_SESSION_CLOSE, sid, time.time(), "closed")])
        return [], batches, []

    def flood(ids: Ids) -> tuple[list[Op], list[list[Op]], list[Op]]:
        sid, start = _session(ids)
        cid, opened = _open(ids, sid)
        batches = [[op for i in range(50) for op in _command(ids, sid, cid, float(i))]
                   for _ in range(2)]
        close = [(OP_CHANNEL_CLOSE, cid, 99.0, time.time(), 0, None, 0, 0, None),
                 (OP_SESSION_CLOSE, sid, time.time(), "closed")]
        return [start, opened], batches, close

    return {"interactive": interactive, "exec": exec_, "flood": flood}


def _backend_cpu(pid: int | None) -> float:
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _run(applier: Any, batches: list[list[Op]]) -> None:
    for batch in batches:
        for op in batch:
            if not applier.apply(op):
                raise RuntimeError(f"bench batch failed: {applier.error}")
        if not (applier.flush_files() and applier.commit()):
            raise RuntimeError(f"bench commit failed: {applier.error}")


def measure(data_dir: Path, rounds: int, seconds: float, pg: bool) -> dict[str, dict[str, Any]]:
    from bastion.recording import schema
    from bastion.recording.writer import Applier
    conn = schema.connect(data_dir)
    backend = None
    if pg:
        backend = int(conn.execute("SELECT pg_backend_pid()").fetchone()[0])
        conn.pipelined = True          # as the worker runs it (bastion.recording.worker)
    applier = Applier(conn, data_dir, 64 * 1024 * 1024, lambda event: None)
    ids = Ids()
    results: dict[str, dict[str, Any]] = {}
    for name, shape in shapes().items():
        samples: dict[str, list[tuple[float, float, float]]] = {v: [] for v in VARIANTS}
        for r in range(rounds * len(VARIANTS) + 1):
            variant = list(VARIANTS)[(r - 1) % len(VARIANTS)]   # round 0: warm-up
            applier.savepoints = VARIANTS[variant]
            rows = ops = 0
            cpu = server = wall = 0.0
            while wall < seconds:
                setup, batches, teardown = shape(ids)
                _run(applier, [setup] if setup else [])
                c0, s0, w0 = time.process_time(), _backend_cpu(backend), time.perf_counter()
                _run(applier, batches)
                cpu += time.process_time() - c0
                server += _backend_cpu(backend) - s0
                wall += time.perf_counter() - w0
                _run(applier, [teardown] if teardown else [])
                rows += sum(op[0] in ROW_OPS for b in batches for op in b)
                ops += sum(len(b) for b in batches)
            if r:
                samples[variant].append((cpu / rows * 1e6, server / rows * 1e6, ops / wall))
        results[name] = {
            label: tuple(statistics.median(s[i] for s in samples[label]) for i in range(3))
            for label in VARIANTS}
    conn.close()
    return results


def _print(title: str, results: dict[str, dict[str, Any]], pg: bool) -> None:
    print(f"\n{title}")
    cols = "worker CPU us/row-op" + ("   server CPU us/row-op" if pg else "") + "   ops/s"
    print(f"  {'shape':12} {'variant':10} {cols}")
    for shape, by in results.items():
        for variant, (cpu, server, rate) in by.items():
            extra = f"   {server:22.1f}" if pg else ""
            print(f"  {shape:12} {variant:10} {cpu:20.1f}{extra}   {rate:8.0f}")
        base = by["none"]
        for variant in ("all", "guarded"):
            sp = by[variant]
            line = f"  {shape:12} {variant + '/none':12} {sp[0] / base[0]:18.2f}"
            if pg:
                line += f"   {sp[1] / base[1] if base[1] else float('nan'):22.2f}"
            print(line + f"   {sp[2] / base[2]:8.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.savepoints", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=8, help="rounds per variant (alternating)")
    parser.add_argument("--seconds", type=float, default=0.6, help="measured time per round")
    parser.add_argument("--no-pg", action="store_true", help="SQLite only")
    parser.add_argument("--rtt", type=float, default=0.0, metavar="MS",
                        help="PostgreSQL behind a delay line of this round trip (bench.delayline, "
                             "in a process of its own)")
    args = parser.parse_args(argv)
    print(f"load average (1 min) before: {os.getloadavg()[0]:.2f}")
    os.environ.pop("BASTION_STORE_URL", None)
    with tempfile.TemporaryDirectory() as tmp:
        sqlite = measure(Path(tmp), args.rounds, args.seconds, pg=False)
    _print("SQLite (WAL, synchronous=NORMAL)", sqlite, pg=False)
    if not args.no_pg:
        from tests.pgcluster import durable_store
        with durable_store() as cluster, tempfile.TemporaryDirectory() as tmp, \
                delayline.store_behind(cluster, args.rtt):
            pg = measure(Path(tmp), args.rounds, args.seconds, pg=True)
        where = f"{args.rtt:g} ms round trip (delay line)" if args.rtt else "loopback"
        _print(f"PostgreSQL ({where}, fsync on, pipelined)", pg, pg=True)
    print(f"\nload average (1 min) after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
