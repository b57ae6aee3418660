"""Where recording stands, for ``bastion status``: a Unix socket in the data dir.

``bastion serve`` answers on ``DATA_DIR/status.sock`` (0600 in the 0700 data dir, so only
the bastion's user can ask) with one JSON document per connection and closes it:
:meth:`bastion.recording.Recorder.status` (state, cause, attempts, sessions and channels
open, queue and index lag, disk headroom) plus the process id.  No disk space is needed
to answer, so it works while the disk is full; nothing in it is secret (failure reports
name no path, and no agent text is in it).

:func:`read_status` is the client.  Not covered: rendering (bastion/cli/status.py).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import stat
import threading
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger("bastion.recording")

SOCKET_NAME = "status.sock"
_MAX_PATH = 100                  # sun_path is 108 bytes on Linux


class _Short:
    """A path short enough for a Unix socket: through /proc/self/fd when the dir's is long."""

    def __init__(self, path: Path) -> None:
        self.fd = -1
        full = os.fsencode(str(path))
        if len(full) < _MAX_PATH:
            self.path = full
            return
        self.fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        self.path = os.fsencode(f"/proc/self/fd/{self.fd}/{path.name}")

    def __enter__(self) -> bytes:
        return self.path

    def __exit__(self, *exc: object) -> None:
        if self.fd >= 0:
            os.close(self.fd)


class StatusServer:
    """Answers ``provider()`` as JSON on ``DATA_DIR/status.sock`` from a daemon thread."""

    def __init__(self, data_dir: Path, provider: Callable[[], dict[str, Any]],
                 name: str = SOCKET_NAME) -> None:
        self.path = Path(data_dir) / name
        self._provider = provider
        self._closed = False
        try:
            st = os.lstat(self.path)
            if stat.S_ISSOCK(st.st_mode):          # left by a process that died (we hold the lock)
                self.path.unlink()
        except FileNotFoundError:
            pass
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with _Short(self.path) as where:
                self._sock.bind(where)
            os.chmod(self.path, 0o600)
            self._sock.listen(16)
        except OSError:
            self._sock.close()
            raise
        self._thread = threading.Thread(target=self._serve, name="bastion-status", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with conn:
                try:
                    conn.settimeout(2.0)
                    body = json.dumps({"pid": os.getpid(), **self._provider()},
                                      ensure_ascii=True, default=str)
                    conn.sendall(body.encode("ascii"))
                except Exception as exc:  # noqa: BLE001 - one bad answer must not end the server
                    log.debug("status: could not answer: %s", exc)

    def close(self) -> None:
        self._closed = True
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()
        try:
            if stat.S_ISSOCK(os.lstat(self.path).st_mode):
                self.path.unlink()
        except OSError:
            pass
        self._thread.join(5)


def read_status(data_dir: Path, timeout: float = 5.0,
                name: str = SOCKET_NAME) -> dict[str, Any] | None:
    """The running ``bastion serve``'s answer, or None when none answers for ``data_dir``."""
    path = Path(data_dir) / name
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        with _Short(path) as where:
            sock.connect(where)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError):
        return None
    finally:
        sock.close()
    answer: dict[str, Any] = json.loads(b"".join(chunks).decode("ascii"))
    return answer


def collect(data_dir: Path) -> dict[str, Any]:
    """Everything ``bastion status`` shows: the running serve's answer (``serve``, None when
    none answers), the disk headroom measured here, and what the index says."""
    from bastion.recording import health, schema
    data_dir = Path(data_dir)
    answer = read_status(data_dir)
    workers: dict[int, dict[str, Any] | None] = {}
    if answer is None:                      # `serve --workers N`: one socket per worker
        workers = read_workers(data_dir)
        answer = merge_workers(workers)
    free: int | None
    inodes: int | None
    try:
        free, inodes = health.headroom(data_dir)
    except OSError:
        free = inodes = None
    disk = {"free_bytes": free, "free_inodes": inodes, "needed_bytes": health.HEADROOM_BYTES,
            "needed_inodes": health.HEADROOM_INODES,
            "reserve_bytes": (health.RESERVE_BYTES if health.reserve_path(data_dir).exists()
                              else 0)}
    index = None
    from bastion.store import location
    if location.current().postgres:          # a shared store: this node's active sessions
        index = _shared_index(data_dir, _node_names(answer, workers))
    elif schema.index_path(data_dir).exists():
        import sqlite3
        try:
            conn = sqlite3.connect(f"file:{schema.index_path(data_dir)}?mode=ro", uri=True,
                                   timeout=2.0)
            try:
                (active,) = conn.execute(
                    "SELECT COUNT(*) FROM sessions WHERE status = 'active'").fetchone()
            finally:
                conn.close()
            index = {"active_sessions": active}
        except sqlite3.Error as exc:
            index = {"error": str(exc)}
    from bastion import store
    out = {"running": answer is not None, "serve": answer, "disk": disk, "index": index,
           "store": store.describe()}
    if workers:
        out["workers"] = {str(k): v for k, v in sorted(workers.items())}
    return out


def read_workers(data_dir: Path) -> dict[int, dict[str, Any] | None]:
    """The answers of ``serve --workers`` workers, by index (None: a socket nobody answers,
    e.g. a worker being restarted)."""
    found: dict[int, dict[str, Any] | None] = {}
    for path in sorted(Path(data_dir).glob("status.w*.sock")):
        index = path.name[len("status.w"):-len(".sock")]
        if index.isdigit():
            try:
                found[int(index)] = read_status(data_dir, timeout=2.0, name=path.name)
            except (TimeoutError, ConnectionResetError):    # stopped or stuck: not answering
                found[int(index)] = None
    return found


#: sums over the workers; every other field is the first worker's (or the first not-ok one's)
_SUMMED = ("sessions_open", "channels_open", "queue_ops", "queue_bytes", "quarantined")


def merge_workers(workers: dict[int, dict[str, Any] | None]) -> dict[str, Any] | None:
    """One ``serve`` answer for N workers: ``ok`` only if every worker answers ``ok``
    (otherwise the first worker that does not, as it says or as ``not answering``);
    counts summed, the index lag the largest; ``policy_refused`` the workers whose last
    policy reload was refused, ``policy_loaded_oldest`` the oldest policy load.  None when no
    worker answers."""
    answers = {k: v for k, v in workers.items() if v is not None}
    if not answers:
        return None
    bad = [(k, v) for k, v in sorted(workers.items()) if v is None or v.get("state") != "ok"]
    first = answers[min(answers)]
    merged = dict(first)
    if bad:
        k, v = bad[0]
        merged = dict(v) if v is not None else {
            **first, "state": "not answering",
            "error": f"worker {k} does not answer on its status socket (restarting?)"}
    for key in _SUMMED:
        merged[key] = sum(int(v.get(key) or 0) for v in answers.values())
    merged["index_lag_s"] = max(float(v.get("index_lag_s") or 0) for v in answers.values())
    merged["workers"] = len(workers)
    policies = [v.get("policy") or {} for v in answers.values()]
    merged["policy_refused"] = sum(1 for p in policies if p.get("refused"))
    loaded = [p["loaded"] for p in policies if p.get("loaded")]
    if loaded:
        merged["policy_loaded_oldest"] = min(loaded)
    return merged


def _node_names(answer: dict[str, Any] | None,
                workers: dict[int, dict[str, Any] | None]) -> list[str]:
    """The store's names of the serve processes that answered (``NODE`` or ``NODE-wN``)."""
    names = []
    for one in [answer, *workers.values()]:
        name = ((one or {}).get("policy") or {}).get("node")
        if name and name not in names:
            names.append(name)
    return names


def _shared_index(data_dir: Path, names: list[str]) -> dict[str, Any]:
    """What the PostgreSQL store says of this node (``bastion status`` on a shared store):
    its active sessions and, when its serve answered, its live peers and how they differ
    (bastion.recording.nodeconfig)."""
    import sqlite3

    from bastion import store
    from bastion.errors import RecordingError
    from bastion.recording import nodeconfig, schema
    from bastion.recording.leases import LEASE
    peers = None
    try:
        conn = schema.connect(data_dir, readonly=True)
        try:
            (active,) = conn.execute("SELECT COUNT(*) FROM sessions WHERE status = 'active'"
                                     f"{store.own_sessions_clause()}").fetchone()
            if names:
                peers = nodeconfig.report(conn, names, LEASE)
            schema_now = conn.execute("PRAGMA user_version").fetchone()[0]   # either backend
        finally:
            conn.close()
    except (RecordingError, sqlite3.Error) as exc:
        hint = getattr(exc, "hint", None)      # the URL (no password) and the driver's reason
        return {"error": str(exc) + (f" ({hint})" if hint else ""), "store": store.describe()}
    out: dict[str, Any] = {"active_sessions": active, "store": store.describe(),
                           "schema": {"store": schema_now, "bastion": schema.SCHEMA_VERSION}}
    if peers is not None:
        out["peers"] = peers
    return out
