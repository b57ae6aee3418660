"""PURE: an FTS5 query (``bastion commands search --raw``) for PostgreSQL, with FTS5's meaning:
a tsquery for the GIN index and, when positions matter, a program for the exact check.

The PostgreSQL index (bastion.store.pgschema, migration 13; its SQL: bastion.store.ftscheck)
holds each command line's set of words, split as SQLite's unicode61 tokenizer splits them:
runs of letters and digits, lower case, diacritics removed (:func:`words`).  It holds no
positions (tsvector's stop at 16383 and at 255 per word): what needs them is checked on the
line's own tokens.  The query is parsed with FTS5's grammar; :func:`fts5_to_match` gives
``index#exact``:

* ``index``, tsquery text (a cast, not ``to_tsquery``: the words are already split) that
  finds every line the query finds: a word ``'a'``, a prefix ``'a':*``, AND/OR/NOT as
  tsquery's ``& | !``; a form that needs positions becomes the AND of its words (a NOT of
  it is left out: a line with the words apart must still be found);
* ``exact``, empty when ``index`` is the query itself (words, prefixes, AND/OR/NOT only:
  the GIN index answers it alone), else ``boolean;leaf;...``: each form that needs
  positions is a leaf and the boolean is the whole query as tsquery text over the line's
  words and a marker ``'~k'`` for leaf ``k``, which ``bastion_fts_exact`` evaluates on each
  line the index found.  Leaves:

  - a phrase (``"a b"``, ``a + b``, ``"a b"*``: its last word a prefix; in a ``+`` chain
    each part may be one) -> ``0:a b*``: its words at consecutive positions;
  - ``^phrase`` (it starts the line) -> ``^:a b``;
  - ``NEAR(p1 p2 ..., N)`` (N 10 when left out) -> ``N:p1,p2,...``: FTS5 matches when one
    instance of each phrase lies in a clump where, for the phrase that starts last at
    position ``M``, every other phrase ``i`` (``n_i`` words) starts at ``M - n_i - N`` or
    later (overlaps allowed).  Checked by one pass over the phrases' starts, so any N and
    any number of phrases cost the same to write and about the same to check; a group of
    more than :data:`MAX_NEAR_PHRASES` phrases is refused (the check's time grows with
    their square) and so is N past FTS5's C int (:data:`MAX_NEAR_DISTANCE`);
  - a word or prefix longer than :data:`LONG_WORD` characters (the index keeps a token that
    long as its first :data:`LONG_WORD` characters and ``~``: the index finds it by that
    key, the check compares the whole word).

* column filters: the one column is ``line``: ``line:``, ``{line}:`` (any case, quoted or
  not) leave the query as it is; ``-line:`` / ``-{line}:`` leave no column, so that part
  matches nothing (as FTS5: ``a OR -line:b`` is ``a``); another name is refused as FTS5
  refuses it ("no such column");
* ``AND``, ``OR``, ``NOT`` with FTS5's precedence (NOT binds tightest, then AND, then OR;
  terms side by side are ANDed before any of them: ``a NOT b c`` is ``a NOT (b AND c)``)
  and parentheses.  A phrase with no words (``""``) is dropped from terms side by side
  and matches nothing elsewhere, as in FTS5.

Lenient where FTS5 refuses (kept from the first translation): ASCII punctuation inside a
bare word splits it into a phrase (``/etc/passwd``, ``it's``, ``rm -rf``), and a
parenthesised group may stand beside terms (``(rm OR mv) etc``).

Not covered: executing the query (bastion.store.pgconn, bastion.store.translate.match_sql).
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass
from typing import Callable

from bastion.store.ftscheck import LONG_WORD

COLUMNS = ("line",)             # bastion.recording.schema: commands_fts fts5(line)
NEAR_DEFAULT = 10               # FTS5's N when a NEAR group gives none
MAX_NEAR_PHRASES = 100          # phrases in one NEAR group (the check's time grows with them)
MAX_NEAR_DISTANCE = 2**31 - 1   # FTS5 reads N into a C int
NOTHING = "'0' & !'0'"          # a tsquery that matches no line


class FtsSyntaxError(ValueError):
    """A full-text query this translation cannot express."""


# -- words, as unicode61 splits them ---------------------------------------------------------

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


# -- the parsed query ------------------------------------------------------------------------

@dataclass(frozen=True)
class Term:
    word: str
    prefix: bool = False


@dataclass(frozen=True)
class Phrase:
    terms: tuple[Term, ...]           # () : a phrase with no words (FTS5's EOF node)
    initial: bool = False             # ^: it starts the line


@dataclass(frozen=True)
class Near:
    phrases: tuple[Phrase, ...]       # two or more, none empty
    distance: int


@dataclass(frozen=True)
class Nothing:
    """A part whose column filter leaves no column (``-line:``): it matches no line."""


@dataclass(frozen=True)
class Op:
    op: str                           # AND, OR, NOT (binary: left NOT right)
    left: Node
    right: Node


Node = Phrase | Near | Nothing | Op

# -- tokens ----------------------------------------------------------------------------------

_TOKEN = re.compile(r'\s*(?:(")|([()\{\}:^+*,])|(-)|([^\s()"{}:^+*,]+))')
_COLUMN_AHEAD = re.compile(r'\s*(?:\{|"(?:[^"]|"")*"\s*:|[^\s()"{}:^+*,-]+\s*:)')
_NEAR_AHEAD = re.compile(r"\s*\(")
_WORD_REST = re.compile(r'[^\s()"{}:^+*,]*')
_BLANK = re.compile(r"\s*$")


@dataclass(frozen=True)
class _Tok:
    kind: str      # str (a bare or quoted string), op (AND/OR/NOT), near, or the character
    text: str
    quoted: bool = False


def _tokens(query: str) -> list[_Tok]:
    out: list[_Tok] = []
    pos = 0
    while pos < len(query):
        if _BLANK.match(query, pos):
            break
        m = _TOKEN.match(query, pos)
        if m is None:                                       # pragma: no cover - all chars lex
            raise FtsSyntaxError(f"cannot read the query at {query[pos:pos + 10]!r}")
        quote, special, minus, bare = m.groups()
        pos = m.end()
        if quote:
            end = pos
            while True:
                end = query.find('"', end)
                if end < 0:
                    raise FtsSyntaxError("unterminated string: a '\"' without its pair")
                if query.startswith('""', end):
                    end += 2
                    continue
                break
            out.append(_Tok("str", query[pos:end].replace('""', '"'), quoted=True))
            pos = end + 1
        elif special:
            out.append(_Tok(special, special))
        elif minus:
            if _COLUMN_AHEAD.match(query, pos):             # - line:  /  -{line}:
                out.append(_Tok("-", "-"))
            else:                                           # lenient: punctuation in a word
                rest = _WORD_REST.match(query, pos)
                assert rest is not None
                out.append(_Tok("str", "-" + rest.group(0)))
                pos = rest.end()
        elif bare in ("AND", "OR", "NOT"):
            out.append(_Tok("op", bare))
        elif bare == "NEAR" and _NEAR_AHEAD.match(query, pos):
            out.append(_Tok("near", bare))
        else:
            out.append(_Tok("str", bare))
    return out


# -- the parser (FTS5's grammar, fts5parse.y) -------------------------------------------------

class _Parser:
    def __init__(self, query: str) -> None:
        self.toks = _tokens(query)
        self.pos = 0

    def peek(self, ahead: int = 0) -> _Tok | None:
        i = self.pos + ahead
        return self.toks[i] if i < len(self.toks) else None

    def take(self, kind: str | None = None) -> _Tok:
        tok = self.peek()
        if tok is None or (kind is not None and tok.kind != kind):
            raise FtsSyntaxError(f"syntax error near {tok.text if tok else 'the end'!r}")
        self.pos += 1
        return tok

    def query(self) -> Node:
        if not self.toks:
            raise FtsSyntaxError("a query needs a term")
        node = self.binary(0)
        if self.peek() is not None:
            raise FtsSyntaxError(f"syntax error near {self.peek().text!r}")   # type: ignore[union-attr]
        return node

    _LEVELS = ("OR", "AND", "NOT")

    def binary(self, level: int) -> Node:
        if level == len(self._LEVELS):
            return self.side_by_side()
        node = self.binary(level + 1)
        while (tok := self.peek()) is not None and tok.kind == "op" and tok.text == self._LEVELS[level]:
            self.pos += 1
            node = Op(tok.text, node, self.binary(level + 1))
        return node

    def starts_unit(self) -> bool:
        tok = self.peek()
        return tok is not None and tok.kind in ("str", "(", "^", "-", "{", "near")

    def side_by_side(self) -> Node:
        units = [self.unit()]
        while self.starts_unit():
            units.append(self.unit())
        kept = [u for u in units if not _empty(u)] or units[:1]
        node = kept[0]
        for unit in kept[1:]:
            node = Op("AND", node, unit)
        return node

    def unit(self) -> Node:
        negated = self.column_filter()
        tok = self.peek()
        if tok is None:
            raise FtsSyntaxError("syntax error near the end")
        if tok.kind == "(":
            self.pos += 1
            node = self.binary(0)
            self.take(")")
        elif tok.kind == "near":
            node = self.near()
        else:
            node = self.phrase(allow_initial=True)
        if negated and not _empty(node):
            return Nothing()
        return node

    def column_filter(self) -> bool:
        """Reads ``[-] colspec :`` if there; True when it leaves no column."""
        tok = self.peek()
        negated = tok is not None and tok.kind == "-"
        at = 1 if negated else 0
        first = self.peek(at)
        if first is None:
            if negated:
                raise FtsSyntaxError("syntax error near '-'")
            return False
        if first.kind == "{":
            self.pos += at + 1
            names = []
            while (name := self.peek()) is not None and name.kind == "str":
                names.append(name.text)
                self.pos += 1
            self.take("}")
            if not names:
                raise FtsSyntaxError("syntax error near '}'")
        elif first.kind == "str" and (after := self.peek(at + 1)) is not None and after.kind == ":":
            names = [first.text]
            self.pos += at + 1
        elif negated:
            raise FtsSyntaxError("syntax error near '-'")
        else:
            return False
        self.take(":")
        for col in names:
            if col.lower() not in COLUMNS:
                raise FtsSyntaxError(f"no such column: {col} (the one column is "
                                     f"{', '.join(COLUMNS)})")
        return negated

    def phrase(self, allow_initial: bool) -> Phrase:
        initial = False
        if (tok := self.peek()) is not None and tok.kind == "^":
            if not allow_initial:
                raise FtsSyntaxError("^ is not allowed inside NEAR(...)")
            initial = True
            self.pos += 1
        terms = self.string()
        while (tok := self.peek()) is not None and tok.kind == "+":
            self.pos += 1
            if (nxt := self.peek()) is not None and nxt.kind == "^":
                raise FtsSyntaxError("^ may only start a phrase, not follow a '+'")
            terms += self.string()
        return Phrase(terms, initial and bool(terms))

    def string(self) -> tuple[Term, ...]:
        tok = self.take()
        if tok.kind != "str":
            raise FtsSyntaxError(f"syntax error near {tok.text!r}")
        parts = words(tok.text)
        star = (nxt := self.peek()) is not None and nxt.kind == "*"
        if star:
            self.pos += 1
        terms = tuple(Term(w) for w in parts)
        if star and terms:
            terms = terms[:-1] + (Term(terms[-1].word, prefix=True),)
        return terms

    def near(self) -> Node:
        self.take("near")
        self.take("(")
        phrases: list[Phrase] = []
        distance = NEAR_DEFAULT
        while (tok := self.peek()) is not None and tok.kind not in (")", ","):
            if tok.kind == "op":
                raise FtsSyntaxError(f"{tok.text} is not allowed inside NEAR(...)")
            phrases.append(self.phrase(allow_initial=False))
        if not phrases:
            raise FtsSyntaxError("NEAR(...) needs at least one phrase")
        if (tok := self.peek()) is not None and tok.kind == ",":
            self.pos += 1
            num = self.take()
            if num.kind != "str" or num.quoted or not num.text.isascii() or not num.text.isdigit():
                raise FtsSyntaxError(f'expected integer, got "{num.text}"')
            distance = int(num.text)
        self.take(")")
        kept = tuple(p for p in phrases if p.terms)
        if not kept:
            return Phrase(())
        if len(kept) == 1:
            return kept[0]
        return Near(kept, distance)


def _empty(node: Node) -> bool:
    return isinstance(node, Phrase) and not node.terms


def parse(query: str) -> Node:
    """The query's tree; raises :class:`FtsSyntaxError`."""
    return _Parser(query).query()


# -- the index query and the exact program ---------------------------------------------------

def _bounded(fn: Callable[[str], str]) -> Callable[[str], str]:
    """A query nested (or chained) past Python's recursion limit is a syntax error that says
    so, never a crash: the CLI and the API answer it like any other bad query."""
    @functools.wraps(fn)
    def wrapper(query: str) -> str:
        try:
            return fn(query)
        except RecursionError:
            raise FtsSyntaxError("the query nests too deep or has too many terms to search "
                                 "on PostgreSQL; use fewer parentheses or terms") from None
    return wrapper


@_bounded
def fts5_to_match(query: str) -> str:
    """``index#exact`` for bastion.store.translate.match_sql: ``index``, tsquery text for
    the GIN index that finds every line the query finds (and maybe more); ``exact``, empty
    when ``index`` is the query itself, else the program ``boolean;leaf;...`` that
    ``bastion_fts_exact`` checks each of those lines against (the module doc).  ``#`` is in
    neither: a query's words are letters and digits."""
    tree = parse(query)
    leaves: dict[str, int] = {}
    exact, _ = _emit(tree, _EXACT, leaves)
    if exact is None:                 # nothing matches: no need of an index query
        return f"{NOTHING}#"
    index, _ = _emit(tree, _UPPER, {})
    assert index is not None          # a leaf's index form is never nothing
    if not leaves:
        return f"{index}#"
    return f"{index}#{exact};" + ";".join(leaves)


_ATOM, _NOT, _AND, _OR = 3, 2, 1, 0     # tsquery binds ! before & before |
# what a part of the query becomes: its exact form (leaves as markers), a wider one (every
# line it matches, and maybe more: the index query), a narrower one (only lines it matches:
# the right side of a NOT in the wider one)
_EXACT, _UPPER, _LOWER = "exact", "upper", "lower"
_FLIP = {_EXACT: _EXACT, _UPPER: _LOWER, _LOWER: _UPPER}


def _emit(node: Node, mode: str, leaves: dict[str, int]) -> tuple[str | None, int]:
    """(tsquery text, or None for a part that matches no line, its precedence)."""
    if isinstance(node, Nothing):
        return None, _ATOM
    if isinstance(node, (Phrase, Near)):
        return _leaf(node, mode, leaves)
    left, lp = _emit(node.left, mode, leaves)
    right, rp = _emit(node.right, _FLIP[mode] if node.op == "NOT" else mode, leaves)
    if node.op == "OR":
        if left is None or right is None:
            return (left, lp) if right is None else (right, rp)
        return f"{left} | {right}", _OR
    if left is None:
        return None, _ATOM
    if node.op == "NOT":
        if right is None:
            return left, lp
        return f"{_wrap(left, lp, _AND)} & !{_wrap(right, rp, _NOT + 1)}", _AND
    if right is None:
        return None, _ATOM
    return f"{_wrap(left, lp, _AND)} & {_wrap(right, rp, _AND)}", _AND


def _wrap(text: str, prec: int, need: int) -> str:
    return text if prec >= need else f"({text})"


def _leaf(node: Phrase | Near, mode: str, leaves: dict[str, int]) -> tuple[str | None, int]:
    if isinstance(node, Phrase):
        if not node.terms:
            return None, _ATOM
        if len(node.terms) == 1 and not node.initial and len(node.terms[0].word) <= LONG_WORD:
            return _key(node.terms[0]), _ATOM          # a word or prefix: the index is exact
        terms = node.terms
        spec = ("^:" if node.initial else "0:") + _spec(node)
    else:
        if len(node.phrases) > MAX_NEAR_PHRASES:
            raise FtsSyntaxError(f"NEAR with more than {MAX_NEAR_PHRASES} phrases is too "
                                 "large to search on PostgreSQL: use fewer phrases")
        if node.distance > MAX_NEAR_DISTANCE:
            raise FtsSyntaxError(f"NEAR's N must be at most {MAX_NEAR_DISTANCE} (FTS5's "
                                 "integer)")
        terms = tuple(t for p in node.phrases for t in p.terms)
        spec = f"{node.distance}:" + ",".join(_spec(p) for p in node.phrases)
    if mode == _LOWER:                # no narrower tsquery: positions are not in the index
        return None, _ATOM
    if mode == _UPPER:                # each of its words is on the line
        keys = list(dict.fromkeys(_key(t) for t in terms))
        return " & ".join(keys), (_ATOM if len(keys) == 1 else _AND)
    number = leaves.setdefault(spec, len(leaves) + 1)
    return f"'~{number}'", _ATOM


def _key(term: Term) -> str:
    """The tsquery operand that finds the lines holding ``term``: the word (``'w'``, a
    prefix ``'w':*``), or for one longer than :data:`LONG_WORD` the index's key of the
    long tokens it may be (their first :data:`LONG_WORD` characters and ``~``; the exact
    check decides)."""
    if len(term.word) > LONG_WORD:
        return f"'{term.word[:LONG_WORD]}~'"
    return f"'{term.word}'" + (":*" if term.prefix else "")


def _spec(phrase: Phrase) -> str:
    return " ".join(t.word + ("*" if t.prefix else "") for t in phrase.terms)
