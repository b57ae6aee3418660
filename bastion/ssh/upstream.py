"""Upstream connections: the bastion's own SSH connections to targets.

The bastion logs in to a target with the key named by ``[[targets]] key`` from
the vault, and accepts only the pinned host key (``host_key`` or the
``known_hosts`` file of the target): there is no trust on first use.

Connections are pooled per target and shared by the sessions of every agent
reaching that target (the login upstream is the target's, not the agent's, so
sharing reveals nothing).  A pooled connection carries at most
``MAX_SESSIONS_PER_CONNECTION`` channels at once (OpenSSH's ``MaxSessions``
defaults to 10) and is closed after ``idle_timeout`` seconds without channels
(``[settings] upstream_idle_timeout``, 30 s by default).

What an agent's channel gets from :meth:`UpstreamPool.acquire` is a
:class:`Lease` on a pooled connection; its ``create_session`` opens the upstream
channel.  The contract, because agents go away at any moment:

* **Connects are shared, bounded per target, never serialised behind a lock.**  Agents
  that need a new connection to one target wait for the same connect (up to
  ``MAX_SESSIONS_PER_CONNECTION`` of them, then a second connect starts beside it).
  At most ``[settings] upstream_connects`` connects per target are in progress at
  once (8 by default, below sshd's ``MaxStartups`` start of 10); more wait in a FIFO
  queue, at most ``upstream_queue_timeout`` seconds, and ``connect_timeout`` counts
  from the moment a connect leaves the queue.  A connect the target drops before its
  SSH banner (sshd past ``MaxStartups``) is tried again while its timeout allows.
  When a connect that had its turn fails, the connects queued behind it for that
  target fail with its error at once, so N agents to a target that does not answer
  all fail after one ``connect_timeout``, not after one per place in the queue
  (bastion.ssh.upconnect).  An agent that gives up (its task is cancelled) stops
  waiting; when the last one has, the connect itself is aborted (or leaves the
  queue), so no connection is left that nobody asked for.
* **A cancelled channel open leaks nothing.**  asyncssh's own ``create_session``
  cannot be cancelled cleanly (the target may confirm the channel after the
  caller left, and the channel would then stay open, unseen by the pool).  The
  lease runs it to its end by itself: a channel that opens for an agent that
  left is closed at once, and counted against its connection until the target
  has closed it too.  Cancelling ``create_session`` also ends the lease.
* **Releasing is idempotent.**  :meth:`UpstreamPool.release` (or
  :meth:`Lease.release`) may be called more than once; channels of the lease
  that are still closing keep counting until they are closed.

:meth:`UpstreamPool.stats` gives the counters per target (connections, leases,
channels whose agent left, connects in progress) for logs and tests.

Not covered: jump chains upstream, password or keyboard-interactive login
upstream, host certificates upstream (pin the key).  A channel's command that
the target keeps running after the channel is closed (OpenSSH keeps a session
until its command exits) keeps counting until it ends, as it should.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any, Callable

import asyncssh

from bastion.config.targets import Target
from bastion.errors import UpstreamError
from bastion.metrics import METRICS
from bastion.ssh.upconnect import CONNECTS, QUEUE_SECONDS, ConnectSlots, open_connection

log = logging.getLogger("bastion.upstream")

MAX_SESSIONS_PER_CONNECTION = 8
IDLE_SECONDS = 30.0          # default of [settings] upstream_idle_timeout


def pinned_known_hosts(target: Target):
    """The asyncssh ``known_hosts`` argument accepting only the target's pinned key."""
    if target.host_key:
        try:
            key = asyncssh.import_public_key(target.host_key)
        except (asyncssh.KeyImportError, ValueError) as exc:
            raise UpstreamError(f"target {target.name}: host_key is not a valid public key: {exc}") from exc
        return ([key], [], [])
    if target.known_hosts:
        try:
            return asyncssh.read_known_hosts(target.known_hosts)
        except (OSError, ValueError) as exc:
            raise UpstreamError(f"target {target.name}: cannot read known_hosts "
                                f"{target.known_hosts}: {exc}") from exc
    raise UpstreamError(f"target {target.name} has no pinned host key")


class Lease:
    """One agent channel's claim on a pooled connection (what :meth:`UpstreamPool.acquire` returns).

    Open upstream channels with :meth:`create_session` (asyncssh's arguments) and
    call :meth:`release` (or the pool's ``release``) when the agent's channel ends.
    """

    def __init__(self, pool: "UpstreamPool", entry: "_Pooled") -> None:
        self._pool = pool
        self._entry = entry
        self.channels: list[asyncssh.SSHClientChannel] = []   # opened through this lease
        self.opening = 0                                       # opens in progress
        self.released = False

    @property
    def target(self) -> str:
        return self._entry.key[0]

    @property
    def conn(self) -> asyncssh.SSHClientConnection:
        """The pooled connection (for asyncssh helpers that need it, e.g. an SFTP client)."""
        return self._entry.conn

    @property
    def weight(self) -> int:
        """How many channels it holds on its connection (one reserved before the first opens)."""
        return max(1, self.opening + len(self.channels))

    async def create_session(self, session_factory, *args, **kwargs):
        """``conn.create_session(...)``, safe to cancel: returns ``(channel, session)``.

        If the caller is cancelled meanwhile, the open goes on by itself; the channel
        it yields is closed at once and counted until it is, and the lease ends.
        """
        if self.released:
            raise UpstreamError(f"upstream connection to {self.target} already released")
        result = asyncio.get_running_loop().create_future()
        opening = asyncio.ensure_future(self._open(result, session_factory, args, kwargs))
        self.opening += 1
        try:
            chan, session = await result
        except asyncio.CancelledError:
            self.opening -= 1
            if not result.done():
                result.cancel()
            self._pool._orphan(self._entry, opening)   # it yields the channel nobody took
            self._pool._end(self)
            raise
        except BaseException:
            self.opening -= 1
            raise
        self.opening -= 1
        self.channels.append(chan)
        return chan, session

    async def _open(self, result: asyncio.Future, session_factory, args, kwargs):
        """Run asyncssh's open to its end; hand the result over (one loop turn, no more: a
        command that ends at once must not close its channel before its owner has it).
        Returns the channel, or None if the open failed."""
        try:
            chan, session = await self._entry.conn.create_session(session_factory, *args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller, if still there
            if not result.done():
                if isinstance(exc, asyncio.CancelledError):
                    result.cancel()
                else:
                    result.set_exception(exc)
            if isinstance(exc, (asyncio.CancelledError, KeyboardInterrupt, SystemExit)):
                raise
            return None
        if not result.done():
            result.set_result((chan, session))
        return chan

    def release(self) -> None:
        self._pool._end(self)


@dataclass(eq=False)
class _Pooled:
    conn: asyncssh.SSHClientConnection
    key: tuple
    leases: set = field(default_factory=set)
    reserved: int = 0                # agents whose connect just finished, not yet leased
    orphans: int = 0                 # channels (or opens) whose agent left, until closed
    idle_handle: asyncio.TimerHandle | None = None

    def load(self) -> int:
        return self.reserved + self.orphans + sum(lease.weight for lease in self.leases)


@dataclass(eq=False)
class _Connecting:
    task: asyncio.Task | None = None
    waiters: int = 0                 # agents waiting for this connect


@dataclass
class UpstreamPool:
    """Hands out upstream connections; ``load_key(name)`` returns an asyncssh key from the vault."""

    load_key: Callable[[str], asyncssh.SSHKey]
    connect_timeout: float = 10.0
    ciphers: tuple[str, ...] | None = None
    idle_timeout: float = IDLE_SECONDS
    max_connects: int = CONNECTS          # [settings] upstream_connects, per target
    queue_timeout: float = QUEUE_SECONDS  # [settings] upstream_queue_timeout
    _slots: ConnectSlots = field(default_factory=ConnectSlots)
    _pool: dict[tuple, list[_Pooled]] = field(default_factory=dict)
    _connecting: dict[tuple, list[_Connecting]] = field(default_factory=dict)
    _reapers: set = field(default_factory=set)
    _closed: bool = False

    @staticmethod
    def _key(target: Target) -> tuple:
        return (target.name, target.host, target.port, target.user, target.key,
                target.host_key, target.known_hosts)

    # -- leases ----------------------------------------------------------------
    async def acquire(self, target: Target) -> Lease:
        """A lease on a connection with room for one more channel; release it when done.

        Raises UpstreamError (HostKeyMismatch, VaultError) when no connection can be made.
        """
        key = self._key(target)
        while True:
            if self._closed:
                raise UpstreamError("bastion is shutting down")
            entry = self._with_room(key)
            if entry is None:
                entry = await self._wait_for_connect(key, target)
                entry.reserved -= 1
                if entry.conn.is_closed() or entry not in self._pool.get(key, []):
                    self._settle(entry)
                    continue                  # closed before this agent woke up: again
            lease = Lease(self, entry)
            entry.leases.add(lease)
            self._settle(entry)
            return lease

    def release(self, target: Target | None, lease: Lease | None) -> None:
        """The agent's channel is over (``target`` is ignored; kept for the callers).

        Idempotent; ``None`` (a caller whose lease already ended) is ignored."""
        if isinstance(lease, Lease):
            self._end(lease)

    def _with_room(self, key: tuple) -> _Pooled | None:
        entries = self._pool.get(key, [])
        for entry in [e for e in entries if e.conn.is_closed()]:
            self._drop(entry)
        for entry in self._pool.get(key, []):
            if entry.load() < MAX_SESSIONS_PER_CONNECTION:
                return entry
        return None

    def _end(self, lease: Lease) -> None:
        if lease.released:
            return
        lease.released = True
        entry = lease._entry
        entry.leases.discard(lease)
        for chan in lease.channels:           # usually closed already: then counted one turn
            self._orphan(entry, chan)
        self._settle(entry)

    # -- connects --------------------------------------------------------------
    async def _wait_for_connect(self, key: tuple, target: Target) -> _Pooled:
        """Join a connect in progress with room (or start one); its entry has a slot reserved."""
        pending = next((p for p in self._connecting.get(key, [])
                        if p.waiters < MAX_SESSIONS_PER_CONNECTION), None)
        if pending is None:
            pending = _Connecting()
            pending.task = asyncio.ensure_future(self._connect_entry(key, target, pending))
            pending.task.add_done_callback(_retrieve)
            self._connecting.setdefault(key, []).append(pending)
        pending.waiters += 1
        try:
            return await asyncio.shield(pending.task)
        except asyncio.CancelledError:
            pending.waiters -= 1
            task = pending.task
            if task.done() and not task.cancelled() and task.exception() is None:
                entry = task.result()             # it had reserved a slot for this agent
                entry.reserved -= 1
                self._settle(entry)
            elif not task.done() and pending.waiters == 0:
                task.cancel()                     # nobody wants it any more: abort the connect
            elif task.cancelled() and not asyncio.current_task().cancelling():
                # the pool aborted it (shutting down), this agent did not give up
                raise UpstreamError(f"connect to target {target.name} aborted: "
                                    "bastion is shutting down") from None
            raise
        except BaseException:
            pending.waiters -= 1
            raise

    async def _connect_entry(self, key: tuple, target: Target, pending: _Connecting) -> _Pooled:
        try:
            conn = await self._connect(key, target)
        finally:
            waiting = self._connecting.get(key, [])
            if pending in waiting:
                waiting.remove(pending)
            if not waiting:
                self._connecting.pop(key, None)
        if self._closed:
            conn.close()
            raise UpstreamError("bastion is shutting down")
        entry = _Pooled(conn, key, reserved=pending.waiters)
        self._pool.setdefault(key, []).append(entry)
        self._settle(entry)
        return entry

    async def _connect(self, key: tuple[Any, ...], target: Target) -> asyncssh.SSHClientConnection:
        """One login to ``target``, in its turn (bastion.ssh.upconnect: the per-target bound,
        the queue, the retry of a connect dropped before the banner)."""
        client_key = self.load_key(target.key)        # VaultError goes up as it is
        known_hosts = pinned_known_hosts(target)
        waited = await self._slots.enter(key, target.name, self.max_connects, self.queue_timeout)
        METRICS.observe("bastion_upstream_connect_queue_seconds", waited)
        if waited:
            log.info("upstream %s: connect started after %.2fs in the queue", target.name, waited)
        try:
            return await open_connection(target, client_key, known_hosts,
                                         self.connect_timeout, self.ciphers)
        except UpstreamError as exc:
            error = exc
            # the target failed a connect that had its turn: the ones behind it fail with it
            # (N agents to a dead target wait one connect_timeout, not one per place in line),
            # unless it answered and was only slow: then each connect behind gets its turn
            if exc.target_answered:
                raise
            failed = self._slots.fail_queued(key, lambda: _behind(error))
            if failed:
                log.info("upstream %s: %d queued connects fail with the one ahead of them: %s",
                         target.name, failed, exc)
            raise
        finally:
            self._slots.leave(key, self.max_connects)

    # -- channels whose agent left, idle connections -------------------------------
    def _orphan(self, entry: _Pooled, what) -> None:
        """Count ``what`` (a channel, or a task opening one) against ``entry`` until it is closed."""
        entry.orphans += 1
        task = asyncio.ensure_future(self._reap(entry, what))
        self._reapers.add(task)
        task.add_done_callback(self._reapers.discard)

    async def _reap(self, entry: _Pooled, what) -> None:
        try:
            if isinstance(what, asyncio.Future):
                chan = await what             # Lease._open: the channel, or None if none opened
                if chan is None:
                    return
                log.debug("upstream %s: closing a channel whose agent left while it opened",
                          entry.key[0])
                chan.close()
            else:
                chan = what
            await chan.wait_closed()
        finally:
            entry.orphans -= 1
            self._settle(entry)

    def _settle(self, entry: _Pooled) -> None:
        """Start the idle timer of a connection nothing uses; stop it once something does."""
        if entry.load() > 0 or self._closed:
            if entry.idle_handle is not None:
                entry.idle_handle.cancel()
                entry.idle_handle = None
        elif entry.idle_handle is None and entry in self._pool.get(entry.key, []):
            entry.idle_handle = asyncio.get_running_loop().call_later(
                self.idle_timeout, self._close_idle, entry)

    def _close_idle(self, entry: _Pooled) -> None:
        entry.idle_handle = None
        if entry.load() == 0:
            log.info("upstream closed after %gs idle: %s", self.idle_timeout, entry.key[0])
            self._drop(entry)
            entry.conn.close()

    def _drop(self, entry: _Pooled) -> None:
        entries = self._pool.get(entry.key, [])
        if entry in entries:
            entries.remove(entry)
        if not entries:
            self._pool.pop(entry.key, None)
        if entry.idle_handle is not None:
            entry.idle_handle.cancel()
            entry.idle_handle = None

    # -- state, shutdown -----------------------------------------------------------
    def stats(self) -> dict[str, dict[str, int]]:
        """Per target name: ``connections``, ``leases``, ``channels`` (held by leases, one
        reserved per lease before it opens any), ``orphans``, ``connecting`` (connects under
        way, queued ones too), ``queued`` (those waiting for their turn: ``upstream_connects``),
        ``waiting`` (agents waiting for a connect)."""
        out: dict[str, dict[str, int]] = {}

        def row(name: str) -> dict[str, int]:
            return out.setdefault(name, dict(connections=0, leases=0, channels=0, orphans=0,
                                             connecting=0, queued=0, waiting=0))
        for key, entries in self._pool.items():
            r = row(key[0])
            for e in entries:
                r["connections"] += 1
                r["leases"] += len(e.leases)
                r["channels"] += sum(lease.weight for lease in e.leases)
                r["orphans"] += e.orphans
        for key, pendings in self._connecting.items():
            r = row(key[0])
            r["connecting"] += len(pendings)
            r["queued"] += self._slots.queued(key)
            r["waiting"] += sum(p.waiters for p in pendings)
        return out

    def set_max_connects(self, limit: int) -> int:
        """``[settings] upstream_connects`` changed (a reload): a higher limit starts queued
        connects now, not as running ones end; how many started."""
        self.max_connects = limit
        return self._slots.admit(limit)

    def queued(self) -> int:
        """Connects waiting for their turn, all targets (the ``/metrics`` gauge)."""
        return self._slots.queued()

    def connecting(self) -> int:
        """Connects in progress (out of the queue), all targets."""
        return self._slots.active()

    async def close(self) -> None:
        self._closed = True
        for pendings in list(self._connecting.values()):
            for pending in pendings:
                pending.task.cancel()
        entries = [e for es in self._pool.values() for e in es]
        self._pool.clear()
        for entry in entries:
            if entry.idle_handle is not None:
                entry.idle_handle.cancel()
            entry.conn.close()
        for task in list(self._reapers):
            task.cancel()
        for entry in entries:
            try:
                await asyncio.wait_for(entry.conn.wait_closed(), 5)
            except (asyncio.TimeoutError, Exception):  # noqa: BLE001 - best effort at shutdown
                pass


def _behind(exc: UpstreamError) -> UpstreamError:
    """The error of a queued connect whose target just failed the connect ahead of it."""
    return type(exc)(f"{exc.message} (the connect ahead of this one in the queue; this one was "
                     f"not tried)", hint=exc.hint)


def _retrieve(task: asyncio.Task) -> None:
    """Mark a connect's error as seen (every waiter may have left before it came)."""
    if not task.cancelled():
        task.exception()
