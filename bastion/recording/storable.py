"""PURE: text the index can store on both backends, whatever an agent sent.

Agent text reaches the index in many columns: the SSH user name of a refused login (before
any authentication), the target and login, exec command lines, typed shell lines, sftp
paths, approval requests.  Two kinds of character in it cannot be stored as they are:

* **NUL** (U+0000): valid UTF-8, so asyncssh passes it on in a user name or a command, but
  PostgreSQL's ``text`` refuses it;
* **lone surrogates** (U+D800-U+DFFF): what ``surrogateescape`` makes of bytes that are not
  UTF-8 (an sftp path with byte 0xff is ``'\\udcff'``); neither SQLite's driver nor
  PostgreSQL's can encode them.

Either one used to fail the recording worker's batch, and the replay that follows a failure
sent the same row again: one agent's login name or file name stopped recording for every
session on the node.  :func:`text` writes them in the form ``bastion.proto.sanitize`` shows
them to a reviewer anyway: NUL as ``␀`` (U+2400), a byte that was not UTF-8 as ``\\xNN``,
another lone surrogate as ``\\uXXXX``.  Everything else is kept exactly, on both backends,
so an index moved to PostgreSQL (``bastion store import``) holds the same text.

One column has a limit on length: a transfers row's ``path`` (and ``path2``, kept alike).
PostgreSQL's btree index on ``transfers.path`` refuses an entry over 2,704 bytes, and an
agent chooses the path (sftp, rsync arguments) or the target answers it (the realpath of a
deep directory, ~4 KiB on Linux).  :func:`path` keeps the first ``PATH_BYTES`` bytes and
says what was cut: ``/srv/a...[1570 more bytes; sha256 <hex of the whole path>]``.  The
whole path is still in the channel's recording (the row's marker).  Both backends store the
same, so ``--path`` globs on a prefix find the row on either.

Not covered: deciding what a command means (bastion.policy sees the original bytes).
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from bastion.proto.sanitize import escape_char

#: the longest path a transfers row keeps, in UTF-8 bytes (module doc): under PostgreSQL's
#: 2,704-byte btree entry with room for what says what was cut
PATH_BYTES = 2048

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _shown(match: re.Match[str]) -> str:
    ch = match.group()
    return "\u2400" if ch == "\x00" else escape_char(ch)


def text(value: str) -> str:
    """``value`` with NUL and lone surrogates written as the module doc says."""
    if _UNSTORABLE.search(value) is None:
        return value
    return _UNSTORABLE.sub(_shown, value)


def values(value: Any) -> Any:
    """``value`` with :func:`text` applied to every string in it (tuples, lists and dicts
    are walked; bytes and numbers are left as they are)."""
    if isinstance(value, str):
        return text(value)
    if isinstance(value, tuple):
        return tuple(values(v) for v in value)
    if isinstance(value, list):
        return [values(v) for v in value]
    if isinstance(value, dict):
        return {values(k): values(v) for k, v in value.items()}
    return value


def path(value: str | None) -> str | None:
    """``value`` (text :func:`text` made storable) cut to ``PATH_BYTES`` bytes as the module
    doc says; a shorter one (and None) as it is."""
    if value is None:
        return None
    raw = value.encode("utf-8")
    if len(raw) <= PATH_BYTES:
        return value
    kept = raw[:PATH_BYTES].decode("utf-8", "ignore")       # not half a character
    cut = len(raw) - len(kept.encode("utf-8"))
    return f"{kept}...[{cut} more bytes; sha256 {hashlib.sha256(raw).hexdigest()}]"
