"""What summing the workers' counters adds to a ``/metrics`` scrape (bastion.workermetrics).

    .venv/bin/python -m bench.metrics_collect [N]

Side by side in one run, N scrapes each, of counters shaped like a busy bastion's (3 login
results, 60 decision series, the byte counters, the upstream-connect histogram):

* one process (``--workers 1``): ``METRICS.render()``, nothing shared;
* W = 2 and 4 workers: the answering worker's ``collect()`` (its own snapshot written to
  its file, every other worker asked on its Unix socket, each of them taking a snapshot on
  its event loop and writing its file before answering) and ``render()`` of the sum.

Each worker runs its own event loop in its own thread of this process (the real ones are
processes; the socket and file work is the same).  Prints p50/p99 in ms and the ratio to
one process; no threshold (docs/SCALING.md keeps the figures).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

from bastion import workermetrics
from bastion.metrics import Metrics, render


def busy(seed: int) -> Metrics:
    m = Metrics()
    for result, n in (("ok", 900), ("refused", 40), ("error", 2)):
        m.inc("bastion_logins_total", n + seed, result=result)
    for i in range(60):
        m.inc("bastion_decisions_total", 10 + i, channel="exec",
              action=("allow", "deny", "review")[i % 3], rule=f"rule-{i}")
    m.inc("bastion_relayed_bytes_total", 123456789 + seed, direction="host_to_agent")
    m.inc("bastion_relayed_bytes_total", 2345678, direction="agent_to_host")
    for v in (0.004, 0.02, 0.3, 1.2) * 50:
        m.observe("bastion_upstream_connect_seconds", v)
    return m


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))]


def one_process(n: int) -> list[float]:
    m = busy(0)
    times = []
    for _ in range(n):
        t = time.perf_counter()
        m.render()
        times.append((time.perf_counter() - t) * 1000)
    return times


def workers(n: int, count: int, data_dir: Path) -> list[float]:
    workermetrics.clear(data_dir)
    stops: list[Callable[[], object]] = []
    threads: list[threading.Thread] = []
    started = threading.Barrier(count)

    def other(index: int) -> None:            # workers 2..count: a loop answering its socket
        async def run() -> None:
            share = workermetrics.Share(data_dir, index, busy(index))
            share.start()
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            stops.append(lambda: loop.call_soon_threadsafe(stop.set))
            started.wait()
            await stop.wait()
            await share.close()
        asyncio.run(run())

    for index in range(2, count + 1):
        threads.append(threading.Thread(target=other, args=(index,)))
        threads[-1].start()

    async def answering() -> list[float]:
        share = workermetrics.Share(data_dir, 1, busy(1))
        share.start()
        await asyncio.to_thread(started.wait)
        times = []
        for _ in range(n):
            t = time.perf_counter()
            total, stale = await workermetrics.collect(share)
            render(total)
            times.append((time.perf_counter() - t) * 1000)
            assert stale == 0
        await share.close()
        return times

    try:
        return asyncio.run(answering())
    finally:
        for stop in stops:
            stop()
        for th in threads:
            th.join()


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    print(f"load average at start: {os.getloadavg()[0]:.2f}; {n} scrapes each")
    rows = [("--workers 1 (render only)", one_process(n))]
    with tempfile.TemporaryDirectory() as tmp:
        for count in (2, 4):
            rows.append((f"--workers {count} (collect + render)", workers(n, count, Path(tmp))))
    base = statistics.median(rows[0][1])
    print(f"{'path':34} {'p50 ms':>8} {'p99 ms':>8} {'p50 / one process':>18}")
    for name, times in rows:
        p50 = statistics.median(times)
        print(f"{name:34} {p50:8.3f} {pct(times, 0.99):8.3f} {p50 / base:18.1f}")
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
