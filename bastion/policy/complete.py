"""Is a shell text complete, or would the shell ask for more lines?  :func:`needs_more`.

A heuristic, table-tested: open quotes (``'``, ``"``, ``$'``, backquote), a
here-document whose end line has not come, a trailing backslash, a trailing ``|``,
``&&``, ``||``, and unbalanced ``if/fi``, ``case/esac``, ``do/done``, ``{ }`` and
``( )`` (counted as words in command position, outside quotes and comments).
A wrong answer is only an inconvenience for the caller (it then runs the text on
its own), so when unsure the answer is ``False``.  Pure: no IO.
"""

from __future__ import annotations

import re

_OPEN = {"if": "fi", "case": "esac", "do": "done", "{": "}"}
_CLOSE = {v: k for k, v in _OPEN.items()}
_HEREDOC = re.compile(r"<<(-?)\s*(['\"]?)([A-Za-z_0-9.\-]+)\2")
_CMD_START = frozenset(";|&(\n")


def needs_more(text: str, dialect: str = "bash") -> bool:
    """True if a shell would prompt for more lines after ``text``."""
    try:
        return _needs_more(text, dialect)
    except Exception:          # a heuristic never breaks its caller
        return False


def _needs_more(text: str, dialect: str) -> bool:
    if not isinstance(text, str) or not text.strip():
        return False
    if _open_heredoc(text):
        return True
    words, state = _scan(text, dialect)
    if state:
        return True
    stripped = text.rstrip()
    if stripped.endswith("\\") and (len(stripped) - len(stripped.rstrip("\\"))) % 2 == 1:
        return True
    if not words:
        return False
    last = words[-1]
    if last in ("|", "&&", "||", "|&"):
        return True
    stack: list = []
    for w in words:
        if w in _OPEN:
            stack.append(w)
        elif w == "(":
            stack.append("(")
        elif w == ")":
            if stack and stack[-1] == "(":
                stack.pop()
        elif w in _CLOSE:
            if _CLOSE[w] in stack:
                while stack and stack.pop() != _CLOSE[w]:
                    pass
    return bool(stack)


def _open_heredoc(text: str) -> bool:
    lines = text.split("\n")
    pending: list = []
    for line in lines:
        if pending:
            strip, word = pending[0]
            if (line.lstrip("\t") if strip else line) == word:
                pending.pop(0)
            continue
        for m in _HEREDOC.finditer(line):
            if "'" in line[:m.start()].replace("\\'", "") and line[:m.start()].count("'") % 2:
                continue                       # inside single quotes
            pending.append((m.group(1) == "-", m.group(3)))
    return bool(pending)


def _scan(text: str, dialect: str) -> tuple[list, str]:
    """Words that matter for structure (keywords in command position, operators),
    and the quote still open at the end ('' if none)."""
    words: list = []
    i, n = 0, len(text)
    at_start = True
    cur = []
    quote = ""

    def flush():
        nonlocal at_start
        if cur:
            w = "".join(cur)
            cur.clear()
            if at_start and (w in _OPEN or w in _CLOSE or w in ("while", "until", "for",
                                                                 "select", "function")):
                words.append(w)
                at_start = w not in ("for", "select", "case", "function")
            else:
                fname = words[-1:] == ["function"]
                words.append("\0")
                at_start = fname or w in ("then", "else", "elif", "do", "in", "!", "time")
    while i < n:
        c = text[i]
        if quote:
            if c == "\\" and quote in ('"', "$'", "`"):
                i += 2
                continue
            if (quote == "$'" and c == "'") or c == quote:
                quote = ""
            i += 1
            continue
        if c == "\\":
            cur.append(text[i:i + 2])
            i += 2
            continue
        if c == "#" and not cur:
            while i < n and text[i] != "\n":
                i += 1
            continue
        if c in "'\"`":
            quote = c
            cur.append(c)
            i += 1
            continue
        if c == "$" and i + 1 < n and text[i + 1] == "'" and dialect == "bash":
            quote = "$'"
            cur.append("$'")
            i += 2
            continue
        if c in " \t":
            flush()
            i += 1
            continue
        if c in _CMD_START or c == ")":
            flush()
            op = text[i:i + 2]
            if op in ("&&", "||", "|&", ";;"):
                words.append(op)
                i += 2
            else:
                if c != "\n" or (words and words[-1] not in ("|", "&&", "||", "|&")):
                    words.append(c if c != "\n" else ";")
                i += 1
            at_start = True
            continue
        cur.append(c)
        i += 1
    flush()
    return [w for w in words if w != ";"] or [], quote
