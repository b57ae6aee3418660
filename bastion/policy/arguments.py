"""One argument as rules see it (:class:`Arg`), and how a word becomes one.

:class:`ArgReader` (mixed into the extractor, which keeps the directories ``cd`` went
to) turns a :class:`bastion.policy.words.Word` into an :class:`Arg`: its normalised
static value, the other static readings a deny rule should consider (the value after
``=``, after ``host:``, glued to a short option, resolved against each ``cd``
directory), the run-time templates, and for names found on disk (globs, loop variables,
find's ``{}``) the directory they are found in.  ``~/x`` is x below the login user's home
(:data:`bastion.policy.effects.HOME`).  Pure: no IO.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from bastion.policy.quickinit import quick_init
from bastion.policy.effects import HOME, canonical_path, cwd_alias, proc_alias_templates
from bastion.policy.words import Word, norm_path

_SPECIAL_ARG = re.compile(r"[/=:~]|^\.\.")


@quick_init
@dataclass(frozen=True, slots=True)
class Arg:
    """One argument as rules see it.

    ``text``: normalised static value (``None`` when only known at run time).
    ``views``: further static readings, for deny/review rules only.
    ``templates``: run-time readings (tuples of ``str`` and ``None`` = any text),
    for deny/review rules only.  ``operand``: it follows ``--``.
    """

    text: str | None
    views: tuple[str, ...] = ()
    templates: tuple[tuple[str | None, ...], ...] = ()
    operand: bool = False
    found: tuple[Any, ...] | None = None   # effects: ((template, directory its unknown parts are
                                 # found in, or None), ...) instead of ``templates``


class ArgReader:
    """Arguments of the commands of one line; the extractor sets these attributes."""

    dirs: list[str]             # directories ``cd`` went to on the line (or the cwd given)
    dir_unknown: bool           # some ``cd`` went somewhere unknown
    certain: str | None         # the directory the current command surely runs in

    # -- one argument --------------------------------------------------------------
    def value_arg(self, w: Any) -> Arg:
        """An option value or operand a program table names as a file."""
        return self.resolve(self.arg(w, False))

    def resolve(self, a: Arg) -> Arg:
        """A relative file path of a command whose working directory is sure (``cd /x &&
        cmd``, ``env -C /x cmd``, the ``cwd`` given): that directory's path; the relative
        text stays a reading for deny rules."""
        c = self.certain
        t = a.text
        if c is None or t is None or a.found is not None or not t or \
                t.startswith(("/", "~", "-")) or "://" in t:
            return a
        return Arg(canonical_path(c.rstrip("/") + "/" + t), a.views + (t,), a.templates,
                   a.operand)

    def arg(self, w: Word, operand: bool) -> Arg:
        v = w.value
        if v is None:
            if w.found or w.globbed:
                return self.found_arg(w, operand)
            tpl = w.template
            if w.raw[:2] in ("~/", "~") and tpl and tpl[0] is None and w.raw[1:2] in ("/", "") \
                    and None not in tpl[1:] and ".." not in w.raw and "/proc/" not in w.raw:
                # ~/x: x in the login user's home directory (HOME is never set by the line:
                # that is opaque); see effects.HOME
                tail = "".join(p for p in tpl[1:] if p is not None)
                home = (None, canonical_path(tail)) if tail.strip("/") else (None,)
                return Arg(None, (), _templates(tpl), operand, ((home, HOME),))
            return Arg(None, (), _templates(tpl), operand)
        if not _SPECIAL_ARG.search(v) and not self.dirs and not self.dir_unknown:
            return Arg(v, (), (), operand)            # a plain word: one reading
        text = canonical_path(v)
        views: list[str] = []
        templates: list[tuple[str | None, ...]] = []
        rest = cwd_alias(v) if "/cwd" in v else None
        if rest is not None:              # /proc/self/cwd/x: x in the working directory
            rel = rest.lstrip("/") or "."
            for d in self.dirs:
                views.append(norm_path(d + "/" + rel))
            stripped = norm_path(rel)
            while stripped.startswith("../") or stripped == "..":
                stripped = stripped[3:]
            templates.append((None, "/" + stripped) if stripped not in ("", ".") else (None,))
            return Arg(text, tuple(views), tuple(templates), operand)
        if "=" in v:
            rest = v.partition("=")[2]
            if rest:
                views.append(norm_path(rest))
        if len(v) > 2 and v[0] == "-" and v[1] != "-" and "/" in v:
            views.append(norm_path(v[v.index("/"):]))
        if ":" in v and "://" not in v:
            rest = v.partition(":")[2]
            if rest[:1] in ("/", "~"):
                views.append(norm_path(rest))
        if v[:1] not in ("-", "/", "~", "") and "=" not in v and "://" not in v:
            for d in self.dirs:
                views.append(norm_path(d + "/" + v))
            if self.dir_unknown or text.startswith(".."):
                stripped = text
                while stripped.startswith("../") or stripped == "..":
                    stripped = stripped[3:]
                templates.append((None, "/" + stripped) if stripped else (None,))
        return Arg(text, tuple(views), tuple(templates), operand)


    def found_arg(self, w: Word, operand: bool) -> Arg:
        """A word whose unknown parts are names found on disk (a glob, a loop variable over
        globs, find's ``{}``): for effects, each reading keeps the directory it is found
        in, so a deny glob matches it like a recursive read of that directory
        (:func:`bastion.policy.effects.arg_hits`).  Patterns keep the plain template."""
        alternatives = w.found or (w.template,)
        templates: list[tuple[Any, ...]] = []
        found: list[str | None] = []
        for tpl in alternatives:
            if any(p is not None and (".." in p or p.startswith("/proc/")) for p in tpl) or \
                    (tpl and tpl[0] is not None and tpl[0].startswith("~")):
                for t in _templates(tpl):
                    templates.append(t)
                    found.append(None)
                continue
            tpl = tuple(_SLASHES.sub("/", p) if p is not None else None for p in tpl)
            head = tpl[0] if tpl[0] is not None else ""
            if None not in tpl:                   # a literal alternative
                templates.append((canonical_path(head),))
                found.append(None)
                continue
            cut = head[:head.rfind("/") + 1]
            if head.startswith("/"):
                templates.append(tpl)
                found.append(cut)
                continue
            rest = tpl[1:] if tpl[0] is not None else tpl
            templates.append(("./",) + tpl)       # relative, as written
            found.append("./" + cut)
            for d in self.dirs:
                base = d.rstrip("/") + "/"
                templates.append((base + head,) + rest)
                found.append(base + cut)
            if self.dir_unknown:
                templates.append((None, "/" + head) + rest)
                found.append(None)
        return Arg(None, (), _templates(w.template), operand, tuple(zip(templates, found, strict=True)))


_SLASHES = re.compile(r"/(?:\.?/)+")


def _templates(template: tuple[str | None, ...]) -> tuple[tuple[str | None, ...], ...]:
    """Readings of a run-time word for deny rules: itself (lightly normalised), after '='."""
    parts: list[str | None] = []
    for p in template:
        if p is None:
            parts.append(None)
        else:
            p = _SLASHES.sub("/", p)
            if "/.." in p or p.startswith(".."):
                parts = [None]   # '..' after unknown text may climb anywhere
                p = p.rsplit("..", 1)[1]
            parts.append(p)
    out = [tuple(parts)]
    head = parts[0]
    if isinstance(head, str) and "=" in head:
        out.append((head.partition("=")[2],) + tuple(parts[1:]))
    if isinstance(head, str) and head.startswith("/proc/"):
        out.extend(proc_alias_templates(tuple(parts)))
    return tuple(out)
