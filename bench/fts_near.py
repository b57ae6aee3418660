"""Full-text queries on 100k command lines: SQLite FTS5 and its PostgreSQL translation.

    .venv/bin/python -m bench.fts_near [ROWS]

One corpus (ROWS command lines, 100,000 by default, seeded: a program, then 3 to 12 words
drawn from a Zipf-like vocabulary of 3,000, so the query words below are in 5-30 % of the
lines each) goes into a SQLite index and a PostgreSQL store (private cluster on loopback,
tests/pgcluster.py) through bastion.recording.schema.connect; each query runs through the
same statement (``commands_fts MATCH ?``; on PostgreSQL bastion.store.translate and
bastion.store.ftsquery turn it into a tsquery on the GIN index), median of 5 after one
warm-up, with common words (in 16-70 % of the lines: many lines to check) and typical ones
(about 5 % each).  The NEAR rows are the largest forms bastion.store.ftsquery allows (close to
MAX_NEAR_LAYOUTS arrangements); the hit counts must agree (checked).  Prints ms and the
PostgreSQL/SQLite ratio; no threshold.
"""

from __future__ import annotations

import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

PROGRAMS = ["sudo", "systemctl", "journalctl", "tail", "grep", "kubectl", "docker", "cat",
            "ls", "echo", "rm", "cp", "find", "git", "curl", "ps", "df", "du", "tar", "ssh"]
COMMON = ["restart", "status", "nginx", "log", "var", "etc", "service", "tmp", "error",
          "config", "app", "deploy", "user", "f", "n", "x"]


def corpus(rows: int) -> list[str]:
    rnd = random.Random(20)
    vocab = COMMON + [f"w{i}" for i in range(3000 - len(COMMON))]
    weights = [1.0 / (k + 1) ** 1.1 for k in range(len(vocab))]
    out = []
    for _ in range(rows):
        words = rnd.choices(vocab, weights, k=rnd.randint(3, 12))
        out.append(" ".join([rnd.choice(PROGRAMS)] + words))
    return out


FORMS = [
    ("{a} {b} {c}  (AND, for scale)", "{a} {b} {c}"),
    ("^{p}", "^{p}"),
    ("NEAR, 2 words, N 10", "NEAR({a} {b})"),
    ("NEAR, 3 words, N 10 (330 arrangements)", "NEAR({a} {b} {c})"),
    ("NEAR, 2 words, N 499 (1,000)", "NEAR({a} {b}, 499)"),
    ("NEAR, 3 words, N 17 (918)", "NEAR({a} {b} {c}, 17)"),
    ("NEAR, 4 words, N 6 (840)", "NEAR({a} {b} {c} {d}, 6)"),
    ("NEAR, 5 words, N 4 (600)", "NEAR({a} {b} {c} {d} {e}, 4)"),
    ("NEAR, phrase + prefix, N 10", 'NEAR("{p} {a}" {b2}*)'),
]
WORDS = {   # common: in 70, 31, 23, 16 % of the lines; typical: about 5 % each
    "common": dict(a="restart", b="nginx", c="log", d="etc", e="service", p="systemctl",
                   b2="ngi"),
    "typical": dict(a="w0", b="w1", c="w2", d="w3", e="w4", p="sudo", b2="w1"),
}
QUERIES = [(f"{kind}: {label.format(**w)}", form.format(**w))
           for kind, w in WORDS.items() for label, form in FORMS]


def _fill(conn, lines: list[str], postgres: bool) -> None:
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("INSERT INTO sessions (id, started, status, target) VALUES (1, 0, 'closed', 'w')")
    rows = [(i, 1, float(i), line, "allow") for i, line in enumerate(lines, 1)]
    if postgres:
        raw = conn._conn
        with raw.cursor().copy("COPY commands (id, session_id, time, line, action) "
                               "FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
    else:
        conn.executemany("INSERT INTO commands (id, session_id, time, line, action) "
                         "VALUES (?, ?, ?, ?, ?)", rows)
    conn.execute("COMMIT")
    if postgres:
        conn.execute("ANALYZE commands")


def _time(conn, query: str) -> tuple[float, int]:
    sql = "SELECT count(*) FROM commands_fts WHERE commands_fts MATCH ?"
    n = conn.execute(sql, (query,)).fetchone()[0]          # warm-up
    times = []
    for _ in range(5):
        t = time.perf_counter()
        conn.execute(sql, (query,)).fetchone()
        times.append(time.perf_counter() - t)
    return statistics.median(times), int(n)


def main() -> None:
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from bastion.recording import schema
    from tests.pgcluster import start_cluster
    lines = corpus(rows)
    print(f"{rows} lines; load average at start: {os.getloadavg()[0]:.2f}")
    results: dict[str, list[tuple[float, int]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.pop("BASTION_STORE_URL", None)
        lite = schema.connect(Path(tmp))
        _fill(lite, lines, postgres=False)
        for _, q in QUERIES:
            results[q] = [_time(lite, q)]
        lite.close()
    cluster = start_cluster()
    try:
        os.environ.update(cluster.store_env(node="bench"))
        with tempfile.TemporaryDirectory() as tmp:
            pg = schema.connect(Path(tmp))
            t = time.perf_counter()
            _fill(pg, lines, postgres=True)
            print(f"PostgreSQL: {rows} rows copied and indexed in {time.perf_counter() - t:.1f} s")
            for _, q in QUERIES:
                results[q].append(_time(pg, q))
            pg.close()
    finally:
        cluster.destroy()
    print(f"{'query':52} {'hits':>6} {'SQLite ms':>10} {'PG ms':>9} {'PG/SQLite':>9}")
    for label, q in QUERIES:
        (lt, ln), (pt, pn) = results[q]
        assert ln == pn, f"{q}: SQLite {ln} hits, PostgreSQL {pn}"
        print(f"{label:52} {ln:6d} {lt * 1e3:10.1f} {pt * 1e3:9.1f} {pt / lt:9.1f}")
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
