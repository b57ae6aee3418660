"""Reading the session index for reviewers: list sessions, show one, search commands.

Opens the index read-only (``mode=ro``; WAL lets it run beside ``bastion
serve``).  Functions return plain dicts with the raw values -- agent text is
*not* sanitised here (the CLI does that for terminals; JSON escaping makes it
inert for scripts).  Times are epoch seconds; :func:`public` turns a record
into its JSON form with ISO-8601 UTC times.

Selectors: ``principal`` matches a session's subject, app id or display name,
``target`` its target; both as SQLite GLOB patterns (``web*``; no wildcard =
exact, case-sensitive).  ``since``/``until`` accept ``90d``/``12h``/``30m``/
``2w`` (that long ago), ``2024-05-01``, ``2024-05-01T12:00[:00]`` (UTC unless
an offset is given) or epoch seconds.

Not covered: writing (writer.py), verification (verify.py).
"""

from __future__ import annotations

import datetime as _dt
import json
import re
import sqlite3
from typing import Any, Sequence
from pathlib import Path

import sqlite_utils

from bastion.errors import RecordingError
from bastion.recording import schema

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])", re.IGNORECASE)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
ACTIONS = ("allow", "deny", "review")
STATUSES = ("active", "closed", "interrupted", "refused")


def open_index(data_dir: Path) -> sqlite_utils.Database:
    """The index, read-only, wrapped in sqlite-utils (on PostgreSQL: the same ``query``)."""
    conn = schema.connect(Path(data_dir), readonly=True)
    if isinstance(conn, sqlite3.Connection):
        return sqlite_utils.Database(conn)
    from bastion.store.pgconn import QueryDb
    return QueryDb(conn)


def parse_duration(text: str) -> float:
    """``90d`` / ``12h`` / ``1h30m`` / ``2w`` -> seconds.  Raises RecordingError."""
    value = (text or "").strip()
    pos, total = 0, 0.0
    for m in _DURATION.finditer(value):
        if value[pos:m.start()].strip():
            break
        total += float(m.group(1)) * _UNITS[m.group(2).lower()]
        pos = m.end()
    if pos == 0 or value[pos:].strip():
        raise RecordingError(f"not a duration: {text!r}", hint="use e.g. 90d, 12h, 30m, 2w or 1h30m")
    return total


def parse_time(text: str, *, now: float) -> float:
    """A point in time as epoch seconds (see module doc for the forms)."""
    value = (text or "").strip()
    if not value:
        raise RecordingError("empty time")
    if value.lower() == "now":
        return now
    if re.fullmatch(r"\d{9,}(\.\d+)?", value):
        return float(value)
    try:
        return now - parse_duration(value)
    except RecordingError:
        pass
    try:
        when = _dt.datetime.fromisoformat(value.replace("Z", "+00:00").replace(" ", "T", 1))
    except ValueError:
        raise RecordingError(f"not a time: {text!r}",
                             hint="use e.g. 2024-05-01, 2024-05-01T12:00, 7d or 12h") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=_dt.timezone.utc)
    return when.timestamp()


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return _dt.datetime.fromtimestamp(ts, _dt.timezone.utc).isoformat(timespec="milliseconds") \
        .replace("+00:00", "Z")


def _loads(value, default):
    if value is None:
        return default
    try:
        return json.loads(value)
    except (TypeError, ValueError):
        return default


def _session_record(row: dict) -> dict:
    row = dict(row)
    principal = _loads(row.pop("principal_json", None), None)
    roles = _loads(row.pop("principal_roles", None), [])
    if principal is None and row.get("principal_subject") is not None:
        principal = {"subject": row.get("principal_subject"), "app_id": row.get("principal_app_id"),
                     "name": row.get("principal_name"), "roles": roles}
    row["principal"] = principal
    row["truncated"] = bool(row.get("truncated"))
    return row


def _command_record(row: dict) -> dict:
    row = dict(row)
    row["commands"] = _loads(row.get("commands"), [])
    return row


def _who_and_where(where: list[str], params: dict[str, Any], principal: str | None,
                   target: str | None, target_in: Sequence[str] | None = None) -> None:
    """Add the session's principal and target globs (either may be None) to a query;
    ``target_in``: only sessions to these exact targets (a reviewer's scope)."""
    if target_in is not None:
        names = list(dict.fromkeys(target_in))
        where.append("s.target IN (" + ", ".join(f":scope{i}" for i in range(len(names)))
                     + ")" if names else "0")
        params.update({f"scope{i}": n for i, n in enumerate(names)})
    if principal:
        where.append(_principal_clause("s"))
        params["principal"] = principal
    if target:
        where.append("s.target GLOB :target")
        params["target"] = target


def _node_clause(where: list[str], params: dict[str, Any], node: str) -> None:
    from bastion import store
    if not store.current().postgres:
        raise RecordingError("sessions have no node on SQLite: one bastion records them all",
                             hint="leave out --node (it filters a PostgreSQL store's nodes)")
    params["node"] = node
    if any(c in node for c in "*?["):
        where.append("s.node GLOB :node")
    else:                                     # the node and the workers of `serve --workers`
        params["node_workers"] = node + "-w[0-9]*"
        where.append("(s.node GLOB :node OR s.node GLOB :node_workers)")


def _principal_clause(alias: str) -> str:
    return (f"({alias}.principal_subject GLOB :principal OR {alias}.principal_app_id GLOB :principal "
            f"OR {alias}.principal_name GLOB :principal)")


# a command that did not run because of a decision: denied, or held and never approved
_REFUSED = "(c.action = 'deny' OR (c.action = 'review' AND c.approver IS NULL))"


def list_sessions(db: sqlite_utils.Database, *, principal: str | None = None,
                  target: str | None = None, since: float | None = None,
                  until: float | None = None, status: str | None = None,
                  denied: bool = False, limit: int = 100,
                  target_in: Sequence[str] | None = None, node: str | None = None) -> list[dict]:
    """Sessions (newest first) with command, denied-command and channel counts.

    ``denied``: only sessions that were refused or had a command refused: denied by policy,
    or held for review and never approved (denied or expired by the approvers, withdrawn).
    ``n_denied`` counts those commands.  ``node`` (a PostgreSQL store): the node that
    recorded them, a glob; a name without a wildcard also matches its workers
    (``NODE-wN``).
    """
    where: list[str] = []
    params: dict[str, Any] = {"limit": int(limit)}
    _who_and_where(where, params, principal, target, target_in)
    if node:
        _node_clause(where, params, node)
    _time_range(where, params, "s.started", since, until)
    if status:
        if status not in STATUSES:
            raise RecordingError(f"unknown status {status!r}", hint="one of: " + ", ".join(STATUSES))
        where.append("s.status = :status")
        params["status"] = status
    if denied:
        where.append("(s.status = 'refused' OR EXISTS (SELECT 1 FROM commands c "
                     f"WHERE c.session_id = s.id AND {_REFUSED}))")
    sql = ("SELECT s.*, "
           "(SELECT COUNT(*) FROM commands c WHERE c.session_id = s.id) AS n_commands, "
           f"(SELECT COUNT(*) FROM commands c WHERE c.session_id = s.id AND {_REFUSED}) AS n_denied, "
           "(SELECT COUNT(*) FROM channels ch WHERE ch.session_id = s.id) AS n_channels "
           "FROM sessions s" + (" WHERE " + " AND ".join(where) if where else "")
           + " ORDER BY s.started DESC, s.id DESC LIMIT :limit")
    return [_session_record(r) for r in _query(db, sql, params)]


def get_session(db: sqlite_utils.Database, session_id: int) -> dict:
    """One session with its channels, commands and file transfers (in time order).
    Raises if unknown."""
    rows = list(_query(db, "SELECT * FROM sessions WHERE id = ?", [session_id]))
    if not rows:
        raise RecordingError(f"no session {session_id} in the index",
                             hint="list sessions with `bastion sessions list`")
    record = _session_record(rows[0])
    record["channels"] = [dict(r, env=_loads(r.get("env"), None), truncated=bool(r.get("truncated")))
                          for r in _query(db, "SELECT * FROM channels WHERE session_id = ? "
                                              "ORDER BY id", [session_id])]
    record["commands"] = [_command_record(r) for r in _query(
        db, "SELECT * FROM commands WHERE session_id = ? ORDER BY time, id", [session_id])]
    record["transfers"] = [{k: v for k, v in r.items() if k != "uid"} for r in _query(
        db, "SELECT * FROM transfers WHERE session_id = ? ORDER BY time, id", [session_id])]
    return record


def session_targets(db: sqlite_utils.Database) -> list[str]:
    """Every target name sessions were opened to."""
    return [r["target"] for r in _query(db, "SELECT DISTINCT target FROM sessions "
                                            "WHERE target IS NOT NULL", [])]


def get_command(db: sqlite_utils.Database, command_id: int) -> dict:
    rows = list(_query(db, "SELECT * FROM commands WHERE id = ?", [command_id]))
    if not rows:
        raise RecordingError(f"no command {command_id} in the index")
    return _command_record(rows[0])


def fts_query(text: str) -> str:
    """Quote each word so shell punctuation (``rm -rf /``) is searched, not parsed.

    A trailing ``*`` on a word keeps prefix search (``syst*``).
    """
    terms = []
    for word in text.split():
        prefix = word.endswith("*") and len(word) > 1
        core = word[:-1] if prefix else word
        if not re.search(r"\w", core):
            continue                   # punctuation alone is not indexed (unicode61 tokenizer)
        terms.append('"' + core.replace('"', '""') + '"' + ("*" if prefix else ""))
    if not terms:
        raise RecordingError(f"nothing to search for in {text!r}",
                             hint="give at least one word, e.g. `bastion commands search 'systemctl restart'`")
    return " ".join(terms)


def search_commands(db: sqlite_utils.Database, query: str, *, principal: str | None = None,
                    target: str | None = None, action: str | None = None,
                    since: float | None = None, until: float | None = None,
                    limit: int = 50, raw: bool = False,
                    target_in: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Full-text search over command lines, newest first.

    ``raw``: pass ``query`` to FTS5 as is (its syntax: AND/OR/NOT, "phrases", NEAR, prefix*,
    ^initial, column filters); on PostgreSQL bastion.store.ftsquery gives it the same meaning.
    """
    params: dict[str, Any] = {"match": query if raw else fts_query(query), "limit": int(limit)}
    where = ["commands_fts MATCH :match"]
    _who_and_where(where, params, principal, target, target_in)
    if action:
        if action not in ACTIONS:
            raise RecordingError(f"unknown action {action!r}", hint="one of: " + ", ".join(ACTIONS))
        where.append("c.action = :action")
        params["action"] = action
    _time_range(where, params, "c.time", since, until)
    sql = ("SELECT c.*, s.principal_subject, s.principal_name, s.principal_app_id, s.target, s.login "
           "FROM commands_fts JOIN commands c ON c.id = commands_fts.rowid "
           "JOIN sessions s ON s.id = c.session_id WHERE " + " AND ".join(where)
           + " ORDER BY commands_fts.rowid DESC LIMIT :limit")
    if not raw:
        return [_command_record(r) for r in _query(db, sql, params)]
    try:
        return [_command_record(r) for r in db.query(sql, params)]
    except (sqlite3.OperationalError, sqlite3.DataError) as exc:   # PostgreSQL: StoreDataError too
        raise RecordingError(f"bad full-text query {query!r}: {exc}",
                             hint="see FTS5 query syntax, or drop --raw to search plain words") from None


def search_transfers(db: sqlite_utils.Database, *, path: str | None = None,
                     sha256: str | None = None, op: str | None = None,
                     principal: str | None = None, target: str | None = None,
                     refused: bool = False, since: float | None = None,
                     until: float | None = None, limit: int = 50) -> list[dict[str, Any]]:
    """File operations of sftp channels (docs/TRANSFERS.md), newest first.

    ``path``: a glob on the path (or a rename's destination) as resolved on the target;
    ``sha256``: a whole file's hash, or its first characters (at least 8); ``refused``: only
    operations the policy refused.
    """
    where: list[str] = []
    params: dict[str, Any] = {"limit": int(limit)}
    if path:
        where.append("(t.path GLOB :path OR t.path2 GLOB :path)")
        params["path"] = path
    if sha256:
        digest = sha256.strip().lower()
        if len(digest) < 8 or digest.strip("0123456789abcdef"):
            raise RecordingError(f"--sha256 must be hex digits, at least 8, got {sha256!r}",
                                 hint="e.g. --sha256 9f86d081")
        where.append("t.sha256 GLOB :sha")
        params["sha"] = digest + "*"
    if op:
        where.append("t.op = :op")
        params["op"] = op
    _who_and_where(where, params, principal, target)
    if refused:
        where.append("t.action != 'allow'")
    _time_range(where, params, "t.time", since, until)
    sql = ("SELECT t.*, s.principal_subject, s.principal_name, s.principal_app_id, s.target, "
           "s.login FROM transfers t JOIN sessions s ON s.id = t.session_id"
           + (" WHERE " + " AND ".join(where) if where else "")
           + " ORDER BY t.time DESC, t.id DESC LIMIT :limit")
    return [{k: v for k, v in r.items() if k != "uid"} for r in _query(db, sql, params)]


def get_transfer(db: sqlite_utils.Database, transfer_id: int) -> dict[str, Any]:
    """One file operation with its session's who and where.  Raises if unknown."""
    rows = _query(db, "SELECT t.*, s.principal_subject, s.principal_name, s.target, s.login "
                      "FROM transfers t JOIN sessions s ON s.id = t.session_id "
                      "WHERE t.id = ?", [transfer_id])
    if not rows:
        raise RecordingError(f"no transfer {transfer_id} in the index",
                             hint="find one with `bastion transfers search`")
    return {k: v for k, v in rows[0].items() if k != "uid"}


def transfer_content(data_dir: Path, row: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
    """The stored copy of a transfer (``store_transfers``) and its ``content`` record: this
    node's file, or on a PostgreSQL store the store's copy (any node's transfer), checked
    against the SHA-256 recorded with it (bastion.recording.copies.read_copy).

    Raises RecordingError when none was stored, the path leaves the recordings dir, the
    copy is gone, or it no longer matches the SHA-256 recorded with it."""
    from bastion.recording import copies
    from bastion.store import location
    tid = int(row["id"])
    store_copy = (lambda: _store_copy(data_dir, tid)) if location.current().postgres else None
    return copies.read_copy(data_dir, row, store_copy=store_copy)


def _store_copy(data_dir: Path, transfer_id: int) -> bytes | None:
    from bastion.store import transfercopies
    conn = schema.connect(Path(data_dir), readonly=True)
    try:
        return transfercopies.read(conn, transfer_id)
    except sqlite3.Error as exc:
        raise RecordingError(f"reading the store failed: {exc}") from exc
    finally:
        conn.close()


def _query(db: sqlite_utils.Database, sql: str, params):
    try:
        return list(db.query(sql, params))
    except sqlite3.Error as exc:
        raise RecordingError(f"reading the session index failed: {exc}") from exc


def public(record: dict) -> dict:
    """JSON form: epoch columns as ISO-8601 UTC strings, nested records converted too."""
    out = {}
    for key, value in record.items():
        if key in ("started", "ended", "time") and isinstance(value, (int, float)):
            out[key] = iso(value)
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            out[key] = [public(v) for v in value]
        else:
            out[key] = value
    return out


def _time_range(where: list[str], params: dict, column: str, since, until) -> None:
    """Add ``column`` between ``since`` and ``until`` (either may be None) to a query."""
    if since is not None:
        where.append(f"{column} >= :since")
        params["since"] = since
    if until is not None:
        where.append(f"{column} <= :until")
        params["until"] = until
