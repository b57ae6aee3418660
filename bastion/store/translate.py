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
* ``commands_fts MATCH :p`` -> ``commands_fts.tsv @@ to_tsquery('simple', :p)``, and the
  parameter's FTS5 query text becomes tsquery text (:func:`fts5_to_tsquery`);
* ``BEGIN IMMEDIATE`` (a writer) -> ``BEGIN`` + the chain's advisory lock (one writer at a
  time across every node, as SQLite has one writer at a time); ``BEGIN`` (a reader that
  wants one snapshot) -> ``BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY``;
* ``PRAGMA ...`` -> nothing (None: the connection answers it itself).

Anything else passes unchanged, so a new statement in SQLite's dialect that is not standard
SQL fails loudly on PostgreSQL rather than meaning something else.

FTS5 queries: words (quoted or bare), ``word*`` prefixes, ``"a phrase"``, ``AND``/``OR``/``NOT``
and parentheses; terms side by side are ANDed.  Text is split as SQLite's unicode61
tokenizer splits it (runs of letters and digits), so ``"rm -rf"`` is the phrase rm, rf,
and with its diacritics removed (``naïve`` is the word naive, as unicode61's default
``remove_diacritics`` makes it; the index side is ``bastion_fts_text``, migration 8).
``NEAR``, column filters and ``^`` are not supported: :class:`FtsSyntaxError`.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass

CHAIN_LOCK = 0x62617374          # "bast": pg_advisory_xact_lock key of the one writer
READ_SNAPSHOT = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"


class FtsSyntaxError(ValueError):
    """A full-text query this translation cannot express."""


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
        text = text[:match.start()] + f"commands_fts.tsv @@ to_tsquery('simple', {match.group(1)})" \
            + text[match.end():]
    text = _GLOB.sub(r"\1 ~ bastion_glob(\2)", text)
    text = _JSON_EXTRACT.sub(r"(\1::json ->> '\2')", text)
    returning = False
    if _OR_IGNORE.match(text):
        text = _OR_IGNORE.sub("INSERT INTO", text, count=1) + " ON CONFLICT DO NOTHING"
    if _INSERT.match(text) and " RETURNING " not in text.upper():
        text += " RETURNING id"
        returning = True
    return Statement(text, fts_param=fts_param, returning=returning)


# -- FTS5 query text -> tsquery text ---------------------------------------------------------

_FTS_TOKEN = re.compile(r'\s*(?:("(?:[^"]|"")*")(\*?)|(\()|(\))|([^\s()"]+))')
_WORD = re.compile(r"\w+", re.UNICODE)


_COMBINING = re.compile("[\u0300-\u036f]+")


def fold(text: str) -> str:
    """``text`` without combining diacritical marks (``Naïve`` -> ``Naive``), recomposed.

    The same as the PostgreSQL index's ``bastion_fts_text`` (migration 8) does to a line."""
    return unicodedata.normalize("NFC", _COMBINING.sub("", unicodedata.normalize("NFD", text)))


def words(text: str) -> list[str]:
    """Text split as the unicode61 tokenizer splits it: runs of letters and digits, lower
    case, diacritics removed."""
    return [w.lower() for w in _WORD.findall(fold(text).replace("_", " "))]


def fts5_to_tsquery(query: str) -> str:
    """An FTS5 query (the subset in the module doc) as ``to_tsquery('simple', ...)`` text."""
    tokens = _fts_tokens(query)
    pos = 0

    def expr(depth: int) -> str:
        nonlocal pos
        parts: list[str] = []
        op_next = None
        while pos < len(tokens):
            kind, value = tokens[pos]
            if kind == ")":
                if depth == 0:
                    raise FtsSyntaxError("unbalanced ')'")
                break
            pos += 1
            if kind == "op":
                if not parts or op_next is not None:
                    raise FtsSyntaxError(f"{value} needs a term on each side")
                op_next = {"AND": "&", "OR": "|", "NOT": "& !"}[value]
                continue
            if kind == "(":
                term = "(" + expr(depth + 1) + ")"
                if pos >= len(tokens) or tokens[pos][0] != ")":
                    raise FtsSyntaxError("unbalanced '('")
                pos += 1
            else:
                term = value
            if parts:
                parts.append(op_next or "&")
            parts.append(term)
            op_next = None
        if op_next is not None or not parts:
            raise FtsSyntaxError("a query needs a term" if not parts else "an operator at the end")
        return " ".join(parts)

    result = expr(0)
    if pos != len(tokens):
        raise FtsSyntaxError("unbalanced ')'")
    return result


def _fts_tokens(query: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    text = query.strip()
    while pos < len(text):
        m = _FTS_TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise FtsSyntaxError(f"cannot read the query at {text[pos:pos + 10]!r}")
        pos = m.end()
        quoted, star, opening, closing, bare = m.groups()
        if opening:
            tokens.append(("(", "("))
        elif closing:
            tokens.append((")", ")"))
        elif quoted is not None:
            tokens.append(("term", _phrase(words(quoted[1:-1].replace('""', '"')), bool(star))))
        elif bare in ("AND", "OR", "NOT"):
            tokens.append(("op", bare))
        elif bare is not None:
            if bare.upper() == "NEAR" or bare.startswith("NEAR(") or ":" in bare or bare.startswith("^"):
                raise FtsSyntaxError(f"{bare!r}: NEAR, column filters and ^ are not supported")
            star_bare = bare.endswith("*")
            tokens.append(("term", _phrase(words(bare.rstrip("*")), star_bare)))
    return [t for t in tokens if t != ("term", "")]


def _phrase(parts: list[str], prefix: bool) -> str:
    if not parts:
        return ""
    quoted = ["'" + p.replace("'", "''") + "'" for p in parts]
    if prefix:
        quoted[-1] += ":*"
    return quoted[0] if len(quoted) == 1 else "(" + " <-> ".join(quoted) + ")"
