"""Upstream connections: the bastion's own SSH connections to targets.

The bastion logs in to a target with the key named by ``[[targets]] key`` from
the vault, and accepts only the pinned host key (``host_key`` or the
``known_hosts`` file of the target): there is no trust on first use.

Connections are pooled per target and shared by the sessions of every agent
reaching that target (the login upstream is the target's, not the agent's, so
sharing reveals nothing).  A pooled connection carries at most
``MAX_SESSIONS_PER_CONNECTION`` channels at once (OpenSSH's ``MaxSessions``
defaults to 10) and is closed after ``IDLE_SECONDS`` without channels.

Not covered: jump chains upstream, password or keyboard-interactive login
upstream, host certificates upstream (pin the key).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Callable

import asyncssh

from bastion.config import Target
from bastion.ssh.algs import client_algs
from bastion.errors import HostKeyMismatch, UpstreamError, VaultError
from bastion.ssh.wire import SocketTunnel

log = logging.getLogger("bastion.upstream")

MAX_SESSIONS_PER_CONNECTION = 8
IDLE_SECONDS = 30.0


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


@dataclass
class _Pooled:
    conn: asyncssh.SSHClientConnection
    channels: int = 0
    idle_handle: asyncio.TimerHandle | None = None


@dataclass
class UpstreamPool:
    """Hands out upstream connections; ``load_key(name)`` returns an asyncssh key from the vault."""

    load_key: Callable[[str], asyncssh.SSHKey]
    connect_timeout: float = 10.0
    ciphers: tuple[str, ...] | None = None
    _pool: dict[tuple, list[_Pooled]] = field(default_factory=dict)
    _locks: dict[tuple, asyncio.Lock] = field(default_factory=dict)
    _closed: bool = False

    @staticmethod
    def _key(target: Target) -> tuple:
        return (target.name, target.host, target.port, target.user, target.key,
                target.host_key, target.known_hosts)

    async def acquire(self, target: Target) -> asyncssh.SSHClientConnection:
        """A connection with room for one more channel; call :meth:`release` when the channel ends."""
        if self._closed:
            raise UpstreamError("bastion is shutting down")
        key = self._key(target)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            entries = self._pool.setdefault(key, [])
            entries[:] = [e for e in entries if not e.conn.is_closed()]
            for entry in entries:
                if entry.channels < MAX_SESSIONS_PER_CONNECTION:
                    break
            else:
                entry = _Pooled(await self._connect(target))
                entries.append(entry)
            entry.channels += 1
            if entry.idle_handle:
                entry.idle_handle.cancel()
                entry.idle_handle = None
            return entry.conn

    def release(self, target: Target, conn: asyncssh.SSHClientConnection) -> None:
        for entry in self._pool.get(self._key(target), []):
            if entry.conn is conn:
                entry.channels = max(0, entry.channels - 1)
                if entry.channels == 0 and not self._closed:
                    loop = asyncio.get_running_loop()
                    entry.idle_handle = loop.call_later(IDLE_SECONDS, self._close_idle, target, entry)
                return

    def _close_idle(self, target: Target, entry: _Pooled) -> None:
        if entry.channels == 0:
            entries = self._pool.get(self._key(target), [])
            if entry in entries:
                entries.remove(entry)
            entry.conn.close()

    async def _connect(self, target: Target) -> asyncssh.SSHClientConnection:
        try:
            client_key = self.load_key(target.key)
        except VaultError:
            raise
        known_hosts = pinned_known_hosts(target)
        try:
            conn = await asyncio.wait_for(asyncssh.connect(
                target.host, target.port, username=target.user,
                client_keys=[client_key], known_hosts=known_hosts,
                agent_path=None, config=None, preferred_auth="publickey",
                x509_trusted_certs=None, gss_host=None,
                keepalive_interval=30, keepalive_count_max=3,
                tunnel=SocketTunnel(),          # TCP with joined writes (bastion.ssh.wire)
                **client_algs(self.ciphers),
            ), timeout=self.connect_timeout)
        except asyncio.TimeoutError as exc:
            raise UpstreamError(f"target {target.name} ({target.host}:{target.port}) did not answer "
                                f"within {self.connect_timeout:g}s") from exc
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
        log.info("upstream connected: %s (%s@%s:%s)", target.name, target.user, target.host, target.port)
        return conn

    async def close(self) -> None:
        self._closed = True
        conns = [e.conn for entries in self._pool.values() for e in entries]
        self._pool.clear()
        for conn in conns:
            conn.close()
        for conn in conns:
            try:
                await asyncio.wait_for(conn.wait_closed(), 5)
            except (asyncio.TimeoutError, Exception):  # noqa: BLE001 - best effort at shutdown
                pass
