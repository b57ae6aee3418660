"""Command patterns of ``[[rules]]``: parsing and matching one simple command.

A pattern is a string split like a shell line (``shlex``, so quotes work):
``"rm -r"``, ``"* /etc/shadow"``, ``'echo "hello world"'``.

* The first word is a glob on the normalised program name (``rm``, ``systemd*``,
  ``*``).  If it holds a ``/`` it is a glob on the normalised program *path*
  instead (``/opt/app/bin/*``), for programs that are not on the standard path.
* Every other word must match some argument of the command, in any order
  (one argument may satisfy several words):

  - ``-x`` (and ``-xy`` = ``-x -y``): a short-option cluster holding ``x``
    (``-rf``, ``-fr``, ``-r``).
  - ``--long`` / ``--long=GLOB``: ``--long``, ``--long=...`` or a GNU
    abbreviation of it (``--rec``); with ``=GLOB`` the value (glued with ``=``
    or as the next argument) must match the glob.
  - anything else: a glob (``*``, ``?``, ``[...]``) on the normalised argument.
    Path-like words are normalised the same way (``/etc//x`` is ``/etc/x``).

For a program whose table has subcommands (git, docker, kubectl, systemctl,
openssl: :mod:`bastion.policy.programs`), the first non-option word of the pattern
is the *subcommand*: ``git log`` matches ``git -C x log -p`` but not ``git clean
log``.  For a program read with its table, ``-x`` / ``--long`` match the options the
table found (values consumed: ``tar -x -fbackup.tar`` holds no ``-t``).

Redirection targets are arguments.  Deny and review rules are *conservative*:
they also try each argument's other readings (value after ``=``, path after a
``cd``, ...) and count an argument known only at run time as matching when it
*could* (a template intersects the glob); options after ``--`` still count.
Allow rules only look at the plain static value and ignore operands after
``--`` for option words.

``conservative`` is a level: 0 for allow rules, 1 for deny/review rules on an
opaque command (static readings only: the opaque action already stands for
what is unknown), 2 for deny/review rules on a known command (run-time
arguments count when they could match).

Pure: no IO.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from bastion.policy.programs import subcommands
from bastion.policy.words import norm_path

STAR = "*"          # glob token: any text
ANY = "?"           # glob token: any one character
_GLOB_CHARS = frozenset("*?[")


class PatternError(ValueError):
    pass


def glob_tokens(glob: str) -> tuple:
    """Tokens of a glob: ``STAR``, ``ANY``, ``("set", negated, chars-regex)`` or 1-char strings."""
    out: list = []
    i, n = 0, len(glob)
    while i < n:
        c = glob[i]
        if c == "\\" and i + 1 < n:
            out.append(("lit", glob[i + 1]))
            i += 2
        elif c == "*":
            if not out or out[-1] is not STAR:
                out.append(STAR)
            i += 1
        elif c == "?":
            out.append(ANY)
            i += 1
        elif c == "[":
            j = i + 1
            if j < n and glob[j] in "!^":
                j += 1
            if j < n and glob[j] == "]":
                j += 1
            while j < n and glob[j] != "]":
                j += 1
            if j >= n:
                raise PatternError(f"unterminated [ in glob {glob!r} (write \\\\[ for a literal [)")
            body = glob[i + 1:j]
            neg = body[:1] in ("!", "^")
            if neg:
                body = body[1:]
            rx = re.compile("[" + ("^" if neg else "") + body.replace("\\", "\\\\").replace("[", "\\[")
                            + "]")
            out.append(("set", rx))
            i = j + 1
        else:
            out.append(("lit", c))
            i += 1
    return tuple(out)


def tokens_regex(tokens: tuple) -> re.Pattern:
    parts = []
    for t in tokens:
        if t is STAR:
            parts.append(".*")
        elif t is ANY:
            parts.append(".")
        elif t[0] == "set":
            parts.append(t[1].pattern)
        else:
            parts.append(re.escape(t[1]))
    return re.compile("".join(parts), re.DOTALL)


def template_tokens(template: tuple) -> tuple:
    out: list = []
    for part in template:
        if part is None:
            if not out or out[-1] is not STAR:
                out.append(STAR)
        else:
            out.extend(("lit", ch) for ch in part)
    return tuple(out)


def _compatible(a, b) -> bool:
    if a is ANY or b is ANY:
        return True
    if a[0] == "lit" and b[0] == "lit":
        return a[1] == b[1]
    if a[0] == "set" and b[0] == "lit":
        return bool(a[1].fullmatch(b[1]))
    if b[0] == "set" and a[0] == "lit":
        return bool(b[1].fullmatch(a[1]))
    return True   # two classes: assume they overlap (conservative)


def intersects(g: tuple, t: tuple) -> bool:
    """Could some string match both token sequences?  (Product-automaton search.)"""
    n, m = len(g), len(t)
    seen = set()
    stack = [(0, 0)]
    while stack:
        i, j = stack.pop()
        if (i, j) in seen:
            continue
        seen.add((i, j))
        if i == n and j == m:
            return True
        gi = g[i] if i < n else None
        tj = t[j] if j < m else None
        if gi is STAR:
            stack.append((i + 1, j))
        if tj is STAR:
            stack.append((i, j + 1))
        if gi is None or tj is None:
            continue
        if gi is STAR and tj is not STAR:
            stack.append((i, j + 1))
        elif tj is STAR and gi is not STAR:
            stack.append((i + 1, j))
        elif gi is not STAR and tj is not STAR and _compatible(gi, tj):
            stack.append((i + 1, j + 1))
    return False


class Glob:
    """A compiled glob: ``match(text)`` and ``could_match(template)``."""

    __slots__ = ("source", "tokens", "rx", "literal")

    def __init__(self, source: str) -> None:
        self.source = source
        self.tokens = glob_tokens(source)
        self.literal = None if any(t is STAR or t is ANY or t[0] == "set" for t in self.tokens) \
            else "".join(t[1] for t in self.tokens)
        self.rx = tokens_regex(self.tokens)

    def match(self, text: str) -> bool:
        if self.literal is not None:
            return text == self.literal
        return self.rx.fullmatch(text) is not None

    def could_match(self, template: tuple) -> bool:
        return intersects(self.tokens, template_tokens(template))

    def covers(self, template: tuple) -> bool:
        """Does every string of ``template`` match?  Answered for literal templates and for
        a glob ``LITERAL*`` (``/tmp/**``) against a template whose literal head starts with
        LITERAL (``("/tmp/unpack/", None)``); False otherwise."""
        if None not in template:
            return self.match("".join(template))
        toks = self.tokens
        if not toks or toks[-1] is not STAR or any(t is STAR or t is ANY or t[0] != "lit"
                                                   for t in toks[:-1]):
            return False
        head = template[0]
        literal = "".join(t[1] for t in toks[:-1])
        return isinstance(head, str) and head.startswith(literal) and ".." not in head


_ANY_SHORT = {}


@dataclass(frozen=True, slots=True)
class Short:
    """``-x``: a short-option cluster containing ``x``."""

    letter: str

    def matches(self, cmd, conservative: int) -> bool:
        c = self.letter
        tabled = cmd.shorts is not None     # read with the program's table
        if tabled:
            if c in cmd.shorts:
                return True
            if conservative and any(a.operand and a.text is not None and len(a.text) > 1 and
                                    a.text[0] == "-" and a.text[1] != "-" and c in a.text
                                    for a in cmd.args):
                return True                 # rm -- -r: deny rules still count it
            if conservative < 2:
                return False
        valued = cmd.valued
        for k, a in enumerate(cmd.args):
            t = a.text
            if t is not None:
                if tabled:
                    continue
                if len(t) > 1 and t[0] == "-" and t[1] != "-" and c in t and (
                        conservative or not a.operand):
                    return True
            elif conservative > 1 and any(_could_short(tpl, c) for tpl in a.templates[:1]) \
                    and k not in valued:       # an option's value is no option
                return True
        return False


def _could_short(template: tuple, c: str) -> bool:
    g = _ANY_SHORT.get(c)
    if g is None:
        g = _ANY_SHORT[c] = Glob("-*" + ("\\" + c if c in "*?[\\" else c) + "*")
    return g.could_match(template)


_LONG_DYNAMIC = Glob("--*")


@dataclass(frozen=True, slots=True)
class Long:
    """``--name`` or ``--name=GLOB``; GNU abbreviations (``--na``) match too."""

    name: str
    value: Glob | None = None

    def matches(self, cmd, conservative: int) -> bool:
        name = self.name
        if cmd.longs is not None:           # read with the program's table
            values = cmd.longs.get(name)
            if values is None and conservative and any(
                    a.operand and a.text is not None and a.text.startswith("--") and
                    len(a.text) > 2 and name.startswith(a.text[2:].partition("=")[0])
                    for a in cmd.args):
                return True                 # rm -- --recursive: deny rules still count it
            if values is None:
                valued = cmd.valued
                return conservative > 1 and any(
                    a.text is None and a.templates and k not in valued
                    and _LONG_DYNAMIC.could_match(a.templates[0])
                    for k, a in enumerate(cmd.args))
            if self.value is None:
                return True
            return any(conservative > 1 if v is None else _value_matches(self.value, v,
                                                                         conservative)
                       for v in values) or (not values and conservative > 1)
        args = cmd.args
        for k, a in enumerate(args):
            t = a.text
            if t is None:
                if conservative > 1 and a.templates and _LONG_DYNAMIC.could_match(a.templates[0]):
                    return True
                continue
            if not t.startswith("--") or len(t) < 3 or (a.operand and not conservative):
                continue
            key, eq, val = t[2:].partition("=")
            if not name.startswith(key):
                continue
            if self.value is None:
                return True
            if eq:
                if _value_matches(self.value, val, conservative):
                    return True
            elif k + 1 < len(args):
                nxt = args[k + 1]
                if nxt.text is not None:
                    if _value_matches(self.value, nxt.text, conservative):
                        return True
                elif conservative > 1 and any(self.value.could_match(tp) for tp in nxt.templates):
                    return True
        return False


def _value_matches(glob: Glob, val: str, conservative: int) -> bool:
    return glob.match(norm_path(val)) or (conservative and glob.match(val))


@dataclass(frozen=True, slots=True)
class Any_:
    """A glob on some argument."""

    glob: Glob

    def matches(self, cmd, conservative: int) -> bool:
        g = self.glob
        pool = cmd.readings if conservative else cmd.texts
        lit = g.literal
        if lit is not None:
            if lit in pool:
                return True
        else:
            rx = g.rx.fullmatch
            for t in pool:
                if rx(t) is not None:
                    return True
        if conservative > 1:
            for tpl in cmd.templates:
                if g.could_match(tpl):
                    return True
        return False


@dataclass(frozen=True, slots=True)
class Sub:
    """The subcommand word of a program with subcommands (``git log``): it matches the
    subcommand only, not any argument.  A command the table could not read (opaque)
    falls back to "any argument" for deny/review rules."""

    glob: Glob
    level: int = 0              # docker container logs: "logs" is level 1

    def matches(self, cmd, conservative: int) -> bool:
        if cmd.sub is not None:
            subs = cmd.subs
            return len(subs) > self.level and self.glob.match(subs[self.level])
        if cmd.known or not conservative:
            return False
        return Any_(self.glob).matches(cmd, conservative)


@dataclass(frozen=True)
class Pattern:
    """One entry of a rule's ``commands``."""

    source: str
    program: Glob                 # on the basename, or on the path when ``by_path``
    by_path: bool
    words: tuple                  # Short / Long / Any_

    def matches(self, cmd, conservative: int) -> bool:
        """Does every word match some argument of ``cmd`` (a commands.Command)?"""
        for w in self.words:
            if not w.matches(cmd, conservative):
                return False
        return True


def parse_pattern(source: str) -> Pattern:
    """Parse a pattern string; raise PatternError with a message a person can act on."""
    if not isinstance(source, str) or not source.strip():
        raise PatternError("a command pattern must be a non-empty string")
    try:
        parts = shlex.split(source, comments=False, posix=True)
    except ValueError as exc:
        raise PatternError(f"pattern {source!r} does not split into words: {exc}") from None
    if not parts or not parts[0]:
        raise PatternError(f"pattern {source!r} has no program word")
    prog = parts[0]
    by_path = "/" in prog
    if by_path:
        prog = norm_path(prog)
        if not prog.startswith("/"):
            raise PatternError(f"program path {parts[0]!r} in pattern {source!r} must be absolute")
    program = Glob(prog)
    words: list = []
    want_sub = not by_path and program.literal is not None and subcommands(program.literal)
    path: list = []
    for part in parts[1:]:
        if not part:
            raise PatternError(f"pattern {source!r} has an empty word")
        if want_sub and not part.startswith("-"):
            words.append(Sub(Glob(part), len(path)))
            path.append(part)
            want_sub = subcommands(program.literal, tuple(path))
            continue
        words.extend(_pattern_word(part))
    return Pattern(source, program, by_path, tuple(words))


def _pattern_word(part: str) -> list:
    if part.startswith("--") and len(part) > 2:
        name, eq, val = part[2:].partition("=")
        if not (_GLOB_CHARS & set(name)):
            return [Long(name, Glob(norm_path(val)) if eq else None)]
    elif part.startswith("-") and len(part) > 1 and part[1:].isalnum() and part[1:].isascii():
        return [Short(c) for c in dict.fromkeys(part[1:])]
    return [Any_(Glob(norm_path(part)))]
