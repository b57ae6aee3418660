"""From a line to normalised simple commands: :func:`extract`.

Each :class:`Command` is one program bash would start (or one thing it cannot
know before running it, marked ``opaque`` with a reason).  Normalisation:

* quote removal, backslashes, ``$'...'`` and line continuations (see
  :mod:`bastion.policy.words`);
* the program is reduced to its basename after resolving ``.`` and ``..``
  (``/usr/bin/../bin/rm`` → ``rm``).  A program named by a path outside the
  standard bin directories (``./rm``, ``/tmp/ls``) keeps ``trusted=False``:
  deny/review rules match it by basename, allow rules never do;
* path-like arguments are normalised lexically (``/etc//./shadow``);
* every argument also carries the readings a deny rule should consider: the
  value after ``=`` (``--file=/x``, ``if=/x``), after ``host:`` (``h:/x``), the
  value glued to a short option (``-f/x``), the path resolved against each
  directory an earlier ``cd`` in the line went to, and for ``..`` that climbs out
  of an unknown directory, "any directory, then the rest";
* wrappers are unwrapped and ``-c`` strings parsed recursively
  (:mod:`bastion.policy.wrappers`); the wrapper itself is a command too.

Opaque: program from a variable/substitution/glob/brace expansion, ``eval``,
``source``/``.``, ``fc``, a shell reading a script or stdin, a dangerous
assignment in front of a command (``PATH=``, ``LD_*``, ... see
:mod:`bastion.policy.danger`), an unparsable line, a NUL, a line over
:data:`MAX_LINE` characters, ``-c`` strings nested deeper than :data:`MAX_DEPTH`.

Known limits: aliases and functions defined outside the line, the target's
shell start-up files, symlinks, and the working directory of earlier lines are
invisible; relative paths are matched as written (plus ``cd`` in the same line).
Pure: no IO.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from bastion.policy.quickinit import quick_init
from bastion.policy.danger import (
    BASH_LIKE,
    ARITH_EVAL, ASSIGNING, DECLARING, OPAQUE_OPTIONS, OPAQUE_PROGRAMS, PAGER_VARS, RESERVED,
    TRUSTED_DIRS,
    dangerous_name,
)
from bastion.policy.arguments import Arg, ArgReader
from bastion.policy.dialect import history_expansion, sh_difference
from bastion.policy.effects import harmless_write, redirect_roles, socket_hosts
from bastion.policy.fastpath import fast_commands, fast_cwds, fast_piped, fast_words
from bastion.policy.parse import RawCommand, parse_raw
from bastion.policy.shellopts import SHELL_STATE, option_problem
from bastion.policy.programs import describe
from bastion.policy.words import Word, norm_path
from bastion.policy.wrappers import Opaque, Run, piped_names, unwrap

__all__ = ["MAX_DEPTH", "MAX_LINE", "Arg", "Command", "Extraction", "extract", "fast_commands",
           "fast_words", "history_expansion", "make_command", "sh_difference", "show"]

MAX_LINE = 64 * 1024
MAX_DEPTH = 8
_GIT_TRACE = re.compile(r"GIT_TRACE(?:2)?(?:_[A-Z_]+)?")
_OPTION_VARS = {"LESS": "less", "SYSTEMD_LESS": "less", "MORE": "more"}   # hold options
_SAFE_SHOWN = re.compile(r"[\w\-./=:,@%+<>]+\Z")
_SAFE_LINE = re.compile(r"[\w\-./=:,@%+<>]+(?: [\w\-./=:,@%+<>]+)*\Z")   # safe words, one space apart
_NONE: frozenset[Any] = frozenset()    # one empty set for every command (a new one per call is waste)


@quick_init
@dataclass(frozen=True, slots=True)
class Command:
    """A simple command, normalised.  ``program`` is ``None`` when unknown.

    ``texts``, ``readings`` and ``templates`` summarise ``args`` for fast matching:
    the static values; those plus every other static reading; every run-time
    template.  ``shown`` is argv as one shell-quoted string (for reasons).
    """

    argv: tuple
    program: str | None
    args: tuple
    opaque: str | None = None
    via: str | None = None
    trusted: bool = True
    path: str | None = None
    texts: frozenset = frozenset()
    readings: frozenset = frozenset()
    templates: tuple = ()
    shown: str = ""
    writes: tuple = ()        # Args written (see bastion.policy.effects)
    deletes: tuple = ()       # Args removed by a program whose purpose that is (rm)
    reads: tuple = ()         # Args read (with a table: all of them; without: those known)
    connects: tuple = ()      # host names (None: only known at run time)
    known: bool = False       # a program table described the arguments
    recursive: bool = False   # reads everything below its read paths
    sub: str | None = None    # the subcommand (program tables with subcommands)
    shorts: frozenset | None = None   # short options present (table-parsed), else None
    longs: dict | None = None         # long option -> tuple of values (table-parsed)
    soft: bool = False        # opaque only because its program table could not read it
    valued: frozenset[int] = frozenset()   # indexes of args the table read as option values
    interactive: str | None = None    # why only an `interactive = true` rule allows it
    subs: tuple[str, ...] = ()          # the subcommand path (``("container", "logs")``)
    named: str | None = None    # why only an allow rule naming the subcommand allows it


def make_command(argv: tuple, program: str | None, args: tuple, opaque: str | None = None,
                 via: str | None = None, trusted: bool = True, path: str | None = None, *,
                 writes: tuple[Any, ...] = (), deletes: tuple[Any, ...] = (),
                 reads: tuple[Any, ...] = (), connects: tuple[Any, ...] = (),
                 known: bool = False, recursive: bool = False, sub: str | None = None,
                 shorts: frozenset[str] | None = None, longs: dict | None = None,
                 soft: bool = False, valued: frozenset[int] = _NONE,
                 interactive: str | None = None, subs: tuple[str, ...] = (),
                 named: str | None = None) -> Command:
    """A Command (its effects by name, as Command's fields; handed on by position)."""
    values: list[str] = []
    views: list[str] = []
    shapes: list[tuple[str | None, ...]] = []
    for a in args:                 # one pass (most args have a text and nothing else)
        if a.text is not None:
            values.append(a.text)
        if a.views:
            views.extend(a.views)
        if a.templates:
            shapes.extend(a.templates)
    texts = frozenset(values) if values else _NONE
    readings = texts.union(views) if views else texts
    return Command(argv, program, tuple(args), opaque, via, trusted, path, texts, readings,
                   tuple(shapes), show(argv) + (f" (via {via})" if via else ""), writes,
                   deletes, reads, connects, known, recursive, sub, shorts, longs, soft, valued,
                   interactive, subs, named)


def show(argv: tuple, limit: int = 200) -> str:
    """argv as a shell-quoted string, shortened to ``limit`` characters."""
    text = " ".join(argv)
    if text.count(" ") != len(argv) - 1 or not _SAFE_LINE.match(text):   # else none is quoted
        text = " ".join(a if _SAFE_SHOWN.match(a) else shlex.quote(a) for a in argv)
    return text if len(text) <= limit else text[:limit - 1] + "…"


@quick_init
@dataclass(frozen=True, slots=True)
class Extraction:
    commands: tuple
    problems: tuple           # line-level reasons to treat the line as opaque


def extract(line: str, *, interactive: bool = False, cwd: str | None = None,
            dialect: str = "bash") -> Extraction:
    """All simple commands of ``line``; cached (the result is immutable).

    ``dialect``: ``"bash"`` or ``"sh"`` (dash/POSIX sh: text that bash and dash read
    differently is opaque, see :func:`sh_difference`)."""
    if not isinstance(line, str):
        return Extraction((), ("line is not text",))
    if len(line) > MAX_LINE:
        return Extraction((), (f"line longer than {MAX_LINE} characters",))
    if dialect not in ("bash", "sh"):
        return Extraction((), (f"unknown shell dialect {dialect!r}",))
    return _extract_cached(line, interactive, cwd, dialect)


@lru_cache(maxsize=8192)
def _extract_cached(line: str, interactive: bool, cwd: str | None,
                    dialect: str = "bash") -> Extraction:
    ex = _Extractor(cwd)
    if interactive:
        why = history_expansion(line)
        if why:
            ex.problems.append(why)
    if dialect == "sh":
        why = sh_difference(line)
        if why:
            return Extraction((), (why,))
    ex.line(line, 0, None)
    return Extraction(tuple(ex.commands), tuple(ex.problems))



class _Extractor(ArgReader):
    def __init__(self, cwd: str | None) -> None:
        self.commands: list[Command] = []
        self.problems: list[str] = []
        self.dirs: list[str] = [norm_path(cwd)] if cwd and cwd.startswith("/") else []
        self.dir_unknown = False
        # The working directory a command surely runs in (for its file effects): ``base``
        # where the current text starts (the cwd given, or the invoking command's), and
        # ``certain`` for the command being read (RawCommand.cwd: after `cd /x &&` ...).
        self.base: str | None = self.dirs[0] if self.dirs else None
        self.certain: str | None = None

    def line(self, text: str, depth: int, via: str | None,
             redirs: list[Any] | tuple[Any, ...] = (),
             positional: tuple[Word, ...] = ()) -> None:
        fast = fast_commands(text)
        if fast is not None:
            cwds = fast_cwds(text, fast)
            piped = fast_piped(text, len(fast))
            saved = self.certain
            try:
                for k, (words, cwd) in enumerate(zip(fast, cwds, strict=True)):
                    self.certain = self.base if cwd == "" else cwd
                    self.simple(words, list(redirs), None, depth, via,
                                stdin=RawCommand(fast[k - 1]) if piped[k] else None)
            finally:
                self.certain = saved
            return
        raws, problems = parse_raw(text, positional)
        if depth == 0:
            self.problems.extend(problems)
        elif problems:
            self.add(make_command((via or "-c", text), None, (), f"{via} string: {problems[0]}",
                                  via))
        for raw in raws:
            self.raw(raw, depth, via, redirs)

    def raw(self, raw: RawCommand, depth: int, via: str | None,
            redirs: list[Any] | tuple[Any, ...]) -> None:
        problem = raw.problem
        pagers = []
        env_writes: list[Any] = []
        for name, value in raw.assigns:
            if name in PAGER_VARS and value.value and fast_words(value.value) and raw.words \
                    and value.value.split()[0].rsplit("/", 1)[-1] not in BASH_LIKE:
                pagers.append((name, value.value))      # decided as a program of its own
            elif dangerous_name(name):
                why = self.env_assign(name, value, env_writes)
                if why != "":
                    problem = problem or f"assigns {name} in front of the command{why or ''}"
        for name, text in pagers:
            self.code(text, depth, f"{via} > {name}=" if via else f"{name}=", redirs)
        words = raw.words
        if not words:
            if not raw.redirs and not problem:
                return
            words = [Word.literal(":")]
        saved, unknown = self.certain, self.dir_unknown
        self.certain = self.base if raw.cwd == "" else raw.cwd
        if raw.in_function:                # runs when called, wherever the shell is then
            self.certain, self.dir_unknown = None, True
        try:
            self.simple(words, list(redirs) + raw.redirs, problem, depth, via,
                        env_writes=env_writes, stdin=raw.stdin)
        finally:
            self.certain = saved
            if raw.in_function and words[0].value not in ("cd", "pushd", "popd"):
                self.dir_unknown = unknown     # (a cd in the body leaves it unknown)

    def env_assign(self, name: str, value: Word, writes: list[Any]) -> str | None:
        """A dangerous variable set for one command whose value we can still read: an
        empty pager (no pager), ``GIT_TRACE=1`` (stderr) or ``=/path`` (a write),
        ``LESS``/``MORE`` options the pager's table accepts.  Returns "" when harmless,
        else why not (``None`` = just dangerous)."""
        v = value.value
        if v is None:
            return None
        if name in PAGER_VARS and v == "":
            return ""                                  # SYSTEMD_PAGER= : no pager
        if _GIT_TRACE.fullmatch(name):
            if v.lower() in ("", "0", "1", "2", "false", "true", "no", "yes") or \
                    (len(v) == 1 and v.isdigit()):
                return ""                              # stderr or an open descriptor
            if v.startswith("/"):
                writes.append(self.value_arg(Word.literal(v)))
                return ""
            return None
        prog = _OPTION_VARS.get(name)
        if prog is not None and "'" not in v and '"' not in v and "\\" not in v:
            found = describe(prog, [Word.literal(prog)] + [Word.literal(x) for x in v.split()],
                             self.value_arg)
            if found is not None and not found.problem and not found.reads and \
                    not found.code:
                writes.extend(found.writes)
                return ""
            return f" ({found.problem})" if found is not None and found.problem else None
        return None

    def add(self, cmd: Command) -> None:
        self.commands.append(cmd)

    # -- one simple command --------------------------------------------------------
    def simple(self, words: list[Word], redirs: list[Any], problem: str | None, depth: int,
               via: str | None, assigns: tuple[Any, ...] = (),
               env_writes: list[Any] | None = None,
               stdin: RawCommand | None = None) -> None:
        env_writes = list(env_writes or ())
        for name, value in assigns:
            if dangerous_name(name) and self.env_assign(name, value, env_writes) != "":
                problem = problem or f"{via} sets {name} for the command"
        first = words[0]
        program = path = None
        trusted = True
        if first.value is None:
            problem = problem or f"program name from a {first.why or 'run-time value'} ({first.raw})"
        else:
            v = first.value
            if not first.quoted and v in RESERVED and v not in ("time", "coproc"):
                problem = problem or f"keyword {v!r} where a program should be"
            if "/" in v:
                path = norm_path(v)
                program = path.rsplit("/", 1)[-1] or path
                trusted = path.rsplit("/", 1)[0] in TRUSTED_DIRS
            else:
                program = v
        args = []
        operand = False
        for w in words[1:]:
            args.append(self.arg(w, operand))
            if w.value == "--":
                operand = True
        nwords = len(args)
        for _, w in redirs:
            args.append(self.arg(w, False))
        writes, reads, nets = list(env_writes), [], []
        for k, role in enumerate(redirect_roles(redirs)):
            a = self.resolve(args[nwords + k])
            if role == "w" and not harmless_write(a.text):
                writes.append(a)
            elif role == "r":
                reads.append(a)
            if role is not None:
                nets.extend(socket_hosts(a))      # bash opens /dev/tcp/HOST/PORT itself
        argv = (path or (program if program is not None else first.raw),) + tuple(
            w.value if w.value is not None else w.raw for w in words[1:]) + tuple(
            op + (w.value if w.value is not None else w.raw) for op, w in redirs)
        actions = unwrap(program, words) if program is not None else []
        if program == "xargs" and stdin is not None:
            names = piped_names(stdin.words, words)
            if names:              # find ... -print0 | xargs -0 CMD: CMD gets find's names
                fed = Word(raw="<find names>", value=None, template=(None,),
                           why="find match", found=names)
                actions = [Run([fed if x.why == "xargs input" else x for x in a.words],
                               a.via, a.assigns, a.cwd) if isinstance(a, Run) else a
                           for a in actions]
        if program is not None and problem is None:
            problem = self.special(program, words, args)
            for action in actions:
                if isinstance(action, Opaque):
                    problem = action.why
                    break
        codes: list[str] = []
        found = None
        if program is not None and problem is None:
            found = describe(program, words, self.value_arg)
            if found is not None and found.problem:
                problem = found.problem     # effects read before the table stopped still count
                writes.extend(a for a in found.writes if not harmless_write(a.text))
                reads.extend(found.reads)   # for deny rules (an opaque command is never allowed)
            elif found is not None:
                writes.extend(a for a in found.writes if not harmless_write(a.text))
                reads.extend(found.reads)
                codes = found.code
        if found is None:
            cmd = make_command(argv, program, tuple(args), problem, via, trusted, path,
                               writes=tuple(writes), reads=tuple(reads), connects=tuple(nets))
        elif found.problem:
            cmd = make_command(argv, program, tuple(args), problem, via, trusted, path,
                               writes=tuple(writes), reads=tuple(reads), soft=True,
                               connects=tuple(found.connects) + tuple(nets))
        else:
            cmd = make_command(argv, program, tuple(args), problem, via, trusted, path,
                               writes=tuple(writes), reads=tuple(reads),
                               connects=tuple(found.connects) + tuple(nets), known=True,
                               deletes=tuple(found.deletes),
                               recursive=found.recursive, sub=found.sub,
                               shorts=frozenset(found.shorts) if found.shorts else _NONE,
                               longs=found.longs,
                               valued=frozenset([k - 1 for k in found.valued])
                               if found.valued else _NONE,
                               subs=tuple(found.subs), interactive=found.interactive,
                               named=found.named)
        self.add(cmd)
        for text in codes:
            if text.split()[:1] and text.split()[0].rsplit("/", 1)[-1] in BASH_LIKE:
                self.add(make_command((program, text), None, (), f"{program} runs a shell "
                                      f"as a pager (it would read the output as code)", via))
                continue
            self.code(text, depth, f"{via} > {program}" if via else program or "", redirs)
        if program is None:
            return
        if program in ("cd", "pushd", "popd"):
            self.track_cd(program, words)
        if program == "eval":
            if all(w.value is not None for w in words[1:]) and len(words) > 1:
                self.code(" ".join(w.value or "" for w in words[1:]), depth, "eval", redirs)
            return
        for action in actions:
            chain = f"{via} > {action.via}" if via else action.via
            if isinstance(action, Opaque):
                continue
            saved = (self.dirs, self.dir_unknown, self.certain, self.base)
            if action.cwd is not None:           # env -C, sudo -D/-i, su -, find -execdir
                self.chdir(action.cwd)
                v = action.cwd.value
                self.certain = norm_path(v) if v is not None and v.startswith("/") else None
            try:
                if isinstance(action, Run):
                    self.simple(list(action.words), redirs, None, depth, chain, action.assigns)
                else:
                    self.code(action.text, depth, chain, redirs, action.args)
            finally:
                self.dirs, self.dir_unknown, self.certain, self.base = saved

    def code(self, text: str, depth: int, via: str, redirs: list[Any] | tuple[Any, ...],
             positional: tuple[Word, ...] = ()) -> None:
        if depth + 1 > MAX_DEPTH:
            self.add(make_command((via, text), None, (), f"command strings nested deeper than "
                                                         f"{MAX_DEPTH}", via))
            return
        if via.endswith(("sh -c", "dash -c")) and not via.endswith("bash -c"):
            why = sh_difference(text)
            if why:
                self.add(make_command((via, text), None, (), f"{via} string: {why}", via))
                return
        saved = self.base
        self.base = self.certain         # the string starts where the invoking command runs
        try:
            self.line(text, depth + 1, via, redirs, positional)
        finally:
            self.base = saved

    @staticmethod
    def special(program: str, words: list[Word], args: list[Any]) -> str | None:
        why = OPAQUE_PROGRAMS.get(program) or (
            option_problem(program, words) if program in SHELL_STATE else None)
        if why:
            return why
        opt = OPAQUE_OPTIONS.get(program)
        if not opt and program not in ARITH_EVAL and program not in ASSIGNING and \
                program not in DECLARING:
            return None                   # none of the checks below is about this program
        values = [w.value for w in words[1:] if w.value is not None]
        if opt and any(v.startswith("-") and opt[0] in v for v in values):
            return opt[1]
        if program in ARITH_EVAL and (program != "printf" or "-v" in values):
            for v in values:
                if "$(" in v or "`" in v:
                    return f"{program} may evaluate {v!r} as code"
        if program in ASSIGNING and (program != "printf" or "-v" in values):
            for v in values:
                name = v.partition("=")[0]
                if dangerous_name(name):
                    return f"{program} assigns {name}"
        if program in DECLARING:
            for v in values:
                if v.startswith("-") and "n" in v:
                    return f"{program} -n makes a name reference"
        return None

    def chdir(self, w: Word) -> None:
        """A wrapped command runs in directory ``w`` (restored by the caller)."""
        v = w.value
        if v is None:
            self.dirs, self.dir_unknown = [], True
            return
        target = norm_path(v)
        if target.startswith("/"):
            self.dirs, self.dir_unknown = [target], False
        else:
            self.dirs = [norm_path(d + "/" + target) for d in self.dirs]
            self.dir_unknown = True

    def track_cd(self, program: str, words: list[Word]) -> None:
        operands = [w for w in words[1:] if not (w.value or "").startswith("-")]
        if program == "popd" or not operands:
            self.dir_unknown = True
            return
        w = operands[0]
        if w.value is None:
            self.dir_unknown = True
            return
        target = norm_path(w.value)
        if target.startswith("/"):
            self.dirs.append(target)
        elif self.dirs:
            self.dirs.extend(norm_path(d + "/" + target) for d in list(self.dirs))
            self.dir_unknown = True
        else:
            self.dir_unknown = True

