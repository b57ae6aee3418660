"""The index's write transaction on SQLite and PostgreSQL, and an approval's NOTIFY wake.

    .venv/bin/python -m bench.store_latency [N]

1. One recording-worker-like transaction (``BEGIN IMMEDIATE``; a session, a channel and a
   command inserted; the command's exit status; the command sealed into the chain; ``COMMIT``)
   N times on each backend through bastion.recording.schema.connect: SQLite in a temp dir
   (WAL, synchronous=NORMAL), PostgreSQL in a private cluster on loopback with fsync on
   (tests/pgcluster.py).  Prints p50/p99 in ms.
2. The wake of a waiting broker: a Listener (bastion.store.notify) waits; another connection
   ends a pending approval request (``UPDATE ... status``, its trigger NOTIFYs); the time
   from the answering call's start (so its UPDATE and COMMIT are included) to the listener
   waking.  N/10 rounds.  SQLite has no wake:
   its broker polls every 0.2 s (0.1 s on average, 0.2 s at worst).

3. Recording bytes: 64 MiB written to a file, and inserted into the store's
   ``recording_chunks`` as the worker does (MB/s each).

Prints the load average it ran under; no threshold (docs/SCALING.md keeps the figures).
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path


def _txn(conn, i: int) -> None:
    from bastion.recording import chain
    base = 10_000_000 + i
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("INSERT INTO sessions (id, started, status, target) VALUES (?, ?, 'active', ?)",
                 (base, time.time(), "web1"))
    conn.execute("INSERT INTO channels (id, session_id, kind, started, status) "
                 "VALUES (?, ?, 'exec', ?, 'open')", (base, base, time.time()))
    conn.execute("INSERT INTO commands (id, session_id, channel_id, time, line, action) "
                 "VALUES (?, ?, ?, ?, ?, 'allow')", (base, base, base, time.time(), f"echo {i}"))
    conn.execute("UPDATE commands SET exit_status = 0 WHERE id = ? AND seq IS NULL", (base,))
    chain.seal(conn, "commands", base)
    conn.execute("COMMIT")


def _pct(values: list[float]) -> str:
    values = sorted(values)
    p99 = values[min(len(values) - 1, int(len(values) * 0.99))]
    return f"p50 {statistics.median(values) * 1e3:.2f} ms  p99 {p99 * 1e3:.2f} ms  (n={len(values)})"


def _measure(data_dir: Path, n: int) -> list[float]:
    from bastion.recording import schema
    conn = schema.connect(data_dir)
    for i in range(20):                     # warm-up
        _txn(conn, i)
    out = []
    for i in range(20, 20 + n):
        t = time.perf_counter()
        _txn(conn, i)
        out.append(time.perf_counter() - t)
    conn.close()
    return out


def _wake(rounds: int) -> list[float]:
    from bastion.approvals.store import ApprovalStore
    from bastion.identity.principal import Principal
    from bastion.policy import Action, Decision
    from bastion.store import location
    from bastion.store.notify import Listener

    tmp = Path(tempfile.mkdtemp())
    store = ApprovalStore.open(tmp)
    listener = Listener(location.current())
    listener.wait(0.01)                      # connect and LISTEN
    out = []
    for _ in range(rounds):
        rec = store.create(node="bench", principal=Principal(subject="s"), target="web1",
                           login="root", line="touch x",
                           decision=Decision(Action.REVIEW, "r", "why"), session_id=None,
                           command_id=None, channel="exec", timeout=60)
        while listener.wait(0.05):           # drain
            pass
        woke = threading.Event()
        stamp: list[float] = []

        def waiter(stamp: list[float] = stamp, woke: threading.Event = woke) -> None:
            if listener.wait(5):
                stamp.append(time.perf_counter())
            woke.set()
        th = threading.Thread(target=waiter)
        th.start()
        time.sleep(0.02)                     # the waiter is blocked in wait()
        committed = time.perf_counter()      # the answer starts (UPDATE + COMMIT + NOTIFY)
        store.finish(rec.id, "cancelled", "bench")
        woke.wait(10)
        th.join()
        if stamp:
            out.append(max(0.0, stamp[0] - committed))
    listener.close()
    store.close()
    return out


def _chunk_rate(data_dir: Path, mib: int = 64) -> tuple[float, float]:
    """MB/s of recording bytes: to a file (os.write, fsync at the end) and, on top, into the
    store as the worker does (256 KiB pieces, one commit per 1 MiB)."""
    from bastion.recording import schema
    from bastion.store import chunks
    piece = os.urandom(256 * 1024)
    path = data_dir / "bench.cast"
    t = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    for _ in range(mib * 4):
        os.write(fd, piece)
    os.fsync(fd)
    os.close(fd)
    file_rate = mib * 1.048576 / (time.perf_counter() - t)
    conn = schema.connect(data_dir)
    t = time.perf_counter()
    for i in range(mib):
        conn.execute("BEGIN IMMEDIATE")
        chunks.insert(conn, [(42, (i * 4 + k) * len(piece), piece) for k in range(4)])
        conn.execute("COMMIT")
    store_rate = mib * 1.048576 / (time.perf_counter() - t)
    conn.close()
    return file_rate, store_rate


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.pgcluster import durable_store
    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.pop("BASTION_STORE_URL", None)
        lite = _measure(Path(tmp), n)
    with durable_store() as cluster:
        print(f"PostgreSQL fsync: {cluster.psql('SHOW fsync')}")
        with tempfile.TemporaryDirectory() as tmp:
            pg = _measure(Path(tmp), n)
        wake = _wake(max(10, n // 10))
        with tempfile.TemporaryDirectory() as tmp:
            file_rate, store_rate = _chunk_rate(Path(tmp))
    print(f"index write txn  SQLite (WAL, synchronous=NORMAL): {_pct(lite)}")
    print(f"index write txn  PostgreSQL (loopback, fsync on):   {_pct(pg)}")
    print(f"approval wake    PostgreSQL NOTIFY -> listener:      {_pct(wake)}")
    print("approval wake    SQLite poll: every 0.2 s (0.1 s mean)")
    print(f"recording bytes  file {file_rate:.0f} MB/s; into the store {store_rate:.0f} MB/s "
          "(256 KiB rows, a commit per MiB)")
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
