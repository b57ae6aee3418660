"""Bash arithmetic: where a variable's *value* is evaluated as code, and when that is safe.

In an arithmetic context bash evaluates the value of every variable it names as an
expression of its own, recursively, and expands the subscripts it meets there:
``x='a[$(cmd)]'; echo $((x))`` runs ``cmd``.  The contexts are ``$((..))``, ``$[..]``,
``((..))``, ``for ((..))``, ``let``, the operands of ``[[ A -eq B ]]`` (``-ne -lt -le
-gt -ge``), ``declare -i`` assignments, indexed-array subscripts (``${a[x]}``,
``a[x]=``, ``([x]=v)``), substring offsets (``${s:n:m}``), indirect expansion
(``${!x}``: the value is a name, its subscript is evaluated) and ``-v NAME[SUB]``.

This module reads the *text* of those contexts; it never sees a tree:

* :func:`scan_arith`: the names an expression reads (their values are evaluated),
  the names it assigns (always a number), and what in it is never known to be safe
  (``$1``, ``$@``, ``$-``, an array element pasted in);
* :func:`value_refs`: is an assignment's value a plain number (digits, operators,
  numbers pasted from other variables, ``$((..))``), and which variables does it paste;
* :func:`expansion`: the arithmetic texts of a ``${...}`` (subscript, offset and
  length), the variable an indirect ``${!x}`` reads, an assignment ``${x:=v}``;
* :func:`int_output`: a command substitution whose output is only a number
  (``date +%s``, ``wc -l`` of its input, ``nproc``, ``id -u``).

The parse walker (:mod:`bastion.policy.parse`) records the uses and assignments of
one text and decides at its end (see ``_Walker.settle``): a variable read in
arithmetic is safe only if every assignment to it in the text is a plain number and
one of them surely ran before the read (a top-level statement earlier in the text,
a ``for ((i=0; ...))`` header, a ``for i in 1 2 3`` list); otherwise the text is
opaque.  ``UID``, ``EUID`` and ``PPID`` (read-only integers) are always safe.

Known limit, kept on purpose: the *output* of a command substitution pasted straight
into arithmetic (``$(( $(cmd) ))``) is not judged (an allowed program's output that
reads ``a[$(x)]`` would run ``x``); a variable assigned from one is judged, and is
only a number when :func:`int_output` says so.  Pure: no IO.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

SAFE_NAMES = frozenset({"UID", "EUID", "PPID"})
ARITH_TEST_OPS = frozenset({"-eq", "-ne", "-lt", "-le", "-gt", "-ge"})
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER = re.compile(r"[0-9][0-9A-Za-z_#@]*")
_ASSIGN_OP = re.compile(r"[ \t\n]*(?:(?:<<|>>|[-+*/%&^|])=|=(?!=))")
_SUBSCRIPTED = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\[(.*)\]\Z", re.S)
_MAX_DEPTH = 8


@dataclass
class Scan:
    """What an arithmetic text does with variables."""

    reads: list[str] = field(default_factory=list)     # names whose values are evaluated
    assigns: list[str] = field(default_factory=list)   # names given a number
    arrays: list[str] = field(default_factory=list)    # names an element of which is assigned
    unsafe: list[str] = field(default_factory=list)    # never-safe pieces, as shown text


def _end(rx: re.Pattern[str], text: str, i: int) -> int:
    m = rx.match(text, i)
    return m.end() if m else i + 1


def _ident(text: str, i: int) -> tuple[str, int]:
    m = _IDENT.match(text, i)
    return (m.group(), m.end()) if m else (text[i:i + 1], i + 1)


def _match(text: str, i: int, open_: str, close: str) -> int:
    """Index of the ``close`` matching ``text[i] == open_`` (quotes and escapes skipped),
    or -1."""
    depth = 0
    n = len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == "'":
            j = text.find("'", i + 1)
            if j < 0:
                return -1
            i = j + 1
            continue
        if c == open_:
            depth += 1
        elif c == close:
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return -1


def _backtick_end(text: str, i: int) -> int:
    j = i + 1
    while j < len(text) and text[j] != "`":
        j += 2 if text[j] == "\\" else 1
    return j if j < len(text) else -1


def _blank(text: str, i: int) -> int:
    while i < len(text) and text[i] in " \t\n":
        i += 1
    return i


def scan_arith(text: str, out: Scan | None = None, depth: int = 0) -> Scan:
    """Read an arithmetic expression (quotes are ignored, as bash does in ``$((..))``)."""
    if out is None:
        out = Scan()
    if depth > _MAX_DEPTH:
        out.unsafe.append("arithmetic nested too deep")
        return out
    i, n = 0, len(text)
    incdec = False
    while i < n:
        c = text[i]
        if c in " \t\n\r\"'\\":
            i += 1
            continue
        if c.isdigit():
            i = _end(_NUMBER, text, i)
            incdec = False
            continue
        if c.isalpha() or c == "_":
            name, j = _ident(text, i)
            k = _blank(text, j)
            element = k < n and text[k] == "["
            if element:
                end = _match(text, k, "[", "]")
                if end < 0:
                    out.unsafe.append(f"{name}[")
                    return out
                scan_arith(text[k + 1:end], out, depth + 1)
                j = end + 1
            op = _ASSIGN_OP.match(text, j)
            plain = op is not None and op.group().strip() == "="
            assigned = op is not None or incdec or text.startswith(("++", "--"), _blank(text, j))
            if element:
                if assigned:
                    out.arrays.append(name)
                if not plain:
                    out.unsafe.append(f"{name}[...]")
            else:
                if assigned:
                    out.assigns.append(name)
                if not plain and name not in SAFE_NAMES:
                    out.reads.append(name)
            i = j
            incdec = False
            continue
        if c == "$":
            i = _dollar(text, i, out, depth)
            incdec = False
            continue
        if c == "`":           # command output: not judged (see the module docstring)
            end = _backtick_end(text, i)
            i = n if end < 0 else end + 1
            continue
        if text.startswith(("++", "--"), i):
            incdec = True
            i += 2
            continue
        incdec = False
        i += 1
    return out


def _dollar(text: str, i: int, out: Scan, depth: int) -> int:
    n = len(text)
    nxt = text[i + 1] if i + 1 < n else ""
    if nxt == "(":
        end = _match(text, i + 1, "(", ")")
        if end < 0:
            out.unsafe.append(text[i:i + 20])
            return n
        if text.startswith("$((", i):      # $((..)): a number; its inside is arithmetic
            scan_arith(text[i + 2:end + 1], out, depth + 1)
        return end + 1                     # $(..): command output, not judged
    if nxt == "[":
        end = _match(text, i + 1, "[", "]")
        if end < 0:
            out.unsafe.append(text[i:i + 20])
            return n
        scan_arith(text[i + 2:end], out, depth + 1)
        return end + 1
    if nxt == "{":
        end = _match(text, i + 1, "{", "}")
        if end < 0:
            out.unsafe.append(text[i:i + 20])
            return n
        _pasted(text[i + 2:end], out, depth)
        return end + 1
    if nxt.isalpha() or nxt == "_":
        name, end = _ident(text, i + 1)
        if name not in SAFE_NAMES:
            out.reads.append(name)
        return end
    if nxt and nxt in "#$?!":
        return i + 2
    if nxt and (nxt.isdigit() or nxt in "@*-"):
        out.unsafe.append("$" + nxt)
        return i + 2
    return i + 1


_DEFAULT_OP = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(:?[-=+?])(.*)\Z", re.S)


def _pasted(body: str, out: Scan, depth: int) -> None:
    """``${body}`` pasted into an arithmetic expression: its value is evaluated."""
    if _IDENT.fullmatch(body):
        if body not in SAFE_NAMES:
            out.reads.append(body)
        return
    if body in ("#", "$", "?", "!") or (body.startswith("#") and len(body) > 1):
        return                              # a count or a length: a number
    m = _DEFAULT_OP.match(body)
    if m:                                   # ${x:-word}: x's value, or the word, is evaluated
        if m.group(1) not in SAFE_NAMES:
            out.reads.append(m.group(1))
        scan_arith(m.group(3), out, depth + 1)
        return
    out.unsafe.append("${" + body + "}")


def value_refs(text: str, literal: bool) -> tuple[bool, tuple[str, ...]]:
    """Is this assignment value a plain number once the variables it pastes are?

    Returns ``(ok, names)``: ``ok`` is False when the value holds a name, a subscript,
    a parameter we never know, or command output that is not :func:`int_output`;
    ``names`` are the variables pasted in (``$n``, ``${n}``), which must be numbers too.
    ``literal``: ``text`` is the value after quote removal (no expansions in it).
    A concatenation of such values is again one, so ``$a$b`` needs only ``a`` and ``b``.
    """
    names: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isdigit():
            i = _end(_NUMBER, text, i)
            continue
        if c.isalpha() or c == "_" or c in "[]":
            return False, ()
        if literal:
            if c in "$`":
                return False, ()
            i += 1
            continue
        if c in "\"'\\":
            i += 1
            continue
        if c == "`":
            end = _backtick_end(text, i)
            if end < 0 or not int_output(text[i + 1:end]):
                return False, ()
            i = end + 1
            continue
        if c == "$":
            nxt = text[i + 1] if i + 1 < n else ""
            if nxt == "(":
                end = _match(text, i + 1, "(", ")")
                if end < 0:
                    return False, ()
                if not (text.startswith("$((", i) or int_output(text[i + 2:end])):
                    return False, ()
                i = end + 1
                continue
            if nxt == "[":
                end = _match(text, i + 1, "[", "]")
                if end < 0:
                    return False, ()
                i = end + 1
                continue
            if nxt == "{":
                end = _match(text, i + 1, "{", "}")
                body = text[i + 2:end] if end > 0 else ""
                if _IDENT.fullmatch(body):
                    names.append(body)
                elif not (body.startswith("#") or body in ("$", "?", "!")):
                    return False, ()
                i = end + 1
                continue
            if nxt.isalpha() or nxt == "_":
                name, i = _ident(text, i + 1)
                names.append(name)
                continue
            if nxt and nxt in "#$?!":
                i += 2
                continue
            return False, ()
        i += 1
    return True, tuple(names)


@dataclass
class ExpansionInfo:
    arith: list[str] = field(default_factory=list)   # texts evaluated as arithmetic
    indirect: str | None = None                       # ${!x}: x's value is used as a name
    unsafe: str | None = None                         # never safe (${!1}: a parameter's value)
    assign: tuple[str, str] | None = None             # ${x:=v}: (name, raw value)


_PARAM = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|[0-9]+|[@*#?$!\-]")


def expansion(text: str) -> ExpansionInfo:
    """Read one ``${...}`` expansion (its whole source text)."""
    info = ExpansionInfo()
    body = text[2:-1] if text.startswith("${") and text.endswith("}") else ""
    if not body:
        return info
    prefix = ""
    i = 0
    if body[0] in "#!" and len(body) > 1 and _PARAM.match(body, 1):
        prefix, i = body[0], 1
    m = _PARAM.match(body, i)
    if m is None:
        return info
    name = m.group()
    i = m.end()
    sub = None
    if i < len(body) and body[i] == "[":
        end = _match(body, i, "[", "]")
        if end < 0:
            info.unsafe = text
            return info
        sub = body[i + 1:end]
        i = end + 1
    rest = body[i:]
    listing = sub is not None and sub.strip() in ("@", "*")
    if sub is not None and not listing:
        info.arith.append(sub)
    if prefix == "!" and not (listing or (sub is None and rest in ("@", "*"))):
        if _IDENT.fullmatch(name):
            info.indirect = name
        elif name not in ("#", "$", "?", "!"):
            info.unsafe = text
    if rest.startswith(":") and (len(rest) == 1 or rest[1] not in "-=+?"):
        info.arith.append(rest[1:])
    elif _IDENT.fullmatch(name) and not prefix and (rest.startswith(":=") or rest[:1] == "="):
        info.assign = (name, rest[2:] if rest.startswith(":=") else rest[1:])
    return info


def subscript_of(name_text: str) -> tuple[str, str | None]:
    """``"a[x+1]"`` → ``("a", "x+1")``; ``"a"`` → ``("a", None)``."""
    m = _SUBSCRIPTED.match(name_text)
    if m:
        return m.group(1), m.group(2)
    return name_text, None


# ---------------------------------------------------------------- command output

_DATE_FMT = re.compile(r"(?:%[-_0^#]?[0-9]*[sYmdHMSjuwVGgeNkClIyFTDRz%]|[-0-9:/.,+ ])*\Z")
_WC_FLAGS = frozenset({"-l", "-c", "-m", "-w", "-L", "--lines", "--bytes", "--chars",
                       "--words", "--max-line-length"})


def int_output(inner: str) -> bool:
    """Does this command substitution print only a number (digits, signs, ``:`` ``/`` ...)?

    Known shapes: ``date [-u] [-d X | -r F] +FMT`` with numeric conversions only;
    ``wc -l`` (one count flag) reading standard input; ``nproc``; ``id -u``/``-g``.
    Anything else: False.
    """
    inner = inner.strip()
    if not inner or len(inner) > 300:
        return False
    try:
        words = shlex.split(inner)
    except ValueError:
        return False
    if not words:
        return False
    prog = words[0].rsplit("/", 1)[-1]
    args = words[1:]
    if prog == "date":
        fmt = 0
        k = 0
        while k < len(args):
            a = args[k]
            if a in ("-u", "--utc", "--universal"):
                k += 1
            elif a in ("-d", "--date", "-r", "--reference"):
                k += 2
            elif a.startswith(("--date=", "--reference=")) or (a[:2] in ("-d", "-r") and len(a) > 2):
                k += 1
            elif a.startswith("+") and "$" not in a and "`" not in a and _DATE_FMT.match(a[1:]):
                fmt += 1
                k += 1
            else:
                return False
        return fmt == 1
    if prog == "wc":
        if len(args) >= 2 and args[-2] == "<":
            args = args[:-2]
        elif args and args[-1].startswith("<") and len(args[-1]) > 1:
            args = args[:-1]
        return len(args) == 1 and args[0] in _WC_FLAGS
    if prog == "nproc":
        return all(a in ("--all",) for a in args)
    if prog == "id":
        return bool(args) and all(a in ("-u", "-g", "-r", "-ur", "-ru", "-gr", "-rg") for a in args)
    return False


def unquoted_glob(raw: str) -> bool:
    """Does a word's source hold ``*``, ``?`` or ``[`` outside quotes and expansions?"""
    i, n = 0, len(raw)
    dq = False
    while i < n:
        c = raw[i]
        if c == "\\":
            i += 2
            continue
        if c == '"':
            dq = not dq
        elif c == "'" and not dq:
            j = raw.find("'", i + 1)
            i = n if j < 0 else j + 1
            continue
        elif c == "$" and i + 1 < n and raw[i + 1] in "({[":
            close = {"(": ")", "{": "}", "[": "]"}[raw[i + 1]]
            end = _match(raw, i + 1, raw[i + 1], close)
            i = n if end < 0 else end + 1
            continue
        elif c == "`":
            end = _backtick_end(raw, i)
            i = n if end < 0 else end + 1
            continue
        elif not dq and c in "*?[":
            return True
        i += 1
    return False


def unquote(raw: str) -> str:
    """A word's source without its quote characters (arithmetic ignores them)."""
    return raw.replace('"', "").replace("'", "")


__all__ = ["ARITH_TEST_OPS", "SAFE_NAMES", "Scan", "ExpansionInfo", "scan_arith", "value_refs",
           "expansion", "subscript_of", "int_output", "unquoted_glob", "unquote"]
