"""Tables for coreutils-like programs: file readers, writers, copiers, text filters.

Each entry is a :class:`Spec`; see :mod:`bastion.policy.programs.spec`.  Option lists
follow the GNU manuals (written from the manuals, not copied from any other table);
an option missing here makes the command opaque, never allowed.
"""

from __future__ import annotations

from typing import Any

from bastion.policy.programs.code import awk_outputs, sed_inert
from bastion.policy.programs.spec import (
    CP, DELETES, FIRST_ARG, IN_OUT, MV, NONE, WRITES, Spec,
)

GNU = ("help", "version")


def _s(**kw) -> Spec:
    kw["long_flags"] = tuple(kw.get("long_flags", ())) + GNU
    return Spec(**kw)


TEXT = _s(text_only=True, any_flags=True, operands=NONE, posix=True)

# --- readers ------------------------------------------------------------------------
# ls, stat, du, realpath and readlink look at names and metadata only: their operands
# are no reads (``reads`` rules are about file contents); their file-list options are.
READERS = {
    "cat": _s(flags="AbeEnstTuv", long_flags=("show-all", "number-nonblank", "show-ends",
                                              "number", "squeeze-blank", "show-tabs",
                                              "show-nonprinting")),
    "tac": _s(flags="brs", values="s", long_flags=("before", "regex"), long_values=("separator",)),
    "head": _s(flags="qvz", values="cn", numeric=True, long_values=("bytes", "lines"),
               long_flags=("quiet", "silent", "verbose", "zero-terminated")),
    "tail": _s(flags="fFqvz", values="cns", numeric=True,
               long_values=("bytes", "lines", "sleep-interval", "pid", "max-unchanged-stats"),
               optional=("follow",), long_flags=("quiet", "silent", "verbose", "retry",
                                                 "zero-terminated")),
    "wc": _s(flags="clmwL", long_flags=("bytes", "chars", "lines", "words", "max-line-length"),
             reads=("files0-from",)),
    "nl": _s(flags="p", values="bdfhilnsvw", long_values=(
        "body-numbering", "section-delimiter", "footer-numbering", "header-numbering",
        "line-increment", "join-blank-lines", "number-format", "number-separator",
        "starting-line-number", "number-width"), long_flags=("no-renumber",)),
    "od": _s(flags="bcdfiloxsv", values="AjNtSw", long_values=(
        "address-radix", "skip-bytes", "read-bytes", "format", "strings", "width",
        "endian"), long_flags=("output-duplicates", "traditional")),
    "base64": _s(flags="dian", values="w", long_flags=("decode", "ignore-garbage"),
                 long_values=("wrap",)),
    "cut": _s(flags="nsz", values="bcdf", long_values=("bytes", "characters", "delimiter",
                                                       "fields", "output-delimiter"),
              long_flags=("complement", "only-delimited", "zero-terminated")),
    "paste": _s(flags="sz", values="d", long_values=("delimiters",),
                long_flags=("serial", "zero-terminated")),
    "fold": _s(flags="bs", values="w", long_values=("width",), long_flags=("bytes", "spaces")),
    "fmt": _s(flags="cstu", values="pgw", numeric=True, long_values=("prefix", "goal", "width"),
              long_flags=("crown-margin", "split-only", "tagged-paragraph", "uniform-spacing")),
    "expand": _s(flags="i", values="t", long_values=("tabs",), long_flags=("initial",)),
    "rev": _s(),
    "column": _s(flags="tnJexLR", values="scoNWHdrlEO", long_values=(
        "separator", "output-separator", "table-columns", "table-name", "output-width"),
              long_flags=("table", "json", "fillrows", "keep-empty-lines")),
    "comm": _s(flags="123z", long_values=("output-delimiter",),
               long_flags=("check-order", "nocheck-order", "total", "zero-terminated")),
    "join": _s(flags="ivz", values="aeojt12", long_flags=("ignore-case", "check-order",
                                                          "nocheck-order", "header")),
    "cmp": _s(flags="bls", values="in", long_flags=("print-bytes", "verbose", "quiet",
                                                    "silent"),
              long_values=("ignore-initial", "bytes")),
    "diff": _s(flags="abBcdeEilnNpqrsStTuwyZ", values="CDFISUWxX", numeric=True,
               recursive=("r", "recursive"), long_flags=(
        "brief", "recursive", "unified", "context", "side-by-side", "ignore-case", "text",
        "ignore-all-space", "ignore-space-change", "ignore-blank-lines", "new-file",
        "report-identical-files", "expand-tabs", "initial-tab", "suppress-common-lines",
        "no-dereference", "color", "normal", "minimal", "speed-large-files", "strip-trailing-cr",
        "ignore-tab-expansion", "ignore-trailing-space", "show-c-function", "unidirectional-new-file"),
               long_values=("label", "exclude", "starting-file", "width", "line-format",
                            "show-function-line", "ignore-matching-lines", "tabsize",
                            "palette", "horizon-lines"),
               reads=("X", "exclude-from", "from-file", "to-file")),
    "md5sum": _s(flags="bctwz", long_flags=("binary", "check", "tag", "text", "ignore-missing",
                                            "quiet", "status", "strict", "warn", "zero")),
    "stat": _s(operands=NONE, flags="LfLt", values="c", long_values=("format", "printf", "cached"),
               long_flags=("dereference", "file-system", "terse")),
    "file": _s(flags="bcdEhiklLNnprsvz0", values="eFmP", reads=("f", "files-from", "m"),
               long_flags=("brief", "mime", "mime-type", "mime-encoding", "no-dereference",
                           "dereference", "special-files", "uncompress", "keep-going", "raw"),
               long_values=("separator", "exclude", "parameter")),
    "du": _s(operands=NONE, flags="0abcDhHklLmPsSx", values="BdX",
             reads=("X", "exclude-from", "files0-from"),
             long_flags=("null", "all", "apparent-size", "bytes", "total", "dereference-args",
                         "human-readable", "inodes", "dereference", "count-links",
                         "no-dereference", "separate-dirs", "si", "summarize",
                         "one-file-system"),
             long_values=("block-size", "max-depth", "threshold", "time", "time-style",
                          "exclude")),
    "ls": _s(operands=NONE, flags="aAbBcCdDfFgGhHiklLmnNopqQrRsStuUvwxXZ1", values="ITw",
             recursive=("R", "recursive"), long_flags=(
        "all", "almost-all", "author", "escape", "directory", "classify", "file-type",
        "full-time", "group-directories-first", "no-group", "human-readable", "si",
        "dereference-command-line", "inode", "dereference", "numeric-uid-gid", "literal",
        "hide-control-chars", "show-control-chars", "quote-name", "reverse", "recursive",
        "size", "context", "zero", "ignore-backups"),
             optional=("color", "hyperlink", "classify", "time-style"),
             long_values=("block-size", "format", "hide", "ignore", "indicator-style",
                          "quoting-style", "sort", "time", "tabsize", "width", "time-style")),
    "grep": _s(flags="EFGPiyvwxcLlosqbHhnTZzarRIUs", values="efmABCd", numeric=True,
               reads=("f", "file", "exclude-from"), recursive=("r", "R", "recursive",
                                                               "dereference-recursive"),
               long_flags=("extended-regexp", "fixed-strings", "basic-regexp", "perl-regexp",
                           "ignore-case", "no-ignore-case", "invert-match", "word-regexp",
                           "line-regexp", "count", "files-without-match", "files-with-matches",
                           "only-matching", "quiet", "silent", "no-messages", "byte-offset",
                           "with-filename", "no-filename", "line-number", "initial-tab",
                           "null", "null-data", "text", "recursive", "dereference-recursive",
                           "line-buffered", "binary"),
               optional=("color", "colour"),
               long_values=("regexp", "max-count", "label", "after-context", "before-context",
                            "context", "binary-files", "devices", "directories", "exclude",
                            "exclude-dir", "include", "group-separator")),
    "realpath": _s(operands=NONE, flags="eLmPqsz", long_flags=("canonicalize-existing", "canonicalize-missing",
                                                "logical", "physical", "quiet", "strip",
                                                "no-symlinks", "zero"),
                   long_values=("relative-to", "relative-base")),
    "readlink": _s(operands=NONE, flags="efmnqsvz", long_flags=("canonicalize", "canonicalize-existing",
                                                 "canonicalize-missing", "no-newline", "quiet",
                                                 "silent", "verbose", "zero")),
    "tr": _s(flags="cCdst", operands=NONE, long_flags=("complement", "delete",
                                                        "squeeze-repeats", "truncate-set1")),
    "xxd": _s(flags="abCeEipruh", values="cglosn", writes=(), operands=IN_OUT, single=False,
              numeric=False, long_flags=()),
}
for _alias in ("sha1sum", "sha224sum", "sha256sum", "sha384sum", "sha512sum", "b2sum", "cksum"):
    READERS[_alias] = READERS["md5sum"]
def _grep_hook(out, opts, operands, mkarg):
    given = any(name in ("e", "f", "regexp", "file") for name, _ in opts)
    for name, v in opts:
        if name in ("f", "file", "exclude-from") and v is not None and v.value != "-":
            out.reads.append(mkarg(v))
        elif name in ("d", "directories") and _recurses(v):
            out.recursive = True            # -d recurse is -r (a unique prefix will do)
    out.reads.extend(mkarg(o) for o in (operands if given else operands[1:]) if o.value != "-")


def _recurses(v: Any) -> bool:
    w = v.value if v is not None else None
    return w is None or not w or not ("read".startswith(w) or "skip".startswith(w))


READERS["grep"] = Spec(**{**READERS["grep"].__dict__, "hook": _grep_hook})
for _alias in ("egrep", "fgrep"):
    READERS[_alias] = READERS["grep"]
READERS["base32"] = READERS["base64"]
READERS["zcat"] = _s(flags="fqv", long_flags=("force", "quiet", "verbose"))

# --- no files at all --------------------------------------------------------------
NO_FILES = {name: TEXT for name in (
    "echo", "printf", "true", "false", ":", "pwd", "whoami", "id", "uptime", "nproc", "tty",
    "basename", "dirname", "seq", "sleep", "yes", "arch", "logname", "groups", "users",
    "which", "type", "getent", "test", "[", "expr", "factor", "numfmt", "cd", "pushd", "popd",
    # shell builtins whose arguments are names, numbers or expressions, never files
    "let", "declare", "typeset", "local", "export", "readonly", "unset", "shift", "return",
    "exit", "break", "continue", "shopt", "getopts", "wait")}
NO_FILES["uname"] = _s(flags="asnrvmpio", long_flags=(
    "all", "kernel-name", "nodename", "kernel-release", "kernel-version", "machine",
    "processor", "hardware-platform", "operating-system"), operands=NONE)
NO_FILES["hostname"] = _s(flags="aAbdfiIsy", operands=NONE,
                          refuse={"F": "hostname -F FILE sets the host name",
                                  "file": "hostname --file sets the host name",
                                  "b": "hostname -b sets the host name",
                                  "boot": "hostname --boot sets the host name"},
                          long_flags=("alias", "all-fqdns", "domain", "fqdn", "long",
                                      "ip-address", "all-ip-addresses", "short", "yp"),
                          hook=lambda out, opts, ops, mk: out.opaque(
                              "hostname NAME sets the host name") if ops else None)
NO_FILES["date"] = _s(flags="uIR", values="dr", reads=("f", "file"), optional=("I",),
                      long_flags=("utc", "universal", "rfc-email", "debug"),
                      long_values=("date", "reference", "rfc-3339", "iso-8601"),
                      refuse={"s": "date -s sets the clock", "set": "date --set sets the clock"},
                      operands=NONE,
                      hook=lambda out, opts, ops, mk: out.opaque(
                          "date MMDDhhmm sets the clock") if any(
                          o.value is None or not o.value.startswith("+") for o in ops) else None)
NO_FILES["free"] = _s(flags="bkmghltvw", values="sc", operands=NONE, long_flags=(
    "bytes", "kilo", "mega", "giga", "tera", "peta", "kibi", "mebi", "gibi", "tebi", "pebi",
    "human", "si", "lohi", "total", "committed", "wide"), long_values=("seconds", "count"))
NO_FILES["df"] = _s(flags="ahHiklPTvx", values="BtxF", operands=NONE, long_flags=(
    "all", "human-readable", "si", "inodes", "local", "no-sync", "sync", "portability",
    "print-type", "total"), long_values=("block-size", "output", "type", "exclude-type"))
NO_FILES["ps"] = _s(any_flags=True, operands=NONE, values="pUuCGgtoOk",
                    long_values=("pid", "ppid", "user", "group", "format", "sort", "cols",
                                 "columns", "rows", "lines", "width", "sid", "tty"))

# --- writers ------------------------------------------------------------------------


def _sed_hook(out, opts, operands, mkarg):
    scripts = [v for name, v in opts if name in ("e", "expression")]
    if any(name in ("f", "file") for name, _ in opts):
        return out.opaque("sed -f runs a script file we cannot see")
    files = operands
    if not scripts:
        if not operands:
            return out.opaque("sed without a script")
        scripts, files = [operands[0]], operands[1:]
    for s in scripts:
        if s is None or s.value is None:
            return out.opaque("sed script known only at run time")
        if not sed_inert(s.value):
            return out.opaque(f"sed script {s.value[:40]!r} may run commands or write/read files")
    inplace = any(name in ("i", "in-place") for name, _ in opts)
    (out.writes if inplace else out.reads).extend(mkarg(f) for f in files if f.value != "-")


def _awk_hook(out, opts, operands, mkarg):
    if any(name in ("f", "file", "i", "include", "l", "load", "E", "exec") for name, _ in opts):
        return out.opaque("awk loads a program file we cannot see")
    if not operands:
        return out.opaque("awk without a program")
    prog = operands[0]
    if prog.value is None:
        return out.opaque("awk program known only at run time")
    written = awk_outputs(prog.value)
    if written is None:
        return out.opaque(f"awk program {prog.value[:40]!r} may run commands or write files")
    from bastion.policy.programs.spec import Word_
    out.writes.extend(mkarg(Word_(w)) for w in written)      # print > "/tmp/out.txt"
    for f in operands[1:]:
        if f.value is not None and "=" in f.value and not f.value.startswith(("/", ".")):
            continue           # var=value assignment
        if f.value != "-":
            out.reads.append(mkarg(f))


def _dd_hook(out, opts, operands, mkarg):
    from bastion.policy.programs.spec import Word_
    for o in operands:
        if o.value is None:
            return out.opaque("dd operand known only at run time")
        key, eq, val = o.value.partition("=")
        if key == "of":
            out.writes.append(mkarg(Word_(val)))
        elif key == "if":
            out.reads.append(mkarg(Word_(val)))
        elif not eq or key not in ("bs", "ibs", "obs", "cbs", "count", "skip", "seek", "iseek",
                                   "oseek", "conv", "iflag", "oflag", "status"):
            return out.opaque(f"dd: unknown operand {o.value!r}")


AWK = Spec(values="FvfEil", long_values=("field-separator", "assign", "file", "include",
                                          "load", "exec"),
           long_flags=GNU + ("posix", "traditional", "characters-as-bytes", "sandbox", "lint",
                             "re-interval", "use-lc-numeric", "optimize", "no-optimize"),
           refuse={"debug": "writes a debug file", "dump-variables": "writes a file",
                   "pretty-print": "writes a file", "profile": "writes a profile file",
                   "source": "program text we do not read"},
           hook=_awk_hook)

WRITERS = {
    "sed": _s(flags="nrEsuzi", values="elf", optional=("i", "in-place"),
              long_values=("expression", "file", "line-length"),
              long_flags=("quiet", "silent", "regexp-extended", "separate", "unbuffered",
                          "null-data", "posix", "debug", "sandbox", "follow-symlinks"),
              hook=_sed_hook),
    "awk": AWK, "gawk": AWK, "mawk": AWK, "nawk": AWK,
    "sort": _s(flags="bdfgiMhnRrVcCmsuz", values="kStT", writes=("o", "output"),
               writes_below=("T", "temporary-directory"),
               reads=("files0-from", "random-source"), long_flags=(
        "ignore-leading-blanks", "dictionary-order", "ignore-case", "general-numeric-sort",
        "ignore-nonprinting", "month-sort", "human-numeric-sort", "numeric-sort",
        "random-sort", "reverse", "version-sort", "check", "merge", "stable", "unique",
        "zero-terminated", "debug"), long_values=(
        "sort", "key", "buffer-size", "field-separator", "parallel",
        "batch-size", "random-source", "temporary-directory"),
               refuse={"compress-program": "runs a program to compress temporary files"}),
    "uniq": _s(flags="cdDiuzf", values="fsw", numeric=True, operands=IN_OUT, long_flags=(
        "count", "repeated", "ignore-case", "unique", "zero-terminated"),
               long_values=("skip-fields", "skip-chars", "check-chars"),
               optional=("all-repeated", "group")),
    "tee": _s(flags="aip", long_flags=("append", "ignore-interrupts"), optional=("output-error",),
              operands=WRITES),
    "touch": _s(flags="acfhm", values="dt", reads=("r", "reference"), operands=WRITES,
                long_flags=("no-create", "no-dereference"), long_values=("date", "time")),
    "mkdir": _s(flags="pv", values="m", long_values=("mode", "context"), operands=WRITES,
                long_flags=("parents", "verbose")),
    "rmdir": _s(flags="pv", long_flags=("parents", "verbose", "ignore-fail-on-non-empty"),
                operands=DELETES),
    "rm": _s(flags="fiIrRdv", recursive=("r", "R", "recursive"), operands=DELETES,
             long_flags=("force", "recursive", "dir", "verbose", "one-file-system",
                         "no-preserve-root", "preserve-root"), optional=("interactive",)),
    "shred": _s(flags="fuvxz", values="ns", operands=WRITES, optional=("remove",),
                long_flags=("force", "verbose", "exact", "zero"),
                long_values=("iterations", "size", "random-source")),
    "truncate": _s(flags="co", values="s", reads=("r", "reference"), operands=WRITES,
                   long_flags=("no-create", "io-blocks"), long_values=("size",)),
    "chmod": _s(flags="cfvR", recursive=("R", "recursive"), operands=FIRST_ARG, long_flags=(
        "changes", "silent", "quiet", "verbose", "recursive", "no-preserve-root",
        "preserve-root"), reads=("reference",)),
    "cp": _s(flags="abdfHilLnPprRsStTuvxZ", values="St", writes=("t", "target-directory"),
             recursive=("r", "R", "a", "recursive", "archive"), operands=CP, long_flags=(
        "archive", "attributes-only", "force", "interactive", "link", "dereference",
        "no-clobber", "no-dereference", "parents", "recursive", "remove-destination",
        "strip-trailing-slashes", "symbolic-link", "no-target-directory", "update",
        "verbose", "one-file-system", "debug"), optional=("backup", "preserve", "reflink",
                                                          "sparse", "no-preserve", "context"),
             long_values=("suffix",)),
    "mv": _s(flags="bfinStTuvZ", values="St", writes=("t", "target-directory"), operands=MV,
             long_flags=("force", "interactive", "no-clobber", "strip-trailing-slashes",
                         "no-target-directory", "update", "verbose", "context"),
             optional=("backup",), long_values=("suffix",)),
    "ln": _s(flags="bdfFinLPrsTv", values="St", writes=("t", "target-directory"), operands=CP,
             long_flags=("directory", "force", "interactive", "logical", "no-dereference",
                         "physical", "relative", "symbolic", "no-target-directory",
                         "verbose"), optional=("backup",), long_values=("suffix",)),
    "install": _s(flags="bcCdDpsTvZ", values="gmotS", writes=("t", "target-directory"),
                  operands=CP, long_flags=("compare", "directory", "preserve-timestamps",
                                           "strip", "no-target-directory", "verbose",
                                           "preserve-context"),
                  long_values=("group", "mode", "owner", "suffix"), optional=("backup",),
                  refuse={"strip-program": "runs a program"}),
    "dd": Spec(long_flags=GNU, hook=_dd_hook),
    "split": _s(values="abCdlnt", numeric=True, operands=IN_OUT, long_flags=(
        "elide-empty-files", "unbuffered", "verbose", "separator"),
                long_values=("suffix-length", "additional-suffix", "bytes", "line-bytes",
                             "lines", "number"), optional=("numeric-suffixes", "hex-suffixes"),
                refuse={"filter": "runs a shell command"}),
    "shuf": _s(flags="erz", values="inoi", writes=("o", "output"), long_flags=(
        "echo", "repeat", "zero-terminated"), long_values=("input-range", "head-count",
                                                          "random-source")),
}
WRITERS["chown"] = WRITERS["chgrp"] = WRITERS["chmod"]
WRITERS["unlink"] = _s(operands=DELETES)
