"""Code carried by arguments: sed scripts and awk programs, and when they are inert.

A sed script is *inert* when it only edits the stream: addresses, ``s///`` without
the ``e`` and ``w`` flags, ``y``, ``p d D n N q Q = l h H g G x b t T : { } !``, and
``a i c`` text.  ``e``, ``w``, ``W``, ``r``, ``R`` (run a command, write or read a
file) and anything this reader does not understand make it non-inert.

An awk program is *inert* when, outside its string and regex literals, it holds no
``system``, ``getline``, ``close``, ``fflush``, ``|`` (pipes; ``||`` is fine),
``@`` (gawk ``@load`` / ``@include`` / indirect calls), ``ENVIRON``, ``PROCINFO``,
and no ``>`` inside a ``print``/``printf`` statement outside parentheses (an output
redirection; ``$1 > 5`` in a pattern or in parentheses is a comparison).

Both answers are conservative: ``False`` makes the command opaque.  Pure: no IO.
"""

from __future__ import annotations

import re

_SED_SIMPLE = set("pdDnNqQ=lhHgGxz}F")
_SED_LABEL = set("btT:")
_SED_TEXT = set("aic")


def sed_inert(script: str) -> bool:
    i, n = 0, len(script)
    while i < n:
        c = script[i]
        if c in " \t\n;":
            i += 1
            continue
        # addresses
        i = _sed_address(script, i)
        if i < 0:
            return False
        if i < n and script[i] == ",":
            i = _sed_address(script, i + 1)
            if i < 0:
                return False
        while i < n and script[i] in " \t!":
            i += 1
        if i >= n:
            return False
        c = script[i]
        i += 1
        if c == "{":
            continue
        if c in _SED_SIMPLE:
            if c in "qQlL":
                while i < n and script[i].isdigit():
                    i += 1
            continue
        if c in _SED_LABEL:
            while i < n and script[i] not in ";\n":
                i += 1
            continue
        if c in _SED_TEXT:
            while i < n and script[i] != "\n":
                i += 2 if script[i] == "\\" else 1
            continue
        if c in "sy":
            if i >= n or script[i] in "\\\n":
                return False
            delim = script[i]
            i += 1
            for _ in range(2):
                i = _sed_until(script, i, delim)
                if i < 0:
                    return False
            if c == "s":
                while i < n and script[i] not in ";\n}":
                    f = script[i]
                    if f in "ew" or not (f.isdigit() or f in "gpiImM \t"):
                        return False
                    i += 1
            continue
        return False          # e, w, W, r, R, v, anything unknown
    return True


def _sed_address(s: str, i: int) -> int:
    n = len(s)
    if i >= n:
        return i
    c = s[i]
    if c.isdigit():
        while i < n and (s[i].isdigit() or s[i] == "~"):
            i += 1
        return i
    if c == "$":
        return i + 1
    if c in "+~" and i + 1 < n and s[i + 1].isdigit():
        i += 1
        while i < n and s[i].isdigit():
            i += 1
        return i
    if c == "/" or c == "\\":
        if c == "\\":
            if i + 1 >= n:
                return -1
            delim = s[i + 1]
            i += 2
        else:
            delim = "/"
            i += 1
        i = _sed_until(s, i, delim)
        while i >= 0 and i < n and s[i] in "IM":
            i += 1
        return i
    return i


def _sed_until(s: str, i: int, delim: str) -> int:
    n = len(s)
    while i < n:
        c = s[i]
        if c == "\\":
            i += 2
            continue
        if c == "\n":
            return -1
        if c == delim:
            return i + 1
        i += 1
    return -1


_AWK_BAD = re.compile(r"\b(system|getline|close|fflush|ENVIRON|PROCINFO)\b|@|\|(?!\|)")
_AWK_STMT = re.compile(r"\bprintf?\b")


def awk_inert(program: str) -> bool:
    code = _awk_strip(program)
    if code is None:
        return False
    if _AWK_BAD.search(code.replace("||", "  ")):
        return False
    # '>' inside a print/printf statement at parenthesis depth 0 is a redirection
    for stmt in re.split(r"[;{}\n]", code):
        m = _AWK_STMT.search(stmt)
        if not m:
            continue
        depth = 0
        for ch in stmt[m.end():]:
            if ch == "(":
                depth += 1
            elif ch == ")":
                depth -= 1
            elif ch == ">" and depth <= 0:
                return False
    return True


def awk_outputs(program: str) -> list[str] | None:
    """The files an otherwise inert awk program writes with ``print > "FILE"`` or
    ``printf ... >> "FILE"`` (a string literal target); None when it is not inert (a
    pipe, ``system``, a target that is not a literal ...)."""
    code = _awk_strip(program, keep=True)
    if code is None or _AWK_BAD.search(code.replace("||", "  ")):
        return None
    outs: list[str] = []
    start = 0
    for m in re.finditer(r"[;{}\n]|$", code):
        stmt = code[start:m.start()]
        base = start
        start = m.end()
        pm = _AWK_STMT.search(stmt)
        if not pm:
            continue
        depth = 0
        k = pm.end()
        while k < len(stmt):
            ch = stmt[k]
            if ch == "(":
                depth += 1
            elif ch == ")":
                depth -= 1
            elif ch == ">" and depth <= 0:
                j = k + 1 + (stmt[k + 1:k + 2] == ">")
                while j < len(stmt) and stmt[j] in " \t":
                    j += 1
                if j >= len(stmt) or stmt[j] != '"':
                    return None
                end = stmt.find('"', j + 1)
                target = program[base + j + 1:base + end]
                if end < 0 or "\\" in target or not target or stmt[end + 1:].strip():
                    return None
                outs.append(target)
                break
            k += 1
    return outs


def _awk_strip(program: str, keep: bool = False) -> str | None:
    """The program with string and regex literals blanked (None if unbalanced).
    ``keep``: keep every character's position (contents become blanks)."""
    out = []
    i, n = 0, len(program)
    prev = ""
    while i < n:
        c = program[i]
        if c == '"':
            j = i + 1
            while j < n and program[j] != '"':
                j += 2 if program[j] == "\\" else 1
            if j >= n:
                return None
            out.append('"' + " " * (j - i - 1) + '"' if keep else '""')
            i = j + 1
            prev = '"'
            continue
        if c == "/" and (not prev or prev in "(,!~{;&|=\n" or prev.isspace() and _regex_ok(out)):
            j = i + 1
            while j < n and program[j] not in "/\n":
                j += 2 if program[j] == "\\" else 1
            if j >= n or program[j] == "\n":
                return None
            out.append("/" + " " * (j - i - 1) + "/" if keep else "//")
            i = j + 1
            prev = "/"
            continue
        if c == "#":
            while i < n and program[i] != "\n":
                out.append(" " if keep else "")
                i += 1
            continue
        out.append(c)
        if not c.isspace():
            prev = c
        elif c == "\n":
            prev = "\n"
        i += 1
    return "".join(out)


def _regex_ok(out: list) -> bool:
    text = "".join(out).rstrip()
    return not text or text[-1] in "(,!~{;&|=" or text.endswith(("print", "printf", "return"))
