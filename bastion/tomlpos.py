"""Find the line of a table or key in a TOML file, for error messages.

``tomllib`` gives values but no positions; this scans the text for table
headers (``[x]``, ``[[x]]``) and ``key =`` lines.  It is a best effort for
messages only: nothing is decided from it.
"""

from __future__ import annotations

import re

_HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\-\"' ]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_\-]+|\"[^\"]*\")\s*=")


class TomlPositions:
    def __init__(self, text: str) -> None:
        self._tables: dict[tuple, int] = {}
        self._keys: dict[tuple, int] = {}
        counters: dict[str, int] = {}
        current: tuple = ()
        for lineno, line in enumerate(text.splitlines(), start=1):
            m = _HEADER.match(line)
            if m:
                name = m.group(2).strip().strip("\"'")
                if m.group(1) == "[[":
                    index = counters.get(name, 0)
                    counters[name] = index + 1
                    current = (name, index)
                else:
                    current = (name,)
                self._tables.setdefault(current, lineno)
                continue
            k = _KEY.match(line)
            if k:
                key = k.group(1).strip('"')
                self._keys.setdefault(current + (key,), lineno)

    def line(self, where: tuple) -> int | None:
        """Line of ``where`` (e.g. ``("rules", 2, "action")``), its table, or None."""
        where = tuple(where)
        while where:
            if where in self._keys:
                return self._keys[where]
            if where in self._tables:
                return self._tables[where]
            where = where[:-1]
        return None
