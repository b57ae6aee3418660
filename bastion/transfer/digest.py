"""The SHA-256 of a file transferred in pieces, when the pieces make the whole file.

An sftp client reads and writes a file in requests at offsets; they usually come in order,
but a short read is asked again later, and a client may write out of order.  :class:`Stream`
hashes the bytes in offset order, keeping up to ``HASH_WINDOW`` bytes that arrived ahead of
a gap.  Once a piece overlaps what was hashed, or the window is full, there is no digest
(``digest()`` returns None): a digest is only ever that of bytes 0..N in order.  ``moved``
counts every byte transferred either way.  ``sink`` (optional) gets the same bytes in the
same order as they are hashed (the stored copy of ``store_transfers``).  Pure: no IO.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

HASH_WINDOW = 16 * 1024 * 1024      # out-of-order bytes kept to hash a file in order


class Stream:
    """Hashes the bytes of one open file in offset order, as long as that is possible."""

    def __init__(self, sink: Callable[[bytes], None] | None = None) -> None:
        self.sink = sink              # also gets the bytes hashed, in order (content capture)
        self.sha = hashlib.sha256()
        self.next = 0                 # bytes hashed so far (0..next)
        self.moved = 0                # bytes transferred in all
        self.whole = True             # still a gap-free stream from offset 0
        self.eof_at: int | None = None
        self._ahead: dict[int, bytes] = {}
        self._ahead_bytes = 0

    def feed(self, offset: int, data: bytes) -> None:
        self.moved += len(data)
        if not self.whole or not data:
            return
        if offset == self.next:
            self._hash(data)
            while self.next in self._ahead:
                chunk = self._ahead.pop(self.next)
                self._ahead_bytes -= len(chunk)
                self._hash(chunk)
        elif offset > self.next and offset not in self._ahead and \
                self._ahead_bytes + len(data) <= HASH_WINDOW:
            self._ahead[offset] = data
            self._ahead_bytes += len(data)
        else:                          # rewritten, re-read or too far ahead: no digest
            self.whole = False
            self._ahead.clear()
            self._ahead_bytes = 0

    def _hash(self, data: bytes) -> None:
        self.sha.update(data)
        self.next += len(data)
        if self.sink is not None:
            self.sink(data)

    def at_eof(self, offset: int) -> None:
        self.eof_at = offset if self.eof_at is None else min(self.eof_at, offset)

    def digest(self, *, need_eof: bool) -> str | None:
        if not self.whole or self._ahead:
            return None
        if need_eof and self.eof_at != self.next:
            return None
        return self.sha.hexdigest()
