"""FTS5 on SQLite and its translation on PostgreSQL find the same lines.

One corpus of command lines goes into a real SQLite index (FTS5, unicode61) and a real
PostgreSQL store (private cluster; the expression index of bastion.store.pgschema); every
query of the table runs on both through the same statement (``commands_fts MATCH ?``, which
bastion.store.translate rewrites on PostgreSQL) and the id sets must be equal.  The corpus
has the near misses a wrong translation would get wrong: two words at every distance from 0
to 13 in both orders, three words at every pair of gaps, a phrase beside a word, overlapping
phrases, the word first or second on the line, diacritics; NEAR groups of up to 6 phrases
spread over 1,000 tokens; and lines tsvector cannot hold exactly (20,003 tokens, so
positions past 16383; a word 300 times, past the 255 positions it keeps; words of 3,000
bytes, which it drops, moving the words after them).  PostgreSQL finds them exactly
(bastion.store.ftscheck).  Then seeded random NEAR, phrase and ^ queries over random lines
of a few words that prefix each other."""

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
    lines += _past_tsvector() + _near_far()
    seen: set[str] = set()
    return [x for x in lines if not (x in seen or seen.add(x))]


def _gap(n: int, start: int = 0) -> list[str]:
    return [f"g{i}" for i in range(start, start + n)]


def _past_tsvector() -> list[str]:
    """Lines tsvector cannot hold exactly: positions stop at 16383, a word keeps 255 of them,
    a word of 2,047 bytes or more is dropped (and the words after it move up one)."""
    deep = ["deep"] + [f"z{i}" for i in range(20000)] + ["needle", "haystack"]   # 20,003 tokens
    return [
        " ".join(deep),                                   # deep 0, z_i i + 1, needle 20001
        "needle f0 haystack",
        "rep " * 300 + "after",                           # the phrase after the 300th rep
        "rep " * 270 + "mid " + "rep " * 30,
        "echo " + "rep " * 300 + "tail",
        "pre " + "k" * 3000 + " post",                    # 3,000 bytes: tsvector drops it
        "pre " + "k" * 2999 + "j post",
        "post pre " + "k" * 600,                          # a word indexed whole (< 2,047)
        "mid " + "m" * 600 + " end",
        "caf" + "é" * 1100 + " x",                        # 2,203 bytes, 1,103 characters
    ]


def _near_far() -> list[str]:
    """Six words 200 tokens apart (span 1,000), in order, reversed, and with one far off."""
    six = ["sa", "sb", "sc", "sd", "se", "sf"]
    spread = lambda words, gap: " ".join(   # noqa: E731
        w + " " + " ".join(_gap(gap, 1000 * k)) for k, w in enumerate(words)).strip()
    return [spread(six, 199), spread(six[::-1], 199), spread(six[:5], 199) + " " +
            " ".join(_gap(900, 9000)) + " sf", "sa g0 sb sc g1 sd se sf"]


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
    # NEAR with 4-6 phrases and large N, prefixes and phrases in it
    "NEAR(sa sb sc sd se sf, 1000)", "NEAR(sa sb sc sd se sf, 999)",
    "NEAR(sa sb sc sd se sf, 998)", "NEAR(sf se sd sc sb sa, 999)", "NEAR(sa sb sc sd, 600)",
    "NEAR(sa sb sc sd, 599)", "NEAR(sa sb sc sd, 598)", "NEAR(sb sc sd se sf, 1000)",
    "NEAR(sa sb* sc sd s*, 1000)", 'NEAR(sa "sb g1000"* sc "sd g3000" se sf, 999)',
    'NEAR(sa "sb g1000" sc sd "se g4000" sf, 996)', "NEAR(sa sb sc sd se sf, 2147483647)",
    "NEAR(sa sb sc sd se sf, 3)", "NEAR(sa sb sc sd se sf, 2)", "NEAR(sa sb sc sd se sf, 1)",
    "NEAR(se sf, 1100)", "NEAR(se sf, 1098)", "NEAR(alpha beta red green, 10)",
    "NEAR(red green blue alpha beta, 1000)", "NEAR(big cat dog one two, 1000)",
    # past tsvector: 20,003 tokens (positions past 16383), a word 300 times, a dropped word
    '"needle haystack"', '"z19999 needle haystack"', "NEAR(deep haystack, 20001)",
    "NEAR(deep haystack, 20000)", "NEAR(z16500 z16502, 1)", "NEAR(z16500 z16502, 0)",
    '"z16500 z16501"', '"z16501 z16500"', "NEAR(z1 z19999 needle, 19998)",
    "NEAR(z1 z19999 needle, 19997)", "NEAR(needle hay*, 0)", "NEAR(deep* hay*, 30000)",
    "^deep", '^"deep z0 z1"', "^z0", '^"deep z1"', "^dee* needle",
    '"rep after"', '"rep mid"', '"mid rep"', "NEAR(mid rep, 0) NOT after", "NEAR(after rep, 0)",
    "NEAR(echo tail, 300)", "NEAR(echo tail, 299)", '"rep tail"', "NEAR(rep rep mid, 0)", '"rep rep rep after"', "^rep",
    '^"rep rep"', "^rep NOT after", '^echo + rep', '"echo rep"', '"rep echo"',
    '"pre post"', "NEAR(pre post, 0)", "NEAR(pre post, 1)", "k" * 3000, "k" * 2999 + "j",
    "k" * 700 + "*", "kkk*", "k" * 2999 + "*", '"pre ' + "k" * 3000 + ' post"',
    "pre NOT " + "k" * 3000, "k" * 600, "m" * 600, '"mid ' + "m" * 600 + '"', "m" * 500 + "*",
    "m" * 599 + "*", "m" * 601 + "*", "caf" + "e" * 1100, "caf" + "é" * 1100 + "*",
    '"caf' + "e" * 1100 + ' x"',
    # a prefix before a phrase's end (the check splits the line into tokens for it)
    "sud* + systemctl", "^sud* + sys*", "re* + tail", "rep* + rep* + after", "^re* + rep",
    "k* + post", "pr* + k*",
]

EMPTY = {"NEAR(red green blue, 0)", "^run", "alpha AND -line:beta", "-line:alpha NOT beta",
         'alpha AND ""', "NEAR(sa sb sc sd se sf, 3)",
         "NEAR(sa sb sc sd se sf, 2)", "NEAR(sa sb sc sd se sf, 1)",
         'NEAR(sa "sb g1000" sc sd "se g4000" sf, 996)', "NEAR(alpha beta red green, 10)",
         "NEAR(red green blue alpha beta, 1000)", "NEAR(big cat dog one two, 1000)",
         "NEAR(deep haystack, 20000)", "NEAR(z16500 z16502, 0)", '"z16501 z16500"',
         "NEAR(z1 z19999 needle, 19997)", "^z0", '^"deep z1"', '"rep echo"', '"pre post"',
         "NEAR(echo tail, 299)", "m" * 601 + "*"}   # FTS5 finds nothing


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


def test_near_past_the_bound_on_phrases_is_refused_with_what_to_do(both):
    # no NEAR is refused for its N or its arrangements; a group of more than
    # MAX_NEAR_PHRASES phrases is (the check's time grows with them), saying so
    lite, pg, _ = both
    words = [f"g{i}" for i in range(ftsquery.MAX_NEAR_PHRASES)]
    query = "NEAR(" + " ".join(words) + ", 1000)"
    assert _ids(pg, query) == _ids(lite, query) != set()
    with pytest.raises(StoreOperationalError, match="NEAR with more than 100 phrases.*use fewer"):
        _ids(pg, query.replace(", 1000)", " sa, 1000)"))


def test_parameters_after_the_match_keep_their_places(both):
    # on PostgreSQL the MATCH parameter is used three times (translate.match_sql): a
    # positional one is repeated, and the parameters after it must still line up
    lite, pg, _ = both
    sql = "SELECT rowid FROM commands_fts WHERE rowid > ? AND commands_fts MATCH ? AND rowid < ?"
    for query in ("NEAR(alpha beta, 3)", "^alpha", "alpha"):
        want = {r[0] for r in lite.execute(sql, (20, query, 60)).fetchall()}
        assert want and want == {r[0] for r in pg.execute(sql, (20, query, 60)).fetchall()}


def _random_phrase(rnd, words) -> str:
    terms = [rnd.choice(words) + ("*" if rnd.random() < 0.25 else "")
             for _ in range(rnd.choice((1, 1, 2, 3)))]
    return " + ".join(terms)


def _random_query(rnd, words) -> str:
    kind = rnd.random()
    if kind < 0.6:
        near = " ".join(_random_phrase(rnd, words) for _ in range(rnd.randint(2, 6)))
        n = rnd.choice(["", ", 0", ", 1", ", 2", ", 3", ", 5", ", 8", ", 40"])
        return f"NEAR({near}{n})"
    if kind < 0.8:
        return ("^" if rnd.random() < 0.5 else "") + _random_phrase(rnd, words)
    ops = ["AND", "OR", "NOT"]
    return (f"{_random_query(rnd, words)} {rnd.choice(ops)} {_random_phrase(rnd, words)} "
            f"{rnd.choice(ops)} {_random_query(rnd, words)}")


def test_random_near_phrase_and_initial_queries_find_the_same_lines(both):
    # seeded: lines of a few short words (repeats, overlaps, prefixes of each other) and
    # queries of 2-6 phrases at several N, phrases with prefixes anywhere, ^, and mixes
    import random
    rnd = random.Random(13)
    lite, pg, _ = both
    words = ["ab", "abc", "b", "ca", "c"]
    lines = [" ".join(rnd.choice(words) for _ in range(rnd.randint(1, 14))) for _ in range(400)]
    for conn in (lite, pg):
        conn.execute("BEGIN IMMEDIATE")
        for i, line in enumerate(lines, 10_001):
            conn.execute("INSERT INTO commands (id, session_id, time, line, action) "
                         "VALUES (?, 1, ?, ?, 'allow')", (i, float(i), line))
        conn.execute("COMMIT")
    sql = "SELECT rowid FROM commands_fts WHERE commands_fts MATCH ? AND rowid > 10000"
    wrong, found = [], 0
    for _ in range(400):
        query = _random_query(rnd, words)
        want = {r[0] for r in lite.execute(sql, (query,)).fetchall()}
        got = {r[0] for r in pg.execute(sql, (query,)).fetchall()}
        found += 0 < len(want) < len(lines)
        if want != got:
            wrong.append(f"{query!r}: only SQLite {sorted(lines[i - 10_001] for i in want - got)[:3]}, "
                         f"only PostgreSQL {sorted(lines[i - 10_001] for i in got - want)[:3]}")
    assert not wrong, "\n".join(wrong[:20])
    assert found > 200                    # most queries tell lines apart
