"""Lines whose meaning depends on the shell: bash vs dash, and interactive bash.

:func:`sh_difference` says why bash and dash (POSIX sh) could read a text differently
(``$'..'``, ``[[``, arrays, ``<(``, ``&>`` ...): a target whose shell is dash gets such a
line as opaque.  :func:`history_expansion` says why an interactive bash would rewrite a
line before running it (``!!``, ``!x``, ``^a^b``).  Both are conservative: a match
inside quotes counts too.  Pure: no IO.
"""

from __future__ import annotations

import re

_SH_DIFF = (
    (re.compile(r"\$'"), "$'...' quoting"), (re.compile(r'\$"'), '$"..." quoting'),
    (re.compile(r"\[\["), "[[ ]]"), (re.compile(r"\(\("), "(( ))"),
    (re.compile(r"[<>]\("), "process substitution"), (re.compile(r"&>"), "&> redirection"),
    (re.compile(r"\|&"), "|& pipes"), (re.compile(r"(?:^|[\s;&|(])function\s"), "function"),
    (re.compile(r";;?&"), "case fall-through ;& / ;;&"), (re.compile(r"\w=\("), "arrays"),
    (re.compile(r"\$\{\w+\["), "arrays"), (re.compile(r"\{[^\s{}]*(?:,|\.\.)[^\s{}]*\}"),
                                              "brace expansion"),
    (re.compile(r"<<<"), "here-strings"), (re.compile(r"\$\{[^}]*(?:\^|,|/|:\d|@)"),
                                         "bash parameter expansions"),
)


# ``$(( ... ))`` with plain arithmetic inside (no parentheses, no quotes) is POSIX and read
# alike by both shells; anything else that starts with ``$((`` or ``((`` stays suspect.
_SIMPLE_ARITH = re.compile(r"\$\(\([\w\s+\-*/%<>=!&|^~?:,$]*\)\)")


def sh_difference(text: str) -> str | None:
    """Why bash and dash could read ``text`` differently (or None).  Conservative: a
    match inside quotes counts too (the text is then opaque, never misread)."""
    text = _SIMPLE_ARITH.sub("0", text)
    for rx, what in _SH_DIFF:
        if rx.search(text):
            return f"{what} reads differently in bash and sh"
    return None


def history_expansion(line: str) -> str | None:
    """Why an interactive bash would rewrite ``line`` before running it (``!!``, ``^a^b``)."""
    if line.startswith("^"):
        return "history substitution (^) in an interactive shell"
    single = False
    i = 0
    while i < len(line):
        c = line[i]
        if c == "\\" and not single:
            i += 2
            continue
        if c == "'":
            single = not single
        elif c == "!" and not single and i + 1 < len(line) and line[i + 1] not in " \t\n=(\"":
            return "history expansion (!) in an interactive shell"
        i += 1
    return None
