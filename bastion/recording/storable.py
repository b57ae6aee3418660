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

Not covered: deciding what a command means (bastion.policy sees the original bytes).
"""

from __future__ import annotations

import re
from typing import Any

from bastion.proto.sanitize import escape_char

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
