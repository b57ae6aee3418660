"""Effects: what a simple command does besides running, and how rules match them.

Each :class:`bastion.policy.commands.Command` carries four effects:

* *runs*: its argv (matched by ``commands`` patterns, as before);
* *writes*: paths it writes: every redirection target (``>``, ``>>``, ``&>``,
  ``&>>``, ``>|``, ``<>``, ``>&FILE``) and, for a program with a table
  (:mod:`bastion.policy.programs`), its output options and operands;
* *reads*: paths it reads: ``<`` targets and, with a table, its input files;
  without a table every argument *may* be read (deny/review ``reads`` rules
  treat each one as a read);
* *connects*: host names of URLs its table knows it opens.

Harmless writes need no rule: ``/dev/null``, ``/dev/stdout``, ``/dev/stderr``,
``/dev/fd/N`` (and fd duplication ``2>&1``, which is no write at all).

Paths are canonical (:func:`canonical_path`): ``//etc/./x`` and ``..`` are
resolved lexically, and ``/proc/self/root/``, ``/proc/thread-self/root/``,
``/proc/N/root/`` prefixes are dropped (they reach the same file).
``/proc/<pid>/cwd/X`` (:func:`cwd_alias`) is X in a working directory: the
directories ``cd`` went to, or any directory.  A run-time path such as
``/proc/$pid/root/etc/x`` or ``/proc/*/cwd/x`` also reads as ``/etc/x`` and
"any directory, then x" (:func:`proc_alias_templates`).  A recursive reader
reaches below every reading of its directory argument (``cd /etc/ssh && grep -r x .``).
Other symlinks are not followed: nothing here touches a disk.

Rule globs use the pattern glob syntax (``*`` also crosses ``/``; ``**`` is the
same as ``*``).  Pure: no IO.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from bastion.policy.patterns import ANY, STAR, Glob
from bastion.policy.words import norm_path

HARMLESS_WRITES = frozenset({"/dev/null", "/dev/stdout", "/dev/stderr", "/dev/tty"})
WRITE_OPS = frozenset({">", ">>", "&>", "&>>", ">|", "<>", ">&", "&>|"})
READ_OPS = frozenset({"<", "<&"})
_PROC_ROOT = re.compile(r"^/proc/(?:self|thread-self|[0-9]+)(?:/task/[0-9]+)?/root(?=/|$)")


def canonical_path(text: str) -> str:
    """``norm_path`` plus ``/proc/<pid>/root`` prefixes removed."""
    if "/proc/" in text and text.startswith("/"):
        text = re.sub(r"/(?:\.?/)+", "/", text)     # '//' and '/./', keeping '..' for later
        while True:
            m = _PROC_ROOT.match(text)
            if not m:
                break
            text = text[m.end():] or "/"
    # a path with blanks is still a path: "/tmp/../etc/a b" is /etc/a b
    pathlike = text.startswith(("/", "../")) or "/../" in text
    p = norm_path(text, blanks=pathlike)
    if p.startswith("/proc/"):
        while True:
            m = _PROC_ROOT.match(p)
            if not m:
                break
            p = p[m.end():] or "/"
    return p


_PROC_CWD = re.compile(r"^/proc/(?:self|thread-self|[0-9]+)(?:/task/[0-9]+)?/cwd(?=/|$)")


def cwd_alias(text: str) -> str | None:
    """``/proc/<pid>/cwd/REST`` (a link to a working directory): REST (``""`` for the
    directory itself), else None.  ``..`` in REST climbs out of that directory."""
    if not text.startswith("/") or "/proc/" not in text:
        return None
    text = re.sub(r"/(?:\.?/)+", "/", text)
    while True:
        m = _PROC_ROOT.match(text)
        if not m:
            break
        text = text[m.end():] or "/"
    m = _PROC_CWD.match(text)
    return text[m.end():] if m else None


_PROC_ALIAS = re.compile(r"^/proc/[^/]*(?:/task/[^/]*)?/(cwd|root)(/.*)?\Z", re.S)


def proc_alias_templates(parts: tuple[str | None, ...]) -> list[tuple[str | None, ...]]:
    """A run-time path like ``/proc/$pid/root/etc/x`` or ``/proc/*/cwd/x`` reaches
    ``/etc/x`` or ``x`` in some directory: the templates of those readings."""
    marked = "".join("\0" if p is None else p for p in parts)
    m = _PROC_ALIAS.match(marked)
    if not m or "\0" not in marked[:m.start(1)]:
        return []
    rest = m.group(2) or "/"
    pieces = tuple(_interleave(rest.split("\0")))
    if m.group(1) == "root":
        return [pieces]
    return [(None,) + pieces]


def _interleave(chunks: list[str]) -> Iterator[str | None]:
    for k, chunk in enumerate(chunks):
        if k:
            yield None
        if chunk:
            yield chunk


def canonical_glob(glob: str) -> str:
    """A rule's path glob in the same canonical form as the paths it is matched against."""
    if glob.startswith("~/") or glob.startswith("/") or "/" in glob:
        return canonical_path(glob)
    return glob


def harmless_write(text: str | None) -> bool:
    if text is None:
        return False
    return text in HARMLESS_WRITES or (text.startswith("/dev/fd/") and text[8:].isdigit())


def redirect_roles(redirs: list) -> list:
    """``[(op, Word)]`` → ``["w" | "r" | None]`` (write target, read source, neither)."""
    return ["w" if op in WRITE_OPS else "r" if op in READ_OPS else None for op, _ in redirs]


def socket_hosts(arg: Any) -> list[str | None]:
    """A redirection to or from ``/dev/tcp/HOST/PORT`` or ``/dev/udp/HOST/PORT``, which bash
    opens as a connection: ``[HOST]`` (lower case), ``[None]`` when it may be one and its
    host is only known at run time (``< $X``, ``< /dev/tcp/$H/80``), else ``[]``."""
    if arg.text is not None:
        if arg.text.startswith(("/dev/tcp/", "/dev/udp/")):
            return [arg.text[9:].partition("/")[0].lower() or None]
        return []
    for t in arg.templates or ((None,),):
        head = t[0] if t else None
        if head is None or _SOCKET.match(head) or any(
                d.startswith(re.sub("/+", "/", head)) for d in ("/dev/tcp/", "/dev/udp/")):
            return [None]
    return []


_SOCKET = re.compile(r"/+dev/+(?:tcp|udp)/")


def shown_arg(arg) -> str:
    """A write/read for a reason: its value, or its template with ``…`` for run-time text."""
    if arg.text is not None:
        return arg.text
    shapes = [t for t, _ in arg.found or ()]
    shapes = [t for t in shapes if None in t] or shapes or list(arg.templates)
    if shapes:
        return "".join(p if p is not None else "…" for p in shapes[0]) + \
            " (only known at run time)"
    return "… (only known at run time)"


def arg_hits(glob, arg, level: int, recursive: bool = False) -> bool:
    """Does ``glob`` match this argument at ``level`` (0 allow, 1 deny on opaque, 2 deny)?

    ``recursive``: the command reads everything below the argument too.
    """
    t = arg.text
    if t is not None:
        if glob.match(t):
            return True
        if recursive and level and t.startswith("/") and _below(glob, t):
            return True
    if level:
        for v in arg.views:
            if glob.match(v):
                return True
            if recursive and v.startswith("/") and _below(glob, v):
                return True
    if level > 1:
        if arg.found is not None:
            for tpl, directory in arg.found:
                if directory == HOME:
                    if _home_hit(glob, tpl, recursive):
                        return True
                    continue
                if glob.could_match(tpl) and (directory is None or
                                              _found_hit(glob, tpl, directory)):
                    return True
            return False
        for tpl in arg.templates:
            if glob.could_match(tpl):
                return True
    return False


HOME = "~"     # the "directory" of a ~/x argument (Arg.found): the login user's home
_HOMES = ("~", "/root", "/home/\0")


def _home_hit(glob: Glob, tpl: tuple[str | None, ...], recursive: bool) -> bool:
    """``~/x`` is x in the login user's home: read as ``~/x``, ``/root/x`` and
    ``/home/NAME/x``, where NAME matches a glob's wildcard but none of its literal text (a
    user named id_x is no key file).  A rule naming another home directory literally
    (``/var/lib/pg/.pgpass``) does not see ``~/.pgpass``: it must say ``~/.pgpass``."""
    rest = "".join(p for p in tpl[1:] if p is not None)
    for home in _HOMES:
        path = home + rest
        if glob.match(path) or (recursive and _below(glob, path)):
            return True
    return False


def _found_hit(glob: Glob, tpl: tuple[str | None, ...], directory: str) -> bool:
    """A path whose unknown parts are names found on disk below ``directory`` (a glob,
    a loop over one, find's ``{}``) reaches what a deny glob names the way a recursive
    read of that directory does: when the glob's literal head lies inside it (or it
    inside the head), or when the line's own literal text already spells out what
    the glob requires (``/home/*/.ssh/id_*`` for ``**/id_*``).  ``/var/log/*.log`` does
    not reach ``**/id_*``."""
    head = _literal_head(glob)
    if head.startswith("/") and (head.startswith(directory) or directory.startswith(head)):
        return True
    return bool(glob.match("".join(p if p is not None else "\0" for p in tpl)))


def _literal_head(glob: Glob) -> str:
    head = []
    for tok in glob.tokens:
        if tok is STAR or tok is ANY or tok[0] != "lit":
            break
        head.append(tok[1])
    return "".join(head)


def _below(glob, directory: str) -> bool:
    """Does the glob name something below ``directory`` (its literal head is inside it)?"""
    head = []
    for tok in glob.tokens:
        if tok is STAR or tok is ANY or tok[0] != "lit":
            break
        head.append(tok[1])
    prefix = "".join(head)
    d = directory.rstrip("/") + "/"
    return prefix.startswith(d) and glob.could_match((d, None))


def any_hits(globs: tuple, args, level: int, recursive: bool = False):
    """The first argument some glob matches (or None)."""
    for a in args:
        for g in globs:
            if arg_hits(g, a, level, recursive):
                return a
    return None


def host_hits(globs: tuple, hosts) -> str | None:
    for h in hosts:
        for g in globs:
            if h is None or g.match(h):
                return h if h is not None else "a host known only at run time"
    return None
