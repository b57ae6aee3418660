"""Shell options that change how the shell reads every later line: ``set``, ``shopt``, ``unset``,
``enable``.

* ``set -k`` (``-o keyword``): every ``NAME=VALUE`` argument anywhere on a command line
  becomes an environment variable of that command, so ``git log GIT_PAGER=cmd`` sets git's
  pager, and the engine would read it as a path argument.
* ``enable -n NAME`` (and ``-f``, ``-d``, ``enable NAME``): which builtins the shell has;
* ``set +o posix``, ``shopt -u -o posix``, ``unset POSIXLY_CORRECT``: bash leaves POSIX mode,
  where a function may shadow a special builtin (``unset``, ``trap``, ``:``); the bastion's
  interactive loop relies on those (docs/INTERACTIVE.md, "The loop defends itself").

:func:`option_problem` says why such a command is opaque, or returns None.  A word known only
at run time where an option could stand (``set $OPTS``, ``unset $NAME``) is opaque too.

Pure: no IO.
"""

from __future__ import annotations

from typing import Any

SHELL_STATE = frozenset(("set", "shopt", "unset", "enable"))    # the programs looked at here
_POSIX_VAR = "POSIXLY_CORRECT"
_KEYWORD = "set -k puts every NAME=VALUE argument into its command's environment"
_POSIX = "leaving POSIX mode lets functions shadow special builtins"


def option_problem(program: str, words: list[Any]) -> str | None:
    """Why ``program words[1:]`` changes how later lines are read, or None."""
    if program == "set":
        return _set(words[1:])
    if program == "shopt":
        return _shopt(words[1:])
    if program == "unset":
        return _unset(words[1:])
    if program == "enable":
        return _enable(words[1:])
    return None


def _enable(words: list[Any]) -> str | None:
    """``enable -n NAME`` turns a builtin off (``unset``, ``read``: the name then runs a
    program found in PATH), ``-f`` loads one, ``-d`` removes one; listing is harmless."""
    for w in words:
        v = w.value
        if v is None:
            return "enable with a word known only at run time"
        if v.startswith("-") and set(v[1:]) & set("ndf"):
            return "enable -n/-f/-d changes which builtins the shell has"
        if not v.startswith("-"):
            return "enable NAME switches a builtin back on over a function or program"
    return None


def _set(words: list[Any]) -> str | None:
    i = 0
    while i < len(words):
        v = words[i].value
        i += 1
        if v is None:
            return "set with an option known only at run time"
        if v in ("-", "--") or v[:1] not in ("-", "+"):
            return None                  # the rest are positional parameters
        sign = v[0]
        for ch in v[1:]:
            if ch == "o":
                if i >= len(words):
                    return None          # `set -o` alone lists the options
                name = words[i].value
                i += 1
                if name is None:
                    return "set -o with an option known only at run time"
                if sign == "-" and name == "keyword":
                    return _KEYWORD
                if sign == "+" and name == "posix":
                    return _POSIX
            elif ch == "k" and sign == "-":
                return _KEYWORD
    return None


def _shopt(words: list[Any]) -> str | None:
    values = [w.value for w in words]
    if None in values:
        return "shopt with an option known only at run time"
    flags = "".join(v[1:] for v in values if v and v.startswith("-"))
    names = {v for v in values if v and not v.startswith("-")}
    if "o" in flags and "s" in flags and "keyword" in names:
        return _KEYWORD
    if "o" in flags and "u" in flags and "posix" in names:
        return _POSIX
    return None


def _unset(words: list[Any]) -> str | None:
    functions = False
    for w in words:
        v = w.value
        if v is None:
            return "unset of a name known only at run time"
        if v.startswith("-") and v != "--":
            functions = "f" in v and "v" not in v
        elif v == _POSIX_VAR and not functions:
            return f"unsetting {_POSIX_VAR} leaves POSIX mode, where {_POSIX[21:]}"
    return None
