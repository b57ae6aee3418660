"""``bastion store nodes``: the nodes the shared store has heard from, and how they are.

Every node's recording worker beats into ``nodes`` every lease/6 seconds (a node name per
worker of ``serve --workers N``: ``NODE-wN``; bastion.recording.leases).  From that table and
the sessions it recorded, each node is:

* ``alive``: a heartbeat within a third of the lease (it missed at most one beat);
* ``late``: silent for more than that but less than the lease: a peer does not touch its
  sessions yet (a slow or cut-off node, or one that just stopped);
* ``gone``: silent for the lease or longer: a peer has marked (or will mark, within
  lease/2) its open sessions interrupted and sealed their recordings.

Per node also: its sessions open now, recorded in all, the latest start, the recordings a peer
sealed for it that it has not taken back yet (``taken``), and which tail key it seals
with (bastion.recording.tailstore's check values, numbered in the order met: two numbers
among nodes mean two vault passphrases; no key is read or shown), and what it published of
what it enforces (bastion.recording.nodeconfig: its policy's digest, a reload it refused,
its host CA and host key), with :func:`apart` saying which of those differ among the nodes
not gone.

:func:`forget` removes a node that is gone for good (``bastion store forget``).

Not covered: SQLite (one node owns the file: ``bastion status`` asks it).
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

from bastion.errors import RecordingError
from bastion.recording import nodeconfig, schema
from bastion.recording.schema import require_shared_store
from bastion.recording.tailstore import CHECK_PREFIX

ALIVE_FRACTION = 1 / 3       # of the lease: a node that beat this recently is alive

_NODES = """
SELECT n.name, n.seen,
       (SELECT count(*) FROM sessions s WHERE s.node = n.name AND s.status = 'active'),
       (SELECT count(*) FROM sessions s WHERE s.node = n.name AND s.status != 'refused'),
       (SELECT max(s.started) FROM sessions s WHERE s.node = n.name AND s.status != 'refused'),
       (SELECT count(*) FROM taken t WHERE t.node = n.name AND t.restored IS NULL),
       (SELECT k.salt FROM store_salts k WHERE k.purpose = ? || n.name),
       n.policy, n.policy_loaded, n.policy_error, n.policy_error_at, n.host_ca, n.host_key,
       n.release, n.schema
FROM nodes n ORDER BY n.name
"""


def state(seen: float, now: float, lease: float) -> str:
    age = now - seen
    if age < lease * ALIVE_FRACTION:
        return "alive"
    return "late" if age < lease else "gone"


def list_nodes(conn: Any, lease: float, now: float | None = None) -> list[dict[str, Any]]:
    """Every node of the store with its state (see the module doc), by name."""
    now = time.time() if now is None else now
    keys: dict[bytes, int] = {}
    out = []
    for (name, seen, active, sessions, last, taken, check, policy, loaded, error, error_at,
         ca, host_key, release, schema_version) in conn.execute(_NODES, (CHECK_PREFIX,)):
        key = None
        if check is not None:
            key = keys.setdefault(bytes(check), len(keys) + 1)
        out.append({"node": name, "state": state(seen, now, lease), "seen": seen,
                    "silent_seconds": round(max(0.0, now - seen), 1), "open_sessions": active,
                    "sessions": sessions, "last_session": last, "taken_back_pending": taken,
                    "tail_key": key, "policy": policy, "policy_loaded": loaded,
                    "policy_error": error, "policy_error_at": error_at, "host_ca": ca,
                    "host_key": host_key, "release": release, "schema": schema_version})
    return out


def apart(rows: list[dict[str, Any]]) -> dict[str, dict[str, list[str]]]:
    """Among the nodes not ``gone``: each compared column (bastion.recording.nodeconfig)
    with more than one value, and the nodes having each value."""
    live = [r for r in rows if r["state"] != "gone"]
    out = {}
    for column, _ in nodeconfig.COMPARED:
        found = nodeconfig.groups(live, column)
        if len(found) > 1:
            out[column] = found
    return out


def forget(conn: Any, name: str, lease: float, now: float | None = None) -> dict[str, Any]:
    """Remove a node that is gone for good (decommissioned, or a worker index no longer run)
    from ``nodes``, with its tail key's check value; what it was.  Its sessions keep its name
    (they are history); recordings a peer sealed for it stay in ``taken``, so a node of that
    name that does start again still takes them back.  Refused (RecordingError) for a node
    not known, not gone (a heartbeat within the lease), or with sessions still active (a live
    peer closes them within lease/2 of the lease running out)."""
    now = time.time() if now is None else now
    conn.execute("BEGIN IMMEDIATE")        # under the chain's lock: no takeover in between
    try:
        row = conn.execute("SELECT seen FROM nodes WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise RecordingError(f"no node {name!r} in the store",
                                 hint="`bastion store nodes` lists the nodes by name")
        seen = row[0]
        if state(seen, now, lease) != "gone":
            raise RecordingError(
                f"node {name!r} is not gone: its last heartbeat was {now - seen:.0f} s ago, "
                f"under the lease ({lease:g} s)",
                hint="stop that bastion serve and wait for its lease to run out "
                     "(BASTION_STORE_LEASE) before forgetting it")
        (active,) = conn.execute("SELECT count(*) FROM sessions WHERE node = ? AND "
                                 "status = 'active'", (name,)).fetchone()
        if active:
            raise RecordingError(
                f"node {name!r} still has {active} session(s) active",
                hint=f"a live node marks them interrupted within {lease / 2:g} s of the lease "
                     "running out (is one running?); then try again")
        (sessions,) = conn.execute("SELECT count(*) FROM sessions WHERE node = ? AND "
                                   "status != 'refused'", (name,)).fetchone()
        conn.execute("DELETE FROM nodes WHERE name = ?", (name,))
        conn.execute("DELETE FROM store_salts WHERE purpose = ?", (CHECK_PREFIX + name,))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return {"node": name, "seen": seen, "silent_seconds": round(now - seen, 1),
            "sessions": sessions}


def forget_nodes(names: list[str], lease: float) -> list[dict[str, Any]]:
    """:func:`forget` each of ``names`` in the configured PostgreSQL store, in order; stops
    at the first refusal (those before it stay forgotten)."""
    require_shared_store(": on SQLite there is one node and nothing to forget")
    conn = schema.connect(Path("."))
    try:
        return [forget(conn, name, lease) for name in names]
    except sqlite3.Error as exc:
        raise RecordingError(f"writing the store failed: {exc}") from exc
    finally:
        conn.close()


def read(lease: float, now: float | None = None) -> list[dict[str, Any]]:
    """:func:`list_nodes` of the configured PostgreSQL store."""
    with schema.shared_store_reader(": on SQLite one node owns the index (`bastion status` "
                                    "asks it)") as conn:
        return list_nodes(conn, lease, now)
