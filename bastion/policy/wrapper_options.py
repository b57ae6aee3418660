"""What wrappers' options look like, the scanner that skips them, and what unwrap returns.

:class:`Opts` spells out one wrapper's options (which take a value, which are flags,
which take an optional glued value); :func:`scan` skips them exactly as the wrapper
would, so that the wrapped program is found (``sudo -u root -- rm``, ``timeout -s KILL
5 rm``).  GNU long options may be abbreviated; an ambiguous or unknown one, or a word
known only at run time among the options, raises :class:`OptionError` (the command is
then opaque).  :class:`Run`, :class:`Code` and :class:`Opaque` are what
:func:`bastion.policy.wrappers.unwrap` returns.  Pure: no IO.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bastion.policy.words import Word


@dataclass(frozen=True)
class Run:
    words: list[Word]
    via: str
    assigns: tuple[Any, ...] = ()
    cwd: Word | None = None    # the directory it runs in, if the wrapper changes it


@dataclass(frozen=True)
class Code:
    text: str
    via: str
    cwd: Word | None = None
    args: tuple[Word, ...] = ()    # sh -c TEXT $0 $1 ...: the words "$1" ... stand for


# A login shell or ``find -execdir`` runs in a directory we do not know.
ELSEWHERE = Word.unknown("<another directory>", "working directory")


@dataclass(frozen=True)
class Opaque:
    why: str
    via: str


@dataclass(frozen=True)
class Opts:
    short_arg: str = ""
    short_flag: str = ""
    short_opt: str = ""            # optional argument, attached only (-e[EOF])
    long_arg: tuple[str, ...] = ()
    long_flag: tuple[str, ...] = ("help", "version")
    long_opt: tuple[str, ...] = ()           # optional argument, attached only (--eof[=EOF])
    numeric: bool = False          # -NUM accepted (nice -10)
    dash_flag: bool = False        # a lone "-" is a flag (su -, env -)


class OptionError(Exception):
    """An unknown or ambiguous option, a missing value, or a run-time word among the
    options: the wrapped program cannot be found exactly."""


def scan(words: list[Word], i: int, opts: Opts, prog: str) -> tuple[int, dict[str, Word]]:
    """Skip options starting at ``words[i]``; return (first operand index, options seen).

    Raises OptionError with a reason when an option is unknown or ambiguous, or when a
    word among the options is only known at run time.
    """
    seen: dict[str, Word] = {}
    n = len(words)
    while i < n:
        w = words[i]
        v = w.value
        if v is None:
            first = w.template[0] if w.template else None
            if w.split or first is None or first.startswith("-") or first == "":
                raise OptionError(f"a run-time word ({w.raw}) among the options of {prog}")
            return i, seen
        if v == "--":
            return i + 1, seen
        if v == "-" and opts.dash_flag:
            seen["-"] = Word.literal("")
            i += 1
            continue
        if v.startswith("--"):
            name, eq, val = v[2:].partition("=")
            full = _long(name, opts, prog)
            if full in opts.long_arg and not eq:
                if i + 1 >= n:
                    raise OptionError(f"--{full} of {prog} needs a value")
                seen[full] = words[i + 1]
                i += 2
            else:
                seen[full] = Word.literal(val) if eq else Word.literal("")
                i += 1
            continue
        if v.startswith("-") and len(v) > 1:
            if opts.numeric and v[1:].isdigit():
                i += 1
                continue
            j = 1
            i += 1
            while j < len(v):
                ch = v[j]
                if ch in opts.short_arg:
                    if j + 1 < len(v):
                        seen[ch] = Word.literal(v[j + 1:])
                    elif i < n:
                        seen[ch] = words[i]
                        i += 1
                    else:
                        raise OptionError(f"-{ch} of {prog} needs a value")
                    break
                if ch in opts.short_opt:
                    seen[ch] = Word.literal(v[j + 1:])
                    break
                if ch in opts.short_flag:
                    seen[ch] = Word.literal("")
                    j += 1
                    continue
                raise OptionError(f"unknown option -{ch} for {prog}")
            continue
        return i, seen
    return i, seen


def _long(name: str, opts: Opts, prog: str) -> str:
    every = opts.long_arg + opts.long_flag + opts.long_opt
    if name in every:
        return name
    hits = [o for o in every if o.startswith(name)] if name else []
    if len(hits) == 1:
        return hits[0]
    raise OptionError(f"{'ambiguous' if hits else 'unknown'} option --{name} for {prog}")


SUDO = Opts(short_arg="aCcDgpRrTtUu", short_flag="AbBEeHhiKklNnPSsVv",
            long_arg=("auth-type", "close-from", "chdir", "group", "login-class", "prompt",
                      "chroot", "role", "type", "command-timeout", "other-user", "user"),
            long_flag=("askpass", "background", "bell", "edit", "help", "set-home", "login",
                       "remove-timestamp", "reset-timestamp", "list", "non-interactive",
                       "preserve-groups", "stdin", "shell", "version", "validate"),
            long_opt=("preserve-env", "host"))
DOAS = Opts(short_arg="uC", short_flag="nsL")
ENV = Opts(short_arg="uCS", short_flag="i0v", dash_flag=True,
           long_arg=("unset", "chdir", "split-string"),
           long_flag=("ignore-environment", "null", "debug", "help", "version",
                      "list-signal-handling"),
           long_opt=("block-signal", "default-signal", "ignore-signal"))
NICE = Opts(short_arg="n", long_arg=("adjustment",), numeric=True)
IONICE = Opts(short_arg="cnpPu", short_flag="th",
              long_arg=("class", "classdata", "pid", "pgid", "uid"), long_flag=("ignore", "help",
                                                                                "version"))
NOHUP = Opts()
TIMEOUT = Opts(short_arg="sk", short_flag="v", long_arg=("signal", "kill-after"),
               long_flag=("preserve-status", "foreground", "verbose", "help", "version"))
TIME = Opts(short_arg="fo", short_flag="apqvV", long_arg=("format", "output"),
            long_flag=("append", "portability", "quiet", "verbose", "help", "version"))
COMMAND = Opts(short_flag="pvV")
EXEC = Opts(short_arg="a", short_flag="cl")
STDBUF = Opts(short_arg="ioe", long_arg=("input", "output", "error"))
SETSID = Opts(short_flag="cfwhV", long_flag=("ctty", "fork", "wait", "help", "version"))
FLOCK = Opts(short_arg="wE", short_flag="sexnoFuvhV",
             long_arg=("wait", "timeout", "conflict-exit-code"),
             long_flag=("shared", "exclusive", "unlock", "nonblock", "nb", "close", "no-fork",
                        "verbose", "help", "version"))
WATCH = Opts(short_arg="nq", short_opt="d", short_flag="bcCegprtwxhv",
             long_arg=("interval", "equexit"), long_opt=("differences",),
             long_flag=("beep", "color", "no-color", "errexit", "chgexit", "exec", "precise",
                        "no-rerun", "no-title", "no-linewrap", "help", "version"))
XARGS = Opts(short_arg="adEILnPs", short_opt="eil", short_flag="0prtxo",
             long_arg=("arg-file", "delimiter", "max-args", "max-procs", "max-chars",
                       "process-slot-var"),
             long_opt=("eof", "replace", "max-lines"),
             long_flag=("null", "interactive", "no-run-if-empty", "verbose", "exit", "open-tty",
                        "show-limits", "help", "version"))
SU = Opts(short_arg="cCgGsw", short_flag="flmpPhV", dash_flag=True,
          long_arg=("command", "session-command", "group", "supp-group", "shell",
                    "whitelist-environment"),
          long_flag=("fast", "login", "preserve-environment", "pty", "help", "version"))
RUNUSER = Opts(short_arg="cgGsuw", short_flag="flmpPhV", dash_flag=True,
               long_arg=SU.long_arg + ("user",), long_flag=SU.long_flag)

SIMPLE = {"nice": NICE, "nohup": NOHUP, "time": TIME, "exec": EXEC, "stdbuf": STDBUF,
           "setsid": SETSID, "coproc": Opts(long_flag=())}
