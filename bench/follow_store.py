"""Following a live recording from another node (the store's copy) beside the local file.

    .venv/bin/python -m bench.follow_store [ROUNDS] [MIB]

The real recorder (bastion.recording.Recorder) records a session on a PostgreSQL store
(a private cluster on loopback, fsync on: tests/pgcluster.py); two followers run the loop
of ``sessions watch`` (bastion.recording.follow.LiveChannel, ``POLL`` between idle polls)
in threads: one in the recording's data dir (the file, as on the node recording it), one
in an empty data dir (another node: the store's copy).

1. Lag: ROUNDS times a line is recorded and flushed (written and committed); the time from
   the flush returning to each follower returning the line.  The agent sees a line only
   after the same commit, so this is how far the reviewer trails the agent, beyond it.
2. Idle poll: the time of one ``poll()`` when nothing is new (the next chunks, whether the
   channel ended), each follower.
3. Catch-up: a new follower of each kind reads and parses a whole recording from its
   start: MIB MiB of output (4 KiB text lines, 256 KiB rows in the store), and ROUNDS*20
   short lines each committed alone (one small row each, as an interactive session makes
   them); MB/s of recording bytes.

Prints the load average it ran under and file/store ratios; no threshold.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path


def _pct(values: list[float]) -> str:
    values = sorted(values)
    p99 = values[min(len(values) - 1, int(len(values) * 0.99))]
    return f"p50 {statistics.median(values) * 1e3:7.2f} ms  p99 {p99 * 1e3:7.2f} ms"


class _Watcher(threading.Thread):
    """A follower's loop (as the CLI's), stamping when each awaited text shows up."""

    def __init__(self, live) -> None:
        super().__init__(daemon=True)
        self.live = live
        self.seen: dict[str, float] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        from bastion.recording.follow import POLL
        while not self.stop.is_set():
            events, ended = self.live.poll()
            now = time.perf_counter()
            for ev in events:
                self.seen.setdefault(ev.text().strip(), now)
            if ended:
                return
            if not events:
                time.sleep(POLL)


def _lag(rounds: int, node_a: Path, node_b: Path) -> tuple[list[float], list[float], list[float],
                                                            list[float]]:
    from bastion.identity.principal import Principal
    from bastion.recording import Recorder, query
    from bastion.recording.follow import LiveChannel, live_channel
    rec = Recorder.open(node_a)
    s = rec.start_session(principal=Principal(subject="bench"), client="127.0.0.1:1",
                          target="web1", login="deploy")
    ch = s.open_channel("shell")
    ch.output(b"start\r\n")
    rec.flush()
    chan = live_channel(query.get_session(query.open_index(node_a), s.id))
    local, other = LiveChannel(node_a, chan), LiveChannel(node_b, chan)
    assert not local.from_store and other.from_store
    idle_local = [_timed(local.poll) for _ in range(50)]
    idle_other = [_timed(other.poll) for _ in range(50)]
    watchers = [_Watcher(local), _Watcher(other)]
    for w in watchers:
        w.start()
    lags: list[list[float]] = [[], []]
    for i in range(rounds):
        text = f"line-{i:05d}"
        ch.output(text.encode() + b"\r\n")
        rec.flush()
        flushed = time.perf_counter()
        deadline = flushed + 10
        while not all(text in w.seen for w in watchers) and time.perf_counter() < deadline:
            time.sleep(0.002)
        for k, w in enumerate(watchers):
            lags[k].append(w.seen[text] - flushed)
        time.sleep(0.05 + (i % 7) * 0.03)              # not in step with the polls
    ch.close(exit_status=0)
    s.close()
    rec.flush()
    for w in watchers:
        w.join(10)
    local.close()
    other.close()
    rec.close()
    return lags[0], lags[1], idle_local, idle_other


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _catch_up(node_a: Path, node_b: Path, *, mib: int = 0,
              small: int = 0) -> tuple[int, float, float, int]:
    """(bytes, file s, store s, rows in the store) of a new follower reading a whole
    recording: ``mib`` MiB of 4 KiB lines in one batch (256 KiB rows), or ``small`` lines of
    ~100 bytes each committed alone (one row each, as an interactive session makes them)."""
    from bastion.identity.principal import Principal
    from bastion.recording import Recorder, query, schema
    from bastion.recording.follow import LiveChannel, live_channel
    rec = Recorder.open(node_a)
    s = rec.start_session(principal=Principal(subject="bench"), client="127.0.0.1:1",
                          target="web1", login="deploy")
    ch = s.open_channel("exec", command="cat big")
    line = (b"abcdefghij" * 410)[:4095] + b"\n"
    for i in range(mib * 256):
        ch.output(line)
        if i % 256 == 255:
            rec.flush()                       # as the relay's high-water mark would pause it
    for i in range(small):
        ch.output(b"%05d " % i + b"x" * 40 + b"\r\n")
        rec.flush()
    ch.close(exit_status=0)
    s.close()
    rec.flush()
    rec.close()
    chan = live_channel(query.get_session(query.open_index(node_a), s.id), None)
    size = (node_a / chan["path"]).stat().st_size
    conn = schema.connect(node_a, readonly=True)
    (n_rows,) = conn.execute("SELECT COUNT(*) FROM recording_chunks WHERE channel_id = ?",
                             (chan["id"],)).fetchone()
    conn.close()
    rates = []
    for where in (node_a, node_b):
        live = LiveChannel(where, chan)
        t = time.perf_counter()
        ended = False
        while not ended:
            _, ended = live.poll()
        rates.append(time.perf_counter() - t)
        live.close()
    return size, rates[0], rates[1], int(n_rows)


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    mib = int(sys.argv[2]) if len(sys.argv) > 2 else 64
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.pgcluster import durable_store
    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    with durable_store():
        with tempfile.TemporaryDirectory() as tmp:
            a, b = Path(tmp) / "a", Path(tmp) / "b"
            lag_file, lag_store, idle_file, idle_store = _lag(rounds, a, b)
        with tempfile.TemporaryDirectory() as tmp:
            a, b = Path(tmp) / "a", Path(tmp) / "b"
            bulk = _catch_up(a, b, mib=mib)
        with tempfile.TemporaryDirectory() as tmp:
            a, b = Path(tmp) / "a", Path(tmp) / "b"
            small = _catch_up(a, b, small=rounds * 20)
    print(f"lag after commit  file (recording node):  {_pct(lag_file)}  (n={len(lag_file)})")
    print(f"lag after commit  store (another node):   {_pct(lag_store)}  "
          f"(p50 ratio store/file {statistics.median(lag_store) / statistics.median(lag_file):.2f})")
    print(f"idle poll         file:  {_pct(idle_file)}")
    print(f"idle poll         store: {_pct(idle_store)}")
    for what, (size, t_file, t_store, n_rows) in ((f"{mib} MiB bulk", bulk),
                                                  (f"{rounds * 20} short lines", small)):
        print(f"catch-up {what} ({size} B, {n_rows} rows)  file {t_file * 1e3:.0f} ms "
              f"({size / 1e6 / t_file:.1f} MB/s); store {t_store * 1e3:.0f} ms "
              f"({size / 1e6 / t_store:.1f} MB/s); store/file time {t_store / t_file:.2f}")
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
