"""Shell words: quote removal, escapes, and what is known only at run time.

A :class:`Word` is one shell word as bash would see it after quote removal:
``r''m``, ``\\rm``, ``"rm"`` and ``$'\\x72m'`` all give the value ``rm``.  When
part of a word is only known at run time (a parameter, a command or process
substitution, arithmetic, a glob, a brace expansion, a tilde) the word has no
``value``; its ``template`` keeps the literal parts with ``None`` standing for
"any text", so a deny rule can still ask whether it *could* match.

:func:`decode_word` reads the raw bytes of a word itself (it does not trust the
parser's leaf nodes for quoting); it only asks the syntax tree where each
substitution starts and ends.  When the bytes and the tree disagree it raises
:class:`Disagreement`, and the caller makes the line opaque.

Also here: :func:`norm_path` (lexical path normalisation) and
:func:`ansi_c_decode` (``$'...'`` escapes).

Known limits: extglob patterns are treated like globs; ``~user`` is a run-time
value; a NUL produced by ``$'\\0'`` makes the word opaque rather than truncated.
Pure: no IO.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

from bastion.policy.quickinit import quick_init
from bastion.policy.danger import dangerous_name

NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_PLAIN = re.compile(rb"[A-Za-z0-9_./:=,%+@^#}\]\x80-\xff-]*\Z")
_ASSIGN_EXPANSION = re.compile(r"\$\{!?([A-Za-z_][A-Za-z0-9_]*)(?:\[[^\]]*\])?:?=")
_PROMPT_EXPANSION = re.compile(r"@P\}\Z")
_SPECIAL_PARAMS = b"@*#?-$!0123456789"


class Disagreement(Exception):
    """The raw bytes of a word do not fit the syntax tree; the line is opaque."""


class WordProblem(Exception):
    """A word bash would evaluate in a way we refuse to guess (e.g. ``${x@P}``)."""


@quick_init
@dataclass(frozen=True, slots=True)
class Word:
    """One shell word.

    ``raw``: the source text.  ``value``: the text after quote removal, or ``None``
    when part of it is only known at run time.  ``template``: literal strings and
    ``None`` (unknown text), concatenated.  ``split``: an unquoted expansion, glob or
    brace expansion that may become zero or several words.  ``why``: what makes it
    run-time only (``"variable"``, ``"command substitution"``, ``"glob"`` ...).
    ``quoted``: some part of it was quoted or escaped (a quoted ``if`` is no keyword).
    ``globbed`` / ``found``: its unknown parts are names of existing files (see
    :func:`bastion.policy.effects.arg_hits`), not arbitrary text.
    """

    raw: str
    value: str | None
    template: tuple = ()
    split: bool = False
    why: str | None = None
    quoted: bool = False
    globbed: bool = False     # every unknown part is a pathname expansion (``*`` ``?`` ``[..]``)
    data: bool = False        # every unknown part is the output of a command that prints
                              # only data (DATA_SUBSTITUTION): never an option, no blank
    found: tuple[Any, ...] = ()   # or: the templates it may be, whose unknown parts are names
                              # found on disk (a loop variable over globs, find's ``{}``)

    @staticmethod
    def literal(text: str) -> "Word":
        return Word(raw=text, value=text, template=(text,))

    @staticmethod
    def unknown(raw: str, why: str) -> "Word":
        return Word(raw=raw, value=None, template=(None,), split=True, why=why)


def _dec(b: bytes | bytearray) -> str:
    return bytes(b).decode("utf-8", "surrogateescape")


def norm_path(text: str, *, blanks: bool = False) -> str:
    """Lexically normalise a path-like argument: ``/etc//./x/../shadow`` → ``/etc/shadow``.

    Arguments without ``/``, with blanks (unless ``blanks``), and URLs (``://``) are
    returned unchanged.  ``..`` is resolved lexically (symlinks are not followed: nothing
    here touches a disk).
    """
    if "/" not in text or "://" in text or (not blanks and (
            " " in text or "\n" in text or "\t" in text)):
        return text
    absolute = text.startswith("/")
    parts: list[str] = []
    for seg in text.split("/"):
        if seg == "" or seg == ".":
            continue
        if seg == "..":
            if parts and parts[-1] != "..":
                parts.pop()
            elif not absolute:
                parts.append("..")
            continue
        parts.append(seg)
    joined = "/".join(parts)
    if absolute:
        return "/" + joined
    if joined.startswith("-") and not text.startswith("-"):
        return "./" + joined          # ./-r is a file, not an option
    return joined or "."


_SIMPLE_ESC = {ord("a"): 7, ord("b"): 8, ord("e"): 27, ord("E"): 27, ord("f"): 12, ord("n"): 10,
               ord("r"): 13, ord("t"): 9, ord("v"): 11, ord("\\"): 92, ord("'"): 39,
               ord('"'): 34, ord("?"): 63}
_HEX = b"0123456789abcdefABCDEF"


def ansi_c_decode(body: bytes) -> bytes:
    """Decode the inside of ``$'...'`` the way bash does; raise WordProblem on NUL."""
    out = bytearray()
    i, n = 0, len(body)
    while i < n:
        c = body[i]
        if c != 92 or i + 1 >= n:  # not a backslash (or a trailing one)
            out.append(c)
            i += 1
            continue
        e = body[i + 1]
        i += 2
        if e in _SIMPLE_ESC:
            out.append(_SIMPLE_ESC[e])
        elif 48 <= e <= 55:  # octal \nnn
            j = i
            while j < n and j < i + 2 and 48 <= body[j] <= 55:
                j += 1
            out.append(int(body[i - 1:j], 8) & 0xFF)
            i = j
        elif e in (ord("x"), ord("u"), ord("U")):
            width = {ord("x"): 2, ord("u"): 4, ord("U"): 8}[e]
            j = i
            while j < n and j < i + width and body[j] in _HEX:
                j += 1
            if j == i:
                out += bytes((92, e))
                continue
            num = int(body[i:j], 16)
            i = j
            if e == ord("x"):
                out.append(num)
            else:
                try:
                    out += chr(num).encode("utf-8")
                except (ValueError, UnicodeEncodeError):
                    raise WordProblem("invalid \\u escape in $'...'") from None
        elif e == ord("c") and i < n:
            out.append(body[i] & 0x1F if body[i] != ord("?") else 0x7F)
            i += 1
        else:
            out += bytes((92, e))
    if 0 in out:
        raise WordProblem("NUL byte produced by $'...'")
    return bytes(out)


class _Builder:
    __slots__ = ("lit", "parts", "split", "why", "quoted", "nonglob", "nondata")

    def __init__(self) -> None:
        self.lit = bytearray()
        self.parts: list = []
        self.split = False
        self.why: str | None = None
        self.quoted = False
        self.nonglob = False
        self.nondata = False

    def unknown(self, why: str, split: bool, data: bool = False) -> None:
        if self.lit:
            self.parts.append(_dec(self.lit))
            self.lit = bytearray()
        if not self.parts or self.parts[-1] is not None:
            self.parts.append(None)
        self.split = self.split or split
        self.why = self.why or why
        self.nonglob = self.nonglob or why != "glob"
        self.nondata = self.nondata or not data

    def finish(self, raw: str) -> Word:
        if self.lit or not self.parts:
            self.parts.append(_dec(self.lit))
        template = tuple(self.parts)
        if None not in template:
            value = "".join(template)
            return Word(raw=raw, value=value, template=(value,), quoted=self.quoted)
        return Word(raw=raw, value=None, template=template, split=self.split, why=self.why,
                    quoted=self.quoted, globbed=not self.nonglob, data=not self.nondata)


# Substitutions whose output is data: it never starts with '-' or '+' and holds no blank,
# '/' or glob character, so it is never an option, never split and no path of its own.
# date formats: conversions that print digits, ':' or 'T' (no %z: "-0500", no locale names).
# hostname/whoami print what an administrator set (assumed sane: not "-x", see POLICY.md).
DATA_SUBSTITUTION = re.compile(
    r"\$\((?:hostname(?: -s| --short)?|whoami|id -(?:un|gn|u|g)|nproc|uname(?: -[snrm])?"
    r"|date(?: -u| --utc)? \+(?:%[FYmdHMSjsyCGgVUWuwTRI%]|[A-Za-z0-9_.:])"
    r"(?:%[FYmdHMSjsyCGgVUWuwTRI%]|[A-Za-z0-9_.:-])*)\)")

# The programs above: a function or alias of that name (defined on this or an earlier line)
# would make their output anything, so defining one is opaque (parse.py, wrappers.py).
DATA_PROGRAMS = frozenset(("hostname", "whoami", "id", "nproc", "uname", "date"))

_SUB_KIND = {"command_substitution": "command substitution",
             "process_substitution": "process substitution",
             "expansion": "variable", "simple_expansion": "variable",
             "arithmetic_expansion": "arithmetic"}


def decode_word(src: bytes, start: int, end: int, subs: dict, on_sub: Callable,
                *, assignment: bool = False) -> Word:
    """Decode ``src[start:end]`` as one shell word.

    ``subs`` maps the start byte of each substitution/expansion node inside the
    word to that node (it has ``type`` and ``end_byte``); ``on_sub(node)`` is called
    for each one met, so the caller can look for the commands inside.
    ``assignment``: the word is ``NAME=value`` (tilde after ``=`` and ``:`` expands).
    """
    text = src[start:end]
    raw = _dec(text)
    if _PLAIN.match(text) and not (end < len(src) and src[end] == 10 and text.endswith(b"\\")):
        return Word(raw=raw, value=raw, template=(raw,))
    b = _Builder()
    i = start
    word_start = True
    dq = False
    after_eq = False
    seen_eq = False
    while i < end:
        c = src[i]
        if dq:
            if c == 34:  # closing "
                dq = False
                i += 1
            elif c == 92 and i + 1 < end:
                nxt = src[i + 1]
                if nxt == 10:
                    i += 2
                elif nxt in b'$`"\\':
                    b.lit.append(nxt)
                    i += 2
                else:
                    b.lit.append(92)
                    i += 1
            elif c == 36 or c == 96:  # $ or `
                i = _dollar(src, i, end, subs, on_sub, b, quoted=True)
            else:
                b.lit.append(c)
                i += 1
            continue
        at_start = word_start or after_eq
        word_start = after_eq = False
        if c == 92:  # backslash
            if i + 1 >= end:
                if end < len(src) and src[end] == 10:
                    raise Disagreement("line continuation splits a word")
                b.lit.append(92)
                i += 1
            elif src[i + 1] == 10:
                i += 2
                word_start = at_start
            else:
                b.lit.append(src[i + 1])
                b.quoted = True
                i += 2
        elif c == 39:  # '
            j = src.find(b"'", i + 1, end)
            if j < 0:
                raise Disagreement("unterminated single quote in word")
            b.lit += src[i + 1:j]
            b.quoted = True
            i = j + 1
        elif c == 34:
            dq = True
            b.quoted = True
            i += 1
        elif c == 36 and i + 1 < end and src[i + 1] == 39:  # $'
            j = i + 2
            while j < end and src[j] != 39:
                j += 2 if src[j] == 92 else 1
            if j >= end:
                raise Disagreement("unterminated $'...' in word")
            b.lit += ansi_c_decode(src[i + 2:j])
            b.quoted = True
            i = j + 1
        elif c == 36 and i + 1 < end and src[i + 1] == 34:  # $"
            dq = True
            b.quoted = True
            i += 2
        elif c == 36 or c == 96:
            i = _dollar(src, i, end, subs, on_sub, b, quoted=False)
        elif c in (60, 62) and i + 1 < end and src[i + 1] == 40:  # <( >(
            node = subs.get(i)
            if node is None or node.type != "process_substitution":
                raise Disagreement("process substitution the parser did not see")
            on_sub(node)
            b.unknown("process substitution", False)
            if i == start and node.end_byte == end:     # the whole word: a pipe, /dev/fd/N
                return Word(raw=raw, value=None, template=(None,), why="process substitution",
                            found=(("/dev/fd/", None),))
            i = node.end_byte
        elif c == 42 or c == 63:  # * ?
            b.unknown("glob", True)
            i += 1
            if i < end and src[i] == 40:
                raise Disagreement("extglob pattern")
        elif c in (32, 9, 10):  # an unquoted blank: bash would end the word here
            raise Disagreement("blank inside a word")
        elif c == 91:  # [
            j = src.find(b"]", i + 2, end)
            if j > 0 and not any(x in src[i:j] for x in (b" ", b"\t", b"\n")):
                b.unknown("glob", True)
                i = j + 1
            else:
                b.lit.append(c)
                i += 1
        elif c == 123:  # {
            j = _brace_end(src, i, end)
            if j > 0:
                b.unknown("brace expansion", True)
                i = j + 1
            else:
                b.lit.append(c)
                i += 1
        elif c == 126 and at_start:  # ~ at word start (or after = / : in assignments)
            j = i + 1
            while j < end and (src[j] not in b"/:'\"\\$`" ):
                j += 1
            b.unknown("tilde", False)
            i = j
        elif c in (64, 43, 33) and i + 1 < end and src[i + 1] == 40:  # @( +( !(
            raise Disagreement("extglob pattern")
        else:
            b.lit.append(c)
            i += 1
            if c == 61 and not seen_eq:  # first =
                seen_eq = True
                if assignment or NAME_RE.match(_dec(src[start:i - 1])):
                    after_eq = True
            elif c == 58 and assignment:  # : in an assignment value
                after_eq = True
    if dq:
        raise Disagreement("unterminated double quote in word")
    return b.finish(raw)


def _brace_end(src: bytes, i: int, end: int) -> int:
    """End of a brace expansion ``{a,b}`` / ``{1..3}`` starting at ``i``, else -1."""
    depth = 0
    has_sep = False
    j = i
    while j < end:
        c = src[j]
        if c == 92:
            j += 2
            continue
        if c in (39, 34, 36, 96):  # quotes / expansions inside: treat as brace if separated
            j += 1
            continue
        if c in (32, 9, 10):
            return -1
        if c == 123:
            depth += 1
        elif c == 125:
            depth -= 1
            if depth == 0:
                return j if has_sep else -1
        elif c == 44 and depth == 1:
            has_sep = True
        elif c == 46 and depth == 1 and j + 1 < end and src[j + 1] == 46:
            has_sep = True
        j += 1
    return -1


def _dollar(src: bytes, i: int, end: int, subs: dict, on_sub: Callable, b: _Builder,
            *, quoted: bool) -> int:
    c = src[i]
    if c == 36:
        nxt = src[i + 1] if i + 1 < end else None
        if nxt is None or not (nxt in b"({[_" or nxt in _SPECIAL_PARAMS or 65 <= nxt <= 90
                               or 97 <= nxt <= 122):
            b.lit.append(36)
            return i + 1
    node = subs.get(i)
    if node is None:
        raise Disagreement("expansion the parser did not see")
    kind = _SUB_KIND.get(node.type)
    if kind is None:
        raise Disagreement(f"unexpected {node.type} in word")
    if node.type == "expansion":
        text = _dec(src[i:node.end_byte])
        m = _ASSIGN_EXPANSION.match(text)
        if m and dangerous_name(m.group(1)):
            raise WordProblem(f"{text} may assign {m.group(1)}")
        if _PROMPT_EXPANSION.search(text):
            raise WordProblem(f"{text} expands a value as a prompt (which can run commands)")
    on_sub(node)
    data = node.type == "command_substitution" and bool(
        DATA_SUBSTITUTION.fullmatch(_dec(src[i:node.end_byte])))
    b.unknown(kind, not quoted and not data, data)
    return node.end_byte
