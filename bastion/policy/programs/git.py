"""git's table: global options, the subcommands git knows, what each one writes and runs.

Three kinds of subcommand:

* **readers** (``log``, ``show``, ``diff``, ``blame``, ``grep``, ``ls-files`` ...): any
  flag except those that run a program (``--ext-diff``, ``-O``) or write a file
  (``--output``); ``git diff A B`` reads its operands (outside a repository it
  compares any two files: ``git diff /dev/null /etc/shadow``);
* **hook runners** (``commit``, ``merge``, ``pull``, ``push``, ``checkout``, ``am``,
  ``rebase``, ``status`` ... and ``branch``/``tag``/``remote``/``config`` when they
  change something): git runs the repository's hooks (``.git/hooks``, or
  ``core.hooksPath``), which are files the line cannot show.  Such a command is allowed
  only by an allow rule that names its subcommand (``commands = ["git commit"]``), never
  by ``commands = ["git"]`` (:attr:`Analysis.named`).  Those that change the work tree
  also *write* below it (``git -C DIR``, ``--work-tree`` or the working directory);
  ``git apply --unsafe-paths`` writes anywhere;
* **refused** (``submodule``, ``bisect``, ``filter-branch``, ``difftool`` ...) and any
  name not in the table (an alias or a ``git-NAME`` program): opaque.

Known limits (docs/POLICY.md): a repository's configuration can name programs git runs
(``core.fsmonitor``, ``diff.external``, ``core.pager``, filters); git reads it from files
the line does not show.  ``status`` runs the ``post-index-change`` hook when it refreshes
the index (seen with git 2.39).  Patch paths are relative to the repository's top
directory, which may lie above the working directory.  Pure: no IO.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from bastion.policy.programs.spec import NONE, Analysis, PathTemplate, Spec, Word_, below

GNU = ("help", "version")
HOOKS = ("runs the repository's hooks (.git/hooks or core.hooksPath: code the line does not "
         "show)")
Opts = list[tuple[str, Any]]
MkArg = Callable[[Any], Any]

_SAFE_CONFIG = ("color.", "core.quotepath", "core.abbrev", "log.", "i18n.", "advice.",
                "user.name", "user.email", "safe.directory", "column.", "format.pretty",
                "diff.renames", "diff.noprefix", "pager.")


def _global(out: Analysis, opts: Opts, operands: list[Any], mkarg: MkArg) -> None:
    """``-c KEY=VALUE`` outside a small safe list is opaque; ``-C DIR`` and
    ``--work-tree DIR`` say where git works (:attr:`Analysis.base`)."""
    base: Any = Word_(".")
    for name, v in opts:
        if name == "c":
            key = (v.value or "").partition("=")[0].lower() if v is not None else ""
            pager = key.startswith("pager.") or key == "core.pager"
            if not key or not (key.startswith(_SAFE_CONFIG) or pager) or pager and \
                    (v.value or "").partition("=")[2] not in ("", "false", "true", "cat"):
                out.opaque(f"git -c {key or '…'} may set a command git runs")
                return
        elif name in ("C", "work-tree") and v is not None:
            base = _join(base, v) if name == "C" else v
    out.base = base


def _join(base: Any, v: Any) -> Any:
    if base is None or v.value is None:
        return None
    if v.value.startswith("/") or base.value in (".", ""):
        return v
    return Word_(base.value.rstrip("/") + "/" + v.value)


def _tree(out: Analysis, mkarg: MkArg) -> PathTemplate:
    """Everything below the directory git works in."""
    base = out.base if out.base is not None else None
    if base is None:
        return PathTemplate(((None,),))
    return below(base, mkarg)


def _writes_tree(out: Analysis, opts: Opts, operands: list[Any], mkarg: MkArg) -> None:
    out.writes.append(_tree(out, mkarg))


def _apply(out: Analysis, opts: Opts, operands: list[Any], mkarg: MkArg) -> None:
    """``git apply PATCH``: reads the patch, writes the files it names below the work tree
    (anywhere with ``--unsafe-paths``); ``--check``/``--stat``/``--numstat``/``--summary``
    alone write nothing."""
    names = {name for name, _ in opts}
    out.reads.extend(mkarg(o) for o in operands if o.value != "-")
    if names & {"check", "stat", "numstat", "summary"} and "apply" not in names:
        return
    if names & {"index", "cached", "3way", "3"}:
        out.named = out.named or HOOKS              # post-index-change
    if "unsafe-paths" in names:
        out.writes.append(PathTemplate(((None,),)))
    else:
        out.writes.append(_tree(out, mkarg))


def _diff(out: Analysis, opts: Opts, operands: list[Any], mkarg: MkArg) -> None:
    """``git diff A B``: outside a repository (or with paths outside it) git compares the
    two files, so every operand may be a file read."""
    out.reads.extend(mkarg(o) for o in operands if o.value != "-")


_CHANGES = {
    "branch": frozenset(("d", "D", "m", "M", "c", "C", "f", "u", "delete", "move", "copy",
                         "force", "set-upstream-to", "unset-upstream", "edit-description",
                         "track", "create-reflog")),
    "tag": frozenset(("d", "f", "a", "s", "u", "m", "F", "e", "delete", "force", "annotate",
                      "sign", "local-user", "message", "file", "edit", "create-reflog")),
}
_LISTING = frozenset(("l", "list", "contains", "no-contains", "merged", "no-merged",
                      "points-at", "v", "verbose", "r", "remotes", "a", "all", "show-current",
                      "n", "column", "sort", "format"))


def _ref_changes(kind: str) -> Callable[[Analysis, Opts, list[Any], MkArg], None]:
    def hook(out: Analysis, opts: Opts, operands: list[Any], mkarg: MkArg) -> None:
        """``git branch``/``git tag``: listing is a read; creating, moving or deleting a
        ref runs the ``reference-transaction`` hook and writes the repository."""
        names = {name for name, _ in opts}
        if names & _CHANGES[kind] or (operands and not names & _LISTING):
            out.named = out.named or HOOKS
            out.writes.append(_tree(out, mkarg))
    return hook


_CONFIG_WRITES = frozenset(("add", "unset", "unset-all", "replace-all", "rename-section",
                            "remove-section", "edit", "e"))
_CONFIG_READS = frozenset(("get", "get-all", "get-regexp", "get-urlmatch", "list", "l",
                           "get-color", "get-colorbool"))


def _config(out: Analysis, opts: Opts, operands: list[Any], mkarg: MkArg) -> None:
    """``git config KEY VALUE`` (and ``--add``, ``--unset``, ``--edit`` ...) writes a
    configuration file, which may name programs git runs later (``core.pager``,
    ``core.fsmonitor``, ``alias.x=!cmd``); ``KEY`` alone, ``--get``, ``--list`` read."""
    names = {name for name, _ in opts}
    if operands[:1] and operands[0].value in ("set", "unset", "edit", "rename-section",
                                              "remove-section"):
        writing = True                              # git 2.46 subcommand spelling
    else:
        writing = bool(names & _CONFIG_WRITES) or (len(operands) >= 2 and
                                                    not names & _CONFIG_READS)
    if not writing:
        return
    out.named = out.named or ("writes git configuration, which can name programs git runs "
                              "(core.pager, core.fsmonitor, alias.NAME=!cmd)")
    files = [v for name, v in opts if name in ("f", "file") and v is not None]
    if files:
        out.writes.extend(mkarg(f) for f in files)
    elif names & {"global"}:
        out.writes.append(mkarg(Word_("~/.gitconfig")))
    elif names & {"system"}:
        out.writes.append(mkarg(Word_("/etc/gitconfig")))
    else:
        out.writes.append(_tree(out, mkarg))


def _remote(out: Analysis, opts: Opts, operands: list[Any], mkarg: MkArg) -> None:
    """``git remote`` lists; ``add``/``set-url``/``rename``/``remove`` ... change the
    configuration (a URL like ``ext::sh -c ...`` is a command a later fetch runs)."""
    if operands and operands[0].value not in ("show", "get-url"):
        out.named = out.named or "changes remotes (a remote URL can name a command git runs)"
        out.writes.append(_tree(out, mkarg))


def _format_patch(out: Analysis, opts: Opts, operands: list[Any], mkarg: MkArg) -> None:
    """``git format-patch`` writes one file per commit (in ``-o DIR`` or the working
    directory) unless ``--stdout``."""
    names = {name for name, _ in opts}
    if names & {"stdout"}:
        return
    dirs = [v for name, v in opts if name in ("o", "output-directory") and v is not None]
    out.writes.append(below(dirs[-1], mkarg) if dirs else _tree(out, mkarg))


def _bundle(out: Analysis, opts: Opts, operands: list[Any], mkarg: MkArg) -> None:
    """``git bundle create FILE REVS`` writes FILE; ``verify``/``list-heads``/``unbundle``
    read it."""
    if operands and operands[0].value == "create" and len(operands) > 1:
        if operands[1].value != "-":
            out.writes.append(mkarg(operands[1]))
    elif len(operands) > 1:
        out.reads.append(mkarg(operands[1]))


def _new_tree(out: Analysis, opts: Opts, operands: list[Any], mkarg: MkArg) -> None:
    """``git clone URL [DIR]``, ``git init [DIR]``, ``git worktree add DIR``: writes the new
    directory (an operand), or below the working directory."""
    paths = [o for o in operands if o.value is None or "://" not in o.value and
             ":" not in o.value.split("/")[0]]
    out.writes.append(below(paths[-1], mkarg) if paths else _tree(out, mkarg))


READ = Spec(any_flags=True, operands=NONE, values="SGnL", writes=("output", "o"),
            reads=("orderfile", "pathspec-from-file", "ignore-revs-file"), refuse={
    "ext-diff": "runs diff.external",
    "textconv": "runs textconv filters from the configuration", "O": "opens a pager program",
    "open-files-in-pager": "runs a pager program", "exec": "runs a command",
    "upload-pack": "runs a program", "receive-pack": "runs a program",
    "remote": "talks to a remote that may run programs", "extcmd": "runs a command",
    "tool": "runs a tool", "config": "sets configuration",
    "template": "copies hooks from a directory",
    "no-index": "compares files outside the repository", "contents": "reads another file",
}, long_values=("format", "pretty", "since", "until", "author", "grep", "date",
                "max-count", "skip"),
    optional=("decorate", "abbrev", "stat", "color", "word-diff", "color-words", "dirstat",
              "patience", "relative", "find-renames", "find-copies", "break-rewrites"))


def _hooked(hook: Callable[..., None] | None, **more: Any) -> Spec:
    """A subcommand that runs hooks (allowed only when named) and, with ``hook``, writes."""
    return replace(READ, named=HOOKS, hook=hook, **more)


_TREE_WRITERS = ("checkout", "switch", "restore", "reset", "merge", "pull", "rebase",
                 "cherry-pick", "revert", "stash", "clean", "rm", "mv", "commit", "add", "am",
                 "gc", "fetch", "notes", "push")

SUBS: dict[str, Any] = {name: READ for name in (
    "log", "show", "status", "describe", "rev-parse", "rev-list", "ls-files", "ls-tree",
    "ls-remote", "cat-file", "blame", "shortlog", "grep", "reflog", "whatchanged", "show-ref",
    "for-each-ref", "name-rev", "merge-base", "count-objects", "fsck", "archive", "bundle",
    "version", "help")}
SUBS["diff"] = replace(READ, hook=_diff)
SUBS["bundle"] = replace(READ, hook=_bundle)
SUBS["grep"] = replace(READ, reads=READ.reads + ("f",))    # -f FILE: patterns from FILE
SUBS["blame"] = replace(READ, reads=READ.reads + ("S",))   # -S FILE: revisions from FILE
SUBS["ls-files"] = replace(READ, reads=READ.reads + ("X", "exclude-from"))
SUBS["status"] = replace(READ, named=HOOKS)        # post-index-change on an index refresh
SUBS["branch"] = replace(READ, hook=_ref_changes("branch"), values="SGnLu")
SUBS["tag"] = replace(READ, hook=_ref_changes("tag"), values="SGnLmFu")
SUBS["config"] = replace(READ, hook=_config, refuse={}, long_values=READ.long_values + (
    "file", "blob", "default", "type", "comment", "value"), values="f")
SUBS["remote"] = replace(READ, hook=_remote, refuse={k: v for k, v in READ.refuse.items()
                                                     if k != "remote"})
SUBS["format-patch"] = replace(READ, hook=_format_patch, values="SGnLo",
                               long_values=READ.long_values + ("output-directory",))
SUBS["apply"] = replace(READ, hook=_apply, long_values=READ.long_values + (
    "directory", "include", "exclude", "whitespace", "build-fake-ancestor"))
for _name in _TREE_WRITERS:
    SUBS[_name] = _hooked(_writes_tree)
SUBS["rebase"] = replace(SUBS["rebase"], refuse=READ.refuse | {"x": "runs a command"})
for _name in ("clone", "init", "worktree"):
    SUBS[_name] = _hooked(_new_tree)
for _remote_name in ("clone", "fetch", "pull", "ls-remote", "archive", "push"):
    SUBS[_remote_name] = replace(SUBS[_remote_name],
                                 refuse=SUBS[_remote_name].refuse | {"u": "runs a program"})
for _bad in ("filter-branch", "submodule", "bisect", "difftool", "mergetool", "daemon",
             "instaweb", "web--browse", "credential", "send-email", "sh-setup", "upload-pack",
             "receive-pack", "filter-repo", "p4", "svn", "cvsimport", "remote-ext", "hook"):
    SUBS[_bad] = "runs programs or scripts we cannot see"

GIT = Spec(flags="pPv", values="Cc", long_flags=GNU + (
    "paginate", "no-pager", "bare", "no-replace-objects", "literal-pathspecs",
    "glob-pathspecs", "noglob-pathspecs", "icase-pathspecs", "no-optional-locks",
    "html-path", "man-path", "info-path"), long_values=("git-dir", "work-tree", "namespace"),
           refuse={"exec-path": "sets where git finds its programs",
                   "config-env": "sets configuration from the environment",
                   "super-prefix": "internal option"},
           subs=SUBS, hook=_global)

__all__ = ["GIT", "HOOKS"]
