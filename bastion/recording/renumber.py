"""New ids for a source's rows whose ids the store has already (``bastion store import``).

A one-node bastion counts every table's ids from 1.  In the PostgreSQL store sessions,
channels and commands of the nodes start at ``pgschema.ID_BLOCK`` (each process takes
blocks of them, bastion.store.pgconn), but transfers and approvals count from 1 there
too; and a second source (another one-node bastion) has the first one's ids again.

Per table the import (bastion.recording.importer) checks the source's ids, and the ids its
rows name in that table (an approval may name a session ``bastion prune`` deleted), against
the store (:func:`taken_tables`).  A table none of whose ids are taken keeps them, as
reviewers know them.  A table with any id taken is renumbered whole, in the source's order:

* sessions, channels, commands: ``new = old + base``, where ``base + 1`` starts an id block
  the import claims as a node does (``nextval('id_blocks')``): no node and no other import
  gets ids from it.  One offset a table, so even an id the source no longer has but a row
  names moves by it, into the import's block, where no other row is.
* transfers, approvals: one id a row from the table's identity sequence (``nextval``), as
  the store's own rows get theirs; a row may name only ids the source has (refused else).

Every column naming a renumbered id moves with it (:data:`REFERENCES`; the rows are
re-sealed into the store's chain anyway), the store's copies of recordings are keyed by the
new channel id, and a channel whose session or own id moved gets a recording path with the
new ids (``s<session>-c<channel>.cast`` in the same day directory): two channels of the
store never share a path, and a node plays a file at that path in its own data dir before
the store's copy (bastion.recording.located).

The map is kept in ``import_ids`` (migration 10) as runs, :class:`Run`: source ids
``old_first..old_last`` of a table are now ``new_first + (id - old_first)``;
``bastion store imports`` shows them and ``bastion store import`` prints them.

The stored copies of transferred files go into the store under the transfer's new id
(bastion.store.transfercopies), so ``transfers show --content`` finds them by it on any node;
the path in the row's ``content`` JSON keeps the source's name (the row is sealed with it),
and a node's file of that name is used only when its SHA-256 is the row's.

Not covered: the files in the source data dir keep their names (the map says which is
which).
"""

from __future__ import annotations

import sqlite3
from dataclasses import asdict, dataclass
from pathlib import PurePosixPath
from typing import Any, Iterable

from bastion.errors import RecordingError

#: tables whose new ids come from an id block the import claims (bastion.store.pgconn)
BLOCK_TABLES = ("sessions", "channels", "commands")
#: tables the store counts from 1 as SQLite does (an identity sequence)
IDENTITY_TABLES = ("transfers", "approvals")
#: the columns naming another row's id: table -> ((column, the table it names), ...)
REFERENCES: dict[str, tuple[tuple[str, str], ...]] = {
    "channels": (("session_id", "sessions"),),
    "commands": (("session_id", "sessions"), ("channel_id", "channels")),
    "transfers": (("session_id", "sessions"), ("channel_id", "channels")),
    "approvals": (("session_id", "sessions"), ("command_id", "commands"),
                  ("granted_by", "approvals")),
}


@dataclass
class Run:
    """Source ids ``old_first..old_last`` of ``table`` are now ``new_first + (id -
    old_first)``; ``rows``: how many of the source's rows are in the run.  ``new_first``
    is None in a dry run (no ids are claimed)."""
    table: str
    old_first: int
    old_last: int
    new_first: int | None
    rows: int

    @property
    def new_last(self) -> int | None:
        return None if self.new_first is None else self.new_first + self.old_last - self.old_first

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "new_last": self.new_last}


def own_ids(src: sqlite3.Connection, table: str) -> list[int]:
    """The ids of the source's rows of ``table``, ascending."""
    return [r[0] for r in src.execute(f"SELECT id FROM {table} ORDER BY id")]


def named_ids(src: sqlite3.Connection, table: str) -> list[int]:
    """Its rows' ids and every id of ``table`` a source row names, ascending."""
    ids = set(own_ids(src, table))
    for other, refs in REFERENCES.items():
        for column, target in refs:
            if target == table:
                ids.update(r[0] for r in src.execute(
                    f"SELECT DISTINCT {column} FROM {other} WHERE {column} IS NOT NULL"))
    return sorted(ids)


def taken_tables(conn: Any, src: sqlite3.Connection, tables: Iterable[str]) -> list[str]:
    """The tables of which the store has, or names, any id the source has or names.

    Named: approvals outlive the sessions and commands ``bastion prune`` deletes, so an
    approval imported before may name a session id no row has; a source row taking that
    id would become the session it names (the other references go with their rows)."""
    from bastion.store import pgschema
    taken = []
    for table in tables:
        ids = named_ids(src, table)
        if not ids:
            continue
        if table in BLOCK_TABLES and ids[-1] >= pgschema.ID_BLOCK:
            raise RecordingError(f"{table} id {ids[-1]} of the source reaches the store's id "
                                 f"blocks (from {pgschema.ID_BLOCK}); nothing was imported")
        span = (ids[0], ids[-1])
        have = {r[0] for r in conn.execute(f"SELECT id FROM {table} WHERE id BETWEEN ? AND ?",
                                           span)}
        for column, target in REFERENCES["approvals"]:
            if target == table:
                have.update(r[0] for r in conn.execute(
                    f"SELECT DISTINCT {column} FROM approvals WHERE {column} BETWEEN ? AND ?",
                    span))
        if have.intersection(ids):
            taken.append(table)
    return taken


class IdMap:
    """Old id -> new id for the renumbered tables; the others keep theirs."""

    def __init__(self) -> None:
        self.offsets: dict[str, int] = {}
        self.pairs: dict[str, dict[int, int]] = {}

    def moved(self, table: str) -> bool:
        return table in self.offsets or table in self.pairs

    def new(self, table: str, old: int | None) -> int | None:
        return None if old is None else self.id(table, old)

    def id(self, table: str, old: int) -> int:
        if table in self.offsets:
            return old + self.offsets[table]
        pairs = self.pairs.get(table)
        if pairs is None:
            return old
        if old not in pairs:
            raise RecordingError(f"a row of the source names {table} id {old}, which it does "
                                 "not have, and its other ids are renumbered; nothing was "
                                 "imported", hint="run `bastion verify` on the source")
        return pairs[old]

    def row(self, table: str, cols: list[str], values: list[Any]) -> list[Any]:
        """``values`` (of ``cols``) with every id moved; a moved channel's path renamed."""
        out = list(values)
        out[cols.index("id")] = self.new(table, out[cols.index("id")])
        for column, target in REFERENCES.get(table, ()):
            at = cols.index(column)
            out[at] = self.new(target, out[at])
        if table == "channels" and (self.moved("sessions") or self.moved("channels")):
            at = cols.index("path")
            if out[at] is not None:
                day = PurePosixPath(str(out[at])).parent
                out[at] = str(day / f"s{out[cols.index('session_id')]}-c{out[cols.index('id')]}"
                                    ".cast")
        return out


def claim(conn: Any, src: sqlite3.Connection, tables: list[str]) -> IdMap:
    """New ids for ``tables`` (inside the import's transaction; a block or sequence value
    taken is not given back on rollback, as for a node)."""
    from bastion.store import pgconn
    ids = IdMap()
    if any(t in BLOCK_TABLES for t in tables):
        base = pgconn.allocate_ids(conn)["sessions"] - 1
        ids.offsets = {t: base for t in tables if t in BLOCK_TABLES}
    for table in tables:
        if table in IDENTITY_TABLES:
            old = own_ids(src, table)
            new = sorted(r[0] for r in conn.execute(
                f"SELECT nextval(pg_get_serial_sequence('{table}', 'id')) "
                "FROM generate_series(1, ?)", (len(old),)))
            ids.pairs[table] = dict(zip(old, new, strict=True))
    return ids


def runs(src: sqlite3.Connection, tables: list[str], ids: IdMap | None) -> list[Run]:
    """The map as runs, for ``import_ids`` and the report (``ids`` None: a dry run)."""
    out: list[Run] = []
    for table in tables:
        own = own_ids(src, table)
        if table in BLOCK_TABLES or ids is None:
            span = named_ids(src, table)
            if span:
                new = None if ids is None else ids.new(table, span[0])
                out.append(Run(table, span[0], span[-1], new, len(own)))
            continue
        pairs = ids.pairs[table]
        for old in own:
            last = out[-1] if out and out[-1].table == table else None
            if (last is not None and last.old_last == old - 1 and last.new_last is not None
                    and last.new_last == pairs[old] - 1):
                last.old_last, last.rows = old, last.rows + 1
            else:
                out.append(Run(table, old, old, pairs[old], 1))
    return out


def save(conn: Any, import_id: int, found: list[Run]) -> None:
    for r in found:
        conn.execute("INSERT INTO import_ids (import_id, table_name, old_first, old_last, "
                     "new_first, rows) VALUES (?, ?, ?, ?, ?, ?)",
                     (import_id, r.table, r.old_first, r.old_last, r.new_first, r.rows))


def load(conn: Any) -> dict[int, list[Run]]:
    """Every import's runs, by import id."""
    out: dict[int, list[Run]] = {}
    for r in conn.execute("SELECT import_id, table_name, old_first, old_last, new_first, rows "
                          "FROM import_ids ORDER BY import_id, id"):
        out.setdefault(int(r[0]), []).append(Run(r[1], r[2], r[3], r[4], r[5]))
    return out


def describe(found: list[dict[str, Any]], *, limit: int = 6) -> list[str]:
    """One line a table: ``12 sessions renumbered: 1-12 are now 3000000001-3000000012``, or
    in a dry run ``12 sessions would be renumbered: 1-12`` (``found``: runs as dicts; at
    most ``limit`` runs a line, then how many more)."""
    lines = []
    for table in dict.fromkeys(r["table"] for r in found):
        mine = [r for r in found if r["table"] == table]
        rows = sum(r["rows"] for r in mine)
        parts = [_describe_run(r) for r in mine[:limit]]
        if len(mine) > limit:
            parts.append(f"and {len(mine) - limit} more run(s): `bastion store imports --json`")
        done = "would be renumbered (the store has some of their ids)" \
            if mine[0]["new_first"] is None else "renumbered"
        lines.append(f"{rows} {table} {done}: {', '.join(parts)}")
    return lines


def _span(first: int, last: int) -> str:
    return str(first) if first == last else f"{first}-{last}"


def _describe_run(r: dict[str, Any]) -> str:
    old = _span(r["old_first"], r["old_last"])
    if r["new_first"] is None:
        return old
    new = _span(r["new_first"], r["new_first"] + r["old_last"] - r["old_first"])
    return f"{old} {'is' if r['old_first'] == r['old_last'] else 'are'} now {new}"


TABLES = ("sessions", "channels", "commands", "transfers", "approvals")


def parse_old(text: str) -> tuple[str, int]:
    """``session:7`` (or ``sessions:7``, any of :data:`TABLES`) -> ``("sessions", 7)``."""
    name, _, number = text.partition(":")
    table = name.strip().lower()
    table = table if table.endswith("s") else table + "s"
    if table not in TABLES or not number.strip().isdigit():
        raise RecordingError(f"{text!r} is not TABLE:ID",
                             hint="e.g. session:7, command:12, approval:3 (tables: "
                                  + ", ".join(t[:-1] for t in TABLES) + ")")
    return table, int(number)


def lookup(imports: list[dict[str, Any]], table: str, old: int) -> list[dict[str, Any]]:
    """Where source id ``old`` of ``table`` went in each import (``imports``: as
    ``importer.list_imports`` gives them): ``renumbered`` (``new``: its id in the store),
    ``kept`` (the import kept that table's ids: if the id came from that source, it is the
    same in the store) or ``absent`` (that table was renumbered whole and the source had no
    such id)."""
    out = []
    for imp in imports:
        mine = [r for r in imp["renumbered"] if r["table"] == table]
        hit = next((r for r in mine if r["old_first"] <= old <= r["old_last"]), None)
        how, new = ("kept", old) if not mine else ("absent", None)
        if hit is not None and hit["new_first"] is not None:
            how, new = "renumbered", hit["new_first"] + old - hit["old_first"]
        out.append({"import": imp["id"], "source": imp["source"], "table": table, "old": old,
                    "how": how, "new": new})
    return out
