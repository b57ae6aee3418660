"""A PostgreSQL connection that the index code can use as it uses a ``sqlite3.Connection``.

:class:`PgConnection` offers the part of ``sqlite3.Connection`` the index code calls --
``execute`` (a cursor with ``fetchone``/``fetchall``/iteration/``rowcount``/``lastrowid``/
``description``), ``in_transaction``, ``close``, rows readable by index and by name
(:class:`Row`, like ``sqlite3.Row``) -- over psycopg 3, with every statement rewritten by
bastion.store.translate and every psycopg error raised as a bastion.store.errors class (a
``sqlite3.Error``).  The connection is in autocommit mode: the callers' own ``BEGIN`` /
``COMMIT`` / ``ROLLBACK`` statements make the transactions, as with SQLite.

A connection lost between transactions is opened again at the next statement (the error
of the statement that found it lost still reaches the caller: a recording worker stops and
its successor connects anew).  A ``COMMIT`` of a transaction PostgreSQL already aborted
raises instead of silently rolling back.

With ``pipelined`` set (the recording worker's connection), a write transaction runs in
pipeline mode: a statement's result is waited for only when it is read (pipeline.py).

Readers (``readonly=True``) borrow from a small pool per URL (psycopg_pool) and give the
connection back at ``close()``: the HTTPS API opens the index once per request.

Not covered: the schema (pgschema.py), where the URL comes from (location.py).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Iterator, Sequence

from bastion.errors import SAID_BY_ERROR
from bastion.store import pgschema, translate
from bastion.store.pipeline import Pending, Pipe
from bastion.store.errors import StoreError, StoreOperationalError
from bastion.store.location import StoreSettings, safe_url

log = logging.getLogger("bastion.store")

CONNECT_TIMEOUT = 5          # s: a store that does not answer refuses sessions this soon
# the SQLite index's busy timeout (bastion.recording.schema.BUSY_TIMEOUT_MS): a lock held
# longer (the writers' advisory lock, a row lock) fails the statement instead of waiting on
LOCK_TIMEOUT_MS = 10_000
POOL_MAX = 4
_pools: dict[str, Any] = {}
_pools_lock = threading.Lock()


class _ReaderConnectErrors(logging.Filter):
    """psycopg_pool logs a warning for every failed attempt to open a reader's connection:
    several per command while the store is down, each two lines, on the CLI's stderr before
    its one error.  Those of the readers' pools are kept here instead, the last one per pool
    with when it came, so that the error :func:`connect` raises gives the driver's reason
    (``connection refused``, a password refused) rather than the pool's ``couldn't get a
    connection after 5.00 sec``.  Other records of the pool's logger pass."""

    def __init__(self) -> None:
        super().__init__()
        self.last: dict[str, tuple[float, str]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        if (record.msg == "error connecting in %r: %s" and len(args) == 2
                and str(args[0]).startswith(READERS)):
            reason = str(args[1]).strip().splitlines()
            self.last[str(args[0])] = (time.monotonic(), reason[0] if reason else "")
            return False
        return True

    def since(self, pool_name: str, start: float) -> str | None:
        """The reason of the pool's last failed attempt, if it came after ``start``."""
        when, reason = self.last.get(pool_name, (0.0, ""))
        return reason if reason and when >= start else None


READERS = "bastion-readers"
_connect_errors = _ReaderConnectErrors()
logging.getLogger("psycopg.pool").addFilter(_connect_errors)


class Row(tuple[Any, ...]):
    """A row readable by position and by column name, like ``sqlite3.Row``."""

    _names: tuple[str, ...]

    def __new__(cls, values: Sequence[Any], names: tuple[str, ...]) -> "Row":
        row = super().__new__(cls, values)
        row._names = names
        return row

    def keys(self) -> list[str]:
        return list(self._names)

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            try:
                return tuple.__getitem__(self, self._names.index(key))
            except ValueError:
                raise IndexError(f"no such column: {key}") from None
        return tuple.__getitem__(self, key)


class Cursor:
    """The result of one statement, read like a ``sqlite3.Cursor``."""

    def __init__(self, rows: list[Row], rowcount: int, lastrowid: int | None,
                 description: tuple[Any, ...] | None) -> None:
        self._rows = rows
        self._pos = 0
        self.rowcount = rowcount
        self.lastrowid = lastrowid
        self.description = description

    def fetchone(self) -> Row | None:
        if self._pos >= len(self._rows):
            return None
        self._pos += 1
        return self._rows[self._pos - 1]

    def fetchall(self) -> list[Row]:
        rest, self._pos = self._rows[self._pos:], len(self._rows)
        return rest

    def __iter__(self) -> Iterator[Row]:
        while (row := self.fetchone()) is not None:
            yield row

    def close(self) -> None:
        self._rows = []


_EMPTY = Cursor([], -1, None, None)
#: statements after which a known chain head may no longer be the server's (a transaction
#: begins or ends; ROLLBACK TO SAVEPOINT undoes what followed the savepoint)
_ENDS_OR_UNDOES = ("BEGIN", "COMMIT", "END", "ROLLBACK", "ABORT")


class PgConnection:
    """See the module doc."""

    def __init__(self, settings: StoreSettings, raw: Any = None, pool: Any = None) -> None:
        self.settings = settings
        self._pool = pool
        self._conn = raw if raw is not None else _open(settings)
        self.row_factory = None          # accepted (sqlite3 API); rows are always Row
        self.pipelined = False           # write transactions in pipeline mode (pipeline.py)
        self._pipe: Pipe | None = None
        # the chain head as this write transaction knows it (bastion.recording.chain): asked
        # for with its BEGIN (a Pending until read), then as its own seals set it; None
        # (the next seal asks the server) once the transaction ends or rolls back to a
        # savepoint, when it may no longer be the server's
        self.chain_head: tuple[int, str] | Pending | None = None

    # -- the sqlite3.Connection subset -------------------------------------------------
    @property
    def in_transaction(self) -> bool:
        from psycopg.pq import TransactionStatus
        if self._pipe is not None:
            return True
        return bool(self._conn.info.transaction_status != TransactionStatus.IDLE)

    def execute(self, sql: str, params: Any = ()) -> Any:     # Cursor, or pipeline.Pending
        import psycopg
        from psycopg.pq import TransactionStatus

        if sql.lstrip()[:8].upper().startswith(_ENDS_OR_UNDOES):
            self.chain_head = None
        stmt = translate.statement(sql)
        if stmt.sql is None:
            return self._pragma(sql)
        if self._pipe is not None:
            return self._in_pipeline(stmt.sql, _params(params, stmt.fts_param))
        self._reopen_if_lost()
        if stmt.sql.upper() == "COMMIT" and \
                self._conn.info.transaction_status == TransactionStatus.INERROR:
            try:
                self._raw_execute("ROLLBACK", None)
            except psycopg.Error as exc:
                raise _translated(exc) from exc
            raise StoreOperationalError("the transaction was aborted by an earlier error "
                                        "and has been rolled back")
        params = _params(params, stmt.fts_param)
        if self.pipelined and stmt.lock:          # a write transaction: pipeline mode
            self._begin_pipeline(stmt.sql, params, late=False)
            return _EMPTY
        try:
            cur = self._raw_execute(stmt.sql, params)
            if stmt.lock:
                self._conn.execute("SELECT pg_advisory_xact_lock(%s)", (translate.CHAIN_LOCK,))
        except psycopg.Error as exc:
            raise _translated(exc) from exc
        return cur

    # -- a write transaction that takes the chain's lock late (the recording worker) ----
    def begin_late(self) -> None:
        """``BEGIN IMMEDIATE`` in pipeline mode without the chain's lock yet: the caller takes
        it with :meth:`lock_now` before anything another node's writer could read or seal
        (bastion.recording.writer), and the seals wait for the commit
        (:attr:`deferred_seals`, bastion.recording.chain), so the lock is held for the end
        of the transaction, not for every round trip of it."""
        if not self.pipelined or self._pipe is not None:
            raise StoreOperationalError("begin_late: a pipelined connection outside a "
                                        "transaction is needed")
        self._reopen_if_lost()
        self.chain_head = None
        self._begin_pipeline("BEGIN", None, late=True)

    def _reopen_if_lost(self) -> None:
        if (self._conn.closed or self._conn.broken) and not self._pool:
            self._conn = _open(self.settings)     # lost between statements: a new one
            self.chain_head = None

    def _begin_pipeline(self, begin: str, params: Any, late: bool) -> None:
        """A write transaction in pipeline mode: ``begin`` sent, and the chain's lock
        unless ``late`` (:meth:`begin_late`)."""
        import psycopg
        try:
            self._pipe = Pipe(self._conn, late=late)
            self._conn.execute(begin, params, prepare=False)
            if not late:
                self._conn.execute("SELECT pg_advisory_xact_lock(%s)", (translate.CHAIN_LOCK,))
        except psycopg.Error as exc:
            self._leave_pipeline()
            raise _translated(exc) from exc

    def lock_now(self, wait: bool = False) -> None:
        """Take the chain's lock now if this transaction was begun without it (sent like any
        statement; ``wait``: until it is held, or its error)."""
        pipe = self._pipe
        if pipe is None:
            return
        if pipe.unlocked:
            pipe.unlocked = False
            self._in_pipeline("SELECT pg_advisory_xact_lock(%s)", (translate.CHAIN_LOCK,))
        if wait:
            self._pipe_sync()

    @property
    def deferred_seals(self) -> list[Any] | None:
        """The seals this transaction makes at its commit (begun with :meth:`begin_late`),
        else None (a seal is made at once)."""
        return self._pipe.seals if self._pipe is not None else None

    def _in_pipeline(self, sql: str, params: Any) -> Any:
        import psycopg
        verb = sql.strip().upper()
        if verb == "ROLLBACK":
            self._leave_pipeline()
            return _EMPTY
        if verb.startswith("ROLLBACK TO"):
            return self._undo_to_savepoint(sql)
        if verb.startswith("SAVEPOINT ") and self._pipe is not None \
                and self._pipe.seals is not None:
            self._pipe.marks[verb.split()[1]] = len(self._pipe.seals)
        if verb == "COMMIT":
            pipe, self._pipe = self._pipe, None
            assert pipe is not None
            if pipe.failed:                 # as outside pipeline mode: never a silent rollback
                pipe.abandon()
                self._rollback_quietly()
                raise StoreOperationalError("the transaction was aborted by an earlier error "
                                            "and has been rolled back")
            if pipe.seals:                  # never a row left unsealed by a forgotten step
                pipe.abandon()
                self._rollback_quietly()
                raise StoreOperationalError("the transaction's seals were not made before its "
                                            "commit; it has been rolled back")
            try:
                self._conn.execute("COMMIT", prepare=False)
                pipe.end()                  # the first error of the transaction, if any
            except psycopg.Error as exc:
                pipe.abandon()
                self._rollback_quietly()
                raise _translated(exc) from exc
            return _EMPTY
        try:            # the worker repeats a few texts: prepared after 5 uses (less server CPU)
            cur = self._conn.execute(sql, params if params is not None else (), prepare=None)
        except psycopg.Error as exc:
            # (psycopg reports an earlier statement's error at whichever call collects its
            # result: the transaction is lost either way, and its COMMIT must say so)
            if self._pipe is not None:
                self._pipe.failed = True
            raise _translated(exc) from exc
        assert self._pipe is not None
        self._pipe.sent += 1
        return Pending(self, cur, sql)

    def _undo_to_savepoint(self, sql: str) -> Any:
        """``ROLLBACK TO SAVEPOINT`` in pipeline mode, collected at once: when it succeeds the
        error it undoes no longer aborts the transaction (bastion.recording.quarantine); when
        it fails (no such savepoint: the error came before it) the transaction stays lost.

        A sync comes first: after an error the server ignores every message until one, so a
        rollback sent straight after the failed statement would be skipped too ("pipeline
        aborted") whenever psycopg had reported the error at a later send, not at a read.
        What that sync raises is the error being undone (or its echo): not reported again."""
        import psycopg
        assert self._pipe is not None
        try:
            self._pipe.sync()
        except psycopg.Error:
            pass
        try:
            self._conn.execute(sql, prepare=False)
            self._pipe.sync()
        except psycopg.Error as exc:
            self._pipe.failed = True
            raise _translated(exc) from exc
        self._pipe.failed = False
        pipe = self._pipe
        if pipe.seals is not None:          # the seals asked for since then are undone too
            mark = pipe.marks.get(sql.split()[-1].upper())
            if mark is not None:
                del pipe.seals[mark:]
        return _EMPTY

    def _pipe_sync(self) -> None:
        """Collect every result sent so far (pipeline.Pending's first read)."""
        import psycopg
        if self._pipe is not None:
            try:
                self._pipe.sync()
            except psycopg.Error as exc:
                self._pipe.failed = True
                raise _translated(exc) from exc

    def _leave_pipeline(self) -> None:
        self.chain_head = None
        pipe, self._pipe = self._pipe, None
        if pipe is not None:
            pipe.abandon()
            self._rollback_quietly()

    def _rollback_quietly(self) -> None:
        from psycopg.pq import TransactionStatus
        self.chain_head = None
        try:
            if self._conn.info.transaction_status != TransactionStatus.IDLE:
                self._conn.execute("ROLLBACK")
        except Exception:  # noqa: BLE001 - a lost connection: opened again at the next use
            pass

    def _raw_execute(self, sql: str, params: Any) -> Cursor:
        cur = self._conn.execute(sql, params if params is not None else (), prepare=False)
        return self._cursor_of(cur, sql)

    def _cursor_of(self, cur: Any, sql: str) -> Cursor:
        description = None
        rows: list[Row] = []
        lastrowid = None
        if cur.description is not None:
            names = tuple(d.name for d in cur.description)
            description = tuple((n, None, None, None, None, None, None) for n in names)
            rows = [Row(r, names) for r in cur.fetchall()]
            if names == ("id",) and sql.rstrip().endswith("RETURNING id"):
                lastrowid = rows[0][0] if rows else None
                rows, description = [], None
        return Cursor(rows, cur.rowcount, lastrowid, description)

    def executescript(self, script: str) -> None:
        raise StoreOperationalError("executescript is SQLite only: PostgreSQL migrations "
                                    "live in bastion.store.pgschema")

    def commit(self) -> None:
        if self.in_transaction:
            self.execute("COMMIT")

    def rollback(self) -> None:
        if self.in_transaction:
            self.execute("ROLLBACK")

    def close(self) -> None:
        self.chain_head = None
        if self._pool is not None:
            try:
                if self.in_transaction:
                    self._conn.execute("ROLLBACK")
            except Exception:  # noqa: BLE001 - the pool checks the connection itself
                pass
            self._pool.putconn(self._conn)
            self._pool = None
            return
        if not self._conn.closed:
            self._conn.close()

    def __del__(self) -> None:
        if getattr(self, "_pool", None) is not None:   # a reader dropped unclosed: back to the pool
            try:
                self.close()
            except Exception:  # noqa: BLE001 - at interpreter exit the pool may be gone
                pass

    def iterdump(self) -> Iterator[str]:
        """Every row of every table as a line of text (``sqlite3``'s ``iterdump`` in spirit:
        for checks that a value appears nowhere in the store)."""
        tables = [r[0] for r in self.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = "
            "current_schema() AND table_type = 'BASE TABLE' ORDER BY table_name")]
        for table in tables:
            for row in self.execute(f'SELECT * FROM "{table}"'):
                yield f"{table}: {tuple(row)!r}"

    def create_function(self, *args: Any, **kwargs: Any) -> None:
        raise StoreOperationalError("SQL functions of the PostgreSQL store live in its schema")

    # -- what sqlite3 answers by PRAGMA ------------------------------------------------
    def _pragma(self, sql: str) -> Cursor:
        if "user_version" in sql.lower() and "=" not in sql:
            return Cursor([Row((self.schema_version(),), ("user_version",))], -1, None,
                          (("user_version",) + (None,) * 6,))
        return _EMPTY

    def schema_version(self) -> int:
        import psycopg
        try:
            exists = self._conn.execute("SELECT to_regclass('schema_version')").fetchone()
            if not exists or exists[0] is None:
                return 0
            row = self._conn.execute(
                "SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()
        except psycopg.Error as exc:
            raise _translated(exc) from exc
        return int(row[0]) if row else 0


class QueryDb:
    """What bastion.recording.query uses of ``sqlite_utils.Database``: ``query`` -> dicts."""

    def __init__(self, conn: PgConnection) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Any = ()) -> Any:     # Cursor, or pipeline.Pending
        return self.conn.execute(sql, params)

    def query(self, sql: str, params: Any = None) -> Iterator[dict[str, Any]]:
        cur = self.conn.execute(sql, params if params is not None else ())
        keys = [d[0] for d in cur.description or ()]
        return (dict(zip(keys, row, strict=True)) for row in cur)


def _params(params: Any, fts_param: str | int | None) -> Any:
    if fts_param is None or params is None:
        return params
    if isinstance(params, dict):
        params = dict(params)
    else:
        params = list(params)
    try:
        value = translate.fts5_to_match(str(params[fts_param]))
    except translate.FtsSyntaxError as exc:
        raise StoreOperationalError(f"fts5: syntax error: {exc}") from None
    params[fts_param] = value
    if isinstance(fts_param, int):                  # %s ... %s ... %s: one value each
        params[fts_param + 1:fts_param + 1] = [value] * (translate.MATCH_USES - 1)
    return params


def _translated(exc: BaseException) -> StoreError:
    from bastion.store.errors import translate as tr
    return tr(exc)


def _open(settings: StoreSettings) -> Any:
    """A new autocommit connection with ``bastion.node`` set; raises StoreOperationalError."""
    import psycopg

    kwargs: dict[str, Any] = {"autocommit": True, "connect_timeout": CONNECT_TIMEOUT,
                              "application_name": f"bastion {settings.node}"[:63],
                              "options": f"-c lock_timeout={LOCK_TIMEOUT_MS}"}
    password = settings.password()
    if password is not None:
        kwargs["password"] = password
    try:
        conn = psycopg.connect(str(settings.url), **kwargs)
        conn.execute("SELECT set_config('bastion.node', %s, false)", (settings.node,))
    except psycopg.Error as exc:
        raise _unreachable(settings, exc) from None
    return conn


def _unreachable(settings: StoreSettings, exc: BaseException,
                 reason: str | None = None) -> StoreOperationalError:
    """The error for a store that cannot be reached.  Its message names no host (it reaches
    agents in the refusal of their session); ``detail`` has the URL (no password) and the
    driver's reason (``reason``, else the exception's), for the log and the operator's hint."""
    err = StoreOperationalError("the PostgreSQL store cannot be reached")
    err.detail = f"{safe_url(settings.url)}: {reason or _first_line(exc)}"
    log.error("store: cannot reach %s", err.detail, extra={SAID_BY_ERROR: True})
    return err


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def connect(settings: StoreSettings, *, readonly: bool = False) -> PgConnection:
    """A connection to the store, migrated (writers) or checked (readers); see module doc."""
    if readonly:
        settings.password()      # a password file refused says why here, not as a pool timeout
        pool = _pool(settings)
        start = time.monotonic()
        try:
            raw = pool.getconn(timeout=CONNECT_TIMEOUT)
        except Exception as exc:  # noqa: BLE001 - psycopg_pool.PoolTimeout and friends
            raise _unreachable(settings, exc, _connect_errors.since(pool.name, start)) from None
        conn = PgConnection(settings, raw, pool)
        version = conn.schema_version()
        try:
            if version > pgschema.SCHEMA_VERSION:
                _newer_store(raw, version)
            elif version < pgschema.SCHEMA_VERSION:
                raise StoreOperationalError(
                    f"the PostgreSQL store has schema {version}, this bastion reads "
                    f"{pgschema.SCHEMA_VERSION}: start `bastion serve` of this version once "
                    "against it (it migrates), or upgrade bastion")
        except BaseException:
            conn.close()
            raise
        return conn
    conn = PgConnection(settings)
    try:
        migrate(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def _pool(settings: StoreSettings) -> Any:
    from psycopg_pool import ConnectionPool

    key = f"{settings.url}\0{settings.node}\0{settings.password_file}"
    with _pools_lock:
        pool = _pools.get(key)
        if pool is None:
            pool = ConnectionPool(str(settings.url), min_size=0, max_size=POOL_MAX, open=True,
                                  timeout=CONNECT_TIMEOUT, check=ConnectionPool.check_connection,
                                  # a callable: each new connection reads the password
                                  # file again, so a rotated password needs no restart
                                  kwargs=lambda: _pool_kwargs(settings),
                                  configure=lambda c: c.execute(
                                      "SELECT set_config('bastion.node', %s, false)",
                                      (settings.node,)),
                                  name=f"{READERS}-{len(_pools) + 1}")
            _pools[key] = pool
    return pool


def _pool_kwargs(settings: StoreSettings) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"autocommit": True, "connect_timeout": CONNECT_TIMEOUT,
                              "options": f"-c lock_timeout={LOCK_TIMEOUT_MS}"}
    password = settings.password()
    if password is not None:
        kwargs["password"] = password
    return kwargs


def migrate(conn: PgConnection) -> int:
    """Apply pending migrations, each in its own transaction under the writers' lock."""
    import psycopg

    raw = conn._conn
    try:
        _require_utf8(raw)
        while True:
            with raw.transaction():
                raw.execute("SELECT pg_advisory_xact_lock(%s)", (translate.CHAIN_LOCK,))
                raw.execute(pgschema.VERSION_TABLE)
                row = raw.execute("SELECT MAX(version) FROM schema_version").fetchone()
                version = int(row[0]) if row and row[0] is not None else 0
                if version > pgschema.SCHEMA_VERSION:
                    _newer_store(raw, version)
                    break
                if version == pgschema.SCHEMA_VERSION:
                    break
                before = _oldest(raw, version)
                raw.execute(pgschema.MIGRATIONS[version])
                raw.execute("DELETE FROM schema_version")
                if version + 1 >= pgschema.OLDEST_SINCE:
                    raw.execute("INSERT INTO schema_version (version, oldest) VALUES (%s, %s)",
                                (version + 1, pgschema.oldest_after(version + 1, before)))
                else:
                    raw.execute("INSERT INTO schema_version (version) VALUES (%s)",
                                (version + 1,))
    except psycopg.Error as exc:
        raise _translated(exc) from exc
    return version


def _oldest(raw: Any, version: int) -> int:
    """The store's ``oldest`` (pgschema's module doc); a store from before the column, or a
    fresh one, counts as needing its own version."""
    if version < pgschema.OLDEST_SINCE:
        return version
    row = raw.execute("SELECT MAX(oldest) FROM schema_version").fetchone()
    return int(row[0]) if row and row[0] is not None else version


_warned_newer: set[int] = set()


def _newer_store(raw: Any, version: int) -> None:
    """A store migrated by a newer bastion: go on while this one is at least its ``oldest``
    (warned once per process), else refuse with what to do."""
    why = newer_store_refusal(raw, version)
    if why is not None:
        raise StoreOperationalError(why)


def newer_store_refusal(raw: Any, version: int) -> str | None:
    """Why this bastion cannot use a store at schema ``version`` (newer than its own), or
    None when every migration since is additive (pgschema's module doc; warned once)."""
    oldest = _oldest(raw, version)
    if oldest > pgschema.SCHEMA_VERSION:
        return (f"the PostgreSQL store has schema {version}, newer than this bastion "
                f"({pgschema.SCHEMA_VERSION}), and a bastion older than schema {oldest} cannot "
                "use it: upgrade this node (a change this large needs every node stopped, "
                "upgraded, then started)")
    if version not in _warned_newer:
        _warned_newer.add(version)
        log.warning("the PostgreSQL store has schema %d, newer than this bastion (%d); every "
                    "migration since is additive, so this node goes on serving: upgrade it "
                    "soon", version, pgschema.SCHEMA_VERSION)
    return None


def _require_utf8(raw: Any) -> None:
    """Refuse a database whose encoding is not UTF8: a command line with a character it cannot
    hold (any CJK character in a LATIN1 database) would fail the recording worker's batch."""
    row = raw.execute("SHOW server_encoding").fetchone()
    value = row[0] if row else "unknown"
    encoding = value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)
    if encoding.upper() != "UTF8":
        raise StoreOperationalError(
            f"the PostgreSQL database uses the encoding {encoding}; bastion needs UTF8 (agents "
            "send Unicode: command lines, paths, names): create the store's database with "
            "`CREATE DATABASE bastion OWNER bastion ENCODING 'UTF8' TEMPLATE template0` and "
            "point [store] url at it")


class IdRange:
    """Ids from ``first`` to the end of its block, then from a new block (see pgschema)."""

    def __init__(self, first: int, table: str, settings: StoreSettings) -> None:
        self.next = first
        self.stop = (first - 1) // pgschema.ID_BLOCK * pgschema.ID_BLOCK + pgschema.ID_BLOCK + 1
        self.table = table
        self.settings = settings

    def __iter__(self) -> "IdRange":
        return self

    def __next__(self) -> int:
        if self.next >= self.stop:
            conn = PgConnection(self.settings)
            try:
                self.next = allocate_ids(conn)[self.table]
            finally:
                conn.close()
            self.stop = self.next + pgschema.ID_BLOCK
            log.info("store: %s ids continue in a new block from %d", self.table, self.next)
        value = self.next
        self.next += 1
        return value


def allocate_ids(conn: PgConnection) -> dict[str, int]:
    """The first id of a fresh block for sessions, channels and commands (see pgschema)."""
    row = conn.execute("SELECT nextval('id_blocks')").fetchone()
    assert row is not None
    block = int(row[0])
    first = block * pgschema.ID_BLOCK + 1
    return {"sessions": first, "channels": first, "commands": first}
