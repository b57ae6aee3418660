"""The fast path: lines of plain words joined by ``|``, ``;``, ``&&``, ``||``, ``&``
are split without the parser (most lines agents send), with the directory each command
surely runs in after ``cd /abs &&``.  Anything else returns ``None`` and goes to
:mod:`bastion.policy.parse`.  Tests check that both paths agree.  Pure: no IO.
"""

from __future__ import annotations

import re

from bastion.policy.words import Word, norm_path

_FAST = re.compile(r"[A-Za-z0-9_./:,%+@= \t-]+")
_FAST_LIST = re.compile(r"[A-Za-z0-9_./:,%+@= \t|;&-]+")
_FAST_SEP = re.compile(r"\|\||&&|\|&|[|;&]")
_FAST_FIRST_BAD = re.compile(r"\s*(?:\S*=|(?:if|then|else|elif|fi|do|done|case|esac|while|until|"
                             r"for|select|function|time|coproc|in)(?:\s|\Z))")


# Builtins the parser must read even in a line of plain words (bastion.policy.parse):
# let evaluates arithmetic, mapfile -C runs a callback, and integer / read-only
# attributes outlive the line.  (Plain words hold no subscript, and the assignments
# builtins make only matter to arithmetic, which sends the line to the parser anyway.)
_PARSER_BUILTINS = frozenset({"let", "mapfile", "readarray", "readonly"})
_DECLARING = frozenset({"declare", "typeset", "local", "export"})


def _needs_parser(parts: list[str]) -> bool:
    k = 0
    while k < len(parts) and parts[k] in ("command", "builtin"):
        k += 1
        while k < len(parts) and parts[k].startswith("-") and parts[k] != "--":
            k += 1
    if k >= len(parts):
        return False
    first = parts[k]
    if first in _PARSER_BUILTINS:
        return True
    return first in _DECLARING and any(p[:1] == "-" and ("i" in p or "r" in p)
                                       for p in parts[k + 1:])


def fast_words(line: str) -> list[Word] | None:
    """Split a line of plain words without the parser, or None if it is not that simple."""
    if not _FAST.fullmatch(line) or _FAST_FIRST_BAD.match(line):
        return None
    parts = line.split()
    if not parts:
        return None
    if _needs_parser(parts):
        return None
    return [Word(raw=p, value=p, template=(p,)) for p in parts]


def fast_commands(line: str) -> list[list[Word]] | None:
    """Plain words joined by ``|``, ``|&``, ``||``, ``&&``, ``;``, ``&``: the word lists of
    each command, without the parser; None when the line needs the parser."""
    if not _FAST_LIST.fullmatch(line):
        return None
    segments = _FAST_SEP.split(line)
    last = len(segments) - 1
    out = []
    for k, seg in enumerate(segments):
        if not seg.strip():
            if k == last and k > 0 and not line.rstrip().endswith(("|", "&&", "||", "|&")):
                continue                      # "ls;" and "ls &" end cleanly
            return None
        words = fast_words(seg)
        if words is None:
            return None
        out.append(words)
    return out


def fast_cwds(line: str, segments: list[list[Word]]) -> list[str | None]:
    """RawCommand.cwd for each command of a fast-path line: "" when no cd is on the line,
    the directory after ``cd /abs &&`` (through pipelines joined by ``&&``), else None."""
    if not any(w[0].value in ("cd", "pushd", "popd") for w in segments):
        return [""] * len(segments)
    seps = _FAST_SEP.findall(line)
    out: list[str | None] = []
    pending: str | None = None          # the directory a && chain is surely in
    for k, words in enumerate(segments):
        sep = seps[k - 1] if k else None
        if sep in ("|", "|&"):
            out.append(out[-1] if out else None)   # the same pipeline as the previous one
            if words[0].value in ("cd", "pushd", "popd"):
                pending = None
            continue
        if sep != "&&":
            pending = None
        out.append(pending)
        first = words[0].value
        if first == "cd":
            args = [w.value for w in words[1:] if w.value not in ("-L", "-P", "-e", "-@", "--")]
            nxt = seps[k] if k < len(seps) else None
            alone = nxt not in ("|", "|&")
            pending = norm_path(args[0]) if alone and len(args) == 1 and args[0] and \
                args[0].startswith("/") else None
        elif first in ("pushd", "popd"):
            pending = None
    return out


def fast_piped(line: str, n: int) -> list[bool]:
    """For each of the ``n`` commands of a fast-path line: does it read the previous
    command's output through ``|`` (not ``|&``)?"""
    seps = _FAST_SEP.findall(line)
    return [k > 0 and k - 1 < len(seps) and seps[k - 1] == "|" for k in range(n)]
