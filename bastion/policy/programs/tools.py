"""Tables for tools with subcommands, archives, pagers, editors, network clients, interpreters.

Subcommand programs (git, docker, kubectl, systemctl, openssl) name each subcommand
they know; any other name is opaque (it could be an alias or a plugin).  Interpreters
(python, perl, ruby, node) are opaque whenever they would run code: ``-e``/``-c``,
a script file, or standard input.
"""

from __future__ import annotations

import re
from typing import Any

from bastion.policy.programs.spec import (
    NONE, Analysis, PathTemplate, Spec, Word_, below,
)

GNU = ("help", "version")
OPAQUE_CODE = "runs code we do not read"


# --- find ---------------------------------------------------------------------------
_FIND_VALUE = frozenset((
    "name", "iname", "path", "ipath", "regex", "iregex", "type", "xtype", "size", "perm",
    "user", "group", "uid", "gid", "mtime", "mmin", "atime", "amin", "ctime", "cmin",
    "newer", "anewer", "cnewer", "maxdepth", "mindepth", "links", "inum", "samefile", "used",
    "fstype", "context", "lname", "ilname", "wholename", "iwholename", "regextype", "printf",
    "files0-from"))
_FIND_FLAG = frozenset((
    "print", "print0", "ls", "prune", "quit", "depth", "d", "mount", "xdev", "follow", "noleaf",
    "daystart", "empty", "executable", "readable", "writable", "true", "false", "not", "a",
    "o", "and", "or", "nouser", "nogroup", "ignore_readdir_race", "noignore_readdir_race",
    "warn", "nowarn", "delete", "help", "version"))
_FIND_WRITE = frozenset(("fprint", "fprint0", "fls"))


def find_analyse(words: list, out, mkarg) -> None:
    i, n = 1, len(words)
    while i < n and (words[i].value or "") in ("-H", "-L", "-P"):
        i += 1
    if i < n and (words[i].value or "").startswith(("-O", "-D")):
        return out.opaque("find -O/-D debugging options")
    roots: list[Any] = []          # find lists names and metadata: its roots are no reads
    while i < n:
        v = words[i].value
        if v is None:
            if not words[i].template or words[i].template[0] is None or \
                    words[i].template[0].startswith(("-", "(", "!")):
                return out.opaque(f"find: a word known only at run time ({words[i].raw})")
        elif v.startswith("-") or v in ("(", ")", "!", ","):
            break
        roots.append(words[i])
        i += 1
    while i < n:
        v = words[i].value
        if v is None:
            return out.opaque(f"find: an expression word known only at run time ({words[i].raw})")
        i += 1
        if v in ("(", ")", "!", ","):
            continue
        name = v[1:] if v.startswith("-") else None
        if name in ("exec", "execdir", "ok", "okdir"):
            while i < n and words[i].value not in (";", "+"):
                i += 1           # the wrapped command is decided by the wrappers module
            i += 1
            continue
        if name in _FIND_WRITE or name == "fprintf":
            if i >= n:
                return out.opaque(f"find {v} lacks its file")
            out.writes.append(mkarg(words[i]))
            i += 2 if name == "fprintf" else 1
            continue
        if name == "delete":
            for r in roots or [Word_(".")]:
                out.writes.append(mkarg(r))
                out.writes.append(_below(r, mkarg))
            continue
        if name in _FIND_FLAG:
            continue
        if name in _FIND_VALUE or (name or "").startswith("newer"):
            if i >= n:
                return out.opaque(f"find {v} lacks its value")
            if name == "files0-from":
                out.reads.append(mkarg(words[i]))
            i += 1
            continue
        return out.opaque(f"find: unknown expression {v!r}")


# --- tar ----------------------------------------------------------------------------


def _tar_hook(out, opts, operands, mkarg):
    names = {name for name, _ in opts}
    modes = names & {"c", "x", "t", "r", "u", "A", "d", "create", "extract", "get", "list",
                     "append", "update", "catenate", "concatenate", "diff", "compare",
                     "delete"}
    archive = [v for name, v in opts if name in ("f", "file")]
    creating = bool(modes & {"c", "r", "u", "create", "append", "update"})
    extracting = bool(modes & {"x", "extract", "get"})
    for a in archive:
        if a is not None and a.value is not None and ":" in a.value.split("/")[0] and \
                "force-local" not in names:
            return out.opaque("tar -f HOST:FILE runs a remote shell")
        if a is not None and a.value != "-":
            (out.writes if creating or "delete" in names else out.reads).append(mkarg(a))
    if creating:
        out.recursive = True
        out.reads.extend(mkarg(o) for o in operands)
        dirs = [v for name, v in opts if name in ("C", "directory") and v is not None]
        for o in operands:               # tar -C DIR reads later operands inside DIR
            if o.value is None or o.value.startswith("/"):
                continue
            for d in dirs:
                if d.value is not None and d.value.startswith("/"):
                    out.reads.append(mkarg(Word_(d.value.rstrip("/") + "/" + o.value)))
                else:
                    out.reads.append(_Tpl(((None, "/" + o.value),)))
    if extracting:
        dirs = [v for name, v in opts if name in ("C", "directory")]
        if names & {"P", "absolute-names"}:
            out.writes.append(_anywhere())
        elif names & {"O", "to-stdout"}:
            pass
        else:
            base = dirs[-1] if dirs else Word_(".")
            out.writes.append(_below(base, mkarg))


_Tpl = PathTemplate


def _anywhere() -> PathTemplate:
    return PathTemplate(((None,),))


_below = below


TAR = Spec(flags="cxtruAdvzjJZaOkpPSUWhiBGMmlswn", values="fCbHKLNVgTXI", posix=False,
           long_flags=GNU + (
               "create", "extract", "get", "list", "append", "update", "catenate",
               "concatenate", "diff", "compare", "delete", "verbose", "gzip", "bzip2", "xz",
               "zstd", "lzma", "lzip", "lzop", "compress", "auto-compress", "to-stdout",
               "keep-old-files", "preserve-permissions", "absolute-names", "sparse",
               "dereference", "ignore-zeros", "overwrite", "same-owner", "no-same-owner",
               "numeric-owner", "one-file-system", "totals", "wildcards", "no-recursion",
               "recursion", "force-local", "show-transformed-names", "check-links", "verify",
               "keep-newer-files", "skip-old-files", "unlink-first", "recursive-unlink",
               "remove-files", "null", "full-time", "utc", "no-overwrite-dir", "interactive"),
           long_values=("directory", "blocking-factor", "format", "exclude", "transform",
                        "xform", "owner", "group", "mode", "mtime", "label", "strip-components",
                        "newer", "after-date", "tape-length", "occurrence", "record-size",
                        "sort", "exclude-tag", "anchored", "quoting-style"),
           optional=("checkpoint", "exclude-vcs", "exclude-caches", "exclude-backups",
                     "warning", "backup"),
           reads=("T", "files-from", "X", "exclude-from"),
           writes=("g", "listed-incremental", "index-file"),
           refuse={"I": "runs a compression program", "use-compress-program": "runs a program",
                   "F": "runs a script at each volume", "info-script": "runs a script",
                   "new-volume-script": "runs a script", "to-command": "runs a command per file",
                   "checkpoint-action": "may run a command", "rsh-command": "runs a remote shell",
                   "rmt-command": "runs a program", "M": "multi-volume prompts a shell",
                   "multi-volume": "multi-volume prompts may run a shell"},
           hook=_tar_hook)


_TAR_OLD_VALUES = frozenset(TAR.values) | {"F"}


def tar_words(words: list) -> list:
    """Old-style ``tar tfI ARCHIVE PROG`` → ``tar -t -f ARCHIVE -I PROG``: in the first
    argument (no dash) each letter that takes a value takes the next word, in order."""
    if len(words) > 1 and words[1].value and not words[1].value.startswith("-") and \
            words[1].value.isalpha():
        out, rest = [words[0]], list(words[2:])
        for letter in words[1].value:
            out.append(Word_("-" + letter))
            if letter in _TAR_OLD_VALUES:
                if not rest:
                    return words[:1] + [Word_("-" + words[1].value)] + rest
                out.append(rest.pop(0))
        return out + rest
    return words


def _hooked(spec: Spec, hook) -> Spec:
    from dataclasses import replace
    return replace(spec, hook=hook)


# --- docker / kubectl / systemctl / journalctl ---------------------------------------------


def _docker_cp(out, opts, operands, mkarg):
    for o in operands:
        if o.value is None or ":" not in o.value.split("/")[0]:
            out.writes.append(mkarg(o))


_D_SUB = Spec(any_flags=True, operands=NONE, long_values=(
    "format", "filter", "since", "until", "tail", "name", "user", "workdir", "env"),
              values="fnuwe")
DOCKER = Spec(flags="Dv", values="Hl", long_flags=GNU + ("debug", "tls", "tlsverify"),
              long_values=("host", "log-level", "context", "tlscacert", "tlscert", "tlskey"),
              refuse={"config": "reads a client configuration that may name helpers",
                      "H": "talks to another docker daemon", "host": "talks to another "
                      "docker daemon", "context": "talks to another docker daemon"},
              subs={**{name: _D_SUB for name in (
                  "ps", "logs", "inspect", "images", "image", "stats", "top", "version", "info",
                  "events", "port", "diff", "history", "container", "network", "volume",
                  "system", "exec", "run", "start", "stop", "restart", "kill", "rm", "rmi",
                  "pull", "push", "build", "compose", "tag", "save", "load", "create",
                  "pause", "unpause", "wait", "rename", "update", "commit", "login", "logout",
                  "search", "attach", "export", "import")} | {
                  n: "has subcommands of its own (not in the table)" for n in (
                      "network", "volume", "system", "compose")},
                    "cp": _hooked(_D_SUB, _docker_cp),
                    "container": Spec(any_flags=True, operands=NONE, subs={
                        **{name: _D_SUB for name in (
                            "ls", "list", "ps", "logs", "inspect", "top", "stats", "port", "diff",
                            "exec", "run", "create", "start", "stop", "restart", "kill", "rm",
                            "prune", "attach", "export", "commit", "pause", "unpause", "wait",
                            "rename", "update")}, "cp": _hooked(_D_SUB, _docker_cp)}),
                    "image": Spec(any_flags=True, operands=NONE, subs={name: _D_SUB for name in (
                        "ls", "list", "inspect", "history", "pull", "push", "rm", "prune", "tag",
                        "save", "load", "build", "import")})}, inherit=True)
_K_FILE_OUTPUTS = ("go-template-file", "templatefile", "jsonpath-file", "custom-columns-file")


def _kubectl_files(out: Analysis, opts: list[Any], operands: list[Any], mkarg: Any) -> None:
    """``-o go-template-file=F`` (and the other ``*-file`` outputs, or ``--template F`` with
    one of them) reads F; ``-f``/``--filename`` reads a file (or fetches a URL)."""
    outputs = [v.value for name, v in opts if name in ("o", "output") and v is not None]
    file_output = any(o is None or o.split("=", 1)[0] in _K_FILE_OUTPUTS for o in outputs)
    for o in outputs:
        if o is None:
            return out.opaque("kubectl: an output format known only at run time")
        kind, eq, path = o.partition("=")
        if eq and kind in _K_FILE_OUTPUTS:
            out.reads.append(mkarg(Word_(path)))
    for name, v in opts:
        if v is None:
            continue
        if name == "template" and file_output:
            out.reads.append(mkarg(v))
        elif name in ("f", "filename"):
            if v.value is not None and "://" in v.value:
                from bastion.policy.programs.net import url_host
                out.connects.append(url_host(v.value))
            elif v.value != "-":
                out.reads.append(mkarg(v))


_K_SUB = Spec(any_flags=True, operands=NONE, hook=_kubectl_files, values="nlcofLp", long_values=(
    "namespace", "selector", "container", "output", "field-selector", "since", "tail",
    "sort-by", "template", "context", "cluster", "user", "token", "filename",
    "label-columns", "chunk-size", "since-time", "limit-bytes", "pod-running-timeout"))
KUBECTL = Spec(any_flags=True, values="ns", long_values=(
    "namespace", "context", "cluster", "user", "token", "request-timeout",
    "as", "as-group", "certificate-authority", "client-certificate", "client-key",
    "tls-server-name", "cache-dir", "log-dir"),
               refuse={"kubeconfig": "a kubeconfig may name a credential plugin to run",
                       "s": "talks to another API server", "server": "talks to another API "
                       "server"},
               subs={name: _K_SUB for name in (
                   "get", "describe", "logs", "top", "explain", "version", "api-resources",
                   "api-versions", "cluster-info", "events", "diff", "apply", "create",
                   "delete", "edit", "exec", "port-forward", "proxy", "rollout", "scale",
                   "set", "label", "annotate", "patch", "replace", "expose", "run", "attach",
                   "cordon", "uncordon", "drain", "taint", "auth", "wait", "debug", "cp")}
               | {"config": "the kubectl configuration may name credential plugins",
                  "plugin": "runs plugins", "krew": "installs plugins"},
               inherit=True)
_SC_SUB = Spec(any_flags=True, operands=NONE, values="tpsnoP", long_values=(
    "type", "property", "state", "signal", "kill-whom", "lines", "output",
    "job-mode", "root", "what", "timestamp", "when", "message", "boot-loader-entry"))
_SC_UNIT_DIRS = {"user": "~/.config/systemd/", "runtime": "/run/systemd/",
                 "global": "/etc/systemd/"}


def _systemctl_unit_files(out: Analysis, opts: list[Any], operands: list[Any],
                          mkarg: Any) -> None:
    """``enable``/``disable``/``mask`` ... write symlinks below /etc/systemd (``--user``:
    ~/.config/systemd, ``--runtime``: /run/systemd); a unit given by path
    (``enable --now /tmp/x.service``) is a file whose ``ExecStart=`` systemd runs."""
    for o in operands:
        if o.value is None or "/" in o.value:
            out.opaque(f"systemctl: a unit file given by path ({o.raw}) runs the commands "
                       f"it names")
            return
    names = {name for name, _ in opts} | set(out.longs)     # --user before the subcommand
    where = next((d for n, d in _SC_UNIT_DIRS.items() if n in names), "/etc/systemd/")
    out.writes.append(PathTemplate(((where, None),)))


_SC_WRITER = Spec(**{**_SC_SUB.__dict__, "hook": _systemctl_unit_files})
SYSTEMCTL = Spec(any_flags=True, values="tpsnoHM", long_values=_SC_SUB.long_values,
                 refuse={"H": "talks to another host", "host": "talks to another host",
                         "M": "talks to a container", "machine": "talks to a container"},
                 subs={name: _SC_SUB for name in (
                     "status", "show", "cat", "list-units", "list-unit-files", "list-timers",
                     "list-sockets", "list-dependencies", "list-jobs", "is-active", "is-enabled",
                     "is-failed", "is-system-running", "get-default", "help", "start", "stop",
                     "restart", "reload", "try-restart", "reload-or-restart", "kill",
                     "enable", "disable", "mask", "unmask", "daemon-reload", "reset-failed",
                     "reboot", "poweroff", "halt", "suspend", "isolate", "set-property",
                     "show-environment", "list-machines", "freeze", "thaw", "clean")}
                 | {name: _SC_WRITER for name in (
                     "enable", "disable", "mask", "unmask", "reenable", "preset", "link",
                     "revert", "set-default", "add-wants", "add-requires", "set-property")}
                 | {"edit": "runs an editor", "set-environment": "sets the manager environment",
                    "import-environment": "sets the manager environment"},
                 inherit=True)
_BOOT = re.compile(r"[-+]?[0-9]+|[0-9a-fA-F]{32}(?:[-+][0-9]+)?|all")
JOURNALCTL = Spec(flags="abefhklmNqrxF", values="onupSUtgDIMcTB", any_flags=False,
                  operands=NONE, long_flags=GNU + (
                      "all", "follow", "pager-end", "no-pager", "reverse", "quiet", "merge",
                      "utc", "no-hostname", "catalog", "system", "user", "list-boots",
                      "dmesg", "no-full", "full", "disk-usage", "header", "fields",
                      "show-cursor", "list-namespaces", "verify", "list-catalog"),
                  optional=("boot", "lines", "b"),
                  loose={"b": _BOOT, "boot": _BOOT},
                  long_values=("output", "unit", "user-unit", "identifier", "priority",
                               "facility", "since", "until", "grep", "case-sensitive", "cursor",
                               "after-cursor", "namespace", "output-fields",
                               "machine", "field", "invocation"),
                  reads=("D", "directory", "file", "i", "root", "image"),
                  writes=("cursor-file",),          # the last entry's cursor is written there
                  recursive=("D", "directory"),     # every journal file below it
                  refuse={"vacuum-size": "deletes journal files", "vacuum-files": "deletes "
                          "journal files", "vacuum-time": "deletes journal files",
                          "rotate": "rotates journal files", "flush": "moves journal files",
                          "setup-keys": "writes keys", "update-catalog": "writes the catalog",
                          "relinquish-var": "changes journal storage", "smart-relinquish-var":
                          "changes journal storage", "sync": "writes journal files"})
