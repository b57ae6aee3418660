"""The session index: SQLite file ``DATA_DIR/index.sqlite``, schema through migrations.

Tables (times are Unix epoch seconds, REAL; JSON columns are TEXT; each table ``T`` below
but ``chain_head``, ``checkpoints``, ``imports`` and ``import_ids`` has a view ``T_iso``
adding ``COLUMN_iso``, the time in ISO-8601 UTC, beside each time column):

``sessions``   one row per SSH session *and* per refused attempt (status
               ``active`` / ``closed`` / ``interrupted`` / ``refused``): principal
               (subject, app id, name, roles, full JSON), client address, target,
               login, started, ended, reason (refusal / interruption), exit status,
               bytes in (agent -> host) and out (host -> agent), truncated.
``channels``   one row per channel (exec, shell, ...) with its recording path
               (relative to the data dir), SHA-256 at close, bytes, exit status.
``commands``   one row per command line: session, channel, time, offset into the
               recording (seconds, the asciicast event time), the line as typed,
               the simple commands the policy found (JSON), action, rule, reason,
               approver, exit status.  ``commands_fts`` (FTS5, external content)
               indexes ``line``.
``chain_head`` the last link of the tamper-evidence chain (see chain.py).
``checkpoints`` where ``bastion prune`` cut the chain.
``transfers``  one row per file operation of an sftp channel (bastion.ssh.sftp): session,
               channel, time, op, path (resolved on the target), path2 (a rename's or
               link's other end), bytes transferred, SHA-256 of the content when a whole
               file was read or written, result (``ok`` / ``denied`` / ``error: ...``),
               action, rule, reason, duration (s), content (the stored copy, JSON, when
               ``store_transfers`` is on).  ``uid`` makes a replayed insert a no-op.
               Final when inserted, so sealed into the chain at once.
``approvals``  one row per approval request and its answer with its proof, and the
               broker's refusal of an answer it could not verify (see bastion.approvals.store);
               ``approvals_clock`` a change counter for waiting brokers.
``imports``    PostgreSQL store only (empty here): each ``bastion store import`` of a
               one-node data dir, with the source chain's start and head (no ``_iso`` view);
               ``import_ids`` the ids it renumbered (old -> new, in runs).

Every chained table has ``seq`` (position in the chain, NULL until sealed) and
``hash``.  Migrations are numbered and tracked with ``PRAGMA user_version``;
``connect()`` sets WAL, ``synchronous=NORMAL`` (durable across a process crash)
and a busy timeout so the CLI (another process) and ``bastion serve`` share the
file.  This module does not write rows (writer.py, chain.py, prune.py do).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path
from typing import Any, Iterator

from bastion import store
from bastion.errors import RecordingError
from bastion.private import open_private_file

INDEX_NAME = "index.sqlite"
RECORDINGS_DIR = "recordings"
GENESIS = "0" * 64
BUSY_TIMEOUT_MS = 10_000

_MIGRATIONS: list[str] = [
    # 1: initial schema
    f"""
    CREATE TABLE sessions (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        started REAL NOT NULL,
        ended REAL,
        status TEXT NOT NULL,
        reason TEXT,
        principal_subject TEXT,
        principal_app_id TEXT,
        principal_name TEXT,
        principal_roles TEXT,
        principal_json TEXT,
        client TEXT,
        target TEXT,
        login TEXT,
        exit_status INTEGER,
        bytes_in INTEGER NOT NULL DEFAULT 0,
        bytes_out INTEGER NOT NULL DEFAULT 0,
        truncated INTEGER NOT NULL DEFAULT 0,
        seq INTEGER UNIQUE,
        hash TEXT
    );
    CREATE INDEX sessions_started ON sessions(started);
    CREATE INDEX sessions_status ON sessions(status);
    CREATE INDEX sessions_subject ON sessions(principal_subject);
    CREATE INDEX sessions_target ON sessions(target);

    CREATE TABLE channels (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        session_id INTEGER NOT NULL REFERENCES sessions(id),
        kind TEXT NOT NULL,
        command TEXT,
        term TEXT,
        width INTEGER,
        height INTEGER,
        env TEXT,
        started REAL NOT NULL,
        ended REAL,
        status TEXT NOT NULL,
        exit_status INTEGER,
        exit_signal TEXT,
        bytes_in INTEGER NOT NULL DEFAULT 0,
        bytes_out INTEGER NOT NULL DEFAULT 0,
        truncated INTEGER NOT NULL DEFAULT 0,
        path TEXT,
        sha256 TEXT,
        seq INTEGER UNIQUE,
        hash TEXT
    );
    CREATE INDEX channels_session ON channels(session_id);

    CREATE TABLE commands (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        session_id INTEGER NOT NULL REFERENCES sessions(id),
        channel_id INTEGER REFERENCES channels(id),
        time REAL NOT NULL,
        "offset" REAL,
        line TEXT NOT NULL,
        commands TEXT,
        action TEXT NOT NULL,
        rule TEXT,
        reason TEXT,
        approver TEXT,
        exit_status INTEGER,
        seq INTEGER UNIQUE,
        hash TEXT
    );
    CREATE INDEX commands_session ON commands(session_id);
    CREATE INDEX commands_time ON commands(time);
    CREATE INDEX commands_action ON commands(action);

    CREATE VIRTUAL TABLE commands_fts USING fts5(line, content='commands', content_rowid='id');
    CREATE TRIGGER commands_fts_ai AFTER INSERT ON commands BEGIN
        INSERT INTO commands_fts(rowid, line) VALUES (new.id, new.line);
    END;
    CREATE TRIGGER commands_fts_ad AFTER DELETE ON commands BEGIN
        INSERT INTO commands_fts(commands_fts, rowid, line) VALUES ('delete', old.id, old.line);
    END;
    CREATE TRIGGER commands_fts_au AFTER UPDATE OF line ON commands BEGIN
        INSERT INTO commands_fts(commands_fts, rowid, line) VALUES ('delete', old.id, old.line);
        INSERT INTO commands_fts(rowid, line) VALUES (new.id, new.line);
    END;

    CREATE TABLE chain_head (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        seq INTEGER NOT NULL,
        hash TEXT NOT NULL
    );
    INSERT INTO chain_head (id, seq, hash) VALUES (1, 0, '{GENESIS}');

    CREATE TABLE checkpoints (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        seq INTEGER NOT NULL,
        hash TEXT NOT NULL,
        created REAL NOT NULL,
        cutoff REAL NOT NULL,
        sessions INTEGER NOT NULL,
        rows INTEGER NOT NULL
    );
    """,
    # 2: approval requests and answers (bastion.approvals.store); not part of the hash
    # chain (the CLI answers from another process), but the approver of a command also
    # lands in its chained ``commands.approver`` column.  ``approvals_clock.version``
    # moves on every status change: waiting brokers poll that one row.
    """
    CREATE TABLE approvals (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        node TEXT NOT NULL,
        created REAL NOT NULL,
        expires REAL NOT NULL,
        status TEXT NOT NULL,
        via TEXT,
        session_id INTEGER,
        command_id INTEGER,
        channel TEXT,
        requester_subject TEXT NOT NULL,
        requester_tenant TEXT NOT NULL DEFAULT '',
        requester_app_id TEXT,
        requester_name TEXT,
        requester_json TEXT,
        target TEXT NOT NULL,
        login TEXT NOT NULL DEFAULT '',
        line TEXT NOT NULL,
        commands TEXT,
        rule TEXT,
        decision_reason TEXT,
        answered REAL,
        approver_subject TEXT,
        approver_tenant TEXT,
        approver_app_id TEXT,
        approver_name TEXT,
        approver_json TEXT,
        answer_reason TEXT,
        window_until REAL,
        granted_by INTEGER REFERENCES approvals(id),
        revoked REAL,
        revoked_by TEXT
    );
    CREATE INDEX approvals_status ON approvals(status, expires);
    CREATE INDEX approvals_windows ON approvals(requester_subject, rule, target)
        WHERE window_until IS NOT NULL;
    CREATE INDEX approvals_session ON approvals(session_id);

    CREATE TABLE approvals_clock (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        version INTEGER NOT NULL
    );
    INSERT INTO approvals_clock (id, version) VALUES (1, 0);
    CREATE TRIGGER approvals_clock_status AFTER UPDATE OF status ON approvals BEGIN
        UPDATE approvals_clock SET version = version + 1 WHERE id = 1;
    END;
    """,
    # 3: answers carry proof (bastion.approvals.proof): the approver's validated token
    # claims and the token's SHA-256 (never the token); ``refused`` / ``refused_reason``:
    # when and why ``bastion serve`` refused to act on an answer it could not verify.
    """
    ALTER TABLE approvals ADD COLUMN approver_proof TEXT;
    ALTER TABLE approvals ADD COLUMN refused REAL;
    ALTER TABLE approvals ADD COLUMN refused_reason TEXT;
    """,
    # 4: file operations of sftp channels (bastion.ssh.sftp, bastion.recording.transfers)
    """
    CREATE TABLE transfers (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        uid TEXT NOT NULL UNIQUE,
        session_id INTEGER NOT NULL REFERENCES sessions(id),
        channel_id INTEGER REFERENCES channels(id),
        time REAL NOT NULL,
        op TEXT NOT NULL,
        path TEXT,
        path2 TEXT,
        bytes INTEGER NOT NULL DEFAULT 0,
        sha256 TEXT,
        result TEXT NOT NULL,
        action TEXT NOT NULL,
        rule TEXT,
        reason TEXT,
        duration REAL,
        seq INTEGER UNIQUE,
        hash TEXT
    );
    CREATE INDEX transfers_session ON transfers(session_id);
    CREATE INDEX transfers_sha256 ON transfers(sha256);
    CREATE INDEX transfers_path ON transfers(path);
    """,
    # 5: read-only views with ISO-8601 UTC times (``2026-12-06T05:40:15.123Z``) beside the
    # epoch columns, for datasette and sqlite3 readers; the tables (and so the hash chain)
    # are unchanged.  ``SELECT *`` follows columns that later migrations add.
    """
    CREATE VIEW sessions_iso AS SELECT *, {iso}started, 'unixepoch') AS started_iso,
        {iso}ended, 'unixepoch') AS ended_iso FROM sessions;
    CREATE VIEW channels_iso AS SELECT *, {iso}started, 'unixepoch') AS started_iso,
        {iso}ended, 'unixepoch') AS ended_iso FROM channels;
    CREATE VIEW commands_iso AS SELECT *, {iso}time, 'unixepoch') AS time_iso FROM commands;
    CREATE VIEW transfers_iso AS SELECT *, {iso}time, 'unixepoch') AS time_iso FROM transfers;
    CREATE VIEW approvals_iso AS SELECT *, {iso}created, 'unixepoch') AS created_iso,
        {iso}expires, 'unixepoch') AS expires_iso, {iso}answered, 'unixepoch') AS answered_iso,
        {iso}window_until, 'unixepoch') AS window_until_iso,
        {iso}revoked, 'unixepoch') AS revoked_iso, {iso}refused, 'unixepoch') AS refused_iso
        FROM approvals;
    """.format(iso="strftime('%Y-%m-%dT%H:%M:%fZ', "),
    # 6: the stored content of a transfer (``[settings] store_transfers``,
    # bastion.recording.content): JSON {path, bytes, truncated, sha256} or NULL.  A NULL
    # ``content`` is left out of a row's chain hash, so rows sealed before stay valid.
    """
    ALTER TABLE transfers ADD COLUMN content TEXT;
    """,
    # 7: nothing on SQLite: its PostgreSQL twin adds the tables of the shared store's tail
    # journal (bastion.recording.tailstore); one node keeps it in a file (recording.tailjournal)
    """
    SELECT 1;
    """,
    # 8: nothing on SQLite: its PostgreSQL twin folds diacritics in full-text search, which
    # FTS5's unicode61 tokenizer does already
    """
    SELECT 1;
    """,
    # 9: what ``bastion store import`` brought into a PostgreSQL store from a one-node data
    # dir (bastion.recording.importer): the source's chain (where it started, its head) and
    # where its rows were re-sealed in the store's chain.  Only a store gets rows; the table
    # is here too so the twins keep the same tables.
    """
    CREATE TABLE imports (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        source TEXT NOT NULL,
        imported REAL NOT NULL,
        node TEXT NOT NULL,
        source_start_seq INTEGER NOT NULL,
        source_start_hash TEXT NOT NULL,
        source_head_seq INTEGER NOT NULL,
        source_head_hash TEXT NOT NULL,
        store_first_seq INTEGER,
        store_last_seq INTEGER,
        store_head_hash TEXT NOT NULL,
        sessions INTEGER NOT NULL,
        channels INTEGER NOT NULL,
        commands INTEGER NOT NULL,
        transfers INTEGER NOT NULL,
        approvals INTEGER NOT NULL,
        recordings INTEGER NOT NULL,
        bytes INTEGER NOT NULL
    );
    """,
    # 10: the ids ``bastion store import`` gave a source's rows whose ids the store had
    # taken (bastion.recording.renumber): each source id from ``old_first`` to ``old_last``
    # of ``table_name`` became ``new_first + (id - old_first)``.  Only a store gets rows.
    """
    CREATE TABLE import_ids (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        import_id INTEGER NOT NULL,
        table_name TEXT NOT NULL,
        old_first INTEGER NOT NULL,
        old_last INTEGER NOT NULL,
        new_first INTEGER NOT NULL,
        rows INTEGER NOT NULL
    );
    CREATE INDEX import_ids_import ON import_ids(import_id);
    """,
    # 11: nothing on SQLite: its PostgreSQL twin indexes which token starts a line, for FTS5's
    # ``^word``, which FTS5 knows already
    """
    SELECT 1;
    """,
    # 12: nothing on SQLite: its PostgreSQL twin stores recordings with lz4 (recordings are
    # files here)
    """
    SELECT 1;
    """,
    # 13: nothing on SQLite: its PostgreSQL twin checks phrases, ^ and NEAR on each line's own
    # tokens (tsvector's positions are bounded), as FTS5 does here already
    """
    SELECT 1;
    """,
    # 14: nothing on SQLite: its PostgreSQL twin keeps the stored copies of transferred
    # files in the store (one node keeps them as files beside the recordings)
    """
    SELECT 1;
    """,
    # 15: nothing on SQLite: its PostgreSQL twin keeps what each node enforces (policy
    # digest, host CA and host key) beside its heartbeat; one node has nobody to differ from
    """
    SELECT 1;
    """,
]

SCHEMA_VERSION = len(_MIGRATIONS)


def index_path(data_dir: Path) -> Path:
    return Path(data_dir) / INDEX_NAME


def require_shared_store(why: str) -> None:
    """Refuse (RecordingError, saying how to set one) unless a PostgreSQL store is configured;
    ``why`` finishes "no PostgreSQL store is configured"."""
    if not store.current().postgres:
        raise RecordingError(f"no PostgreSQL store is configured{why}",
                             hint="set [store] url in policy.toml (--policy) or "
                                  "BASTION_STORE_URL, and its password file")


@contextlib.contextmanager
def shared_store_reader(why: str) -> Iterator[Any]:
    """A read-only connection to the configured PostgreSQL store (see
    :func:`require_shared_store`); a failed read becomes a RecordingError."""
    require_shared_store(why)
    conn = connect(Path("."), readonly=True)
    try:
        yield conn
    except sqlite3.Error as exc:
        raise RecordingError(f"reading the store failed: {exc}") from exc
    finally:
        conn.close()


def connect(data_dir: Path, *, readonly: bool = False) -> sqlite3.Connection:
    """Open the index.  Read-write opens create it and run migrations.

    Read-only opens refuse a missing index or one newer than this code.
    Raises RecordingError with a message a person can act on.  With a PostgreSQL store
    configured (bastion.store) the connection is to it instead, with the same interface.
    """
    settings = store.current()
    if settings.postgres:
        pg: sqlite3.Connection = _connect_pg(settings, readonly)
        return pg
    path = index_path(data_dir)
    try:
        if readonly:
            if not path.exists():
                raise RecordingError(
                    f"no session index at {path}",
                    hint="pass the --data-dir that `bastion serve` uses (or set BASTION_DATA_DIR)")
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None,
                                   check_same_thread=False)
        else:
            _create_private(path)
            conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        if not readonly:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
    except sqlite3.Error as exc:
        raise RecordingError(f"cannot open the session index {path}: {exc}",
                             hint="check that the data dir exists, is writable and the disk is not full") from exc
    if version > SCHEMA_VERSION:
        conn.close()
        raise RecordingError(
            f"the session index {path} has schema {version}, newer than this bastion ({SCHEMA_VERSION})",
            hint="upgrade bastion")
    if readonly:
        if version < SCHEMA_VERSION:
            conn.close()
            raise RecordingError(
                f"the session index {path} has schema {version}, older than this bastion ({SCHEMA_VERSION})",
                hint="start `bastion serve` once with this data dir to upgrade it, or run `bastion prune`")
        return conn
    try:
        migrate(conn)
    except sqlite3.Error as exc:
        conn.close()
        raise RecordingError(f"cannot migrate the session index {path}: {exc}",
                             hint="check permissions and free space of the data dir") from exc
    return conn


def _connect_pg(settings: store.StoreSettings, readonly: bool) -> Any:
    try:
        import psycopg  # noqa: F401
        import psycopg_pool  # noqa: F401
    except ImportError:
        raise RecordingError("a PostgreSQL store is configured but its driver is not installed",
                             hint="pip install 'bastion[postgresql]' (psycopg, psycopg-pool)") \
            from None
    from bastion.store import pgconn
    try:
        return pgconn.connect(settings, readonly=readonly)
    except sqlite3.Error as exc:
        detail = getattr(exc, "detail", None)
        raise RecordingError(f"the session index is unavailable: {exc}",
                             hint=(f"{detail}; " if detail else "")
                             + "check that PostgreSQL is up and reachable, and [store] url / "
                               "BASTION_STORE_URL and its password") from exc


def _create_private(path: Path) -> None:
    """Create the index file 0600 before SQLite does (it would make it 0644 less the umask).

    SQLite gives the ``-wal`` and ``-shm`` files the mode of the database file, so they
    are 0600 too.  An existing file is left as it is (``bastion serve`` tightens the modes
    an older bastion left, see bastion.private).
    """
    try:
        fd = open_private_file(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    except FileExistsError:
        return
    except OSError as exc:
        raise RecordingError(f"cannot create the session index {path}: {exc.strerror or exc}",
                             hint="check that the data dir exists, is writable and the disk "
                                  "is not full") from exc
    os.close(fd)


def migrate(conn: sqlite3.Connection) -> int:
    """Apply pending migrations, each in its own transaction.  Returns the version."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    while version < SCHEMA_VERSION:
        script = _MIGRATIONS[version]
        version += 1
        conn.executescript(f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version = {version};\nCOMMIT;")
    return version


def id_counter(ids: dict[str, int], table: str, worker: int = 0) -> Iterator[int]:
    """The ids ``table`` rows get from ``ids[table]`` on (:func:`next_ids`).  On PostgreSQL the
    block ends; a new one is taken then (a short connection, once per ID_BLOCK rows)."""
    if not store.current().postgres:      # a worker's ids: bastion.recording.shares
        from bastion.recording import shares
        return shares.counter(ids[table], worker)
    from bastion.store import pgconn
    return pgconn.IdRange(ids[table], table, store.current())


def next_ids(conn: sqlite3.Connection) -> dict[str, int]:
    """The next free id of each table (never reused, even after prune).

    On PostgreSQL, the first of a block of ids no other node or process gets (pgschema)."""
    if store.current().postgres:
        from bastion.store import pgconn
        ids: dict[str, int] = pgconn.allocate_ids(conn)  # type: ignore[arg-type]
        return ids
    seqs = {row[0]: row[1] for row in conn.execute("SELECT name, seq FROM sqlite_sequence")}
    result = {}
    for table in ("sessions", "channels", "commands"):
        top = conn.execute(f"SELECT COALESCE(MAX(id), 0) FROM {table}").fetchone()[0]
        result[table] = max(top, seqs.get(table, 0)) + 1
    return result
