"""Whether asyncssh is still the code a module that mirrors parts of it was written against.

bastion.ssh.sendpath and bastion.ssh.recvpath replace or mirror asyncssh functions on the
relay's hot path.  Each names those functions and the sha256 of their source as it was
when the module was written and tested; a different asyncssh (an upgrade, a patch) gives
another digest, and the module then leaves asyncssh alone rather than guess.
"""

from __future__ import annotations

import hashlib
import inspect
from typing import Any, Callable


def digest(functions: dict[str, Callable[..., Any]]) -> str:
    """sha256 over each function's name and source, in name order."""
    h = hashlib.sha256()
    for name, fn in sorted(functions.items()):
        h.update(name.encode() + b"\0" + inspect.getsource(fn).encode() + b"\0")
    return h.hexdigest()


def as_written(functions: dict[str, Callable[..., Any]], written_for: str) -> bool:
    """Whether ``functions`` hash to ``written_for``; False when their source is unreadable."""
    try:
        return digest(functions) == written_for
    except (OSError, TypeError):         # pragma: no cover - no source to check
        return False
