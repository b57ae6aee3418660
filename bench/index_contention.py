"""Write contention on one SQLite index shared by W writer processes (``serve --workers W``).

    .venv/bin/python -m bench.index_contention [N]

W = 1, 2 and 4 processes, each with its own connection (bastion.recording.schema.connect:
WAL, synchronous=NORMAL, the busy timeout), each running N recording-worker-like
transactions back to back (bench.store_latency's: ``BEGIN IMMEDIATE``, a session, a
channel and a command inserted, an exit status, one seal, ``COMMIT``) with ids in its own
residue (bastion.recording.shares), all into one index.  Each transaction's time includes
waiting for the write lock.  Back to back is the worst case: a real recording worker
commits once per batch, far less often.  Prints p50/p99 per transaction, the aggregate
transactions per second, and the load average; no threshold (docs/SCALING.md keeps the
figures).
"""

from __future__ import annotations

import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def _txn(conn: Any, sid: int) -> None:
    from bastion.recording import chain
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("INSERT INTO sessions (id, started, status, target) VALUES (?, ?, 'active', ?)",
                 (sid, time.time(), "web1"))
    conn.execute("INSERT INTO channels (id, session_id, kind, started, status) "
                 "VALUES (?, ?, 'exec', ?, 'open')", (sid, sid, time.time()))
    conn.execute("INSERT INTO commands (id, session_id, channel_id, time, line, action) "
                 "VALUES (?, ?, ?, ?, ?, 'allow')", (sid, sid, sid, time.time(), f"echo {sid}"))
    conn.execute("UPDATE commands SET exit_status = 0 WHERE id = ? AND seq IS NULL", (sid,))
    chain.seal(conn, "commands", sid)
    conn.execute("COMMIT")


def _writer(data_dir: str, worker: int, start: int, n: int, go: Any, out: Any) -> None:
    from bastion.recording import schema, shares
    conn = schema.connect(Path(data_dir))
    ids = shares.counter(start, worker)
    go.wait()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        _txn(conn, next(ids))
        times.append(time.perf_counter() - t0)
    conn.close()
    out.put(times)


def run(writers: int, n: int) -> tuple[list[float], float]:
    ctx = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        from bastion.recording import schema
        schema.connect(Path(tmp)).close()               # created and migrated once
        go, out = ctx.Event(), ctx.Queue()
        procs = [ctx.Process(target=_writer, args=(tmp, w, 1, n, go, out))
                 for w in range(1, writers + 1)]
        for p in procs:
            p.start()
        time.sleep(1.0)                                   # every writer connected
        t0 = time.perf_counter()
        go.set()
        times = [t for _ in procs for t in out.get()]
        wall = time.perf_counter() - t0
        for p in procs:
            p.join()
    return times, writers * n / wall


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    print(f"load average at start: {os.getloadavg()[0]:.2f}, {os.cpu_count()} cores, {n} "
          "transactions per writer")
    print("| writers | p50 ms | p99 ms | aggregate tx/s |\n|---:|---:|---:|---:|")
    for writers in (1, 2, 4):
        times, rate = run(writers, n)
        times.sort()
        p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
        print(f"| {writers} | {statistics.median(times) * 1e3:.2f} | {p99 * 1e3:.2f} | "
              f"{rate:.0f} |")
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
