"""rsync over exec (``rsync --server ...``): recognised, parsed strictly, rebuilt.

The rsync client runs ``rsync --server [--sender] OPTIONS . PATH...`` on the target over
exec.  The bastion cannot see which files travel inside rsync's protocol, so it decides the
*paths on the command line* as trees (:func:`bastion.transfer.decide.decide_tree`) and
only lets through a server command it understands:

* :func:`parse` returns None for a command that is not an rsync server (a plain command),
  an :class:`RsyncCall` for one it accepts, and raises :class:`RsyncRefused` (its message
  names sftp as the alternative) for anything else: a different program word (the
  client's ``--rsync-path``), ``--daemon``, an option outside :data:`SHORT_OK` /
  :data:`LONG_OK` (``-e CMD``, ``--files-from``, ``--include-from``, ``--log-file``,
  ``--temp-dir``, ``--backup-dir``, ``--link-dest``, ``-L``/``-K`` that follow symlinks,
  ``-s`` that hides the paths inside the protocol, ``-R``, ``--remove-source-files`` ...),
  an option after the ``.`` marker, shell syntax, and glob characters in a path (the
  sender expands them itself, past the decision).
* :meth:`RsyncCall.command` rebuilds the command from the accepted words with every
  word quoted and the paths replaced by the resolved ones, so the target's shell runs
  exactly what was decided; a receiving rsync also gets ``--no-devices --no-specials``
  (no device nodes, FIFOs or sockets are created in the tree).

The ``e`` in a short-option cluster of a server command is not ``--rsh``: it ends the
cluster and carries the client's protocol capabilities (``-logDtpre.iLsfxCIvu``).

Not covered: filter rules (``--exclude`` ...) travel inside the protocol, unseen; they
can only narrow what is sent.  Pure: no IO.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

#: short options a server command may carry (before the ``e`` that ends the cluster)
SHORT_OK = frozenset("vqrlptogDdHAXESzxnuIWmOJUNciy")
#: long options a server command may carry, without a value
LONG_FLAGS = frozenset({
    "--server", "--sender", "--delete", "--delete-before", "--delete-during",
    "--delete-delay", "--delete-after", "--delete-excluded", "--inplace", "--partial",
    "--append", "--append-verify", "--numeric-ids", "--size-only", "--ignore-existing",
    "--existing", "--ignore-errors", "--force", "--preallocate", "--stats",
    "--ignore-times", "--whole-file", "--sparse", "--checksum",
})
#: long options a server command may carry with ``=VALUE`` (glued), and what the value is
LONG_VALUES = {
    "--compress-level": re.compile(r"-?[0-9]{1,3}"),
    "--bwlimit": re.compile(r"[0-9.]+[bBkKmMgG]?"),
    "--timeout": re.compile(r"[0-9]{1,7}"),
    "--max-size": re.compile(r"[0-9.]+[bBkKmMgG]?[bB]?"),
    "--min-size": re.compile(r"[0-9.]+[bBkKmMgG]?[bB]?"),
    "--modify-window": re.compile(r"-?[0-9]{1,7}"),
    "--max-delete": re.compile(r"-?[0-9]{1,9}"),
    "--checksum-choice": re.compile(r"[A-Za-z0-9,]{1,40}"),
    "--compress-choice": re.compile(r"[A-Za-z0-9,]{1,40}"),
    "--log-format": re.compile(r"[^\x00-\x1f\x7f]{0,200}"),
    "--protocol": re.compile(r"[0-9]{1,3}"),
}
LONG_OK = LONG_FLAGS | frozenset(LONG_VALUES)
_CAPS = re.compile(r"[.A-Za-z0-9]*")          # what follows ``e`` in a server cluster
_GLOB = frozenset("*?[]{}")
_SHELL = frozenset(";&|<>()`$\n\r\\\"'")      # in a word after shell parsing: refuse

ALTERNATIVE = "use sftp (or scp without -O), which is decided file by file"
#: appended to every receiving rsync: ``-a`` implies ``-D``, and a device node created in
#: an allowed tree (by a root login) would let a later sftp get read the raw device
RECEIVER_EXTRA = ("--no-devices", "--no-specials")


class RsyncRefused(ValueError):
    """An rsync server command the bastion will not run; the message says why and what to
    use instead."""


@dataclass(frozen=True)
class RsyncCall:
    """An accepted ``rsync --server`` command."""

    sender: bool                      # the target sends (a pull): its paths are read
    options: tuple[str, ...]          # the option words, as accepted
    paths: tuple[str, ...]            # the path words, as the agent's rsync sent them

    @property
    def effect(self) -> str:
        return "reads" if self.sender else "writes"

    @property
    def op(self) -> str:
        return "rsync-get" if self.sender else "rsync-put"

    def command(self, paths: tuple[str, ...]) -> str:
        """The command run upstream: ``rsync`` + the options + ``.`` + ``paths``, quoted.
        A receiving rsync also gets ``--no-devices --no-specials`` (:data:`RECEIVER_EXTRA`)."""
        extra = () if self.sender else RECEIVER_EXTRA
        return " ".join(shlex.quote(w) for w in ("rsync", *self.options, *extra, ".", *paths))


def _refuse(why: str) -> RsyncRefused:
    return RsyncRefused(f"rsync through the bastion: {why}; {ALTERNATIVE}")


def _words(command: str) -> list[str] | None:
    lexer = shlex.shlex(command, posix=True, punctuation_chars=";&|<>()")
    lexer.whitespace_split = True
    lexer.commenters = ""
    try:
        return list(lexer)
    except ValueError:
        return None


def parse(command: str) -> RsyncCall | None:
    """The rsync server call in ``command``; None if it is not one (see the module doc)."""
    words = _words(command)
    if words is None:
        if "rsync" in command and "--server" in command:
            raise _refuse("the command could not be parsed")
        return None
    if "--server" not in words or not any(w.rsplit("/", 1)[-1] == "rsync" for w in words):
        return None
    if words[0].rsplit("/", 1)[-1] != "rsync" or any(c in _SHELL for c in words[0]):
        raise _refuse("only a plain `rsync --server` runs (no --rsync-path, wrapper or "
                      "shell syntax)")
    if "--daemon" in words:
        raise _refuse("daemon mode is not supported")
    try:
        dot = words.index(".", 1)
    except ValueError:
        raise _refuse("no `.` before the paths (an unknown rsync server form)") from None
    options, paths = words[1:dot], words[dot + 1:]
    for word in options:
        _check_option(word)
    if options.count("--server") != 1 or options.count("--sender") > 1:
        raise _refuse("--server must appear once")
    sender = "--sender" in options
    if not paths:
        paths = ["."]
    for path in paths:
        _check_path(path)
    if not sender and len(paths) != 1:
        raise _refuse("a receiving rsync takes exactly one destination")
    return RsyncCall(sender, tuple(options), tuple(paths))


def _check_option(word: str) -> None:
    if word.startswith("--"):
        name, eq, value = word.partition("=")
        if name not in LONG_OK:
            raise _refuse(f"option {name} is not allowed")
        if (name in LONG_VALUES) != bool(eq):
            raise _refuse(f"option {word} is not in a form the bastion accepts")
        pattern = LONG_VALUES.get(name)
        if pattern is not None and not pattern.fullmatch(value):
            raise _refuse(f"the value of {name} is not allowed")
        return
    if not word.startswith("-") or word == "-":
        raise _refuse(f"unexpected word {word!r} before the paths")
    body = word[1:]
    for i, ch in enumerate(body):
        if ch == "e":                   # the client's capabilities, glued: the end
            caps = body[i + 1:]
            if not caps or not _CAPS.fullmatch(caps):
                raise _refuse("-e (a remote shell command) is not allowed")
            return
        if ch not in SHORT_OK:
            raise _refuse(f"option -{ch} is not allowed" + _WHY.get(ch, ""))


_WHY = {
    "L": " (it follows symlinks out of the tree)",
    "k": " (it follows symlinks out of the tree)",
    "K": " (it follows symlinks out of the tree)",
    "s": " (it hides the paths from the bastion)",
    "R": " (implied directories are not decided)",
    "b": " (backups land outside the decided paths)",
    "C": " (it reads ignore files outside the tree)",
    "0": " (file lists are not decided)",
}


def _check_path(path: str) -> None:
    if not path:
        raise _refuse("an empty path")
    if path.startswith("-"):
        raise _refuse(f"an option after the paths ({path.split('=', 1)[0]})")
    if any(c in _GLOB for c in path):
        raise _refuse(f"glob characters in the path {path!r} are not allowed (the target "
                      "would expand them after the decision)")
    if any(c in _SHELL or ord(c) < 32 or c == "\x7f" for c in path):
        raise _refuse(f"shell syntax or control characters in the path {path!r}")
    if path.startswith("~") and not (path == "~" or path.startswith("~/")):
        raise _refuse("another user's home (~user) is not allowed")


def from_home(path: str, home: str) -> str:
    """``path`` as the target's login shell would see it: ``~`` and relative paths are
    under ``home``."""
    if path == "~" or path.startswith("~/"):
        path = home.rstrip("/") + path[1:]
    elif not path.startswith("/"):
        path = home.rstrip("/") + "/" + path
    return path
