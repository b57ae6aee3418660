"""Resolving paths on a target, for transfers decided outside an sftp session (rsync).

:class:`Resolver` opens an SFTP session upstream on a pooled connection (the vault key,
no shell involved), and answers what :mod:`bastion.ssh.sftprelay` answers for its own
requests: the target user's home, the realpath of an existing path, where a write lands
for a name that does not exist yet (the nearest existing ancestor resolved, the rest
kept), and whether a path is a directory.  A dangling symlink is refused (its target is
unknown).  Use it as ``async with Resolver(services, target) as r: ...``.

Not covered: pinning.  The answers are true when given; rsync then opens the paths
itself (docs/TRANSFERS.md, "Limits").
"""

from __future__ import annotations

import asyncio
import posixpath
from typing import Any

import asyncssh
from asyncssh.sftp import start_sftp_client
from asyncssh.stream import SSHClientStreamSession, SSHReader, SSHWriter

from bastion.errors import UpstreamError

SFTP_VERSION = 3


class DanglingLink(Exception):
    """A path whose last component is a symlink to nothing: where it leads is unknown."""


def _raw(path: str) -> bytes:
    return path.encode("utf-8", "surrogateescape")


def _text(path: bytes) -> str:
    return path.decode("utf-8", "surrogateescape")


class Resolver:
    """An upstream SFTP session used only to resolve paths (see the module doc)."""

    def __init__(self, services: Any, target: Any) -> None:
        self.services = services
        self.target = target
        self.lease: Any = None
        self.client: Any = None
        self.home = "/"

    async def __aenter__(self) -> "Resolver":
        self.lease = await self.services.pool.acquire(self.target)
        try:
            chan, session = await self.lease.create_session(SSHClientStreamSession,
                                                            subsystem="sftp", encoding=None)
            reader: SSHReader[bytes] = SSHReader(session, chan)
            writer: SSHWriter[bytes] = SSHWriter(session, chan)
            self.client = await start_sftp_client(
                self.lease.conn, asyncio.get_running_loop(), "strict", reader, writer, None,
                "strict", SFTP_VERSION)
            self.home = _text(await self.client.realpath(b"."))
        except (asyncssh.Error, OSError) as exc:
            await self.__aexit__(None, None, None)
            reason = getattr(exc, "reason", None) or str(exc)
            raise UpstreamError(f"target {self.target.name} could not resolve paths "
                                f"(sftp: {reason})") from exc
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        client, self.client = self.client, None
        if client is not None:
            client.exit()
        lease, self.lease = self.lease, None
        if lease is not None:
            lease.release()

    async def real(self, path: str) -> str | None:
        """The realpath of an existing path, or None if it does not exist."""
        try:
            return _text(await self.client.realpath(_raw(path)))
        except asyncssh.SFTPNoSuchFile:
            return None

    async def landing(self, path: str) -> str:
        """Where a write to ``path`` lands: its realpath, or its nearest existing ancestor's
        realpath plus the names below it.  Raises DanglingLink."""
        real = await self.real(path)
        if real is not None:
            await self._not_dangling(real)
            return real
        trimmed = path.rstrip("/") or "/"
        parent, name = posixpath.split(trimmed)
        if name in ("", ".", "..") or parent == trimmed:
            return posixpath.normpath(trimmed)
        base = await self.landing(parent or "/")
        entry = posixpath.join(base, name)
        await self._not_dangling(entry)
        return entry

    async def _not_dangling(self, path: str) -> None:
        try:
            attrs = await self.client.lstat(_raw(path))
        except asyncssh.SFTPNoSuchFile:
            return
        if attrs.type == asyncssh.FILEXFER_TYPE_SYMLINK:
            try:
                await self.client.stat(_raw(path))
            except asyncssh.SFTPNoSuchFile:
                raise DanglingLink(path) from None

    async def is_dir(self, path: str) -> bool | None:
        """Is ``path`` a directory (following symlinks)?  None: it does not exist."""
        try:
            attrs = await self.client.stat(_raw(path))
        except asyncssh.SFTPNoSuchFile:
            return None
        return bool(attrs.type == asyncssh.FILEXFER_TYPE_DIRECTORY)
