"""Several recording workers sharing one PostgreSQL store a round trip away: how many
sessions they record together, with the chain's lock taken at BEGIN or at each batch's end.

    .venv/bin/python -m bench.chain_lock [--writers 1,2,4] [--rtt 1] [--rounds 3] [--seconds 3]

Every node's recording worker writes its batches under one lock, the hash chain's (docs/
SCALING.md, "The hash chain").  Taken at a batch's BEGIN, the lock is held for every round
trip of the batch (each guarded operation's savepoint, each seal read back); taken at the
batch's end (``Applier._locked_db``, bastion.recording.chain ``seal_deferred``), for the last
two.  This benchmark runs ``--writers`` processes at once, each a real
:class:`bastion.recording.writer.Applier` on its own pipelined connection (as ``bastion
serve``'s worker runs it) and its own data dir and ids (as separate nodes have), writing
one exec session per batch (bench.savepoints' ``exec`` shape: start, channel, command,
output, exit status, closes) for ``--seconds``; the two ways of locking alternate round by
round (``Applier.late_lock``).  PostgreSQL: a private cluster, fsync on (tests/pgcluster.py),
behind bench.delayline with ``--rtt`` (a database on another host).

Prints, per number of writers and way: exec sessions recorded per second by all writers
together (median over rounds), and the round trips (syncs) one batch waited for.  At the end
``verify`` checks the one chain every writer joined.  No thresholds.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

WAYS = ("begin", "end")          # where a batch takes the chain's lock
IDS_PER_RUN = 10_000_000


def _writer(data_dir: str, late: bool, first_id: int, start_at: float, seconds: float,
            out: Any) -> None:
    from bastion.recording import schema
    from bastion.recording.writer import Applier
    from bastion.store import pipeline
    from bench import savepoints

    conn = schema.connect(Path(data_dir))
    conn.pipelined = True
    applier = Applier(conn, Path(data_dir), 64 * 1024 * 1024, lambda event: None)
    applier.late_lock = late
    ids = savepoints.Ids()
    ids.n = first_id
    syncs = [0]
    sync = pipeline.Pipe.sync

    def counted(self: Any) -> None:
        syncs[0] += 1
        sync(self)

    pipeline.Pipe.sync = counted            # type: ignore[method-assign]
    shape = savepoints.shapes()["exec"]
    while time.time() < start_at:
        time.sleep(0.001)
    # a writer that got here late (a loaded machine) still runs one batch and reports the
    # time it ran: its rate is real, never a 0 from starting after the round ended
    began = time.time()
    end = max(start_at + seconds, began)
    batches = 0
    syncs[0] = 0
    while batches == 0 or time.time() < end:
        _, todo, _ = shape(ids)           # 20 sessions, one batch each
        for batch in todo:
            savepoints._run(applier, [batch])
            batches += 1
            if time.time() >= end:
                break
    elapsed = time.time() - began
    conn.close()
    out.put((batches, syncs[0], elapsed))


def _round(root: Path, writers: int, late: bool, run: int, seconds: float) -> tuple[float, float]:
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    start_at = time.time() + 1.0
    procs = []
    for k in range(writers):
        data_dir = root / f"w{k}"
        data_dir.mkdir(exist_ok=True)
        first = (run * 8 + k + 1) * IDS_PER_RUN
        procs.append(ctx.Process(target=_writer, args=(str(data_dir), late, first, start_at,
                                                       seconds, out)))
    for p in procs:
        p.start()
    results = [out.get(timeout=seconds + 120) for _ in procs]
    for p in procs:
        p.join()
    batches = sum(b for b, _, _ in results)
    syncs = sum(s for _, s, _ in results)
    return sum(b / max(t, 1e-6) for b, _, t in results), syncs / max(batches, 1)


def measure(root: Path, writer_counts: list[int], rounds: int, seconds: float) -> dict[str, Any]:
    results: dict[str, Any] = {}
    run = 0
    for writers in writer_counts:
        samples: dict[str, list[tuple[float, float]]] = {w: [] for w in WAYS}
        for r in range(rounds):
            for way in (WAYS if r % 2 == 0 else WAYS[::-1]):
                samples[way].append(_round(root, writers, way == "end", run, seconds))
                run += 1
        results[str(writers)] = {
            way: {"sessions_per_s": round(statistics.median(s[0] for s in samples[way]), 1),
                  "syncs_per_batch": round(statistics.median(s[1] for s in samples[way]), 2),
                  "rounds": [round(s[0], 1) for s in samples[way]]}
            for way in WAYS}
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chain_lock", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--writers", default="1,2,4", help="numbers of writers, comma-separated")
    parser.add_argument("--rtt", type=float, default=1.0, metavar="MS",
                        help="round trip to PostgreSQL (bench.delayline; 0: loopback)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per way (alternating)")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of a round")
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    from bench import delayline
    from tests.pgcluster import durable_store

    counts = [int(n) for n in args.writers.split(",")]
    load0 = os.getloadavg()[0]
    with durable_store() as cluster, tempfile.TemporaryDirectory() as tmp, \
            delayline.store_behind(cluster, args.rtt):
        results = measure(Path(tmp), counts, args.rounds, args.seconds)
        from bastion.recording.verify import verify_index
        report = verify_index(Path(tmp) / "w0", check_files=False)
    print(f"PostgreSQL {args.rtt:g} ms away; exec sessions recorded per second, all writers "
          f"together (median of {args.rounds}); round trips per batch")
    print(f"  {'writers':>7}  {'lock at BEGIN':>14}  {'lock at the end':>16}  {'ratio':>6}")
    for writers, by in results.items():
        b, e = by["begin"], by["end"]
        print(f"  {writers:>7}  {b['sessions_per_s']:8.1f} ({b['syncs_per_batch']:4.1f})  "
              f"{e['sessions_per_s']:10.1f} ({e['syncs_per_batch']:4.1f})  "
              f"{e['sessions_per_s'] / max(b['sessions_per_s'], 1e-9):6.2f}")
    print(f"verify: {'ok' if report.ok else report.problems}; load average (1 min) "
          f"{load0:.2f} -> {os.getloadavg()[0]:.2f}")
    if args.out:
        import json
        args.out.write_text(json.dumps({"rtt_ms": args.rtt, "rounds": args.rounds,
                                        "seconds": args.seconds, "results": results,
                                        "verify_ok": report.ok}, indent=1) + "\n")
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
