"""A program table entry (:class:`Spec`) and the option parser that reads argv with it.

A :class:`Spec` says, for one program (or one subcommand), which options exist,
which take a value, which values are files written or read, URLs, or code, which
options are refused outright (they run or load something we cannot see), what the
operands are, and where the subcommand is.  :func:`analyse` turns an argv into an
:class:`Analysis`: the effects (writes, reads, connects), shell code to decide
recursively, the subcommand, the options present (values consumed, so
``tar -x -fbackup.tar`` holds ``x`` and ``f`` but not ``t``), or a reason to treat
the command as opaque (an unknown option, a refused one, code that is not
provably inert, an option known only at run time where options can do harm).

GNU conventions: short clusters (``-xvf F``, ``-fF``), ``--long=V`` / ``--long V``,
unique abbreviations of long options, ``--`` ends options, options may follow
operands unless ``posix``.  ``single`` programs (openssl, find) spell long
options with one dash.

Pure: no IO.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

# Operand roles: what the program does with its non-option arguments.
READS, NONE, WRITES, CP, MV, IN_OUT, FIRST_ARG, URLS, CODE, DELETES = (
    "reads", "none", "writes", "cp", "mv", "in-out", "first-arg", "urls", "code", "deletes")


@dataclass(frozen=True)
class Spec:
    """One program's (or subcommand's) arguments.  Option names: one letter for ``-x``,
    longer for ``--name`` (or ``-name`` when ``single``)."""

    flags: str = ""                 # short flags
    values: str = ""                # short options taking a value
    long_flags: tuple = ()
    long_values: tuple = ()
    optional: tuple = ()            # --name[=V] / -xV: value only when glued
    writes: tuple = ()              # options whose value is a path written
    reads: tuple = ()               # options whose value is a path read
    urls: tuple = ()                # options whose value is a URL or host
    code: dict = field(default_factory=dict)     # option -> "sh" (parse) | why it is opaque
    refuse: dict = field(default_factory=dict)   # option -> why the command is opaque
    recursive: tuple = ()           # options that make reads recursive
    operands: str = READS
    numeric: bool = False           # -NUM (head -5)
    any_flags: bool = False         # unknown options are harmless flags
    posix: bool = False             # options end at the first operand
    single: bool = False            # long options with one dash (-name)
    plus: str | None = None         # +ARG: None operand, "ok" harmless, else why opaque
    plus_safe: Any = None           # a regex of +ARGs that are harmless anyway (less +F)
    loose: dict = field(default_factory=dict)    # optional-valued option -> regex of a
                                                 # separate word it takes (journalctl -b -1)
    writes_below: tuple = ()        # options whose value is a directory written into
    subs: dict | None = None        # subcommand name -> Spec ("*": any other name)
    inherit: bool = False           # subcommands also accept these global options
    always_recursive: bool = False
    hook: Callable | None = None    # hook(analysis, opts, operands, mkarg) after parsing
    text_only: bool = False         # arguments are never files (echo, printf)
    interactive: str | None = None  # takes keyboard commands that run programs, with no
                                    # secure mode: only an ``interactive = true`` rule allows it
    named: str | None = None        # runs code the line cannot show (git hooks): only an allow
                                    # rule that names this subcommand allows it

    def value_names(self) -> frozenset:
        hit = _NAMES.get(("v", id(self)))
        if hit is None:
            hit = _NAMES[("v", id(self))] = self._value_names()
        return hit

    def long_names(self) -> tuple:
        hit = _NAMES.get(("l", id(self)))
        if hit is None:
            hit = _NAMES[("l", id(self))] = self._long_names()
        return hit

    def _value_names(self) -> frozenset:
        return frozenset(self.long_values) | frozenset(self.values) | frozenset(
            self.writes) | frozenset(self.reads) | frozenset(self.urls) | frozenset(self.code)

    def _long_names(self) -> tuple:
        names = set(self.long_flags) | set(self.long_values) | set(self.optional) | set(
            self.refuse) | {n for n in self.value_names() if len(n) > 1}
        return tuple(sorted(n for n in names if len(n) > 1))


_NAMES: dict = {}      # per-Spec caches (tables are module constants, never freed)


@dataclass
class Analysis:
    problem: str | None = None
    writes: list = field(default_factory=list)
    deletes: list = field(default_factory=list)
    reads: list = field(default_factory=list)
    connects: list = field(default_factory=list)
    code: list = field(default_factory=list)      # shell texts to parse and decide
    sub: str | None = None
    shorts: set = field(default_factory=set)
    longs: dict = field(default_factory=dict)
    recursive: bool = False
    interactive: str | None = None
    valued: set = field(default_factory=set)      # indexes of words consumed as option values
    subs: list = field(default_factory=list)      # the subcommand path (docker container logs)
    named: str | None = None      # why only a rule naming the subcommand allows it
    base: Any = None              # where the program works (git -C DIR): a Word, or None

    def opaque(self, why: str) -> "Analysis":
        if self.problem is None:
            self.problem = why
        return self


class _Stop(Exception):
    pass


def _word_text(w) -> str | None:
    return w.value


def _could_be_option(w) -> bool:
    if w.raw[:1] == "~":       # ~, ~/x, ~user, ~+, ~-: an absolute path (or ~ itself)
        return False
    found = getattr(w, "found", ())
    if found:                  # find's {} and loop variables: paths under known roots
        return any(not t or t[0] is None or t[0].startswith(("-", "+")) for t in found)
    head = w.template[0] if w.template else None
    if head is None and getattr(w, "data", False):
        return False           # "$(date +%F)": data that never starts with '-' or '+'
    return head is None or head.startswith(("-", "+"))


def analyse(spec: Spec, prog: str, words: list, mkarg, host_of) -> Analysis:
    """Parse ``words`` (``words[0]`` is the program) with ``spec``."""
    out = Analysis()
    try:
        _parse(spec, prog, words, 1, out, mkarg, host_of, None)
    except _Stop:
        pass
    return out


def _one_word(w: Any, prog: str, option: str, out: Analysis, spill: list[Any]) -> Any:
    """An option's value in the next word.  A glob there may expand to several words: those
    after the first are further arguments (options, if a name may start with '-': opaque;
    else operands too, in ``spill``)."""
    if w.value is None and getattr(w, "globbed", False):
        if _could_be_option(w):
            out.opaque(f"{prog} {option}: its value is a glob ({w.raw}), which may expand "
                       f"to several words")
            raise _Stop
        spill.append(w)
    return w


def _dangerous(spec: Spec) -> bool:
    """Could an option hidden in a run-time word add an effect we would not see?"""
    return bool(spec.code or spec.refuse or spec.hook or spec.reads
                or (spec.writes and spec.operands not in (CP, MV, WRITES)))


_INFO: dict[tuple[int, int], tuple[Any, ...]] = {}   # see _info


def _info(spec: Spec, parent: Spec | None) -> tuple[Any, ...]:
    """What _parse needs of a table and its parent, computed once per pair (the entry
    holds both, so their ids stay theirs)."""
    hit = _INFO.get((id(spec), id(parent)))
    if hit is None:
        longs = spec.long_names() + (parent.long_names() if parent is not None else ())
        vnames = spec.value_names() | (parent.value_names() if parent is not None
                                       else frozenset())
        dangerous = _dangerous(spec) or (parent is not None and _dangerous(parent))
        refused = {name: parent for name in parent.refuse} if parent is not None else {}
        refused.update((name, spec) for name in spec.refuse)    # the table's own first
        hit = _INFO[(id(spec), id(parent))] = (spec, parent, longs, vnames, dangerous, refused)
    return hit


def _parse(spec, prog, words, i, out, mkarg, host_of, parent) -> None:
    opts: list = []           # (name, value Word|None)
    operands: list = []       # Words
    spill: list[Any] = []          # globs in an option's value: their other names are operands
    n = len(words)
    _, _, longs, vnames, dangerous, refused = _info(spec, parent)
    only = False

    def lookup(name):
        s = refused.get(name)
        if s is not None:
            out.opaque(f"{prog} {'-' if len(name) == 1 or s.single else '--'}{name}: "
                       f"{s.refuse[name]}")
            raise _Stop
        return name in vnames

    while i < n:
        w = words[i]
        v = w.value
        if v == "--" and not only:
            only = True
            i += 1
            continue
        if v is None:
            head = w.template[0] if w.template else None
            if not only and isinstance(head, str) and head.startswith("--") and "=" in head:
                name = head[2:].partition("=")[0]     # --output="$X": a known option with a
                full = _resolve(name, longs)          # value known only at run time
                if full is not None:
                    lookup(full)
                    opts.append((full, _runtime_value(w, head.partition("=")[2])))
                    out.longs.setdefault(full, []).append(None)
                    i += 1
                    continue
            if not only and _could_be_option(w) and dangerous and (
                    not spec.any_flags or _dangerous(spec) or
                    (refused and getattr(w, "globbed", False))):
                out.opaque(f"{prog}: an option known only at run time ({w.raw}) could change "
                           f"what it does")
                raise _Stop
            operands.append(w)
            i += 1
            if spec.subs is not None and len(operands) == 1:
                break
            if spec.posix:
                only = True
            continue
        if only or v == "-" or not v.startswith(("-", "+")) or (v.startswith("+") and
                                                                spec.plus is None):
            if v == "--" and not only:
                only = True
                i += 1
                continue
            operands.append(w)
            i += 1
            if spec.subs is not None and len(operands) == 1:
                break
            if spec.posix:
                only = True
            continue
        i += 1
        if v.startswith("+"):
            if spec.plus != "ok" and not (spec.plus_safe is not None and
                                          spec.plus_safe.fullmatch(v)):
                out.opaque(f"{prog} {v}: {spec.plus}")
                raise _Stop
            opts.append(("+", Word_(v[1:])))
            continue
        if v.startswith("--") or (spec.single and len(v) > 2):
            body = v[2:] if v.startswith("--") else v[1:]
            name, eq, val = body.partition("=")
            full = _resolve(name, longs)
            if full is None:
                if spec.any_flags and not any(x.startswith(name) for x in longs):
                    out.longs.setdefault(name, [])
                    opts.append((name, None))
                    continue
                out.opaque(f"{prog}: unknown or ambiguous option {'--' if v.startswith('--') else '-'}"
                           f"{name}")
                raise _Stop
            takes = lookup(full)
            if takes and not eq:
                if i >= n:
                    out.opaque(f"{prog}: option {v} lacks its value")
                    raise _Stop
                value = _one_word(words[i], prog, v, out, spill)
                out.valued.add(i)
                i += 1
            elif eq:
                value = Word_(val, words[i - 1], len(v) - len(val))
            elif full in spec.loose and i < n and words[i].value is not None and \
                    spec.loose[full].fullmatch(words[i].value):
                value = words[i]                  # journalctl --boot -1
                out.valued.add(i)
                i += 1
            else:
                value = None
            opts.append((full, value))
            out.longs.setdefault(full, []).append(value.value if value is not None else None)
            continue
        # a short cluster
        body = v[1:]
        if spec.numeric and body.isdigit():
            opts.append(("#", Word_(body)))
            continue
        k = 0
        while k < len(body):
            c = body[k]
            k += 1
            if lookup(c):
                if k < len(body):
                    value = Word_(body[k:], w, k + 1)
                elif i < n:
                    value = _one_word(words[i], prog, "-" + c, out, spill)
                    out.valued.add(i)
                    i += 1
                else:
                    out.opaque(f"{prog}: option -{c} lacks its value")
                    raise _Stop
                opts.append((c, value))
                out.shorts.add(c)
                break
            if c in spec.optional:
                if k < len(body):
                    opts.append((c, Word_(body[k:])))
                elif c in spec.loose and i < n and words[i].value is not None and \
                        spec.loose[c].fullmatch(words[i].value):
                    opts.append((c, words[i]))
                    out.valued.add(i)
                    i += 1
                else:
                    opts.append((c, None))
                out.shorts.add(c)
                break
            if c in spec.flags or (parent is not None and c in parent.flags) or spec.any_flags:
                opts.append((c, None))
                out.shorts.add(c)
                continue
            if spec.numeric and c.isdigit():
                continue
            out.opaque(f"{prog}: unknown option -{c}")
            raise _Stop
    _effects(spec, prog, opts, operands + spill if spec.subs is None else operands, out,
             mkarg, host_of)
    if spec.subs is not None:
        if not operands:
            return
        sw = operands[0]
        if sw.value is None:
            out.opaque(f"{prog}: subcommand known only at run time ({sw.raw})")
            raise _Stop
        sub = spec.subs.get(sw.value) or spec.subs.get("*")
        if sub is None:
            out.opaque(f"{prog}: unknown subcommand {sw.value!r} (it could be an alias or "
                       f"a plugin)")
            raise _Stop
        if out.sub is None:             # docker container logs: the first one names it
            out.sub = sw.value
        out.subs.append(sw.value)
        if isinstance(sub, str):
            out.opaque(f"{prog} {sw.value}: {sub}")
            raise _Stop
        _parse(sub, f"{prog} {sw.value}", words, i, out, mkarg, host_of,
               spec if spec.inherit else None)


class PathTemplate:
    """A run-time path template (``prefix/…``) as an Arg-like value: a name the program
    makes up below a directory (tar -x, sort -T, curl -O), never one with ``..``."""

    __slots__ = ("text", "views", "templates", "operand", "found")
    generated = True

    def __init__(self, templates: tuple) -> None:
        self.text = None
        self.views = ()
        self.templates = templates
        self.operand = False
        self.found = None


def below(base: Any, mkarg: Any) -> PathTemplate:
    """Anything below directory ``base`` (a Word): ``prefix/…``, or anywhere if unknown."""
    a = mkarg(base)
    if a.text is None:
        return PathTemplate(((None,),))
    return PathTemplate(((a.text.rstrip("/") + "/", None),))


def _runtime_value(w: Any, rest: str) -> "Word_":
    """The value part of ``--name=…`` whose rest is known only at run time."""
    value = Word_("")
    value.value = None
    value.raw = w.raw
    value.template = ((rest,) if rest else ()) + tuple(w.template[1:])
    return value


class Word_:
    """A value cut out of a word (``-fFILE``, ``--out=F``): ``value`` and ``raw``."""

    __slots__ = ("value", "raw", "template", "quoted")
    found: tuple[Any, ...] = ()
    globbed = False

    def __init__(self, value: str, whole=None, start: int = 0) -> None:
        self.value = value
        self.raw = value
        self.template = (value,)
        self.quoted = False


def _resolve(name: str, longs: tuple) -> str | None:
    if name in longs:
        return name
    found = [x for x in longs if x.startswith(name)]
    return found[0] if len(found) == 1 else None


def _effects(spec, prog, opts, operands, out, mkarg, host_of) -> None:
    if spec.text_only:
        return
    for name, value in opts:
        if name in spec.refuse:
            continue
        if name in spec.recursive:
            out.recursive = True
        if value is None:
            continue
        if name in spec.writes_below:
            out.writes.append(below(value, mkarg))
        elif name in spec.writes:
            if value.value != "-":
                out.writes.append(mkarg(value))
        elif name in spec.reads:
            if value.value != "-":
                out.reads.append(mkarg(value))
        elif name in spec.urls:
            out.connects.append(host_of(value.value))
        elif name in spec.code:
            kind = spec.code[name]
            if kind == "sh" and value.value is not None:
                out.code.append(value.value)
            elif kind == "sh":
                out.opaque(f"{prog}: a command known only at run time ({value.raw})")
            else:
                out.opaque(f"{prog} {'-' if len(name) == 1 else '--'}{name}: {kind}")
    if spec.always_recursive:
        out.recursive = True
    if spec.interactive and out.interactive is None:
        out.interactive = spec.interactive
    if spec.named and out.named is None:
        out.named = spec.named
    role = spec.operands
    files = [o for o in operands if o.value != "-"]
    if spec.hook is not None:
        spec.hook(out, opts, operands[1:] if spec.subs is not None else operands, mkarg)
        return
    if spec.subs is not None:
        return
    if role == READS:
        out.reads.extend(mkarg(o) for o in files)
    elif role == WRITES:
        out.writes.extend(mkarg(o) for o in files)
    elif role == DELETES:
        out.deletes.extend(mkarg(o) for o in files)
    elif role == FIRST_ARG:
        out.writes.extend(mkarg(o) for o in files[1:])
    elif role in (CP, MV):
        target = [v for name, v in opts if name in ("t", "target-directory") and v is not None]
        if target:
            dests, srcs = target, files
        elif len(files) >= 2:
            dests, srcs = files[-1:], files[:-1]
        else:
            dests, srcs = [], files
        for d in dests:
            out.writes.append(mkarg(d))
        (out.writes if role == MV else out.reads).extend(mkarg(o) for o in srcs)
    elif role == IN_OUT:
        out.reads.extend(mkarg(o) for o in operands[:1] if o.value != "-")
        # a glob in the input's place may expand to two names: the second is the output
        out.writes.extend(mkarg(o) for o in operands[1:] if o.value != "-")
        out.writes.extend(mkarg(o) for o in operands[:1] if getattr(o, "globbed", False))
    elif role == URLS:
        for o in operands:
            out.connects.append(host_of(o.value))
    elif role == CODE:
        if operands and operands[0].value is None:
            out.opaque(f"{prog}: its program is known only at run time")
