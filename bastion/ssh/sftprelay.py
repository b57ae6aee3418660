"""The SFTP server the bastion runs for an agent: every operation decided, then relayed.

:class:`RelayServer` is an asyncssh ``SFTPServer`` whose methods do not touch the
bastion's disk: each one resolves its paths on the target first (``realpath`` on the
upstream SFTP session; for a name that does not exist yet, the realpath of its parent
plus the name), asks :func:`bastion.transfer.decide.decide` about each effect, and only
then relays the operation to the upstream SFTP client with the *resolved* path (so a
symlink swapped after the decision does not redirect it).  A denied operation answers
``SSH_FX_PERMISSION_DENIED`` with the rule in its message, and the agent's ``sftp``
gets the same line on stderr.

Every operation that reads or changes something becomes a ``transfers`` row
(bastion.recording.transfers); metadata operations (stat, realpath, readlink) are
recorded only when denied.  For a file opened, the row is written at close with the
bytes moved and, when the whole file was read (0 to EOF, in order) or written (created
or truncated, 0 onwards without gaps), the SHA-256 of those bytes; with
``[settings] store_transfers`` a masked copy too (:mod:`bastion.recording.content`).

A ``review`` decision holds the operation for an approver (:mod:`bastion.ssh.held`, as
for commands; the agent's sftp waits); once approved, the path is resolved and decided
again, and anything that changed meanwhile (a symlink swapped in) is refused.

Not covered: extended
attributes and locks (unsupported), the race of a directory component swapped for a
symlink between the decision and the operation (the final component is pinned).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import posixpath
import time
from typing import TYPE_CHECKING, Any, AsyncIterator

import asyncssh
from asyncssh import FXF_APPEND, FXF_CREAT, FXF_READ, FXF_TRUNC, FXF_WRITE, SFTPAttrs, SFTPName

from bastion.errors import RecordingError
from bastion.metrics import TO_AGENT, TO_HOST
from bastion.proto.sanitize import sanitize
from bastion.recording.transfers import TransferRow, record_transfer
from bastion.transfer.decide import META, READS, WRITES, Verdict, decide
from bastion.ssh.sftppipe import READ_MAX
from bastion.ssh.sftpreadahead import ReadAhead, block_size
from bastion.transfer.digest import Stream

if TYPE_CHECKING:  # pragma: no cover
    from bastion.ssh.sftp import SftpChannel

log = logging.getLogger("bastion.sftp")
audit = logging.getLogger("bastion.audit")

TARGET_CLOSED = "the target closed the sftp session"    # an operation's row says so
WRITE_CHUNK = 32 * 1024             # largest write sent upstream when the target sets no limit


def _text(path: bytes) -> str:
    return path.decode("utf-8", "surrogateescape")


def _raw(path: str) -> bytes:
    return path.encode("utf-8", "surrogateescape")


def _failed(exc: BaseException) -> str:
    """What an allowed operation's row says when it did not succeed: the target's answer, or,
    when the session ended or the request was given up under it, that nobody knows."""
    if isinstance(exc, asyncssh.SFTPError) and not isinstance(exc, asyncssh.SFTPConnectionLost):
        return str(exc.reason)
    if isinstance(exc, asyncio.CancelledError):
        return "the request was given up (the agent's channel ended); whether it ran is unknown"
    return f"{TARGET_CLOSED}; whether it ran is unknown"


class _File:
    """An agent's open file: the upstream file and what is recorded at close."""

    def __init__(self, up: Any, op: str, path: str, verdict: Verdict, whole_write: bool) -> None:
        self.up = up
        self.op = op
        self.path = path
        self.verdict = verdict
        self.whole_write = whole_write
        self.started = time.time()
        self.t0 = time.monotonic()
        self.stream = Stream()
        self.capture: Any = None           # bastion.recording.content.ContentCapture
        self.ahead: ReadAhead | None = None  # larger reads upstream (a read-only handle)


class RelayServer(asyncssh.SFTPServer):
    """One agent's SFTP session, relayed to ``owner.client`` (see the module doc)."""

    def __init__(self, chan: Any, owner: "SftpChannel", home: str) -> None:
        super().__init__(chan)
        self.owner = owner
        self.home = home
        limits = getattr(owner.client, "limits", None)
        max_write = getattr(limits, "max_write_len", 0)
        self.write_chunk = max_write if max_write > 0 else WRITE_CHUNK
        self.read_block = block_size(getattr(limits, "max_read_len", 0) or 0)
        self._in_flight: dict[int, TransferRow] = {}   # sent upstream, no answer yet

    # -- deciding and recording ------------------------------------------------------
    @property
    def up(self) -> Any:
        return self.owner.client

    def _verdict(self, effect: str, path: str, what: str) -> Verdict:
        ctx = self.owner.ctx
        return decide(ctx.services.config.policy, ctx.principal, ctx.target, effect, path,
                      home=self.home, what=f"sftp {what}", listing=what == "list")

    def _record(self, row: TransferRow) -> None:
        try:
            record_transfer(self.owner.rec, row)
        except RecordingError as exc:
            self.owner.recording_failed(exc)
            raise asyncssh.SFTPFailure("bastion: the transfer could not be recorded; the "
                                       "channel is stopped") from exc

    async def _check(self, op: str, effect: str, path: str, path2: str | None = None,
                     verdict_path: str | None = None, again: Any = None) -> Verdict:
        """Decide; a review is held for an approver (:meth:`_hold`); a refusal is recorded,
        told on stderr and raised as permission denied.  ``again``: a coroutine function
        that resolves the path anew after a hold (None: the path is pinned by a handle)."""
        verdict = self._verdict(effect, verdict_path or path, op)
        if verdict.action == "review" and effect != META:
            verdict = await self._hold(op, effect, path, path2, verdict_path or path, verdict,
                                       again)
        if verdict.allowed:
            return verdict
        self._record(TransferRow(op, path, "denied", verdict.action, verdict.rule,
                                 verdict.reason, path2=path2, started=time.time()))
        audit.warning("sftp denied principal=%s target=%s op=%s path=%r rule=%s",
                      self.owner.ctx.principal.subject, self.owner.ctx.target.name, op,
                      verdict_path or path, verdict.rule)
        # the path may hold bytes that are not UTF-8 (surrogates): shown, as it is to a reviewer
        message = sanitize(f"bastion: denied by rule {verdict.rule}: {verdict.reason}")
        self.owner.tell(message)
        raise asyncssh.SFTPPermissionDenied(message)

    async def _hold(self, op: str, effect: str, path: str, path2: str | None, decided: str,
                    verdict: Verdict, again: Any) -> Verdict:
        """Hold a review for an approver, then resolve and decide again: approved and still
        the same path under the same review rule runs; anything else is refused."""
        from bastion.approvals.notices import outcome_message
        from bastion.policy import Action, Decision
        from bastion.ssh.held import ask_approval
        line = f"sftp {op} {path}" + (f" -> {path2}" if path2 else "")
        decision = Decision(Action.REVIEW, verdict.rule, verdict.reason)
        hold = asyncio.ensure_future(ask_approval(self.owner.ctx, self.owner.rec,
                                                  self.owner.tell, line, decision, None,
                                                  "sftp"))
        self.owner.holds.add(hold)           # withdrawn if the agent's channel goes
        try:
            outcome = await hold
        except RecordingError as exc:
            self.owner.recording_failed(exc)
            raise asyncssh.SFTPFailure("bastion: the channel could not be recorded") from exc
        except asyncio.CancelledError:
            if hold.cancelled() and not self._cancelling():
                raise asyncssh.SFTPPermissionDenied("bastion: the request was withdrawn") \
                    from None
            raise
        finally:
            self.owner.holds.discard(hold)
        if self.owner.gone:
            return Verdict(False, "review", verdict.rule,
                           "the agent's channel closed during the hold; nothing was done")
        if not outcome.approved:
            return Verdict(False, "review", verdict.rule, outcome_message(outcome))
        now = await again() if again is not None else decided
        if now != decided:
            return Verdict(False, "deny", verdict.rule,
                           f"{path} resolved to {now} after the approval (it was {decided}); "
                           "refused, nothing was done")
        fresh = self._verdict(effect, now, op)
        if fresh.allowed:
            return fresh
        if fresh.action == "review" and fresh.rule == verdict.rule:
            who = outcome.approver or "an approver"
            return Verdict(True, "review", verdict.rule,
                           f"{verdict.reason}; approved by {who} (request "
                           f"{outcome.request_id})")
        return fresh

    @staticmethod
    def _cancelling() -> bool:
        task = asyncio.current_task()
        return bool(task is not None and task.cancelling())

    async def _done(self, op: str, path: str, verdict: Verdict, coro: Any,
                    path2: str | None = None) -> Any:
        """Run an allowed operation upstream and record its row (ok or the error)."""
        started, t0 = time.time(), time.monotonic()
        key = id(coro)
        self._in_flight[key] = TransferRow(op, path, "", verdict.action, verdict.rule,
                                           verdict.reason, path2=path2, started=started)
        try:
            result = await coro
        except BaseException as exc:
            if self._in_flight.pop(key, None) is not None:   # else: record_in_flight did
                row = TransferRow(op, path, f"error: {_failed(exc)}", verdict.action,
                                  verdict.rule, verdict.reason, path2=path2, started=started,
                                  duration=time.monotonic() - t0)
                if isinstance(exc, asyncssh.SFTPError):
                    self._record(row)         # a recording failure is what the agent is told
                else:
                    with contextlib.suppress(asyncssh.SFTPError):   # the cancel goes on
                        self._record(row)
            raise
        finally:
            pending = self._in_flight.pop(key, None)
        if pending is None:
            return result                   # recorded by record_in_flight
        self._record(TransferRow(op, path, "ok", verdict.action, verdict.rule, verdict.reason,
                                 path2=path2, started=started,
                                 duration=time.monotonic() - t0))
        return result

    def record_in_flight(self, why: str) -> None:
        """The upstream session is gone: a row for every allowed operation sent and not
        answered (it may have run), before the channel's recording closes."""
        rows, self._in_flight = list(self._in_flight.values()), {}
        for row in rows:
            try:
                record_transfer(self.owner.rec, dataclasses.replace(
                    row, result=f"error: {why}; whether it ran is unknown"))
            except RecordingError:
                return

    # -- resolving paths on the target ----------------------------------------------
    async def _real(self, path: bytes) -> str:
        """The target's realpath of an existing path (follows every symlink).  A missing
        path that a deny rule's ``reads`` names is refused, not reported missing (no probing
        of what exists in a denied tree)."""
        try:
            return _text(await self.up.realpath(path or b"."))
        except asyncssh.SFTPNoSuchFile:
            await self._check("realpath", META,
                              posixpath.normpath(posixpath.join(self.home, _text(path))))
            raise

    async def _entry(self, path: bytes) -> str:
        """The resolved path of a directory entry itself (its parent resolved, the last
        name kept: remove, rename and lstat act on a symlink, not on what it points to)."""
        trimmed = path.rstrip(b"/") or path
        parent, name = posixpath.split(trimmed)
        if name in (b"", b".", b".."):
            return await self._real(trimmed)
        base = await self._real(parent or b".")
        return posixpath.join(base, _text(name))

    async def _target(self, path: bytes) -> str:
        """Where an open for writing lands: the realpath, or for a new name its parent's
        realpath plus the name.  A dangling symlink is refused (its target is unknown)."""
        try:
            return await self._real(path)
        except asyncssh.SFTPNoSuchFile:
            pass
        entry = await self._entry(path)
        try:
            attrs = await self.up.lstat(_raw(entry))
        except asyncssh.SFTPNoSuchFile:
            return entry
        if attrs.type == asyncssh.FILEXFER_TYPE_SYMLINK:
            message = sanitize(f"bastion: {entry} is a symlink to a missing file; writing "
                               "through it is refused (remove it or write to the real path)")
            self.owner.tell(message)
            raise asyncssh.SFTPPermissionDenied(message)
        return entry

    # -- files ---------------------------------------------------------------------------
    async def open(self, path: bytes, pflags: int, attrs: SFTPAttrs) -> object:
        writes = bool(pflags & (FXF_WRITE | FXF_APPEND | FXF_CREAT | FXF_TRUNC))
        reads = bool(pflags & FXF_READ) or not writes
        resolve = self._target if writes else self._real
        real = await resolve(path)
        op = "open" if reads and writes else "put" if writes else "get"

        async def again() -> str:
            return await resolve(path)
        verdict = None
        if reads:
            verdict = await self._check(op, READS, real, again=again)
        if writes:
            verdict = await self._check(op, WRITES, real, again=again)
        assert verdict is not None
        whole = bool(pflags & FXF_TRUNC)
        if writes and not whole:
            try:
                await self.up.lstat(_raw(real))
            except asyncssh.SFTPNoSuchFile:
                whole = True               # a new file: what is written is all of it
        try:
            up = await self.up.open(_raw(real), pflags, attrs, encoding=None, block_size=0)
        except asyncssh.SFTPError as exc:
            self._record(TransferRow(op, real, f"error: {exc.reason}", verdict.action,
                                     verdict.rule, verdict.reason, started=time.time()))
            raise
        f = _File(up, op, real, verdict, whole)
        if op == "get" and self.read_block:
            f.ahead = ReadAhead(up, self.read_block)
        if op in ("get", "put") and self.owner.ctx.services.config.settings.store_transfers:
            self._capture(f)
        return f

    def _capture(self, f: _File) -> None:
        """Keep a masked copy of what ``f`` transfers (``[settings] store_transfers``)."""
        from bastion.recording.content import ContentCapture
        services, rec = self.owner.ctx.services, self.owner.rec
        try:
            f.capture = ContentCapture(rec._rec.data_dir, rec.path, services.detectors,
                                       services.config.settings.store_transfers_max)
        except RecordingError as exc:
            self.owner.recording_failed(exc)
            raise asyncssh.SFTPFailure("bastion: the transfer could not be recorded") from exc
        capture = f.capture

        def sink(data: bytes) -> None:
            try:
                capture.feed(data)
            except RecordingError as exc:
                self.owner.recording_failed(exc)
                raise asyncssh.SFTPFailure("bastion: the transfer could not be recorded") \
                    from exc
        f.stream.sink = sink

    async def read(self, file_obj: object, offset: int, size: int) -> bytes:
        f = self._file(file_obj)
        size = min(size, READ_MAX)          # a longer read is answered short (SFTP allows it)
        data: bytes = await (f.ahead.read(offset, size) if f.ahead is not None
                             else f.up.read(size, offset))
        if data:
            f.stream.feed(offset, data)
            self.owner.rec.bytes_out += len(data)        # host -> agent, as for output
            TO_AGENT(len(data))
        else:
            f.stream.at_eof(offset)
        return data

    async def write(self, file_obj: object, offset: int, data: bytes) -> int:
        f = self._file(file_obj)
        f.stream.feed(offset, data)         # in the agent's order (writes run concurrently)
        step = self.write_chunk
        try:
            if len(data) <= step:
                await f.up.write(data, offset)
            else:                           # over the target's limit: in pieces, all in flight
                await asyncio.gather(*(f.up.write(data[i:i + step], offset + i)
                                       for i in range(0, len(data), step)))
        except BaseException:
            f.stream.whole = False          # what the target holds is not what was hashed
            raise
        self.owner.rec.bytes_in += len(data)             # agent -> host, as for input
        TO_HOST(len(data))
        return len(data)

    async def close(self, file_obj: object) -> None:
        f = self._file(file_obj)
        result = "ok"
        if f.ahead is not None:
            f.ahead.close()
        try:
            await f.up.close()
        except asyncssh.SFTPError as exc:
            result = f"error: {exc.reason}"
            raise
        finally:
            if f.op == "get":
                digest = f.stream.digest(need_eof=True)
            else:
                digest = f.stream.digest(need_eof=False) if f.whole_write else None
            v = f.verdict
            content = None
            if f.capture is not None:
                try:
                    content = f.capture.close(complete=digest is not None)
                except RecordingError as exc:
                    self.owner.recording_failed(exc)
            self._record(TransferRow(f.op, f.path, result, v.action, v.rule, v.reason,
                                     nbytes=f.stream.moved, sha256=digest, started=f.started,
                                     duration=time.monotonic() - f.t0, content=content))
            await self.owner.drain()

    @staticmethod
    def _file(file_obj: object) -> _File:
        if not isinstance(file_obj, _File):
            raise asyncssh.SFTPInvalidHandle("invalid file handle")
        return file_obj

    async def fstat(self, file_obj: object) -> SFTPAttrs:
        attrs: SFTPAttrs = await self._file(file_obj).up.stat()
        return attrs

    async def fsetstat(self, file_obj: object, attrs: SFTPAttrs) -> None:
        f = self._file(file_obj)
        verdict = await self._check("setstat", WRITES, f.path)
        await self._done("setstat", f.path, verdict, f.up.setstat(attrs))

    async def fsync(self, file_obj: object) -> None:
        await self._file(file_obj).up.fsync()

    # -- metadata --------------------------------------------------------------------------
    async def realpath(self, path: bytes) -> bytes:
        real = await self._real(path)
        await self._check("realpath", META, real)
        return _raw(real)

    async def stat(self, path: bytes) -> SFTPAttrs:
        real = await self._real(path)
        await self._check("stat", META, real)
        attrs: SFTPAttrs = await self.up.stat(_raw(real))
        return attrs

    async def lstat(self, path: bytes) -> SFTPAttrs:
        entry = await self._entry(path)
        await self._check("lstat", META, entry)
        attrs: SFTPAttrs = await self.up.lstat(_raw(entry))
        return attrs

    async def readlink(self, path: bytes) -> bytes:
        entry = await self._entry(path)
        await self._check("readlink", META, entry)
        link: bytes = await self.up.readlink(_raw(entry))
        return link

    async def statvfs(self, path: bytes) -> Any:
        real = await self._real(path)
        await self._check("statvfs", META, real)
        return await self.up.statvfs(_raw(real))

    async def scandir(self, path: bytes) -> AsyncIterator[SFTPName]:
        real = await self._real(path)
        verdict = await self._check("list", READS, real, again=lambda: self._real(path))
        started, t0 = time.time(), time.monotonic()
        count = 0
        try:
            async for name in self.up.scandir(_raw(real)):
                count += 1
                yield name
        except asyncssh.SFTPError as exc:
            self._record(TransferRow("list", real, f"error: {exc.reason}", verdict.action,
                                     verdict.rule, verdict.reason, started=started))
            raise
        self._record(TransferRow("list", real, f"ok: {count} names", verdict.action,
                                 verdict.rule, verdict.reason, started=started,
                                 duration=time.monotonic() - t0))

    # -- changes ---------------------------------------------------------------------------
    async def setstat(self, path: bytes, attrs: SFTPAttrs) -> None:
        real = await self._real(path)
        verdict = await self._check("setstat", WRITES, real, again=lambda: self._real(path))
        await self._done("setstat", real, verdict, self.up.setstat(_raw(real), attrs))

    async def lsetstat(self, path: bytes, attrs: SFTPAttrs) -> None:
        entry = await self._entry(path)
        verdict = await self._check("setstat", WRITES, entry, again=lambda: self._entry(path))
        await self._done("setstat", entry, verdict,
                         self.up.setstat(_raw(entry), attrs, follow_symlinks=False))

    async def mkdir(self, path: bytes, attrs: SFTPAttrs) -> None:
        entry = await self._entry(path)
        verdict = await self._check("mkdir", WRITES, entry, again=lambda: self._entry(path))
        await self._done("mkdir", entry, verdict, self.up.mkdir(_raw(entry), attrs))

    async def rmdir(self, path: bytes) -> None:
        entry = await self._entry(path)
        verdict = await self._check("rmdir", WRITES, entry, again=lambda: self._entry(path))
        await self._done("rmdir", entry, verdict, self.up.rmdir(_raw(entry)))

    async def remove(self, path: bytes) -> None:
        entry = await self._entry(path)
        verdict = await self._check("remove", WRITES, entry, again=lambda: self._entry(path))
        await self._done("remove", entry, verdict, self.up.remove(_raw(entry)))

    async def _two(self, op: str, oldpath: bytes, newpath: bytes) -> tuple[str, str, Verdict]:
        old, new = await self._entry(oldpath), await self._entry(newpath)
        await self._check(op, WRITES, old, new, again=lambda: self._entry(oldpath))
        verdict = await self._check(op, WRITES, old, new, verdict_path=new,
                                    again=lambda: self._entry(newpath))
        return old, new, verdict

    async def rename(self, oldpath: bytes, newpath: bytes) -> None:
        old, new, verdict = await self._two("rename", oldpath, newpath)
        await self._done("rename", old, verdict, self.up.rename(_raw(old), _raw(new)),
                         path2=new)

    async def posix_rename(self, oldpath: bytes, newpath: bytes) -> None:
        old, new, verdict = await self._two("rename", oldpath, newpath)
        await self._done("rename", old, verdict, self.up.posix_rename(_raw(old), _raw(new)),
                         path2=new)

    async def link(self, oldpath: bytes, newpath: bytes) -> None:
        old, new, verdict = await self._two("link", oldpath, newpath)
        await self._done("link", old, verdict, self.up.link(_raw(old), _raw(new)), path2=new)

    async def symlink(self, oldpath: bytes, newpath: bytes) -> None:
        entry = await self._entry(newpath)
        verdict = await self._check("symlink", WRITES, entry,
                                    again=lambda: self._entry(newpath))
        await self._done("symlink", entry, verdict, self.up.symlink(oldpath, _raw(entry)),
                         path2=_text(oldpath))

    def exit(self) -> None:
        self.owner.finished()
