"""PURE: the SQLite forms the index code uses, rewritten for PostgreSQL.

The index code speaks one dialect, SQLite's; :class:`bastion.store.pgconn.PgConnection`
passes every statement through :func:`statement` first.  Only these forms are rewritten
(tests/unit/test_store_translate.py has a row for each):

* parameters: ``?`` -> ``%s``, ``:name`` -> ``%(name)s``; a literal ``%`` -> ``%%`` (in
  quoted text too: the driver reads every ``%``); otherwise quoted text ('...', "...") is
  left alone;
* ``INSERT OR IGNORE INTO`` -> ``INSERT INTO ... ON CONFLICT DO NOTHING``; every INSERT gets
  ``RETURNING id`` (the cursor's ``lastrowid``; every table has an ``id``);
* ``X GLOB Y`` -> ``X ~ bastion_glob(Y)`` (a function of the PostgreSQL schema);
* ``json_extract(col, '$.key')`` -> ``(col::json ->> 'key')``;
* ``commands_fts MATCH :p`` -> ``commands_fts.tsv @@ <index part of :p>::tsquery AND
  <its exact check, when it has one>`` (:func:`match_sql`), and the parameter's FTS5 query
  text becomes the index's tsquery text and the check's program (``fts5_to_match`` of
  bastion.store.ftsquery);
* ``BEGIN IMMEDIATE`` (a writer) -> ``BEGIN`` + the chain's advisory lock (one writer at a
  time across every node, as SQLite has one writer at a time); ``BEGIN`` (a reader that
  wants one snapshot) -> ``BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY``;
* ``PRAGMA ...`` -> nothing (None: the connection answers it itself).

Anything else passes unchanged, so a new statement in SQLite's dialect that is not standard
SQL fails loudly on PostgreSQL rather than meaning something else.

The FTS5 query text itself (words, phrases, prefixes, ``^``, ``NEAR``, column filters,
``AND``/``OR``/``NOT``) becomes tsquery text and an exact check in bastion.store.ftsquery,
with FTS5's meaning.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from bastion.store.ftsquery import FtsSyntaxError, fold, fts5_to_match, words

__all__ = ["CHAIN_LOCK", "MATCH_USES", "READ_SNAPSHOT", "FtsSyntaxError", "Statement", "fold",
           "fts5_to_match", "match_sql", "statement", "words"]

CHAIN_LOCK = 0x62617374          # "bast": pg_advisory_xact_lock key of the one writer
READ_SNAPSHOT = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"


@dataclass(frozen=True)
class Statement:
    sql: str | None                # None: nothing to send (a PRAGMA)
    fts_param: str | int | None = None     # the parameter holding an FTS5 query, to convert
    returning: bool = False
    lock: bool = False             # take the chain's advisory lock after BEGIN


_TOKEN = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|\?|:[A-Za-z_]\w*|%|[^'\"?:%]+|:",
                    re.S)
_OR_IGNORE = re.compile(r"^\s*INSERT\s+OR\s+IGNORE\s+INTO\b", re.I)
_INSERT = re.compile(r"^\s*INSERT\b", re.I)
_GLOB = re.compile(r"([\w.]+)\s+GLOB\s+(%\(\w+\)s|%s)", re.I)
_JSON_EXTRACT = re.compile(r"json_extract\((\w+), '\$\.(\w+)'\)", re.I)
_MATCH = re.compile(r"\bcommands_fts\s+MATCH\s+(%\(\w+\)s|%s)", re.I)


MATCH_USES = 3        # the MATCH parameter appears 3 times in match_sql (positional: 3 copies)


def match_sql(param: str) -> str:
    """``commands_fts MATCH param`` on PostgreSQL; ``param`` holds ``index#exact``
    (:func:`bastion.store.ftsquery.fts5_to_match`): the GIN index finds the lines of
    ``index`` (their words; it holds no positions), and only those are checked against
    ``exact`` on their own tokens (phrases, ``^``, NEAR: ``bastion_fts_exact``, migration 13,
    plpgsql, so the planner never makes it an index condition).  Without an ``exact`` part
    the CASE folds to true when the query is planned."""
    part = f"split_part({param}, '#', {{}})"
    return (f"(commands_fts.tsv @@ {part.format(1)}::tsquery AND CASE WHEN "
            f"{part.format(2)} = '' THEN true ELSE bastion_fts_exact(commands_fts.line, "
            f"{part.format(2)}) END)")


@functools.lru_cache(maxsize=1024)
def statement(sql: str) -> Statement:
    """The PostgreSQL form of one SQLite statement (see module doc).  Remembered: the
    index code sends the same few hundred texts over and over (the recording worker ~20
    per recorded command), and rewriting one costs ~80 us."""
    head = sql.strip().rstrip(";").strip()
    upper = " ".join(head.upper().split())
    if upper.startswith("PRAGMA"):
        return Statement(None)
    if upper == "BEGIN IMMEDIATE":
        return Statement("BEGIN", lock=True)
    if upper in ("BEGIN", "BEGIN DEFERRED", "BEGIN TRANSACTION"):
        return Statement(READ_SNAPSHOT)
    out, positional = [], 0
    fts_param: str | int | None = None
    names: list[str | int] = []
    for m in _TOKEN.finditer(head):
        tok = m.group(0)
        if tok == "?":
            out.append("%s")
            names.append(positional)
            positional += 1
        elif tok.startswith(":") and len(tok) > 1:
            out.append(f"%({tok[1:]})s")
            names.append(tok[1:])
        elif tok == "%" or tok[0] in "'\"":
            out.append(tok.replace("%", "%%"))     # psycopg reads % even inside quotes
        else:
            out.append(tok)
    text = "".join(out)
    match = _MATCH.search(text)
    if match:
        before = text[:match.start()].count("%s") + len(re.findall(r"%\(\w+\)s", text[:match.start()]))
        fts_param = names[before]
        text = text[:match.start()] + match_sql(match.group(1)) + text[match.end():]
    text = _GLOB.sub(r"\1 ~ bastion_glob(\2)", text)
    text = _JSON_EXTRACT.sub(r"(\1::json ->> '\2')", text)
    returning = False
    if _OR_IGNORE.match(text):
        text = _OR_IGNORE.sub("INSERT INTO", text, count=1) + " ON CONFLICT DO NOTHING"
    if _INSERT.match(text) and " RETURNING " not in text.upper():
        text += " RETURNING id"
        returning = True
    return Statement(text, fts_param=fts_param, returning=returning)
