"""bastion.store.translate: every SQLite form the index code uses, and its PostgreSQL form."""

from __future__ import annotations

import pytest

from bastion.store import ftsquery, translate
from bastion.store.translate import FtsSyntaxError, fts5_to_match, statement, words

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
    assert "(commands_fts.tsv @@ split_part(%(match)s, '#', 1)::tsquery AND CASE " \
        "WHEN split_part(%(match)s, '#', 2) = '' THEN true ELSE bastion_fts_exact(" \
        "commands_fts.line, split_part(%(match)s, '#', 2)) END)" in st.sql
    assert st.fts_param == "match"
    st = statement("SELECT 1 FROM x WHERE a = ? AND commands_fts MATCH ?")
    assert st.fts_param == 1


@pytest.mark.parametrize("query, expected", [
    ('"systemctl"', "'systemctl'#"),
    ('"systemctl" "restart"', "'systemctl' & 'restart'#"),
    ('"syst"*', "'syst':*#"),
    ('"syst" *', "'syst':*#"),
    ('"rm" "-rf"', "'rm' & 'rf'#"),
    ('"nginx.conf"', "'nginx' & 'conf'#'~1';0:nginx conf"),
    ('"a ""b"" c"', "'a' & 'b' & 'c'#'~1';0:a b c"),
    ("rm OR mv", "'rm' | 'mv'#"),
    ("rm NOT mv", "'rm' & !'mv'#"),
    ("(rm OR mv) etc", "('rm' | 'mv') & 'etc'#"),
    ("Deploy*", "'deploy':*#"),
    ("it's", "'it' & 's'#'~1';0:it s"),
    ("/etc/passwd", "'etc' & 'passwd'#'~1';0:etc passwd"),
    ("rm -rf", "'rm' & 'rf'#"),             # lenient: FTS5 refuses the '-'
    ("naïve", "'naive'#"),                 # diacritics folded, as unicode61 does
    ('"Crème brûlée"', "'creme' & 'brulee'#'~1';0:creme brulee"),
    ("Straße", "'straße'#"),               # a letter of its own, not a diacritic
    # FTS5's precedence: side by side, then NOT, then AND, then OR
    ("a NOT b c", "'a' & !('b' & 'c')#"),
    ("a OR b c", "'a' | 'b' & 'c'#"),
    ("a NOT b OR c", "'a' & !'b' | 'c'#"),
    ("a AND b NOT c", "'a' & 'b' & !'c'#"),
    ("a NOT (b OR c)", "'a' & !('b' | 'c')#"),
    # + joins a phrase; each part may be a prefix
    ("a + b", "'a' & 'b'#'~1';0:a b"),
    ("a* + b", "'a':* & 'b'#'~1';0:a* b"),
    ('"a b" + c*', "'a' & 'b' & 'c':*#'~1';0:a b c*"),
    # empty phrases: dropped beside others, nothing elsewhere
    ('"" a', "'a'#"),
    ('"" OR a', "'a'#"),
    ('a AND ""', "'0' & !'0'#"),
    ('""', "'0' & !'0'#"),
    # ^: the index has its words; the check, that the phrase starts the line
    ("^sudo", "'sudo'#'~1';^:sudo"),
    ("^ sudo", "'sudo'#'~1';^:sudo"),
    ("^sud*", "'sud':*#'~1';^:sud*"),
    ('^"sudo systemctl"', "'sudo' & 'systemctl'#'~1';^:sudo systemctl"),
    ("^sudo + sys*", "'sudo' & 'sys':*#'~1';^:sudo sys*"),
    ("a ^b", "'a' & 'b'#'a' & '~1';^:b"),
    # column filters: the one column is line
    ("line:rm", "'rm'#"),
    ("LINE : rm", "'rm'#"),
    ('"line":rm', "'rm'#"),
    ("{line}:rm", "'rm'#"),
    ("{ line line }: rm", "'rm'#"),
    ("line:^rm", "'rm'#'~1';^:rm"),
    ("line:(rm OR mv)", "'rm' | 'mv'#"),
    ("-line:rm", "'0' & !'0'#"),
    ("- {line}: rm OR mv", "'mv'#"),
    ("mv NOT -line:rm", "'mv'#"),
    ('-line:"" mv', "'mv'#"),
    # NEAR: the index has its words; the check, N and the phrases (no arrangement listed)
    ("NEAR(a)", "'a'#"),
    ('NEAR("" a b, 0)', "'a' & 'b'#'~1';0:a,b"),
    ("NEAR(a b, 0)", "'a' & 'b'#'~1';0:a,b"),
    ("NEAR(a b, 1)", "'a' & 'b'#'~1';1:a,b"),
    ('NEAR("a b" c, 0)', "'a' & 'b' & 'c'#'~1';0:a b,c"),
    ('NEAR("a b" b, 0)', "'a' & 'b'#'~1';0:a b,b"),     # each word once in the index part
    ("NEAR(ab* abc, 0)", "'ab':* & 'abc'#'~1';0:ab*,abc"),
    ("NEAR(a b c, 0)", "'a' & 'b' & 'c'#'~1';0:a,b,c"),
    ("line:NEAR(a b, 0) c", "'a' & 'b' & 'c'#'~1' & 'c';0:a,b"),
])
def test_fts5_queries(query, expected):
    assert fts5_to_match(query) == expected


@pytest.mark.parametrize("query", ["", "OR", "rm OR", "(rm", "rm)", "rm AND NOT mv",  # FTS5 too
                                   "x:rm", "{line x}:rm", "{}:rm", "line:", "line:line:rm",
                                   "NEAR(^a b)", "a + ^b", "^(a)", "^NEAR(a b)", "NEAR(a b, x)",
                                   "NEAR(a b,)", "NEAR(a b, -1)", "NEAR(a OR b)", "NEAR(a b",
                                   "NEAR()", 'NEAR(a b, "3")', '"unterminated', "a + + b",
                                   "a **"])
def test_fts5_queries_it_cannot_express(query):
    with pytest.raises(FtsSyntaxError):
        fts5_to_match(query)


@pytest.mark.parametrize("query", ["(" * 5000 + "a" + ")" * 5000, "a* " * 20000,
                                   "NEAR(" * 3000 + "a"])
def test_a_query_past_the_recursion_limit_is_a_syntax_error_not_a_crash(query):
    with pytest.raises(FtsSyntaxError, match="nests too deep or has too many terms|syntax"):
        fts5_to_match(query)


def test_near_takes_any_n_and_many_phrases_without_listing_arrangements():
    # the program names N and the phrases: its size does not grow with N or arrangements
    assert fts5_to_match("NEAR(a b c d e f, 1000)") == \
        "'a' & 'b' & 'c' & 'd' & 'e' & 'f'#'~1';1000:a,b,c,d,e,f"
    assert fts5_to_match("NEAR(a b, 2147483647)").endswith(";2147483647:a,b")
    with pytest.raises(FtsSyntaxError, match="N must be at most 2147483647"):
        fts5_to_match("NEAR(a b, 2147483648)")      # past FTS5's C int
    near = "NEAR(" + " ".join(f"w{i}" for i in range(ftsquery.MAX_NEAR_PHRASES)) + ", 3)"
    assert fts5_to_match(near).endswith(";3:" + ",".join(f"w{i}" for i in range(100)))
    with pytest.raises(FtsSyntaxError, match="NEAR with more than 100 phrases"):
        fts5_to_match(near.replace(", 3)", " w100, 3)"))


@pytest.mark.parametrize("query, expected", [
    ("a b", "'a' & 'b'#"),                                  # words only: the index is exact
    ("c OR NEAR(a b, 0)", "'c' | 'a' & 'b'#'c' | '~1';0:a,b"),
    # under NOT the index leaves a NEAR or phrase out (a line with a and b apart is found);
    # the check has it
    ("c NOT NEAR(a b, 0)", "'c'#'c' & !'~1';0:a,b"),
    ('c NOT (d OR "a b")', "'c' & !'d'#'c' & !('d' | '~1');0:a b"),
    ('c NOT (d "a b")', "'c'#'c' & !('d' & '~1');0:a b"),
    # the same leaf twice is checked once; two leaves have two markers
    ('"a b" OR c "a b"', "'a' & 'b' | 'c' & 'a' & 'b'#'~1' | 'c' & '~1';0:a b"),
    ('^a NOT "b c"', "'a'#'~1' & !'~2';^:a;0:b c"),
])
def test_match_parameter_is_the_index_query_and_the_exact_check(query, expected):
    assert ftsquery.fts5_to_match(query) == expected


def test_words_longer_than_the_index_keeps_are_found_by_their_key_and_checked():
    # a token of more than LONG_WORD characters is indexed as its first LONG_WORD and '~'
    # (bastion.store.ftscheck): a longer word or prefix looks it up so, and is checked
    long, n = "q" * 3000, ftsquery.LONG_WORD
    key = "'" + "q" * n + "~'"
    assert fts5_to_match(long) == f"{key}#'~1';0:{long}"
    assert fts5_to_match(long[:n + 1] + "*") == f"{key}#'~1';0:{long[:n + 1]}*"
    assert fts5_to_match(long[:n]) == f"'{long[:n]}'#"          # a word up to n: exact
    assert fts5_to_match(long[:n] + "*") == f"'{long[:n]}':*#"   # it prefixes the key too
    assert fts5_to_match("x NOT " + long) == f"'x'#'x' & !'~1';0:{long}"


def test_query_words_cannot_break_the_program():
    # the program's separators (; : , * ~ #) and quotes are never inside a word
    for query in ('"a;b"', '"a:b"', '"a,b"', '"a~b"', '"a#b"', "a'b", '"a*b"', 'NEAR("a;b" c,1)'):
        index, exact = fts5_to_match(query).split("#")
        assert exact
        for leaf in exact.split(";")[1:]:
            head, phrases = leaf.split(":")
            assert head.isdigit() or head == "^"
            assert all(w.rstrip("*").isalnum() for p in phrases.split(",") for w in p.split(" "))


def test_words_split_like_unicode61():
    assert words("systemctl restart nginx.service") == ["systemctl", "restart", "nginx", "service"]
    assert words("rm -rf /tmp/x_y") == ["rm", "rf", "tmp", "x", "y"]
    assert words("Ångström e\u0301te\u0301") == ["angstrom", "ete"]   # composed or not
