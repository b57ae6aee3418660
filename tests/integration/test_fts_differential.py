"""FTS5 on SQLite and its translation on PostgreSQL find the same lines.

One corpus of command lines goes into a real SQLite index (FTS5, unicode61) and a real
PostgreSQL store (private cluster; the expression index of bastion.store.pgschema); every
query of the table runs on both through the same statement (``commands_fts MATCH ?``, which
bastion.store.translate rewrites on PostgreSQL) and the id sets must be equal.  The corpus
has the near misses a wrong translation would get wrong: two words at every distance from 0
to 13 in both orders, three words at every pair of gaps, a phrase beside a word, overlapping
phrases, the word first or second on the line, diacritics."""

from __future__ import annotations

import sqlite3

import pytest

from bastion.recording import schema
from bastion.store import ftsquery
from bastion.store.errors import StoreOperationalError

pytestmark = pytest.mark.integration


def _fill(n: int) -> str:
    return " ".join(f"f{i}" for i in range(n))


def _corpus() -> list[str]:
    lines = [
        "sudo systemctl restart nginx", "systemctl sudo restart", "  ./sudo run now",
        "echo sudo systemctl", "Sudo-edit /etc/hosts", "sudoers check", "sudo",
        "systemctl restart nginx now", "restart systemctl nginx", "systemctl f0 restart nginx",
        "nginx f0 f1 systemctl restart", "deploy app", "deployment f0 app", "redeploy app",
        "app f0 f1 deploy", "one two", "one two two", "two one", "one f0 two two", "two",
        "naïve café", "cafe f0 naive", "crème brûlée f0 f1 naïve", "Naïve first",
        "big cat", "cat big dog", "big f0 cat dog", "tail -f /var/log/syslog | grep -i error",
        "it's fine", "rm -rf /tmp/build_cache", "alpha", "beta alpha beta",
    ]
    for d in range(14):                       # alpha .. beta, d tokens between, both orders
        lines.append(f"alpha {_fill(d)} beta".replace("  ", " "))
        lines.append(f"beta {_fill(d)} alpha".replace("  ", " "))
    for g1 in range(7):                       # red, green, blue with every pair of gaps
        for g2 in range(7):
            lines.append(" ".join(filter(None, ["red", _fill(g1), "green", _fill(g2), "blue"])))
            lines.append(" ".join(filter(None, ["blue", _fill(g1), "red", _fill(g2), "green"])))
    for d in range(13):                       # a two-word phrase and a word
        lines.append(" ".join(filter(None, ["big cat", _fill(d), "dog"])))
        lines.append(" ".join(filter(None, ["dog", _fill(d), "big cat"])))
    seen: set[str] = set()
    return [x for x in lines if not (x in seen or seen.add(x))]


QUERIES = [
    # NEAR: N 0/1/2/10 and the default, both orders, near misses at N+1
    "NEAR(alpha beta, 0)", "NEAR(alpha beta, 1)", "NEAR(alpha beta, 2)", "NEAR(beta alpha, 2)",
    "NEAR(alpha beta, 10)", "NEAR(alpha beta)", "NEAR(alpha beta, 11)", "NEAR(alpha beta,00)",
    "NEAR(red green blue, 0)", "NEAR(red green blue, 1)", "NEAR(red green blue, 2)",
    "NEAR(red green blue, 5)", "NEAR(red green blue)", "NEAR(blue red, 3)",
    # phrases and prefixes inside NEAR, overlaps, a word twice
    'NEAR("big cat" dog, 0)', 'NEAR("big cat" dog, 1)', 'NEAR("big cat" dog, 2)',
    'NEAR(dog "big cat", 10)', 'NEAR("systemctl restart" nginx, 0)',
    'NEAR("systemctl restart" nginx, 1)', "NEAR(deploy* app, 0)", "NEAR(dep* app*, 2)",
    'NEAR("big ca"* dog, 1)', 'NEAR("one two" two, 0)', "NEAR(two two, 0)", "NEAR(one one)",
    "NEAR(big + cat dog, 0)", 'NEAR("" alpha beta, 0)', "NEAR(alpha)", 'NEAR(red "green blue")',
    "NEAR(naïve café, 0)", "NEAR(cafe naive, 1)",
    # ^: alone, with a phrase, with a prefix, after a column filter, negated
    "^sudo", "^sud*", '^"sudo systemctl"', '^"sudo sys"*', "^systemctl", "^restart",
    "line:^sudo", "^sudo OR ^echo", "^sudo NOT restart", "sudo NOT ^sudo", "^naive", "^cafe",
    "^ alpha", "^alpha beta", "^big + cat", "^run", "^two",
    # column filters
    "line:alpha", "{line}:alpha", "LINE:beta", '"line":beta', "{line line}:red",
    "-line:alpha OR beta", "- {line}: alpha OR red", "line:(alpha OR red)",
    "line:NEAR(alpha beta, 0)", "alpha AND -line:beta", "alpha NOT -line:beta",
    '-line:"" alpha', "-line:alpha NOT beta", "line:(alpha OR -line:beta)",
    # AND / OR / NOT, terms side by side, parentheses, +, empty phrases
    "alpha NOT beta f0", "alpha OR red blue", "alpha AND beta OR red", "alpha beta NOT f1",
    "alpha NOT f0 NOT f1", "(alpha OR red) AND f3", "NEAR(alpha beta, 1) OR NEAR(red blue, 0)",
    "NEAR(alpha beta, 2) NOT f0", "alpha NOT NEAR(alpha beta, 1)", "beta NOT NEAR(beta alpha)",
    "f5 NOT (NEAR(alpha beta, 7) OR red)", "NEAR(red green, 0) AND NEAR(green blue, 0)",
    '"" alpha', '"" OR alpha', 'alpha AND ""', "sudo + sys*", '"big" + cat', "one + two*",
    # diacritics
    "naïve", '"crème brûlée"', "NAÏVE", "brul*",
]

EMPTY = {"NEAR(red green blue, 0)", "^run", "alpha AND -line:beta", "-line:alpha NOT beta", 'alpha AND ""'}   # FTS5 finds nothing


@pytest.fixture
def both(tmp_path, pg_store, monkeypatch):
    """(SQLite connection, PostgreSQL connection), the corpus in both (ids 1..n)."""
    lines = _corpus()
    url = pg_store["BASTION_STORE_URL"]
    monkeypatch.delenv("BASTION_STORE_URL")
    (tmp_path / "lite").mkdir()
    lite = schema.connect(tmp_path / "lite")
    monkeypatch.setenv("BASTION_STORE_URL", url)
    pg = schema.connect(tmp_path / "pg")
    for conn in (lite, pg):
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO sessions (id, started, status, target) "
                     "VALUES (1, 0, 'closed', 'web1')")
        for i, line in enumerate(lines, 1):
            conn.execute("INSERT INTO commands (id, session_id, time, line, action) "
                         "VALUES (?, 1, ?, ?, 'allow')", (i, float(i), line))
        conn.execute("COMMIT")
    yield lite, pg, lines
    lite.close()
    pg.close()


def _ids(conn, query: str) -> set[int]:
    return {r[0] for r in conn.execute(
        "SELECT rowid FROM commands_fts WHERE commands_fts MATCH ?", (query,)).fetchall()}


def test_sqlite_and_postgresql_find_the_same_lines(both):
    lite, pg, lines = both
    wrong = []
    for query in QUERIES:
        want, got = _ids(lite, query), _ids(pg, query)
        if want != got:
            wrong.append(f"{query!r}: only SQLite {sorted(lines[i - 1] for i in want - got)}, "
                         f"only PostgreSQL {sorted(lines[i - 1] for i in got - want)}")
        # a query that finds nothing, or everything, would not tell a translation apart
        if (not want) != (query in EMPTY) or len(want) == len(lines):
            wrong.append(f"{query!r}: SQLite finds {len(want)} lines")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("query", ["x:alpha", "{line x}:alpha", "NEAR(^alpha beta)",
                                   "alpha + ^beta", "NEAR(alpha beta, x)", "NEAR(alpha beta,",
                                   "line:", "NEAR(alpha OR beta)", "^", "alpha OR", "(alpha", "NOT alpha"])
def test_both_refuse_what_fts5_refuses(both, query):
    lite, pg, _ = both
    with pytest.raises(sqlite3.OperationalError):
        _ids(lite, query)
    with pytest.raises(StoreOperationalError, match="fts5: syntax error"):
        _ids(pg, query)


def test_a_near_too_large_to_expand_is_refused_with_what_to_do(both):
    lite, pg, _ = both
    query = "NEAR(alpha beta red green, 10)"
    assert _ids(lite, query) == set()             # SQLite answers; PostgreSQL refuses
    with pytest.raises(StoreOperationalError, match="use fewer phrases or a smaller N"):
        _ids(pg, query)
    assert ftsquery.MAX_NEAR_LAYOUTS >= 330       # 3 words at FTS5's default N fit
    assert _ids(pg, "NEAR(red green blue, 10)") == _ids(lite, "NEAR(red green blue, 10)")


def test_parameters_after_the_match_keep_their_places(both):
    # on PostgreSQL the MATCH parameter is used three times (translate.match_sql): a
    # positional one is repeated, and the parameters after it must still line up
    lite, pg, _ = both
    sql = "SELECT rowid FROM commands_fts WHERE rowid > ? AND commands_fts MATCH ? AND rowid < ?"
    for query in ("NEAR(alpha beta, 3)", "^alpha", "alpha"):
        want = {r[0] for r in lite.execute(sql, (20, query, 60)).fetchall()}
        assert want and want == {r[0] for r in pg.execute(sql, (20, query, 60)).fetchall()}
