"""Recording benchmarks: index insert rate, `commands search` latency, writer throughput, verify.

    .venv/bin/python -m bench.bench_recording            # 1,000,000 commands (aim: search < 200 ms)
    .venv/bin/python -m bench.bench_recording --quick    # 10,000 commands, for CI

Prints figures; never fails on time.  What it measures:

1. insert rate through the real API: ``ChannelRecording.command`` +
   ``command_result`` on the event-loop side, until the recording worker has
   committed everything (``Recorder.flush``);
2. seeding rate: executemany in one transaction (valid, sealed chain rows;
   FTS rebuilt once at the end) -- how the big index is built;
3. ``commands search`` latency (the library call the CLI makes) for common,
   rare, prefix and filtered queries over the seeded index: median / max;
4. recorder throughput: MB/s through ``ChannelRecording.output`` in 32 KiB
   chunks, text and binary, loop-side cost and end-to-end to disk;
5. ``bastion verify`` time over the whole index.

Recording on vs off through SSH is measured by the SSH benchmark, which owns that path.
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bastion.identity.principal import Principal
from bastion.recording import Recorder, chain, query, schema
from bastion.recording.verify import verify_index

VERBS = ["systemctl status", "systemctl restart", "journalctl -u", "ls -la", "cat", "tail -n 100", "grep -r",
         "df -h", "du -sh", "kubectl get pods -n", "docker ps", "rm -rf", "tar czf", "psql -c", "curl -s",
         "uptime", "free -m", "ps aux", "find / -name", "chmod 600"]
NOUNS = ["nginx", "postgres", "/var/log/syslog", "/etc/hosts", "app", "redis", "/tmp/build", "api",
         "worker", "/srv/data", "cron", "sshd", "/home/deploy", "kafka", "prometheus"]
TARGETS = [f"web{i}" for i in range(1, 21)] + [f"db{i}" for i in range(1, 6)]
ACTIONS = ["allow"] * 8 + ["deny", "review"]


class _Decision:
    def __init__(self, action):
        self.action, self.rule, self.reason, self.commands = action, "bench", "bench", ()


def _columns(conn: sqlite3.Connection, table: str) -> list[tuple[str, str]]:
    return [(r[1], r[2].upper()) for r in conn.execute(f"PRAGMA table_info({table})")]


def seed(data_dir: Path, n_commands: int, per_session: int = 50, seed_value: int = 7) -> tuple[float, str]:
    """Fill the index with n_commands sealed commands; returns (rows per second, a rare token)."""
    rng = random.Random(seed_value)
    conn = schema.connect(data_dir)
    cols = {t: _columns(conn, t) for t in chain.CHAINED_TABLES}
    conn.execute("DROP TRIGGER commands_fts_ai")          # FTS is rebuilt once at the end
    start = time.perf_counter()
    conn.execute("BEGIN IMMEDIATE")
    seq, prev = chain.head(conn)
    now = time.time() - 30 * 86400
    batches = {t: [] for t in chain.CHAINED_TABLES}
    n_sessions = (n_commands + per_session - 1) // per_session
    cmd_id = 0
    total_rows = 0
    rare = ""

    def seal(table: str, values: dict) -> None:
        nonlocal seq, prev, total_rows
        seq += 1
        row = {name: None for name, _ in cols[table]}
        row.update(values)
        row["seq"] = seq
        row.pop("hash", None)
        prev = chain.row_hash(prev, table, row)
        row["hash"] = prev
        batches[table].append(tuple(row[name] for name, _ in cols[table]))
        total_rows += 1

    def flush_batches() -> None:
        for table, rows in batches.items():
            if rows:
                marks = ",".join("?" * len(cols[table]))
                conn.executemany(f"INSERT INTO {table} VALUES ({marks})", rows)
                rows.clear()

    for sid in range(1, n_sessions + 1):
        started = now + sid * 40.0
        target = rng.choice(TARGETS)
        count = min(per_session, n_commands - cmd_id)
        for k in range(count):
            cmd_id += 1
            line = f"{rng.choice(VERBS)} {rng.choice(NOUNS)}"
            if rng.random() < 0.3:
                line += f" build-{rng.randrange(1_000_000)}"
                rare = rare or line.rsplit(" ", 1)[1]
            seal("commands", {"id": cmd_id, "session_id": sid, "channel_id": sid, "time": started + k * 0.5,
                              "offset": k * 0.5, "line": line, "commands": None, "action": rng.choice(ACTIONS),
                              "rule": "bench", "reason": "bench", "approver": None, "exit_status": 0})
        seal("channels", {"id": sid, "session_id": sid, "kind": "shell", "command": None, "term": "xterm",
                          "width": 80, "height": 24, "env": None, "started": started,
                          "ended": started + 30.0, "status": "closed", "exit_status": 0, "exit_signal": None,
                          "bytes_in": 100, "bytes_out": 1000, "truncated": 0, "path": None, "sha256": None})
        seal("sessions", {"id": sid, "started": started, "ended": started + 30.0, "status": "closed",
                          "reason": None, "principal_subject": f"oid-{sid % 50}", "principal_app_id": "app",
                          "principal_name": f"agent-{sid % 50}", "principal_roles": "[\"agents\"]",
                          "principal_json": None, "client": "10.0.0.1:22", "target": target,
                          "login": "deploy", "exit_status": 0, "bytes_in": 100, "bytes_out": 1000,
                          "truncated": 0})
        if len(batches["commands"]) >= 50_000:
            flush_batches()
    flush_batches()
    conn.execute("UPDATE chain_head SET seq = ?, hash = ? WHERE id = 1", (seq, prev))
    conn.execute("INSERT INTO commands_fts(commands_fts) VALUES ('rebuild')")
    conn.execute("COMMIT")
    conn.executescript("""CREATE TRIGGER commands_fts_ai AFTER INSERT ON commands BEGIN
        INSERT INTO commands_fts(rowid, line) VALUES (new.id, new.line); END;""")
    elapsed = time.perf_counter() - start
    conn.close()
    return total_rows / elapsed, rare


def bench_api_inserts(data_dir: Path, n: int) -> float:
    rec = Recorder.open(data_dir)
    try:
        s = rec.start_session(principal=Principal(subject="bench"), client="c", target="web1", login="deploy")
        ch = s.open_channel("shell")
        start = time.perf_counter()
        for i in range(n):
            cid = ch.command(f"systemctl status app-{i}", _Decision("allow"))
            ch.command_result(cid, 0)
        rec.flush(timeout=600)
        elapsed = time.perf_counter() - start
        ch.close()
        s.close()
    finally:
        rec.close()
    return n / elapsed


def bench_throughput(data_dir: Path, megabytes: int, binary: bool) -> tuple[float, float]:
    rec = Recorder.open(data_dir, max_bytes=4 * 1024 ** 3)
    rng = random.Random(1)
    chunk = (bytes(rng.getrandbits(8) for _ in range(32768)) if binary
             else (b"2024-05-01 12:00:00 INFO request served in 3 ms \x1b[32mOK\x1b[0m\r\n" * 600)[:32768])
    total = megabytes * 1024 * 1024
    try:
        s = rec.start_session(principal=Principal(subject="bench"), client="c", target="t", login="l")
        ch = s.open_channel("exec", command="cat")
        loop_time = 0.0
        start = time.perf_counter()
        sent = 0
        while sent < total:
            t0 = time.perf_counter()
            ch.output(chunk)
            loop_time += time.perf_counter() - t0
            sent += len(chunk)
            while ch.over_high_water():             # what the SSH layer does (await drain())
                time.sleep(0.001)
        ch.close()
        s.close()
        rec.flush(timeout=600)
        elapsed = time.perf_counter() - start
    finally:
        rec.close()
    mb = sent / 1024 / 1024
    return mb / elapsed, mb / loop_time


def bench_search(data_dir: Path, repeats: int, rare: str) -> list[tuple[str, float, float, int]]:
    db = query.open_index(data_dir)
    cases = [
        ("common words: 'systemctl restart'", dict(query="systemctl restart")),
        ("shell punctuation: 'rm -rf'", dict(query="rm -rf")),
        (f"rare token: '{rare}'", dict(query=rare)),
        ("prefix: 'journal*'", dict(query="journal*")),
        ("filtered: 'nginx' --target web3 --action deny", dict(query="nginx", target="web3", action="deny")),
        ("filtered: 'postgres' --principal agent-7 --since 7d",
         dict(query="postgres", principal="agent-7", since=time.time() - 7 * 86400)),
    ]
    results = []
    for label, kwargs in cases:
        text = kwargs.pop("query")
        times, found = [], 0
        for _ in range(repeats):
            t0 = time.perf_counter()
            found = len(query.search_commands(db, text, limit=50, **kwargs))
            times.append((time.perf_counter() - t0) * 1000)
        results.append((label, statistics.median(times), max(times), found))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10,000 commands instead of 1,000,000")
    parser.add_argument("--commands", type=int, help="seed this many commands")
    parser.add_argument("--no-verify", action="store_true", help="skip timing bastion verify")
    parser.add_argument("--dir", type=Path, help="work here instead of a temp dir (kept)")
    args = parser.parse_args(argv)
    n = args.commands or (10_000 if args.quick else 1_000_000)
    api_n = 5_000 if args.quick else 50_000
    mb = 16 if args.quick else 256
    with tempfile.TemporaryDirectory(prefix="bastion-bench-") as tmp:
        base = args.dir or Path(tmp)
        print(f"bench_recording: {n:,} commands, work dir {base}")
        rate = bench_api_inserts(base / "api", api_n)
        print(f"  index insert rate (Recorder API, {api_n:,} commands + results, committed): {rate:,.0f} commands/s")
        for binary in (False, True):
            e2e, loop = bench_throughput(base / f"tp-{int(binary)}", mb, binary)
            kind = "binary (base64)" if binary else "text"
            print(f"  recorder throughput, {kind:15s}: {e2e:7.1f} MB/s to disk; loop-side cost "
                  f"{loop:,.0f} MB/s ({mb} MiB in 32 KiB chunks)")
        big = base / "big"
        big.mkdir(parents=True, exist_ok=True)
        rows_per_s, rare = seed(big, n)
        size = sum(f.stat().st_size for f in big.iterdir() if f.is_file())
        print(f"  seeding (executemany, one transaction, chained): {rows_per_s:,.0f} rows/s; "
              f"index {size / 1024 / 1024:,.0f} MiB")
        print(f"  commands search over {n:,} commands (limit 50, median / max of 5):")
        worst = 0.0
        for label, median, top, found in bench_search(big, 5, rare):
            worst = max(worst, median)
            print(f"    {label:55s} {median:8.1f} ms / {top:8.1f} ms  ({found} hits)")
        print(f"  worst median search latency: {worst:.1f} ms (aim: < 200 ms)")
        if not args.no_verify:
            t0 = time.perf_counter()
            report = verify_index(big, check_files=False)
            took = time.perf_counter() - t0
            print(f"  bastion verify over {report.rows:,} rows: {took:.1f} s "
                  f"({report.rows / took:,.0f} rows/s), ok={report.ok}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
