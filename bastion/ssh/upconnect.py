"""Opening one upstream connection, for :class:`bastion.ssh.upstream.UpstreamPool`.

Two things a login storm needs, beside the pool's sharing of connects:

* **A per-target bound on connects in progress** (:class:`ConnectSlots`,
  ``[settings] upstream_connects``, 8 by default: below OpenSSH's ``MaxStartups``
  start of 10, so a default sshd drops none of the bastion's own connects).  A
  connect beyond it waits in a FIFO queue for its target, at most
  ``[settings] upstream_queue_timeout`` seconds (60 by default), then fails closed
  with ``N connects to target X already in progress; waited Ns``.  The
  ``connect_timeout`` of a connect counts from the moment it leaves the queue.
  When a connect that had its turn fails (the target did not answer in time,
  refused the TCP connect, presented another host key, refused the key), the
  connects queued behind it for that target fail with its error at once: agents
  to a target that does not answer all fail after about one ``connect_timeout``,
  not one per place in the queue.  A target that said its SSH version within
  ``connect_timeout`` is up, only slow (in a login storm the bastion's own CPU is often
  what is short): its login may take ``LOGIN_FACTOR`` (3) times ``connect_timeout``, and
  when even that runs out (``target_answered`` on the error) the connects behind it are
  not failed with it: each gets its own turn.
* **A retry of a connect the target dropped before its SSH banner**
  (:func:`open_connection`): sshd past its ``MaxStartups`` closes (or resets) a new
  connection at once, before it says ``SSH-2.0-``.  Such a connect is tried again
  after a short, growing, jittered pause while its ``connect_timeout`` allows.
  Nothing else is retried: a refused TCP connect, a host key mismatch, an
  authentication refusal, a close after the banner fail at once.

A task waiting in the queue that is cancelled (nobody wants its connect any more)
leaves the queue; a slot handed to it at that moment is passed on.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from typing import Any, Callable

import asyncssh

from bastion.config.targets import Target
from bastion.errors import HostKeyMismatch, UpstreamError
from bastion.metrics import METRICS
from bastion.ssh.algs import client_algs
from bastion.ssh.wire import SocketTunnel

log = logging.getLogger("bastion.upstream")

CONNECTS = 8                 # default of [settings] upstream_connects
QUEUE_SECONDS = 60.0         # default of [settings] upstream_queue_timeout
RETRY_FIRST = 0.05           # first pause before connecting again after a drop (s)
RETRY_MAX = 1.0              # longest pause between two attempts (s)
LOGIN_FACTOR = 3             # a target that said its SSH version may take this x connect_timeout

# what a connection closed or reset by the peer looks like from asyncssh.connect
_DROPPED = (ConnectionResetError, ConnectionAbortedError, BrokenPipeError,
            asyncssh.ConnectionLost)


class ConnectSlots:
    """Per-key count of connects in progress and FIFO queue of those waiting for a slot.

    ``limit`` is passed on each call (the pool's current setting): raising it lets
    queued connects start at once through :meth:`admit` (a reload calls it); lowering it
    lets none start until fewer than the new limit are in progress.
    """

    def __init__(self) -> None:
        self._active: dict[Any, int] = {}
        self._queued: dict[Any, deque[asyncio.Future[None]]] = {}

    async def enter(self, key: Any, name: str, limit: int, wait: float) -> float:
        """Take a slot for ``key`` (waiting in line up to ``wait`` seconds); returns the
        seconds waited.  Raises UpstreamError when the wait is over; the caller must
        :meth:`leave` once for every ``enter`` that returned."""
        if self._active.get(key, 0) < limit and not self.queued(key):
            self._active[key] = self._active.get(key, 0) + 1
            return 0.0
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queued.setdefault(key, deque()).append(fut)
        started = time.monotonic()
        try:
            async with asyncio.timeout(wait):
                await fut
        except TimeoutError:
            if self._handed(fut):           # the slot came as the wait ran out: pass it on
                self.leave(key, limit)
            self._unqueue(key, fut)
            raise UpstreamError(
                f"{self._active.get(key, 0)} connects to target {name} already in progress; "
                f"waited {wait:g}s",
                hint="raise [settings] upstream_connects if the target's sshd takes more "
                     "(its MaxStartups), or upstream_queue_timeout") from None
        except asyncio.CancelledError:
            if self._handed(fut):
                self.leave(key, limit)
            self._unqueue(key, fut)
            raise
        return time.monotonic() - started

    def leave(self, key: Any, limit: int) -> None:
        """A connect of ``key`` is over: its slot goes to the first in line, if any."""
        left = self._active.get(key, 0) - 1
        if left > 0:
            self._active[key] = left
        else:
            self._active.pop(key, None)
        self._hand_slots(key, limit)

    def admit(self, limit: int) -> int:
        """The limit changed: connects queued under any key start while fewer than ``limit``
        are in progress; how many started."""
        before = self.active()
        for key in list(self._queued):
            self._hand_slots(key, limit)
        return self.active() - before

    def _hand_slots(self, key: Any, limit: int) -> None:
        queue = self._queued.get(key)
        while queue and self._active.get(key, 0) < limit:
            fut = queue.popleft()
            if not fut.done():
                fut.set_result(None)
                self._active[key] = self._active.get(key, 0) + 1
        if not queue:
            self._queued.pop(key, None)

    def fail_queued(self, key: Any, make_error: Callable[[], BaseException]) -> int:
        """Every connect queued for ``key`` now fails with ``make_error()``; how many."""
        queue = self._queued.pop(key, None) or deque()
        failed = 0
        for fut in queue:
            if not fut.done():
                fut.set_exception(make_error())
                failed += 1
        return failed

    def queued(self, key: Any | None = None) -> int:
        """Connects waiting for a slot, of ``key`` or of every key."""
        queues = [self._queued.get(key, ())] if key is not None else list(self._queued.values())
        return sum(1 for q in queues for fut in q if not fut.done())

    def active(self, key: Any | None = None) -> int:
        """Connects in progress (holding a slot), of ``key`` or of every key."""
        return self._active.get(key, 0) if key is not None else sum(self._active.values())

    @staticmethod
    def _handed(fut: asyncio.Future[None]) -> bool:
        return fut.done() and not fut.cancelled() and fut.exception() is None

    def _unqueue(self, key: Any, fut: asyncio.Future[None]) -> None:
        queue = self._queued.get(key)
        if queue is not None:
            try:
                queue.remove(fut)
            except ValueError:
                pass
            if not queue:
                self._queued.pop(key, None)


class _WatchedTunnel(SocketTunnel):
    """A :class:`SocketTunnel` that keeps the connection it made, to ask afterwards
    whether the target said its SSH version before it went away."""

    conn: Any = None

    async def create_connection(self, session_factory: Callable[[], asyncio.Protocol],
                                host: str, port: int) -> tuple[asyncio.BaseTransport, Any]:
        transport, conn = await super().create_connection(session_factory, host, port)
        self.conn = conn
        return transport, conn

    def answered(self) -> bool:
        """The target said its ``SSH-`` version line on this connection."""
        return self.conn is not None and self.conn.get_extra_info("server_version") is not None

    def dropped_before_banner(self) -> bool:
        """TCP connected, then closed or reset before the server's ``SSH-`` version line."""
        return self.conn is not None and self.conn.get_extra_info("server_version") is None


def retry_pause(attempt: int) -> float:
    """Seconds to wait before attempt ``attempt + 1`` (``attempt`` >= 1 drops so far)."""
    return random.uniform(0.5, 1.0) * min(RETRY_MAX, RETRY_FIRST * 2.0 ** (attempt - 1))


async def open_connection(target: Target, client_key: asyncssh.SSHKey, known_hosts: Any,
                          connect_timeout: float, ciphers: tuple[str, ...] | None
                          ) -> asyncssh.SSHClientConnection:
    """Log in to ``target``; retries a drop before the banner while ``connect_timeout``
    (counted from now) allows; a target that said its SSH version by then gets up to
    ``LOGIN_FACTOR`` x ``connect_timeout`` in all to complete the login.

    Raises UpstreamError (HostKeyMismatch) with the reason an operator can act on.
    """
    started = time.monotonic()
    dropped = 0
    tunnel: _WatchedTunnel | None = None
    loop = asyncio.get_running_loop()
    extend: asyncio.TimerHandle | None = None
    try:
        async with asyncio.timeout(connect_timeout) as budget:
            def more_for_a_target_that_answered() -> None:
                # called just before the timeout: a target that said its SSH version is up,
                # only slow (a storm); its login may take LOGIN_FACTOR x connect_timeout
                if tunnel is not None and tunnel.answered():
                    budget.reschedule(loop.time() + (LOGIN_FACTOR - 1) * connect_timeout)
            extend = loop.call_at(loop.time() + connect_timeout * 0.99,
                                  more_for_a_target_that_answered)
            while True:
                tunnel = _WatchedTunnel()
                try:
                    conn = await asyncssh.connect(
                        target.host, target.port, username=target.user,
                        client_keys=[client_key], known_hosts=known_hosts,
                        agent_path=None, config=None, preferred_auth="publickey",
                        x509_trusted_certs=None, gss_host=None,
                        keepalive_interval=30, keepalive_count_max=3,
                        tunnel=tunnel,                # TCP with joined writes (bastion.ssh.wire)
                        **client_algs(ciphers),
                    )
                    break
                except _DROPPED:
                    if not tunnel.dropped_before_banner():
                        raise
                    dropped += 1
                    pause = retry_pause(dropped)
                    METRICS.inc("bastion_upstream_connect_retries_total")
                    log.info("upstream %s: connection dropped before the SSH banner (the "
                             "target's MaxStartups?), attempt %d; again in %.2fs",
                             target.name, dropped, pause)
                    await asyncio.sleep(pause)
    except TimeoutError as exc:
        answered = tunnel is not None and tunnel.answered()
        if answered:
            error = UpstreamError(f"target {target.name} ({target.host}:{target.port}) answered "
                                  f"but the login did not complete within "
                                  f"{LOGIN_FACTOR * connect_timeout:g}s",
                                  hint="a busy target or bastion: raise [settings] "
                                       "connect_timeout if this is its usual pace")
        else:
            more = (f" ({dropped} attempts dropped before the SSH banner: the target's sshd "
                    f"refuses new connections, MaxStartups?)" if dropped else "")
            error = UpstreamError(f"target {target.name} ({target.host}:{target.port}) did not "
                                  f"answer within {connect_timeout:g}s{more}")
        error.target_answered = answered
        raise error from exc
    except asyncssh.HostKeyNotVerifiable as exc:
        raise HostKeyMismatch(
            f"target {target.name} ({target.host}:{target.port}) presented a host key that "
            f"does not match the pinned one; refusing to connect",
            hint="if the host was rebuilt, update host_key in policy.toml after checking it") from exc
    except asyncssh.PermissionDenied as exc:
        raise UpstreamError(f"target {target.name} refused the vault key {target.key!r} "
                            f"for {target.user}@{target.host}",
                            hint=f"add the output of `bastion keys list` for {target.key} "
                                 "to the target's authorized_keys") from exc
    except (OSError, asyncssh.Error) as exc:
        reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or str(exc)
        raise UpstreamError(f"cannot reach target {target.name} ({target.host}:{target.port}): "
                            f"{reason}") from exc
    finally:
        if extend is not None:
            extend.cancel()
    METRICS.observe("bastion_upstream_connect_seconds", time.monotonic() - started)
    log.info("upstream connected: %s (%s@%s:%s)%s", target.name, target.user, target.host,
             target.port, f" after {dropped} dropped attempts" if dropped else "")
    return conn
