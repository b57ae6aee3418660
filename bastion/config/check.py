"""The checker that collects every problem of policy.toml (with where it is), and the
value checks the sections share: a list of tables, a whole number, a duration."""

from __future__ import annotations

import re

from bastion.errors import Problem


class Checker:
    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def add(self, where: tuple, message: str) -> None:
        self.problems.append(Problem(message=message, where=where))

    def keys(self, table: dict, allowed: tuple[str, ...], where: tuple) -> None:
        for key in table:
            if key not in allowed:
                self.add(where + (key,), f"unknown key {'.'.join(map(str, where + (key,)))!r}"
                         f" (allowed: {', '.join(allowed)})")

    def string(self, table: dict, key: str, where: tuple, *, required: bool = False,
               default: str | None = None) -> str | None:
        value = table.get(key, default)
        if value is None:
            if required:
                self.add(where, f"{where_text(where)}: missing required key {key!r}")
            return None
        if not isinstance(value, str) or not value:
            self.add(where + (key,), f"{where_text(where)}.{key} must be a non-empty string")
            return None
        return value

    def strings(self, table: dict, key: str, where: tuple) -> tuple[str, ...] | None:
        if key not in table:
            return None
        value = table[key]
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.add(where + (key,), f"{where_text(where)}.{key} must be a list of strings")
            return None
        return tuple(value)

    def number(self, table: dict, key: str, where: tuple, default, *, minimum=0):
        value = table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
            self.add(where + (key,), f"{where_text(where)}.{key} must be a number >= {minimum}")
            return default
        return value

    def boolean(self, table: dict, key: str, where: tuple, default: bool) -> bool:
        value = table.get(key, default)
        if not isinstance(value, bool):
            self.add(where + (key,), f"{where_text(where)}.{key} must be true or false")
            return default
        return value


def where_text(where: tuple) -> str:
    if len(where) >= 2 and isinstance(where[1], int):
        return f"{where[0]}[{where[1]}]"
    return ".".join(map(str, where))


def table_list(raw: dict, key: str, c: Checker) -> list[dict]:
    value = raw.get(key, [])
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        c.add((key,), f"{key} must be an array of tables: write [[{key}]]")
        return []
    return value


def whole_number(c: Checker, table: dict, key: str, where: tuple, default: int) -> int:
    """A whole number >= 1 (a limit; 0 or a fraction would be a mistake, not "off")."""
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        c.add(where + (key,), f"{where_text(where)}.{key} must be a whole number >= 1")
        return default
    return value


_DURATION = re.compile(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


def duration(c: Checker, table: dict, key: str, where: tuple) -> int:
    """Seconds from an integer or a string like ``"15m"``, ``"1h30m"``, ``"90s"``."""
    value = table.get(key, 0)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    m = _DURATION.fullmatch(value.strip()) if isinstance(value, str) else None
    if m is None or not value.strip():
        c.add(where + (key,), f"{where_text(where)}.{key} must be seconds (an integer >= 0) or a "
                              "duration like \"15m\", \"1h30m\"")
        return 0
    hours, minutes, seconds = (int(g or 0) for g in m.groups())
    return hours * 3600 + minutes * 60 + seconds
