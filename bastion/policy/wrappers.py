"""Wrappers: programs that run another program, and builtins that carry code.

:func:`unwrap` looks at one simple command and says what *else* it runs:

* ``Run(words)``: a wrapped simple command (``sudo -u root rm x`` → ``rm x``).
  Handled: sudo, doas, env, nice, ionice, nohup, timeout, time, coproc, command,
  builtin, exec, stdbuf, setsid, flock, watch ``-x``, xargs, find
  ``-exec/-execdir/-ok/-okdir``, busybox, runuser ``-u``.
* ``Code(text)``: a literal string bash will parse and run: ``sh/bash/dash/zsh/
  ksh -c '...'``, ``su/runuser -c``, ``flock -c``, ``watch`` (without ``-x``),
  ``alias name='...'``, ``trap '...' SIG``.  The caller parses it recursively.
* ``Opaque(why)``: what it runs cannot be known before it runs: a shell reading
  a script file or standard input (``bash x.sh``, ``| sh``, ``bash -s``), ``-c``
  with a string built at run time, ``sudo -s`` / ``su`` with no command, ``env -S``,
  ``bind -x``, ``complete -C``, an unknown option to a wrapper (it might take an
  argument, and then we would misread the program), or a run-time word among a
  wrapper's options.

Each wrapper's option table is spelled out (:mod:`bastion.policy.wrapper_options`) so
that the wrapped program is found exactly (``sudo -u root -- rm`` and ``timeout -s KILL
5 rm``).  GNU long options may be abbreviated; an ambiguous or unknown one makes the
command opaque.

Container runners (``docker``/``podman exec|run|create``, ``kubectl exec|run``) are
wrappers too: :mod:`bastion.policy.containers`.

Not handled (they are ordinary programs: allow them only if you trust all they
can run): ssh, chroot, nsenter, unshare, systemd-run, script, parallel, strace,
gdb, python -c, perl -e, awk ``system()``, editors and pagers with shell escapes.

Pure: no IO.
"""

from __future__ import annotations

import re
from typing import Any

from bastion.policy import containers
from bastion.policy.danger import BASH_LIKE, OTHER_SHELLS
from bastion.policy.words import DATA_PROGRAMS, Word
from bastion.policy.wrapper_options import (
    COMMAND, DOAS, ELSEWHERE, ENV, FLOCK, IONICE, RUNUSER, SIMPLE, SU, SUDO, TIMEOUT, WATCH,
    XARGS, Code, Opaque, OptionError, Opts, Run, scan,
)

__all__ = ["Code", "ELSEWHERE", "Opaque", "Opts", "Run", "piped_names", "scan", "unwrap"]




def unwrap(prog: str, words: list) -> list:
    """What else ``words`` (a simple command whose program is ``prog``) runs."""
    handler = _HANDLERS.get(prog)
    if handler is None:
        if prog in BASH_LIKE:
            handler = _shell
        elif prog in OTHER_SHELLS:
            return [Opaque(f"{prog} is not a bash-like shell; its commands cannot be read",
                           prog)]
        elif prog in SIMPLE:
            handler = _simple
        else:
            return []
    try:
        return handler(prog, words)
    except OptionError as exc:
        return [Opaque(str(exc), prog)]


def _rest(prog: str, words: list, i: int, assigns: tuple = ()) -> list:
    return [Run(words[i:], prog, assigns)] if i < len(words) else []


def _assignments(words: list, i: int) -> tuple[int, tuple]:
    """NAME=VALUE words before the command of env/sudo (any word with '=' counts:
    env exports even names bash would refuse, like BASH_FUNC_ls%%)."""
    assigns = []
    while i < len(words):
        v = words[i].value
        name = v.partition("=")[0] if v else ""
        if not v or "=" not in v or not name or "/" in name:
            break
        assigns.append((name, Word.literal(v.partition("=")[2])))
        i += 1
    return i, tuple(assigns)


def _simple(prog: str, words: list) -> list:
    i, _ = scan(words, 1, SIMPLE[prog], prog)
    return _rest(prog, words, i)


def _sudo(prog: str, words: list) -> list:
    i, seen = scan(words, 1, SUDO, prog)
    i, assigns = _assignments(words, i)
    cwd = seen.get("D") or seen.get("chdir")
    if "i" in seen or "login" in seen:
        cwd = ELSEWHERE                  # the target user's home
    if "e" in seen or "edit" in seen:
        return [Run([Word.literal("sudoedit")] + words[i:], prog, assigns, cwd)]
    if i >= len(words):
        if {"s", "i", "shell", "login"} & seen.keys():
            return [Opaque("sudo -s/-i without a command starts an interactive shell", prog)]
        return []
    return [Run(words[i:], prog, assigns, cwd)]


def _doas(prog: str, words: list) -> list:
    i, seen = scan(words, 1, DOAS, prog)
    if i >= len(words) and "s" in seen:
        return [Opaque("doas -s starts an interactive shell", prog)]
    return _rest(prog, words, i)


def _env(prog: str, words: list) -> list:
    i, seen = scan(words, 1, ENV, prog)
    if "S" in seen or "split-string" in seen:
        return [Opaque("env -S splits a string into a command", prog)]
    i, assigns = _assignments(words, i)
    cwd = seen.get("C") or seen.get("chdir")
    return [Run(words[i:], prog, assigns, cwd)] if i < len(words) else []


def _ionice(prog: str, words: list) -> list:
    i, seen = scan(words, 1, IONICE, prog)
    if {"p", "P", "u", "pid", "pgid", "uid"} & seen.keys():
        return []
    return _rest(prog, words, i)


def _timeout(prog: str, words: list) -> list:
    i, _ = scan(words, 1, TIMEOUT, prog)
    return _rest(prog, words, i + 1)


def _command(prog: str, words: list) -> list:
    i, seen = scan(words, 1, COMMAND, prog)
    if "v" in seen or "V" in seen:
        return []
    return _rest(prog, words, i)


def _builtin(prog: str, words: list) -> list:
    return _rest(prog, words, 1)


def _flock(prog: str, words: list) -> list:
    i, _ = scan(words, 1, FLOCK, prog)
    if i + 1 >= len(words):
        return []
    nxt = words[i + 1]
    if nxt.value in ("-c", "--command"):
        return _code(prog, words, i + 2, "flock -c")
    if nxt.value is None and (nxt.split or nxt.template[0] is None):
        return [Opaque(f"a run-time word ({nxt.raw}) after the lock file of flock", prog)]
    return _rest(prog, words, i + 1)


# A -c string that may change its positional parameters ($1 ...) before reading them.
_REBINDS = re.compile(r"(?:^|[\s;&|({`])(?:set|shift|getopts|eval|source|\.|function)"
                      r"(?:$|[\s;&|)}`])|\(\s*\)")


def _code(prog: str, words: list, i: int, via: str, positional: bool = False) -> list:
    """``-c TEXT``; for a shell, the words after TEXT are $0, $1 ...: a ``"$1"`` in TEXT
    stands for that word (find's ``{}``, a literal) unless TEXT may rebind them."""
    if i >= len(words):
        return [Opaque(f"{via} without a command string", prog)]
    w = words[i]
    if w.value is None:
        return [Opaque(f"{via} with a string built at run time ({w.raw})", prog)]
    args = tuple(words[i + 1:]) if positional and not _REBINDS.search(w.value) else ()
    return [Code(w.value, via, args=args)]


def _watch(prog: str, words: list) -> list:
    i, seen = scan(words, 1, WATCH, prog)
    rest = words[i:]
    if not rest:
        return []
    if "x" in seen or "exec" in seen:
        return [Run(rest, prog)]
    if any(w.value is None for w in rest):
        return [Opaque("watch runs sh -c with a string built at run time", prog)]
    return [Code(" ".join(w.value for w in rest), "watch")]


def _xargs(prog: str, words: list) -> list:
    i, seen = scan(words, 1, XARGS, prog)
    rest = list(words[i:]) or [Word.literal("echo")]
    replace = None
    for key in ("I", "i", "replace"):
        if key in seen:
            val = seen[key].value
            if val is None:
                return [Opaque("xargs replace string known only at run time", prog)]
            replace = val or "{}"
    if replace is None:
        return [Run(rest + [Word.unknown("<xargs input>", "xargs input")], prog)]
    return [Run([rest[0]] + [_replace(w, replace, "xargs input") for w in rest[1:]], prog)]


def _replace(w: Word, marker: str, why: str) -> Word:
    if w.value is None or marker not in w.value:
        return w
    pieces = w.value.split(marker)
    template: list = []
    for k, piece in enumerate(pieces):
        if k:
            template.append(None)
        if piece:
            template.append(piece)
    return Word(raw=w.raw, value=None, template=tuple(template), split=False, why=why)


_FIND_NAME_BREAKERS = frozenset(("!", "-not", "-o", "-or", ",", "(", ")"))


def _find_matches(words: list[Word]) -> tuple[tuple[str | None, ...], ...]:
    """The paths find's ``{}`` may be, as templates whose unknown parts are names found
    on disk: below each root (and, with one plain ``-name``/``-iname``, ending in a name
    it accepts).  ``()`` when a root is known only at run time."""
    k = 1
    while k < len(words) and words[k].value in ("-H", "-L", "-P"):
        k += 1
    roots = []
    while k < len(words):
        v = words[k].value
        if v is None:
            return ()
        if v.startswith("-") or v in ("(", ")", "!", ","):
            break
        roots.append(v)
        k += 1
    roots = roots or ["."]
    expr = [w.value for w in words[k:]]
    names = [expr[j + 1] for j, v in enumerate(expr[:-1]) if v in ("-name", "-iname")]
    tails: list[tuple[str | None, ...] | None] = [None]
    if len(names) == 1 and names[0] is not None and not _FIND_NAME_BREAKERS & set(
            v for v in expr if v is not None):
        pattern = names[0]
        variants = {pattern, pattern.lower()} if "-iname" in expr else {pattern}
        tails = [_glob_parts(p) for p in sorted(variants)]
    out: list[tuple[str | None, ...]] = []
    for root in roots:
        base = root.rstrip("/") + "/" if root != "/" else "/"
        out.append((root,))
        for tail in tails:
            if tail is None:
                out.append((base, None))
            else:
                out.append((base,) + tail)
                out.append((base, None, "/") + tail)
    return tuple(out)


_FIND_OUTPUTS = frozenset(("-print", "-print0", "-printf", "-fprint", "-fprint0", "-fprintf",
                           "-ls", "-fls", "-exec", "-execdir", "-ok", "-okdir", "-delete"))


def piped_names(source: list[Word], xargs: list[Word]) -> tuple[tuple[str | None, ...], ...]:
    """``find ROOTS ... -print0 | xargs -0 CMD``: the names xargs appends to CMD are
    find's matches (NUL-separated, so a name with a blank or newline stays one name).
    ``()`` for any other pair (without ``-0`` a name like ``a /etc/shadow`` splits)."""
    if not source or source[0].value != "find" or any(w.value is None for w in source):
        return ()
    outputs = [w.value for w in source if w.value in _FIND_OUTPUTS]
    if outputs != ["-print0"]:
        return ()
    try:
        _, seen = scan(xargs, 1, XARGS, "xargs")
    except OptionError:
        return ()
    if not seen.keys() & {"0", "null"} or seen.keys() & {"a", "arg-file", "d", "delimiter",
                                                         "I", "i", "replace"}:
        return ()
    return _find_matches(source)


def _glob_parts(pattern: str) -> tuple[str | None, ...]:
    """``id_*`` → ``("id_", None)``: a -name glob as a template."""
    parts: list[str | None] = []
    lit = ""
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            lit += pattern[i + 1]
            i += 2
            continue
        if c in "*?[":
            if c == "[":
                j = pattern.find("]", i + 2)
                i = j if j > 0 else i
            if lit:
                parts.append(lit)
                lit = ""
            if not parts or parts[-1] is not None:
                parts.append(None)
        else:
            lit += c
        i += 1
    if lit:
        parts.append(lit)
    return tuple(parts)


def _find(prog: str, words: list) -> list:
    out: list = []
    k = 1
    n = len(words)
    matches = None
    while k < n:
        w = words[k]
        if w.value is None and w.split:
            return out + [Opaque(f"a run-time word ({w.raw}) in a find expression may add -exec",
                                 prog)]
        if w.value in ("-exec", "-execdir", "-ok", "-okdir"):
            j = k + 1
            while j < n and words[j].value not in (";", "+"):
                j += 1
            if matches is None:
                matches = _find_matches(words)
            here = matches if w.value in ("-exec", "-ok") else ()
            inner = [Word(raw=x.raw, value=None, template=(None,), why="find match", found=here)
                     if x.value == "{}" else _replace(x, "{}", "find match")
                     for x in words[k + 1:j]]
            if inner:
                out.append(Run(inner, f"find {w.value}",
                               cwd=ELSEWHERE if w.value.endswith("dir") else None))
            k = j + 1
            continue
        k += 1
    return out


def _busybox(prog: str, words: list) -> list:
    if len(words) < 2:
        return []
    w = words[1]
    if w.value is not None and w.value.startswith("-"):
        return []
    return [Run(words[1:], prog)]


def _su(prog: str, words: list) -> list:
    opts = RUNUSER if prog == "runuser" else SU
    operands: list = []
    seen: dict = {}
    i = 1
    while i < len(words):           # su permutes options and operands
        j, more = scan(words, i, opts, prog)
        seen.update(more)
        if j > i and words[j - 1].value == "--":
            operands.extend(words[j:])
            break
        if j >= len(words):
            break
        operands.append(words[j])
        if "u" in seen or "user" in seen:
            operands.extend(words[j + 1:])
            break
        i = j + 1
    login = bool({"-", "l", "login"} & seen.keys())
    if "u" in seen or "user" in seen:
        if not operands:
            return [Opaque("runuser -u without a command starts a shell", prog)]
        return [Run(operands, prog, cwd=ELSEWHERE if login else None)]
    shell = seen.get("s") or seen.get("shell")
    code = seen.get("c") or seen.get("command") or seen.get("session-command")
    if code is None:
        return [Opaque(f"{prog} without -c starts an interactive shell", prog)]
    if shell is not None:
        sv = shell.value
        if sv is None or sv.rstrip("/").rsplit("/", 1)[-1] not in BASH_LIKE:
            return [Opaque(f"{prog} -s {shell.raw} runs the command with a shell we cannot read",
                           prog)]
    if code.value is None:
        return [Opaque(f"{prog} -c with a string built at run time ({code.raw})", prog)]
    return [Code(code.value, f"{prog} -c", ELSEWHERE if login else None)]


def _shell(prog: str, words: list) -> list:
    letters: set = set()
    longs: list = []
    i, n = 1, len(words)
    while i < n:
        w = words[i]
        v = w.value
        if v is None:
            first = w.template[0] if w.template else None
            if "c" not in letters and (w.split or first is None or first[:1] in ("-", "+", "")):
                return [Opaque(f"a run-time word ({w.raw}) among the options of {prog}", prog)]
            break
        if v in ("--", "-"):
            i += 1
            break
        if v.startswith("--"):
            longs.append(v)
            i += 2 if v in ("--rcfile", "--init-file") else 1
            continue
        if v[:1] in ("-", "+") and len(v) > 1:
            letters.update(v[1:])
            i += 1
            i += v[1:].count("o") + v[1:].count("O")   # -o OPTION / -O SHOPT take a word
            continue
        break
    operands = words[i:]
    if "c" in letters:
        return _code(prog, words, i, f"{prog} -c", positional=True)
    if not operands and longs and all(x in ("--version", "--help") for x in longs):
        return []
    if operands and "s" not in letters:
        return [Opaque(f"{prog} runs a script file ({operands[0].raw})", prog)]
    return [Opaque(f"{prog} reads commands from standard input", prog)]


def _alias(prog: str, words: list) -> list:
    out: list = []
    for w in words[1:]:
        if w.value is None:
            out.append(Opaque(f"alias defined at run time ({w.raw})", prog))
        elif "=" in w.value and not w.value.startswith("-"):
            name, _, value = w.value.partition("=")
            if name in DATA_PROGRAMS:
                out.append(Opaque(f"alias {name} redefines a program "
                                  f"whose output the policy reads as data", prog))
                continue
            first = value.split(None, 1)[0] if value.strip() else ""
            if first != name:
                # a later line naming NAME is decided as NAME, and would run something else
                out.append(Opaque(f"alias {name} makes {name} run {first or 'nothing'}: later "
                                  f"lines are decided by what they name", prog))
            out.append(Code(value, "alias"))          # (still decided: a deny there wins)
    return out


def _trap(prog: str, words: list) -> list:
    if len(words) < 2:
        return []
    w = words[1]
    if w.value is None:
        return [Opaque(f"trap action built at run time ({w.raw})", prog)]
    if w.value.startswith("-") or len(words) < 3:
        return []
    return [Code(w.value, "trap")] if w.value else []


def _bind(prog: str, words: list) -> list:
    if any(w.value is None or (w.value.startswith("-") and "x" in w.value) for w in words[1:]):
        return [Opaque("bind -x runs a command on a key press", prog)]
    return []


def _complete(prog: str, words: list) -> list:
    if any(w.value is None or (w.value.startswith("-") and "C" in w.value) for w in words[1:]):
        return [Opaque(f"{prog} -C runs a command for completion", prog)]
    return []


def _container(prog: str, words: list[Word]) -> list[Any]:
    handler = containers.kubectl if prog == "kubectl" else containers.docker
    return handler(prog, words, lambda w, via, cwd: Run(list(w), via, cwd=cwd),
                   lambda why: Opaque(why, prog), ELSEWHERE)


_HANDLERS = {
    "sudo": _sudo, "doas": _doas, "env": _env, "ionice": _ionice, "timeout": _timeout,
    "command": _command, "builtin": _builtin, "flock": _flock, "watch": _watch,
    "xargs": _xargs, "find": _find, "busybox": _busybox, "su": _su, "runuser": _su,
    "alias": _alias, "trap": _trap, "bind": _bind, "complete": _complete, "compgen": _complete,
    "docker": _container, "podman": _container, "kubectl": _container,
}
