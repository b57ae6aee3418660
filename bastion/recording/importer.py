"""``bastion store import``: a one-node data dir's audit history into the PostgreSQL store.

A bastion that ran on the embedded default (``DATA_DIR/index.sqlite`` and the recording
files under ``DATA_DIR``) and moves to the shared store (docs/SCALING.md) keeps its history
in view: every row of the SQLite index is copied into the store, every sealed recording is
uploaded into ``recording_chunks``, and the rows are re-sealed into the store's one hash
chain, so ``sessions list``, ``commands search``, ``verify`` and ``sessions play`` on any
node see them.  A table keeps the source's ids unless the store has some of them (its
nodes' transfers and approvals, which count from 1 as on SQLite; another one-node source
imported before): then that table is renumbered (bastion.recording.renumber), every
reference moving with it, and the map is kept in ``import_ids`` and reported.

The order of an import (:func:`import_data_dir`):

1. The source must be idle and whole: the data dir's recorder locks (``recorder.lock``,
   ``recorder.w*.lock``, bastion.recording.recorder) are taken and held to the end, so a
   ``bastion serve`` running on it refuses the import (and cannot start meanwhile); a
   session still ``active`` in the index (a crash nobody recovered) refuses it too; the
   index must verify (the chain from its latest prune checkpoint, every sealed
   recording's SHA-256: bastion.recording.verify), read in one snapshot.
2. One store transaction under the chain's lock (``BEGIN IMMEDIATE``): refuse while a node
   serves on the store (its heartbeat in ``nodes`` is recent: its writers would wait for the
   lock the import holds, then fail), a source imported before (its chain head, or its
   path, in ``imports``), or a transfer ``uid`` it has.  The tables with an id the store
   has (the source's, or one its rows name) are renumbered; ``--node`` is refused when
   sessions or channels are (their recordings get new names, which a copy of the data dir
   does not have).  New ids are claimed: an id block for sessions, channels and commands,
   identity values for transfers and approvals (renumber.claim).
3. Rows go in with their ids or new ones, parents first (the foreign keys), every
   reference moved (renumber.IdMap.row), many to a statement; a chained row's ``seq`` is
   its place in the store's chain: the source's order, after the store's head, gapless
   (source seq ``s`` becomes store seq
   ``store_first_seq + (s - source_start_seq - 1)``); ``hash`` empty.  Sessions carry the
   store's ``node`` column: ``import`` (no node's: every node checks their recordings in
   the store), or the node ``--node`` names.  Each sealed recording is uploaded
   and the SHA-256 of the bytes inserted must be the one in its sealed channel row, else
   the whole import rolls back.  Each stored copy of a transferred file
   (``store_transfers``) goes into ``transfer_copies`` under the transfer's id in the store
   (renumbered or not), after its file's SHA-256 is checked against the row's ``content``
   (bastion.recording.copies); a copy missing or changed refuses the import.
4. Re-sealing: the imported rows are read back from the store in seq order and each gets
   ``hash = chain.row_hash(prev, table, row as the store reads it back)``, as the store
   seals its own rows (and as verify recomputes them); ``chain_head`` moves once at the end.
   A gap, a row left unsealed or a count that is not the source's refuses the import.
5. A row in ``imports`` ties the two chains: the source path, its chain's start (the latest
   prune checkpoint's ``(seq, hash)``, or 0 and the genesis) and head ``(seq, hash)``, the
   store's first and last seq given to its rows and the store's head after them; beside it
   in ``import_ids`` the runs of renumbered ids (old -> new, renumber.Run).  Prune
   checkpoints are not copied into ``checkpoints``: there they would move the start of the
   store's chain; what they vouched for (the pruned prefix of the source chain) is the
   source start recorded here.
6. Identity sequences of ``transfers`` and ``approvals`` move past the imported ids, so the
   store's next own rows do not collide with them; then COMMIT.  Nothing is half-written:
   any failure rolls the one transaction back.

``dry_run`` does steps 1 and 2's checks without writing (the store is not even migrated,
no id is claimed), stored copies' files included (each there, its SHA-256 the row's), and
reports the same counts and which ids would be renumbered.  Files stay where they are; every
node reads the recordings and the stored copies from the store.

Not covered: the other direction (store to SQLite), merging two PostgreSQL stores.
"""

from __future__ import annotations

import fcntl
import heapq
import os
import sqlite3
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

from bastion import store
from bastion.errors import RecordingError
from bastion.recording import chain, copies, renumber, schema, storable, verify

#: the source's tables in the order their rows go in (parents before the rows naming them)
TABLES = ("sessions", "channels", "commands", "transfers", "approvals")
IDENTITY_TABLES = renumber.IDENTITY_TABLES    # the store counts them from 1 as SQLite does
OLDEST_SOURCE = 6          # transfers.content: every table and column the copy reads
IMPORTS_MIGRATION = 9      # the store's ``imports`` table
BATCH = 200                # rows to a statement (each statement is a round trip)
WINDOW = 5000              # chain seqs read back at a time
SERVING_WINDOW_LEASES = 1 / 3   # a node that beat this many leases ago still serves (two beats)
#: the node imported sessions belong to unless --node names one: no node serves as it, so
#: every node's verify checks their recordings in the store (the copies checked at import)
IMPORT_NODE = "import"


@dataclass
class ImportReport:
    source: str
    node: str
    dry_run: bool
    sessions: int = 0
    refused: int = 0                 # of ``sessions``: refused logins
    channels: int = 0
    commands: int = 0
    transfers: int = 0
    approvals: int = 0
    recordings: int = 0
    bytes: int = 0
    copies: int = 0                  # stored copies of transferred files (store_transfers)
    copy_bytes: int = 0
    source_start_seq: int = 0
    source_start_hash: str = schema.GENESIS
    source_head_seq: int = 0
    source_head_hash: str = schema.GENESIS
    checkpoints: int = 0
    store_first_seq: int | None = None
    store_last_seq: int | None = None
    store_head_hash: str | None = None
    #: the source ids the store had, and their new ids (renumber.Run.to_dict; a dry run:
    #: no new ids)
    renumbered: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def import_data_dir(data_dir: Path, *, node: str | None = None, dry_run: bool = False,
                    while_serving: bool = False) -> ImportReport:
    """Import ``data_dir`` into the configured PostgreSQL store (see the module doc).

    ``while_serving``: import although nodes beat on the store (their writers wait for the
    import's lock, and fail after the store's lock timeout)."""
    schema.require_shared_store(" to import into")
    began = time.monotonic()
    source = Path(data_dir).resolve()
    if node is not None:
        from bastion.store import location
        location.check(None, None, node, "--node")      # a node name's form, or ConfigError
    report = ImportReport(source=str(source), node=node or IMPORT_NODE, dry_run=dry_run)
    locks = _lock_source(source)
    try:
        src = _open_source(source)
        try:
            src.execute("BEGIN")                     # one snapshot for the checks and the copy
            _check_source(src, source, report)
            if dry_run:
                _dry_run_checks(src, source, report, while_serving)
            else:
                _copy(src, source, report, while_serving)
        finally:
            src.close()
    finally:
        for fd in locks:
            os.close(fd)
    report.seconds = time.monotonic() - began
    return report


def list_imports() -> list[dict[str, Any]]:
    """Every import into the configured PostgreSQL store, oldest first (``imports``)."""
    with schema.shared_store_reader(": imports go into one") as conn:
        found = renumber.load(conn)
        return [{**dict(r), "renumbered": [run.to_dict() for run in found.get(int(r["id"]), [])]}
                for r in conn.execute("SELECT * FROM imports ORDER BY id")]


# -- the source --------------------------------------------------------------------------

def _lock_source(source: Path) -> list[int]:
    """Hold the data dir's recorder locks: no ``bastion serve`` records into it meanwhile."""
    if not schema.index_path(source).exists():
        raise RecordingError(f"no session index at {schema.index_path(source)}",
                             hint="pass the data dir the one-node bastion used (--from)")
    names = ["recorder.lock"] + sorted(p.name for p in source.glob("recorder.w*.lock"))
    fds: list[int] = []
    try:
        for name in names:
            path = source / name
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError:
                if not path.exists():
                    continue        # a read-only copy nobody ever served from here
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            fds.append(fd)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                raise RecordingError(
                    f"a bastion process is recording into {source} (it holds {name})",
                    hint="stop `bastion serve` on that data dir first: an import reads a "
                         "data dir nobody writes") from None
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return fds


def _open_source(source: Path) -> sqlite3.Connection:
    path = schema.index_path(source)
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {schema.BUSY_TIMEOUT_MS}")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
    except sqlite3.Error as exc:
        raise RecordingError(f"cannot read the session index {path}: {exc}") from exc
    if not OLDEST_SOURCE <= version <= schema.SCHEMA_VERSION:
        conn.close()
        raise RecordingError(
            f"the session index {path} has schema {version}; this bastion imports "
            f"{OLDEST_SOURCE} to {schema.SCHEMA_VERSION}",
            hint="start `bastion serve` of this version once on the data dir (it migrates), "
                 "or import with the bastion version that wrote it")
    return conn


def _check_source(src: sqlite3.Connection, source: Path, report: ImportReport) -> None:
    active = src.execute("SELECT COUNT(*) FROM sessions WHERE status = 'active'").fetchone()[0]
    if active:
        raise RecordingError(
            f"{active} session(s) in {source} are still active (not sealed into its chain)",
            hint="start `bastion serve` on that data dir once and stop it: it marks the "
                 "sessions a crash left active as interrupted and seals them; then import")
    checked = verify.verify_source(src, source)
    if not checked.ok:
        first = checked.first
        raise RecordingError(
            f"the index in {source} does not verify ({len(checked.problems)} problem(s)); "
            f"first break: {first.message if first else '?'}; nothing was imported",
            hint=f"run `bastion verify --data-dir {source}` and settle every problem first: "
                 "re-sealing a broken chain into the store would hide the break")
    report.source_head_seq, report.source_head_hash = checked.head_seq, checked.head_hash
    report.source_start_seq = checked.start_seq
    if checked.checkpoint:
        report.source_start_hash = str(checked.checkpoint["hash"])
    report.checkpoints = src.execute("SELECT COUNT(*) FROM checkpoints").fetchone()[0]
    for table in TABLES:
        setattr(report, table, src.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
    report.refused = src.execute(
        "SELECT COUNT(*) FROM sessions WHERE status = 'refused'").fetchone()[0]
    for _cid, path, _sha in _recordings(src, source):
        report.recordings += 1
        report.bytes += path.stat().st_size
    report.copies, report.copy_bytes = copies.check_source(src, source)


def _recordings(src: sqlite3.Connection, source: Path) -> Iterator[tuple[int, Path, str | None]]:
    """Each channel's recording file that is there: (channel id, path, sealed SHA-256).  A
    sealed one missing was refused by verify already; an unsealed one (none in a source
    with no active session) is taken as it is."""
    for row in src.execute("SELECT id, path, sha256 FROM channels WHERE path IS NOT NULL "
                           "ORDER BY id"):
        path = source / row["path"]
        if row["sha256"] or path.exists():
            yield int(row["id"]), path, row["sha256"]


def _ids(src: sqlite3.Connection, table: str) -> list[int]:
    return [r[0] for r in src.execute(f"SELECT id FROM {table} ORDER BY id")]


# -- the store ---------------------------------------------------------------------------

def _dry_run_checks(src: sqlite3.Connection, source: Path, report: ImportReport,
                    while_serving: bool) -> None:
    """The store's refusals, read only; a store never migrated has nothing to collide with."""
    from bastion.store import pgconn, pgschema
    conn = pgconn.PgConnection(store.current())
    try:
        version = conn.schema_version()
        if version == 0:
            return
        why = (pgconn.newer_store_refusal(conn._conn, version)
               if version > pgschema.SCHEMA_VERSION else None)
        if why is not None:            # as the import itself would refuse it (pgconn.migrate)
            raise RecordingError(why, hint="upgrade bastion")
        conn.execute("BEGIN")          # an older store: the import migrates it, as serve does
        taken = _check_store(conn, src, source, report, imports=version >= IMPORTS_MIGRATION,
                             while_serving=while_serving)
        conn.execute("ROLLBACK")
        report.renumbered = [r.to_dict() for r in renumber.runs(src, taken, None)]
    except sqlite3.Error as exc:
        raise RecordingError(f"reading the store failed: {exc}") from exc
    finally:
        conn.close()


def _check_store(conn: Any, src: sqlite3.Connection, source: Path, report: ImportReport, *,
                 imports: bool = True, while_serving: bool = False) -> list[str]:
    """Refuse what the store cannot take; the tables whose ids it has (renumbered)."""
    if not while_serving:
        _check_no_node_serves(conn)
    done = None if not imports else conn.execute(
        "SELECT imported, source, source_head_seq FROM imports WHERE (source_head_hash = ? "
        "AND source_head_seq > 0) OR source = ? ORDER BY id LIMIT 1",    # every empty index
        (report.source_head_hash, str(source))).fetchone()                # has the genesis
    if done is not None:
        from bastion.recording.query import iso
        raise RecordingError(
            f"{source} was already imported at {iso(done[0])} (from {done[1]}, its chain head "
            f"seq {done[2]}); nothing was imported",
            hint="its history is in the store: `bastion sessions list` on any node shows it")
    taken = renumber.taken_tables(conn, src, TABLES)
    renamed = "sessions" in taken or "channels" in taken
    if renamed and report.node != IMPORT_NODE and report.recordings:
        raise RecordingError(
            f"--node {report.node}: the store has ids of the source's "
            f"{' and '.join(t for t in ('sessions', 'channels') if t in taken)}, so they are "
            "renumbered and their recordings get new names, which a copy of the data dir "
            "does not have; nothing was imported",
            hint="import without --node: every node checks and plays those recordings from "
                 "the store's copies")
    uids = [r[0] for r in src.execute("SELECT uid FROM transfers")]
    for i in range(0, len(uids), 500):
        part = uids[i:i + 500]
        hit = conn.execute(f"SELECT uid FROM transfers WHERE uid IN ({','.join('?' * len(part))}) "
                           "LIMIT 1", part).fetchone()
        if hit is not None:
            raise RecordingError(f"the store has transfer {hit[0]} already; nothing was imported")
    return taken


def _check_no_node_serves(conn: Any) -> None:
    """Refuse while a node beats on the store (bastion.recording.leases: every LEASE/6 s)."""
    from bastion.recording.leases import LEASE
    recent = SERVING_WINDOW_LEASES * LEASE
    names = [r[0] for r in conn.execute("SELECT name FROM nodes WHERE seen > ? ORDER BY name",
                                        (time.time() - recent,))]
    if names:
        raise RecordingError(
            f"{len(names)} node(s) serve on this store (a heartbeat within {recent:.0f} s: "
            f"{', '.join(names[:5])}); nothing was imported",
            hint="import before the nodes start, or stop them and wait that long: the import "
                 "holds the store's writer lock to its end, and their recordings fail after "
                 "waiting 10 s for it (--while-serving imports anyway, for a small source)")


def _copy(src: sqlite3.Connection, source: Path, report: ImportReport,
          while_serving: bool = False) -> None:
    conn = schema.connect(source)        # the store (PostgreSQL is configured), migrated
    try:
        chain.begin(conn)                # the chain's lock: one writer on every node
        try:
            taken = _check_store(conn, src, source, report, while_serving=while_serving)
            ids = renumber.claim(conn, src, taken)
            head_seq, head_hash = chain.head(conn)
            first = head_seq + 1           # source seq s becomes s + shift, no gap
            _insert_rows(conn, src, report.node, first - report.source_start_seq - 1, ids)
            _upload_recordings(conn, src, source, ids)
            copies.upload_source(conn, src, source, lambda tid: ids.id("transfers", tid))
            _reseal(conn, src, report, first, head_hash, ids)
            found = renumber.runs(src, taken, ids)
            report.renumbered = [r.to_dict() for r in found]
            renumber.save(conn, _record(conn, report), found)
            for table in IDENTITY_TABLES:
                conn.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                             f"GREATEST((SELECT MAX(id) FROM {table}), 1))")
            conn.execute("COMMIT")
        except BaseException:
            try:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass                     # a lost connection: the server rolls it back
            raise
    except sqlite3.Error as exc:
        raise RecordingError(f"importing into the store failed: {exc}; nothing was imported",
                             hint="fix the cause and run the import again") from exc
    finally:
        conn.close()


def _columns(src: sqlite3.Connection, table: str) -> list[str]:
    return [r[1] for r in src.execute(f"PRAGMA table_info({table})")]


def _insert_rows(conn: Any, src: sqlite3.Connection, node: str, shift: int,
                 ids: renumber.IdMap) -> None:
    """Every row, parents first, ``BATCH`` to a statement, its ids moved by ``ids``; a
    chained row's ``seq`` moved by ``shift`` (its place in the store's chain), its ``hash``
    left empty (:func:`_reseal`)."""
    for table in TABLES:
        cols = [c for c in _columns(src, table) if c != "hash"]
        at = cols.index("seq") if table in chain.CHAINED_TABLES else -1
        names = ", ".join(f'"{c}"' for c in cols) + (", node" if table == "sessions" else "")
        batch: list[list[Any]] = []
        quoted = ", ".join(f'"{c}"' for c in cols)
        for row in src.execute(f"SELECT {quoted} FROM {table} ORDER BY id"):
            values = storable.values(ids.row(table, cols, list(row)))   # a NUL SQLite kept
            if table == "transfers":             # a path longer than the store's index takes
                values = [storable.path(v) if c in ("path", "path2") else v
                          for c, v in zip(cols, values, strict=True)]
            if at >= 0 and values[at] is not None:
                values[at] += shift
            if table == "sessions":
                values.append(node)
            batch.append(values)
            if len(batch) == BATCH:
                _insert_many(conn, table, names, batch)
                batch = []
        if batch:
            _insert_many(conn, table, names, batch)


def _insert_many(conn: Any, table: str, names: str, rows: list[list[Any]]) -> None:
    one = "(" + ", ".join("?" * len(rows[0])) + ")"
    conn.execute(f"INSERT INTO {table} ({names}) VALUES {', '.join([one] * len(rows))}",
                 [v for row in rows for v in row])


def _upload_recordings(conn: Any, src: sqlite3.Connection, source: Path,
                       ids: renumber.IdMap) -> None:
    from bastion.store import chunks
    for cid, path, sealed in _recordings(src, source):
        try:
            digest, _size = chunks.upload_file(conn, ids.id("channels", cid), path)
        except OSError as exc:
            raise RecordingError(f"cannot read the recording {path}: {exc.strerror or exc}; "
                                 "nothing was imported") from exc
        if sealed and digest != sealed:
            raise RecordingError(
                f"the recording {path} (channel {cid}) changed: its SHA-256 is not the one "
                "sealed at close; nothing was imported",
                hint=f"run `bastion verify --data-dir {source}`")


def _reseal(conn: Any, src: sqlite3.Connection, report: ImportReport, first: int,
            prev: str, moved: renumber.IdMap) -> None:
    """Hash the imported rows into the store's chain after ``prev`` (the store's head), in
    seq order -- the source's order -- each as the store reads it back, as the store seals
    its own; then move ``chain_head``.  Refuses a gap, a row left out, or a head that is
    not the source's."""
    last = first + report.source_head_seq - report.source_start_seq - 1
    expected = first
    hashes: dict[str, list[tuple[int, str]]] = {t: [] for t in chain.CHAINED_TABLES}
    for seq, table, row in _read_back(conn, first, last):
        if seq != expected or seq > last:
            raise RecordingError(f"the imported chain is not contiguous at store seq {seq}; "
                                 "nothing was imported", hint="run `bastion verify` on the source")
        prev = chain.row_hash(prev, table, row)
        hashes[table].append((row["id"], prev))
        if len(hashes[table]) == BATCH:
            _set_hashes(conn, table, hashes[table])
            hashes[table] = []
        expected += 1
    for table, pending in hashes.items():
        if pending:
            _set_hashes(conn, table, pending)
    if expected - 1 != last:
        raise RecordingError(f"the store got {expected - first} chained rows of the source's "
                             f"{last - first + 1}; nothing was imported")
    for table in chain.CHAINED_TABLES:
        ids = _ids(src, table)
        if ids:
            left = conn.execute(f"SELECT COUNT(*) FROM {table} WHERE seq IS NULL AND id "
                                "BETWEEN ? AND ?", (moved.new(table, ids[0]),
                                                    moved.new(table, ids[-1]))).fetchone()[0]
            if left:
                raise RecordingError(f"{left} {table} row(s) of the source are not in its "
                                     "chain; nothing was imported",
                                     hint="run `bastion verify` on the source")
    if last >= first:
        conn.execute("UPDATE chain_head SET seq = ?, hash = ? WHERE id = 1", (last, prev))
        report.store_first_seq, report.store_last_seq = first, last
    report.store_head_hash = prev


def _read_back(conn: Any, first: int, last: int) -> Iterator[tuple[int, str, dict[str, Any]]]:
    """``(seq, table, row)`` of the store's rows ``first..last`` in seq order, ``WINDOW`` seqs
    at a time (a PostgreSQL cursor here holds its rows in memory)."""
    for lo in range(first, last + 1, WINDOW):
        hi = min(lo + WINDOW - 1, last)
        parts = [[(int(r["seq"]), table, dict(r)) for r in conn.execute(
            f"SELECT * FROM {table} WHERE seq BETWEEN ? AND ? ORDER BY seq", (lo, hi))]
            for table in chain.CHAINED_TABLES]
        yield from heapq.merge(*parts, key=lambda item: item[0])


def _set_hashes(conn: Any, table: str, pairs: list[tuple[int, str]]) -> None:
    values = ", ".join(["(CAST(? AS bigint), CAST(? AS text))"] * len(pairs))
    conn.execute(f"UPDATE {table} SET hash = v.h FROM (VALUES {values}) AS v(id, h) "
                 f"WHERE {table}.id = v.id", [x for pair in pairs for x in pair])


def _record(conn: Any, report: ImportReport) -> int:
    r = report
    return int(conn.execute(
        "INSERT INTO imports (source, imported, node, source_start_seq, source_start_hash, "
        "source_head_seq, source_head_hash, store_first_seq, store_last_seq, store_head_hash, "
        "sessions, channels, commands, transfers, approvals, recordings, bytes) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (r.source, time.time(), r.node, r.source_start_seq, r.source_start_hash,
         r.source_head_seq, r.source_head_hash, r.store_first_seq, r.store_last_seq,
         r.store_head_hash, r.sessions, r.channels, r.commands, r.transfers, r.approvals,
         r.recordings, r.bytes)).lastrowid)
