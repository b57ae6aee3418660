"""bastion.store.translate: every SQLite form the index code uses, and its PostgreSQL form."""

from __future__ import annotations

import pytest

from bastion.store import ftsquery, translate
from bastion.store.translate import FtsSyntaxError, fts5_to_match, fts5_to_tsquery, statement, words

pytestmark = pytest.mark.unit

LOCK = "BEGIN"


@pytest.mark.parametrize("sql, expected, returning, lock", [
    ("SELECT * FROM sessions WHERE id = ?", "SELECT * FROM sessions WHERE id = %s", False, False),
    ("SELECT * FROM s WHERE a = :a AND b = :b2", "SELECT * FROM s WHERE a = %(a)s AND b = %(b2)s",
     False, False),
    ("SELECT '?' , ':x', \"a?\" FROM t WHERE y = ?", "SELECT '?' , ':x', \"a?\" FROM t WHERE y = %s",
     False, False),
    ("SELECT 'it''s ?' WHERE x = ?", "SELECT 'it''s ?' WHERE x = %s", False, False),
    ("SELECT 5 % 2", "SELECT 5 %% 2", False, False),
    ("SELECT 1 WHERE r LIKE 'ok%' AND op = ?", "SELECT 1 WHERE r LIKE 'ok%%' AND op = %s",
     False, False),
    ("INSERT INTO t (a) VALUES (?)", "INSERT INTO t (a) VALUES (%s) RETURNING id", True, False),
    ("INSERT OR IGNORE INTO t (a) VALUES (?)",
     "INSERT INTO t (a) VALUES (%s) ON CONFLICT DO NOTHING RETURNING id", True, False),
    ("  insert or ignore into t (a) values (?)",
     "INSERT INTO t (a) values (%s) ON CONFLICT DO NOTHING RETURNING id", True, False),
    ("SELECT 1 FROM s WHERE s.target GLOB :target",
     "SELECT 1 FROM s WHERE s.target ~ bastion_glob(%(target)s)", False, False),
    ("WHERE (t.path GLOB :path OR t.path2 GLOB :path)",
     "WHERE (t.path ~ bastion_glob(%(path)s) OR t.path2 ~ bastion_glob(%(path)s))", False, False),
    ("SELECT json_extract(content, '$.path') FROM transfers WHERE id = ?",
     "SELECT (content::json ->> 'path') FROM transfers WHERE id = %s", False, False),
    ("BEGIN IMMEDIATE", "BEGIN", False, True),
    ("BEGIN", "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", False, False),
    ("COMMIT", "COMMIT", False, False),
    ("UPDATE t SET \"offset\" = ? WHERE id = ?", "UPDATE t SET \"offset\" = %s WHERE id = %s",
     False, False),
])
def test_statements(sql, expected, returning, lock):
    st = statement(sql)
    assert st.sql == expected
    assert st.returning is returning
    assert st.lock is lock


@pytest.mark.parametrize("sql", ["PRAGMA user_version", "pragma busy_timeout = 10000",
                                 "PRAGMA wal_checkpoint(TRUNCATE)", "PRAGMA recursive_triggers=on;"])
def test_pragmas_are_answered_by_the_connection(sql):
    assert statement(sql).sql is None


def test_match_names_the_parameter_to_convert():
    st = statement("SELECT c.* FROM commands_fts JOIN commands c ON c.id = commands_fts.rowid "
                   "WHERE commands_fts MATCH :match AND s.target GLOB :target "
                   "ORDER BY commands_fts.rowid DESC LIMIT :limit")
    assert st.sql.count("%(match)s") == translate.MATCH_USES
    assert "(commands_fts.tsv @@ to_tsquery('simple', split_part(%(match)s, '#', 1)) AND CASE " \
        "WHEN split_part(%(match)s, '#', 2) = '' THEN true ELSE bastion_fts_exact(" \
        "commands_fts.tsv, to_tsquery('simple', split_part(%(match)s, '#', 2))) END)" in st.sql
    assert st.fts_param == "match"
    st = statement("SELECT 1 FROM x WHERE a = ? AND commands_fts MATCH ?")
    assert st.fts_param == 1


@pytest.mark.parametrize("query, expected", [
    ('"systemctl"', "'systemctl'"),
    ('"systemctl" "restart"', "'systemctl' & 'restart'"),
    ('"syst"*', "'syst':*"),
    ('"syst" *', "'syst':*"),
    ('"rm" "-rf"', "'rm' & 'rf'"),
    ('"nginx.conf"', "('nginx' <-> 'conf')"),
    ('"a ""b"" c"', "('a' <-> 'b' <-> 'c')"),
    ("rm OR mv", "'rm' | 'mv'"),
    ("rm NOT mv", "'rm' & !'mv'"),
    ("(rm OR mv) etc", "('rm' | 'mv') & 'etc'"),
    ("Deploy*", "'deploy':*"),
    ("it's", "('it' <-> 's')"),
    ("/etc/passwd", "('etc' <-> 'passwd')"),
    ("rm -rf", "'rm' & 'rf'"),             # lenient: FTS5 refuses the '-'
    ("naïve", "'naive'"),                 # diacritics folded, as unicode61 does
    ('"Crème brûlée"', "('creme' <-> 'brulee')"),
    ("Straße", "'straße'"),               # a letter of its own, not a diacritic
    # FTS5's precedence: side by side, then NOT, then AND, then OR
    ("a NOT b c", "'a' & !('b' & 'c')"),
    ("a OR b c", "'a' | 'b' & 'c'"),
    ("a NOT b OR c", "'a' & !'b' | 'c'"),
    ("a AND b NOT c", "'a' & 'b' & !'c'"),
    ("a NOT (b OR c)", "'a' & !('b' | 'c')"),
    # + joins a phrase; each part may be a prefix
    ("a + b", "('a' <-> 'b')"),
    ("a* + b", "('a':* <-> 'b')"),
    ('"a b" + c*', "('a' <-> 'b' <-> 'c':*)"),
    # empty phrases: dropped beside others, nothing elsewhere
    ('"" a', "'a'"),
    ('"" OR a', "'a'"),
    ('a AND ""', "'0' & !'0'"),
    ('""', "'0' & !'0'"),
    # ^: the line's first token has weight A
    ("^sudo", "'sudo':A"),
    ("^ sudo", "'sudo':A"),
    ("^sud*", "'sud':*A"),
    ('^"sudo systemctl"', "('sudo':A <-> 'systemctl')"),
    ("^sudo + sys*", "('sudo':A <-> 'sys':*)"),
    ("a ^b", "'a' & 'b':A"),
    # column filters: the one column is line
    ("line:rm", "'rm'"),
    ("LINE : rm", "'rm'"),
    ('"line":rm', "'rm'"),
    ("{line}:rm", "'rm'"),
    ("{ line line }: rm", "'rm'"),
    ("line:^rm", "'rm':A"),
    ("line:(rm OR mv)", "'rm' | 'mv'"),
    ("-line:rm", "'0' & !'0'"),
    ("- {line}: rm OR mv", "'mv'"),
    ("mv NOT -line:rm", "'mv'"),
    ('-line:"" mv', "'mv'"),
    # NEAR: every arrangement of starts FTS5 accepts, as phrase chains
    ("NEAR(a)", "'a'"),
    ('NEAR("" a b, 0)', "('a' & 'b' & (('a' <-> 'b') | ('b' <-> 'a')))"),
    ("NEAR(a b, 0)", "('a' & 'b' & (('a' <-> 'b') | ('b' <-> 'a')))"),
    ("NEAR(a b, 1)", "('a' & 'b' & ((('a' <-> 'b') | ('b' <-> 'a')) | (('a' <2> 'b') | "
                     "('b' <2> 'a'))))"),          # the tightest first
    ('NEAR("a b" c, 0)', "(('a' <-> 'b') & 'c' & (('a' <-> 'b' <-> 'c') | ('c' <-> 'a' <-> 'b')))"),
    ('NEAR("a b" b, 0)', "(('a' <-> 'b') & 'b' & (('a' <-> 'b') | (('a' <-> 'b' <-> 'b') | "
                         "('b' <-> 'a' <-> 'b'))))"),   # overlapping: b is the phrase's b
    ("NEAR(ab* abc, 0)", "('ab':* & 'abc' & ('abc' | (('ab':* <-> 'abc') | ('abc' <-> 'ab':*))))"),
    ("NEAR(a b c, 0)", "'0' & !'0'"),       # three different words cannot be adjacent
    ("line:NEAR(a b, 0) c", "('a' & 'b' & (('a' <-> 'b') | ('b' <-> 'a'))) & 'c'"),
])
def test_fts5_queries(query, expected):
    assert fts5_to_tsquery(query) == expected


@pytest.mark.parametrize("query", ["", "OR", "rm OR", "(rm", "rm)", "rm AND NOT mv",  # FTS5 too
                                   "x:rm", "{line x}:rm", "{}:rm", "line:", "line:line:rm",
                                   "NEAR(^a b)", "a + ^b", "^(a)", "^NEAR(a b)", "NEAR(a b, x)",
                                   "NEAR(a b,)", "NEAR(a b, -1)", "NEAR(a OR b)", "NEAR(a b",
                                   "NEAR()", 'NEAR(a b, "3")', '"unterminated', "a + + b",
                                   "a **"])
def test_fts5_queries_it_cannot_express(query):
    with pytest.raises(FtsSyntaxError):
        fts5_to_tsquery(query)


@pytest.mark.parametrize("query", ["(" * 5000 + "a" + ")" * 5000, "a* " * 20000,
                                   "NEAR(" * 3000 + "a"])
def test_a_query_past_the_recursion_limit_is_a_syntax_error_not_a_crash(query):
    for convert in (fts5_to_tsquery, fts5_to_match):
        with pytest.raises(FtsSyntaxError, match="nests too deep or has too many terms|syntax"):
            convert(query)


def test_near_counts_every_arrangement_and_refuses_past_the_bound():
    # 3 one-word phrases at FTS5's default N: 55 sets of 3 positions within 11 tokens x 6
    # orders; each arrangement is one phrase chain of the OR
    assert fts5_to_tsquery("NEAR(a b c)").count(" | ") + 1 == 330
    assert fts5_to_tsquery("NEAR(a b, 400)").count(" | ") + 1 == 802
    for query in ("NEAR(a b c d)", "NEAR(a b, 600)", "NEAR(a b c d e f, 10)",
                  "NEAR(a b, 99999999999)"):
        with pytest.raises(FtsSyntaxError, match="use fewer phrases or a smaller N"):
            fts5_to_tsquery(query)
    assert fts5_to_tsquery("NEAR(a b c d, 2)").count(" | ") + 1 == 4 * 3 * 2   # adjacent only
    assert fts5_to_tsquery("NEAR(a b c d e f g h, 0)") == ftsquery.NOTHING


@pytest.mark.parametrize("query, expected", [
    ("a b", "'a' & 'b'#"),                                  # no NEAR: one query, no check
    ("NEAR(a b, 0)", "('a' & 'b')#('a' & 'b' & (('a' <-> 'b') | ('b' <-> 'a')))"),
    ("c OR NEAR(a b, 0)", "'c' | ('a' & 'b')#'c' | ('a' & 'b' & (('a' <-> 'b') | ('b' <-> 'a')))"),
    # under NOT the index leaves the NEAR out: a line with a and b far apart is found
    ("c NOT NEAR(a b, 0)", "'c'#'c' & !('a' & 'b' & (('a' <-> 'b') | ('b' <-> 'a')))"),
    ("NEAR(a b c, 0)", "'0' & !'0'#"),
])
def test_match_parameter_is_the_index_query_and_the_exact_one(query, expected):
    assert ftsquery.fts5_to_match(query) == expected


def test_the_first_token_sentinel_is_a_weight_no_query_word_carries():
    # ^ is the only way a query asks for weight A: plain words match any weight
    assert ":A" not in fts5_to_tsquery('a "b c"* NEAR(d e) line:f')
    assert ftsquery.words("A:A 'x':A") == ["a", "a", "x", "a"]


def test_words_split_like_unicode61():
    assert words("systemctl restart nginx.service") == ["systemctl", "restart", "nginx", "service"]
    assert words("rm -rf /tmp/x_y") == ["rm", "rf", "tmp", "x", "y"]
    assert words("Ångström e\u0301te\u0301") == ["angstrom", "ete"]   # composed or not
