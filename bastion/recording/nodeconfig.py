"""What each node of a shared store enforces: its policy's digest, its host CA and host key.

Nodes behind one load balancer must decide alike and look alike to agents: the same
policy.toml (else a command's fate depends on the node an agent reaches: an agent refused
on one node could reconnect until it lands on a laxer one), the same host CA and bastion host
key (else agents' ``known_hosts`` fails on some nodes).  Nothing forces the files to be the
same (config management copies them), so each ``bastion serve`` process publishes what it
enforces into its own ``nodes`` row (migration 15, beside the heartbeat the recording worker
writes there): the policy's digest (bastion.config.digest) and when it was loaded, the last
reload it refused and why (the node keeps enforcing the previous policy then), the
SHA-256 fingerprints of its host CA and host key, and its release and schema version (shown,
not compared: nodes differ in them while they are upgraded one at a time).  It publishes at
start and after every reload, refused ones included, and logs a warning naming the live peers
that differ; every lease/2 seconds it compares again (:meth:`Publisher.check`) and warns when
the differences changed (a peer that drifted after this node started), once.  ``bastion store
nodes`` and ``bastion status`` show the same comparison.

Only peers a reviewer would call live are compared (a heartbeat within the lease): a node
that is gone is history, not drift.  Publishing never stops a node: a store that cannot be
reached is logged, and the worker's own writes refuse sessions then (docs/SCALING.md).

Not covered: SQLite (one node; its workers load the same file, and ``bastion status``
compares them), whether the files a policy names (``ca_bundle``) are alike.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Iterable

from bastion.config.digest import short
from bastion.proto.sanitize import sanitize

log = logging.getLogger("bastion.store")

#: what must be the same on every live node: (nodes column, as said to an operator)
COMPARED = (("policy", "policy"), ("host_ca", "host CA"), ("host_key", "host key"))
ERROR_MAX = 1000              # characters of a refused reload's reason kept in the store

#: what a node publishes (beside ``name`` and ``seen``), in the ``nodes`` columns' order
PUBLISHED = ("policy", "policy_loaded", "policy_error", "policy_error_at", "host_ca",
             "host_key", "release", "schema")
_PUBLISH = (
    f"INSERT INTO nodes (name, seen, {', '.join(PUBLISHED)}) VALUES "
    f"(current_setting('bastion.node', true), ?, {', '.join('?' * len(PUBLISHED))}) "
    "ON CONFLICT (name) DO UPDATE SET "
    + ", ".join(f"{c} = EXCLUDED.{c}" for c in PUBLISHED))
_FIELDS = ("node", "seen", *PUBLISHED)
Rows = list[dict[str, Any]]
_ROWS = f"SELECT name, seen, {', '.join(PUBLISHED)} FROM nodes ORDER BY name"


def publish(conn: Any, mine: dict[str, Any], now: float | None = None) -> None:
    """Write this node's ``mine`` (keys: :data:`PUBLISHED`; release and schema default to
    this bastion's) into its ``nodes`` row (the connection's node)."""
    from bastion import __version__
    from bastion.store.pgschema import SCHEMA_VERSION
    now = time.time() if now is None else now
    values = {"release": __version__, "schema": SCHEMA_VERSION, **mine}
    if values.get("policy_error"):
        values["policy_error"] = values["policy_error"][:ERROR_MAX]
    conn.execute(_PUBLISH, (now, *(values.get(c) for c in PUBLISHED)))


def rows(conn: Any) -> list[dict[str, Any]]:
    """Every node's row: its heartbeat and what it published, by name."""
    return [dict(zip(_FIELDS, row, strict=True)) for row in conn.execute(_ROWS)]


def live_peers(conn: Any, lease: float, mine: Iterable[str],
               now: float | None = None) -> list[dict[str, Any]]:
    """The nodes not named in ``mine`` with a heartbeat within ``lease`` seconds, by name."""
    return _live(rows(conn), lease, mine, now)


def _live(every: Rows, lease: float, mine: Iterable[str], now: float | None) -> Rows:
    now = time.time() if now is None else now
    own = set(mine)
    return [r for r in every if r["node"] not in own and r["seen"] >= now - lease]


def differing(mine: dict[str, Any], peers: Iterable[dict[str, Any]]) -> dict[str, Rows]:
    """Per compared column (its column name), the peers whose value is not ``mine``'s.
    A value not known on either side (a peer of an older release) is no difference."""
    out: dict[str, Rows] = {}
    for peer in peers:
        for column, _ in COMPARED:
            theirs, ours = peer.get(column), mine.get(column)
            if theirs and ours and theirs != ours:
                out.setdefault(column, []).append(peer)
    return out


def groups(rows: Iterable[dict[str, Any]], column: str) -> dict[str, list[str]]:
    """Known values of ``column`` among ``rows`` and the nodes with each, in first-seen order."""
    out: dict[str, list[str]] = {}
    for row in rows:
        if row.get(column):
            out.setdefault(row[column], []).append(row["node"])
    return out


def shown(column: str, value: str | None) -> str:
    """A value as a terminal line shows it: the policy's short digest, a fingerprint whole."""
    return short(value) if column == "policy" else (value or "unknown")


def describe(mine: dict[str, Any], found: dict[str, Rows]) -> list[str]:
    """One sentence per differing column, naming the peers (inert) and what they have."""
    lines = []
    for column, said in COMPARED:
        peers = found.get(column)
        if not peers:
            continue
        theirs = "; ".join(f"{', '.join(sanitize(n) for n in names)} "
                           f"{'has' if len(names) == 1 else 'have'} {shown(column, value)}"
                           for value, names in groups(peers, column).items())
        lines.append(f"{said} differs from live node(s): this node has "
                     f"{shown(column, mine.get(column))}, {theirs}")
    return lines


_KEYS_HINT = ("copy DATA_DIR/hostkeys/ from one node to every other and restart them (agents "
              "trust one host CA and one bastion host key, whichever node answers)")
HINTS = {
    "policy": "give every node the same policy.toml and send each `bastion serve` SIGHUP "
              "(a command's decision must not depend on the node an agent reaches)",
    "host_ca": _KEYS_HINT,
    "host_key": _KEYS_HINT,
}


def hints(columns: Iterable[str]) -> list[str]:
    """What to do about the differing ``columns``, each once."""
    return list(dict.fromkeys(HINTS[c] for c in columns))


def publish_and_compare(conn: Any, me: str, mine: dict[str, Any], lease: float) -> list[str]:
    """:func:`publish`, then warn (log) about every live peer that differs; the warnings."""
    return describe(mine, _publish_and_warn(conn, me, mine, lease))


def _publish_and_warn(conn: Any, me: str, mine: dict[str, Any], lease: float) -> dict[str, Rows]:
    publish(conn, mine)
    found = differing(mine, live_peers(conn, lease, [me]))
    _warn(mine, found)
    return found


def _warn(mine: dict[str, Any], found: dict[str, Rows]) -> None:
    lines = describe(mine, found)
    for column, line in zip([c for c, _ in COMPARED if c in found], lines, strict=True):
        log.warning("%s: %s", line, HINTS[column])


def _key(found: dict[str, Rows]) -> frozenset[tuple[str, str, str]]:
    """What a set of differences is, to tell whether it changed: (column, peer, its value)."""
    return frozenset((c, p["node"], str(p[c])) for c, peers in found.items() for p in peers)


def report(conn: Any, names: list[str], lease: float, now: float | None = None) -> dict[str, Any]:
    """What ``bastion status`` says of one node whose processes are ``names`` (its workers):
    whether it published, its live peers, and how they differ from the first it published."""
    every = rows(conn)
    mine = next((r for n in names for r in every if r["node"] == n and r["policy"]), None)
    peers = _live(every, lease, names, now)
    found = differing(mine, peers) if mine is not None else {}
    return {"published": mine is not None, "live_peers": [p["node"] for p in peers],
            "differ": describe(mine, found) if mine is not None else [],
            "hints": hints(c for c, _ in COMPARED if c in found)}


class Publisher:
    """Publishes one ``bastion serve`` process's values from a thread of its own, in the
    order given (a reload never waits on the store; two quick reloads land in order)."""

    def __init__(self, data_dir: Any, node: str, lease: float) -> None:
        from concurrent.futures import ThreadPoolExecutor
        self.data_dir = data_dir
        self.node = node
        self.lease = lease
        self._said: frozenset[tuple[str, str, str]] = frozenset()    # the differences last logged
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nodeconfig")

    def publish(self, mine: dict[str, Any], wait: bool = False) -> list[str] | None:
        """Publish and compare (:func:`publish_and_compare`); with ``wait``, the warnings
        (None: the store could not be reached, logged)."""
        future = self._executor.submit(self._publish, dict(mine))
        return future.result() if wait else None

    def check(self, mine: dict[str, Any], wait: bool = False) -> list[str] | None:
        """Compare with the live peers again (a peer may have changed since this node last
        published): warn only when the differences are not those last said (a peer that
        drifted, another one), and say once when they are gone.  With ``wait``, the current
        differences (None: the store could not be reached)."""
        future = self._executor.submit(self._check, dict(mine))
        return future.result() if wait else None

    def _check(self, mine: dict[str, Any]) -> list[str] | None:
        import sqlite3

        from bastion.errors import RecordingError
        from bastion.recording import schema
        try:
            conn = schema.connect(self.data_dir, readonly=True)
            try:
                found = differing(mine, live_peers(conn, self.lease, [self.node]))
            finally:
                conn.close()
        except (RecordingError, sqlite3.Error) as exc:
            log.debug("comparing with the store's live nodes: %s", exc)   # the worker says it
            return None
        key = _key(found)
        if key != self._said:
            if found:
                _warn(mine, found)
            elif self._said:
                log.info("no live node differs from this one any more (policy, host CA, host key)")
            self._said = key
        return describe(mine, found)

    def _publish(self, mine: dict[str, Any]) -> list[str] | None:
        import sqlite3

        from bastion.errors import RecordingError
        from bastion.recording import schema
        try:
            conn = schema.connect(self.data_dir)
            try:
                found = _publish_and_warn(conn, self.node, mine, self.lease)  # said every time
            finally:
                conn.close()
            self._said = _key(found)
            return describe(mine, found)
        except (RecordingError, sqlite3.Error) as exc:
            log.warning("could not publish this node's policy digest and host keys to the "
                        "store (peers cannot compare them until the next reload): %s", exc)
            return None

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
