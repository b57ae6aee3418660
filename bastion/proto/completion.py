"""What Tab completes at a mediated shell's prompt (pure: text in, decisions out).

The host's own completion (bash's programmable completion) never runs: it would run
functions nobody decided.  Instead the bastion completes two things itself:

* a **command name** (the first word, or the first after ``;``, ``|``, ``&``, ``(``):
  from names the caller gives (the programs the policy allows, shell builtins) and the
  first words of this session's history;
* a **path** (any other word, or a word with a ``/``): from a listing of its directory that
  the host shell gives (bastion.proto.shellstart, the ``L`` frame) once the policy has
  allowed ``ls -a`` of that directory (bastion.ssh.shell).

A word with a quote, ``$``, a backquote or a backslash is not completed (the bell rings):
its meaning depends on expansion.  Inserted names are escaped with backslashes.  As in
bash, a unique match is inserted whole (a space after a file, nothing after ``dir/``),
several are completed to their common prefix, and a second Tab with nothing to add lists
them.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_LISTED = 256                  # entries the host lists per directory
MAX_SHOWN = 100                   # choices listed on the screen
_UNSAFE = set("'\"$`\\")
_OPERATORS = ";|&("
_SPECIAL = set(" \t\n'\"$`\\;&|<>()*?[]{}#~!=")
_BREAK = set(" \t;|&()<>")


@dataclass(frozen=True)
class Word:
    text: str                     # the word as typed, up to the cursor
    command: bool                 # in command position (and no '/'): complete a command name
    dir: str = ""                 # path words: the directory part as typed ("", "/var/", "~/x/")
    prefix: str = ""              # path words: the name part being completed


def word_at(before: str) -> Word | None:
    """The word the cursor ends; None when it cannot be completed safely."""
    start = len(before)
    while start > 0 and before[start - 1] not in _BREAK:
        start -= 1
    text = before[start:]
    if any(c in _UNSAFE for c in text) or "\n" in before:
        return None
    if start >= 2 and before[start - 2] == "\\":
        return None                               # an escaped blank: the word goes on before

    head = before[:start].rstrip()
    command = (not head or head[-1] in _OPERATORS) and "/" not in text
    if command:
        return Word(text, True)
    slash = text.rfind("/")
    return Word(text, False, dir=text[:slash + 1], prefix=text[slash + 1:])


def host_dir(word: Word, cwd: str, home: str) -> str | None:
    """The absolute directory to list for a path word; None if not knowable."""
    d = word.dir
    if d.startswith("~"):
        if not (d == "~/" or d.startswith("~/")) or not home:
            return None                           # ~user: another user's home
        d = home.rstrip("/") + "/" + d[2:]
    elif not d.startswith("/"):
        if not cwd.startswith("/"):
            return None
        d = cwd.rstrip("/") + "/" + d
    return d if d.endswith("/") else d + "/"


def escape(name: str) -> str:
    return "".join("\\" + c if c in _SPECIAL else c for c in name)


@dataclass(frozen=True)
class Outcome:
    insert: str = ""
    choices: tuple[str, ...] = ()
    bell: bool = False


def choose(prefix: str, candidates: list[str], *, again: bool, path: bool) -> Outcome:
    """Complete ``prefix`` from ``candidates`` (names; directories end with '/')."""
    hidden_ok = prefix.startswith(".")
    matches = sorted({c for c in candidates if c.startswith(prefix) and c
                      and (hidden_ok or not c.startswith(".") or not path)})
    if not matches:
        return Outcome(bell=True)
    if len(matches) == 1:
        rest = matches[0][len(prefix):]
        tail = "" if matches[0].endswith("/") else " "
        return Outcome(insert=escape(rest) + tail)
    common = _common_prefix(matches)
    if len(common) > len(prefix):
        return Outcome(insert=escape(common[len(prefix):]))
    if not again:
        return Outcome(bell=True)
    shown = tuple(matches[:MAX_SHOWN])
    if len(matches) > MAX_SHOWN:
        shown += (f"... {len(matches) - MAX_SHOWN} more",)
    return Outcome(choices=shown)


def _common_prefix(names: list[str]) -> str:
    first, last = min(names), max(names)
    n = 0
    while n < min(len(first), len(last)) and first[n] == last[n]:
        n += 1
    return first[:n]


def parse_listing(hexdots: str) -> list[str] | None:
    """The names of an ``L`` mark: bytes as ``hh.`` groups (a shell may print a byte as
    ``ffffffc3``: its last two digits are the byte), names separated by newlines."""
    try:
        data = bytes(int(g[-2:], 16) for g in hexdots.split(".") if g)
    except ValueError:
        return None
    return [n for n in data.decode("utf-8", "replace").split("\n") if n][:MAX_LISTED]
