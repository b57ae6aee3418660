"""Full-text queries on 100k command lines: SQLite FTS5 and its PostgreSQL translation.

    .venv/bin/python -m bench.fts_near [ROWS] [--non-ascii]

One corpus (ROWS command lines, 100,000 by default, seeded: a program, then 3 to 12 words
drawn from a Zipf-like vocabulary of 3,000, so the query words below are in 5-30 % of the
lines each) goes into a SQLite index and a PostgreSQL store (private cluster on loopback,
tests/pgcluster.py) through bastion.recording.schema.connect; each query runs through the
same statement (``commands_fts MATCH ?``; on PostgreSQL bastion.store.translate and
bastion.store.ftsquery turn it into a tsquery on the GIN index and, for a phrase, ``^`` or
``NEAR``, the exact check on each line it found), median of 5 after one warm-up, with common words (in 16-70 % of the lines: many lines to check) and typical ones
(about 5 % each).  The NEAR rows at N 499/17/6/4 were the largest forms the translation
before migration 13 allowed (1,000 arrangements listed as phrase chains); those at N 1000 and
100000 it refused (printed "refused" when this runs against that code).  The hit counts must
agree (checked).  Prints ms and the PostgreSQL/SQLite ratio; no threshold.
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


def corpus(rows: int, non_ascii: bool = False) -> list[str]:
    """``non_ascii``: each line ends in ``déjà`` (PostgreSQL then folds its diacritics: the
    slower way to split a line, bastion.store.ftscheck)."""
    rnd = random.Random(20)
    vocab = COMMON + [f"w{i}" for i in range(3000 - len(COMMON))]
    weights = [1.0 / (k + 1) ** 1.1 for k in range(len(vocab))]
    out = []
    for _ in range(rows):
        words = rnd.choices(vocab, weights, k=rnd.randint(3, 12))
        out.append(" ".join([rnd.choice(PROGRAMS)] + words + (["déjà"] if non_ascii else [])))
    return out


FORMS = [
    ("{a} {b} {c}  (AND, for scale)", "{a} {b} {c}"),
    ("^{p}", "^{p}"),
    ('"{p} {a}" (a phrase)', '"{p} {a}"'),
    ("NEAR, 2 words, N 10", "NEAR({a} {b})"),
    ("NEAR, 3 words, N 10", "NEAR({a} {b} {c})"),
    ("NEAR, 2 words, N 499", "NEAR({a} {b}, 499)"),
    ("NEAR, 3 words, N 17", "NEAR({a} {b} {c}, 17)"),
    ("NEAR, 4 words, N 6", "NEAR({a} {b} {c} {d}, 6)"),
    ("NEAR, 5 words, N 4", "NEAR({a} {b} {c} {d} {e}, 4)"),
    ("NEAR, phrase + prefix, N 10", 'NEAR("{p} {a}" {b2}*)'),
    ("NEAR, 4 words, N 1000", "NEAR({a} {b} {c} {d}, 1000)"),
    ("NEAR, 5 words, N 1000", "NEAR({a} {b} {c} {d} {e}, 1000)"),
    ("NEAR, 2 words, N 100000", "NEAR({a} {b}, 100000)"),
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
    """(median seconds, hits); (nan, -1) when the query is refused."""
    sql = "SELECT count(*) FROM commands_fts WHERE commands_fts MATCH ?"
    try:
        n = conn.execute(sql, (query,)).fetchone()[0]      # warm-up
    except Exception as exc:                                # noqa: BLE001 - the older code refused
        if "syntax error" not in str(exc):
            raise
        return float("nan"), -1
    times = []
    for _ in range(5):
        t = time.perf_counter()
        conn.execute(sql, (query,)).fetchone()
        times.append(time.perf_counter() - t)
    return statistics.median(times), int(n)


def main() -> None:
    args = [a for a in sys.argv[1:] if a != "--non-ascii"]
    rows = int(args[0]) if args else 100_000
    non_ascii = "--non-ascii" in sys.argv[1:]
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from bastion.recording import schema
    from tests.pgcluster import start_cluster
    lines = corpus(rows, non_ascii)
    print(f"{rows} lines{' (each with a diacritic)' if non_ascii else ''}; load average at start: {os.getloadavg()[0]:.2f}")
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
        if pn < 0:
            print(f"{label:52} {ln:6d} {lt * 1e3:10.1f} {'refused':>9}")
            continue
        assert ln == pn, f"{q}: SQLite {ln} hits, PostgreSQL {pn}"
        print(f"{label:52} {ln:6d} {lt * 1e3:10.1f} {pt * 1e3:9.1f} {pt / lt:9.1f}")
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
