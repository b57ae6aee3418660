"""The recording API the SSH layer calls: Recorder, SessionHandle, ChannelRecording.

Contract for callers (the asyncio event loop):

* Every method returns at once; none touches the disk.  Each takes its
  timestamp when called (``time.time()`` for the index, ``time.monotonic()``
  for offsets into the recording) and enqueues an operation for the recording
  worker process (bastion.recording.process; bounded queue, capacity
  documented in bastion.recording.writer).
* Flow control: after feeding data, a caller checks
  ``channel.over_high_water()`` and, if true, stops reading from the peer and
  ``await channel.drain()`` before reading again.
* Output reaches the agent only once it is recorded: the SSH layer writes to the
  agent through ``channel.gate(agent_channel, on_failure)``
  (bastion.recording.gate), which holds each write until the recording worker has
  acknowledged everything queued before it.
* Fail closed: ``Recorder.open`` raises RecordingError when the data dir or
  index is not writable; once recording fails (disk full, I/O error, the index
  locked, the worker died) ``healthy()`` is False and ``start_session`` raises
  RecordingError; every channel open at that moment is *lost*: its
  ``output``/``input``/``resize``/``marker``/``command`` raise, and the gate calls
  ``on_failure`` at once -- the SSH layer must then end the channel: a session
  never runs unrecorded.  ``close`` methods and ``refused`` never raise.
* Recovery: a new worker is started with backoff, finishes what the failed one
  left (the lost channels' rows and recordings close with a failure marker) and
  must pass a probe; then ``healthy()`` is True again (bastion.recording.supervisor).
  ``status()`` tells where it stands (``bastion status``).
* Order of closing: a command row is final (sealed) when its result is recorded or
  its channel closes, a channel row when it closes, a session row after all its
  channels.  So a caller that still expects a command's exit status (the agent left,
  the upstream command has not ended yet) keeps that channel open and closes it with
  the status; ``SessionHandle.close(wait_for_channels=True)`` meanwhile only marks the
  session closing, and its row follows the last channel (``Recorder.close`` closes
  everything at shutdown).
* Nothing is dropped silently: past ``max_bytes`` a recording gets a
  "truncated" marker and no more data (bytes are still counted and the
  index says ``truncated``); calls on a closed channel are logged.

Layout on disk: ``DATA_DIR/index.sqlite`` (schema.py) and
``DATA_DIR/recordings/YYYY/MM/DD/s<session>-c<channel>.cast`` (UTC date of the
channel start), one asciicast v2 file per channel (bastion.proto.asciicast);
directories 0700, files 0600 whatever the umask (bastion.private).
One process records into a data dir at a time (``DATA_DIR/recorder.lock``);
``DATA_DIR/recorder.reserve`` is space kept for closing channels when the disk
fills (bastion.recording.health); ``DATA_DIR/status.sock`` answers ``bastion
status`` (bastion.recording.status).
Ids of sessions, channels and commands are allocated here, in memory, from
the index's high-water marks, so ``start_session``/``command`` can return them
without waiting for the disk.

``ChannelRecording`` (one channel's calls) lives in channelrecording.py and is imported from
here as before.

Not covered: reading the index (query.py), verifying (verify.py), replay (player.py).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from bastion import store
from bastion.errors import RecordingError
from bastion.private import make_private_dirs, open_private_file
from bastion.proto import asciicast
from bastion.proto.sanitize import sanitize
from bastion.secret import SECRET_NAME
from bastion.recording import schema, shares, tailjournal
from bastion.recording.channelrecording import ChannelRecording
from bastion.recording.recover import recover_interrupted
from bastion.recording.supervisor import BACKOFF, Supervisor
from bastion.recording.ops import (OP_CHANNEL_OPEN, OP_MASKS, OP_REFUSED, OP_SESSION_CLOSE,
                                   OP_SESSION_START)

if TYPE_CHECKING:  # pragma: no cover
    from bastion.identity.principal import Principal

__all__ = ["ChannelRecording", "Recorder", "SessionHandle"]

log = logging.getLogger("bastion.recording")

DEFAULT_MAX_BYTES = 256 * 1024 * 1024
MIN_MAX_BYTES = 4096
LOCK_NAME = "recorder.lock"
LOCK_WAIT = 3.0              # seconds to wait for a previous process's worker to exit
SESSION_STATUSES = ("closed", "interrupted")


class Recorder:
    """Records sessions of one ``bastion serve`` process into a data dir."""

    def __init__(self, data_dir: Path, writer: Supervisor, ids: dict[str, int], lock_fd: int,
                 max_bytes: int, worker: int = 0) -> None:
        self.data_dir = data_dir
        self.max_bytes = max_bytes
        self._writer = writer
        self.worker = worker                  # 0, or N of `bastion serve --workers` (shares.py)
        self._session_ids = schema.id_counter(ids, "sessions", self.worker)
        self._channel_ids = schema.id_counter(ids, "channels", self.worker)
        self._command_ids = schema.id_counter(ids, "commands", self.worker)
        self._lock_fd = lock_fd
        self._sessions: dict[int, SessionHandle] = {}
        self._mask_sets: dict[int, tuple[int, Any]] = {}   # id(detectors) -> (key, detectors) sent to the worker
        self._closed = False
        self._status: Any = None             # bastion.recording.status.StatusServer
        # what else `bastion status` shows of this process (the policy in force: services.py)
        self.status_extra: Callable[[], dict[str, Any]] | None = None
        self.recovered: list[int] = []       # sessions marked interrupted at open

    @classmethod
    def open(cls, data_dir: Path, *, max_bytes: int = DEFAULT_MAX_BYTES,
             backoff: tuple[float, float] = BACKOFF, journal_key: bytes | None = None,
             detectors: Any = None, worker: int = 0, recover_all: bool = True,
             store_key_for: Callable[[bytes], bytes] | None = None) -> "Recorder":
        """Open/create the index and recordings dir, recover, start the recording worker.

        ``backoff``: the first and longest wait before a new worker after a failure.
        ``journal_key``: keeps the maskers' undecided tails in the encrypted tail journal
        (bastion.recording.tailjournal; without it a kill -9 of the bastion and its worker
        together loses them); ``detectors`` mask what the last journal held, at recovery.
        ``worker``: this process is worker N of ``bastion serve --workers`` (its own lock,
        journal, status socket and ids: bastion.recording.shares); ``recover_all`` False
        marks interrupted only its own sessions (a restart after a crash, peers running).
        ``store_key_for``: on PostgreSQL, derives the key of the store's tail journal from
        its salt (bastion.recording.tailstore: a peer taking over this node's sessions reads it).
        """
        data_dir = Path(data_dir)
        if max_bytes < MIN_MAX_BYTES:
            raise RecordingError(f"recording_max_bytes must be at least {MIN_MAX_BYTES}, got {max_bytes}")
        rec_dir = data_dir / schema.RECORDINGS_DIR
        try:
            make_private_dirs(rec_dir)
            probe = rec_dir / f".probe-{os.getpid()}"
            fd = open_private_file(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            try:
                os.write(fd, b"probe\n")
                os.fsync(fd)
            finally:
                os.close(fd)
                probe.unlink(missing_ok=True)
        except OSError as exc:
            raise RecordingError(
                f"cannot write recordings into {rec_dir}: {exc.strerror or exc}",
                hint="bastion refuses to run sessions it cannot record; fix the data dir's "
                     "permissions or free space, or pass another --data-dir") from exc
        lock_fd = _lock(data_dir, shares.lock_name(worker))
        peers: list[int] = []            # recovering every session: no older worker may run
        try:
            if worker and recover_all:
                for path in sorted(data_dir.glob("recorder.w*.lock")):
                    if path.name != shares.lock_name(worker):
                        peers.append(_lock(data_dir, path.name))
            conn = schema.connect(data_dir)
            try:
                tails: dict[Any, Any] = {}
                if journal_key:
                    tails = (tailjournal.read_all(rec_dir, journal_key) if recover_all else
                             tailjournal.read(rec_dir, journal_key, shares.journal_name(worker)))
                recovered = recover_interrupted(
                    conn, data_dir, tails=tails, detectors=detectors, max_bytes=max_bytes,
                    # SQLite: a worker's sessions by id; PostgreSQL: by node (NODE-wN)
                    only=("" if store.current().postgres else
                          shares.own_sessions_sql(0 if recover_all else worker)))
                ids = schema.next_ids(conn)
                store_key = None
                if store_key_for is not None and store.current().postgres:
                    from bastion.recording import tailstore as store_tails
                    store_key = store_tails.key_for(conn, store_key_for)
            finally:
                conn.close()
                for fd in peers:
                    os.close(fd)
                peers.clear()
            journal = None
            if journal_key:
                journal = tailjournal.TailJournal(rec_dir, journal_key,
                                                  shares.journal_name(worker))
                try:
                    journal.start()         # what the last one held is in the recordings now
                except OSError as exc:
                    raise RecordingError(
                        f"cannot write the tail journal {journal.path}: {exc.strerror or exc}",
                        hint="fix the data dir's permissions or free space") from exc
            writer = Supervisor(data_dir, max_bytes, lock_fd, backoff=backoff,
                                tail_key=store_key)
            writer.journal = journal
        except BaseException:
            for fd in [lock_fd, *peers]:
                os.close(fd)
            raise
        rec = cls(data_dir, writer, ids, lock_fd, max_bytes, worker=worker)
        rec.recovered = recovered
        if detectors and store.current().postgres:
            rec._mask_key(detectors)   # the worker masks a dead peer's tails with them (leases)
        from bastion.recording.status import StatusServer
        try:
            rec._status = StatusServer(data_dir, rec.status, shares.status_name(worker))
        except OSError as exc:
            log.warning("bastion status will not answer for %s: %s", data_dir, exc)
        return rec

    # -- health ------------------------------------------------------------
    def healthy(self) -> bool:
        """False while recording is failed or recovering (or after close): refuse sessions."""
        return self._writer.healthy and not self._closed

    @property
    def error(self) -> str | None:
        """What failed, for logs and the refusal message (None while healthy)."""
        if self._closed:
            return "the recorder is closed"
        if self._writer.healthy:
            return None
        return self._writer.error or f"the recorder is {self._writer.state}"

    @property
    def state(self) -> str:
        """``ok``, ``failed``, ``recovering`` or ``closed`` (bastion.recording.supervisor)."""
        return "closed" if self._closed else self._writer.state

    def wait_state(self, *states: str, timeout: float = 30.0) -> str:
        """Block until the state is one of ``states`` (or ``timeout``); the state then."""
        return self._writer.wait_state(*states, timeout=timeout)

    def retry_now(self) -> None:
        """Try to recover at once instead of after the backoff (the cause is known gone)."""
        self._writer.retry_now()

    def status(self) -> dict[str, Any]:
        """Where recording stands: for ``bastion status`` and the log."""
        from bastion.recording import health
        info = self._writer.status()
        info["sessions_open"] = len(self._sessions)
        info["channels_open"] = sum(len(h._channels) for h in list(self._sessions.values()))
        free: int | None
        inodes: int | None
        try:
            free, inodes = health.headroom(self.data_dir)
        except OSError:
            free = inodes = None
        info["disk_free_bytes"] = free
        info["disk_free_inodes"] = inodes
        info["headroom_needed_bytes"] = health.HEADROOM_BYTES
        info["reserve_bytes"] = (health.RESERVE_BYTES if health.reserve_path(self.data_dir).exists()
                                 else 0)
        if self.status_extra is not None:
            info.update(self.status_extra())
        return info

    def _check(self) -> None:
        if not self.healthy():
            raise RecordingError(
                f"session recording is not possible: {self.error}",
                hint="bastion recovers by itself once the cause is gone (free disk space, a "
                     "lock on the index released); `bastion status` shows where it stands")

    def _put(self, op: tuple[Any, ...], nbytes: int = 0) -> int:
        return self._writer.put(op, nbytes)

    def _mask_key(self, detectors: Any) -> int:
        """The worker's key for a set of detectors, sent to it the first time it is used."""
        entry = self._mask_sets.get(id(detectors))
        if entry is None:        # the dict keeps ``detectors`` alive, so its id is not reused
            entry = (len(self._mask_sets) + 1, detectors)
            self._put((OP_MASKS, entry[0], tuple(detectors)))
            self._mask_sets[id(detectors)] = entry
        key: int = entry[0]
        return key

    # -- sessions ------------------------------------------------------------
    def refused(self, *, principal: "Principal | None", client: str, target: str | None,
                login: str | None, reason: str) -> None:
        """Record a refused attempt (bad token, unknown target, not granted)."""
        try:
            self._put((OP_REFUSED, next(self._session_ids), time.time(), _pdict(principal),
                       client, target, login, reason))
        except RecordingError as exc:
            log.error("refused attempt from %s not recorded: %s (reason was: %s)", client, exc, reason)

    def start_session(self, *, principal: "Principal", client: str, target: str,
                      login: str) -> "SessionHandle":
        """Open a session row (status ``active``).  Raises RecordingError if unhealthy."""
        self._check()
        sid = next(self._session_ids)
        self._put((OP_SESSION_START, sid, time.time(), _pdict(principal), client, target, login))
        handle = SessionHandle(self, sid, principal, client, target, login)
        self._sessions[sid] = handle
        return handle

    def flush(self, timeout: float | None = 30.0) -> None:
        """Block until everything queued so far is written and committed.

        For tests and shutdown code only: it waits on the disk.
        """
        done = self._writer.barrier()
        if not done.wait(timeout):
            raise RecordingError("the recording worker did not flush in time")
        if not done.ok:
            raise RecordingError(f"session recording is not possible: "
                                 f"{self.error or 'recording failed'}")

    def close(self) -> None:
        """Close open sessions as ``closed``, flush everything, stop the worker.

        Blocks until the worker has finished (call it from shutdown code, or
        through ``loop.run_in_executor``).  Idempotent.
        """
        if self._closed:
            return
        for handle in list(self._sessions.values()):
            handle.close(status=handle.closing or "closed", wait_for_channels=False)
        self._closed = True
        try:
            self._writer.close()
        finally:
            if self._status is not None:
                self._status.close()
            os.close(self._lock_fd)


class SessionHandle:
    """One recorded SSH session."""

    def __init__(self, recorder: Recorder, sid: int, principal: Any, client: str, target: str,
                 login: str) -> None:
        self.id = sid
        self.principal = principal
        self.client = client
        self.target = target
        self.login = login
        self._rec = recorder
        self._channels: dict[int, ChannelRecording] = {}
        self.closed = False
        self.closing: str | None = None      # close() called, waiting for open channels


    def marker(self, label: str) -> None:
        """A marker in the recording of every channel of this session that is open."""
        for chan in list(self._channels.values()):
            chan.marker(label)

    @property
    def title(self) -> str:
        label = getattr(self.principal, "label", None) or getattr(self.principal, "subject", "?")
        return sanitize(f"{label} → {self.login}@{self.target}")

    def open_channel(self, kind: str, *, command: str | None = None, term: str | None = None,
                     width: int = 80, height: int = 24, env: dict[str, Any] | None = None,
                     mask: Any = None) -> "ChannelRecording":
        """Start a recording for a channel (``exec``, ``shell``, ``sftp``...).

        ``mask``: detectors (bastion.proto.detectors) with which the recording
        worker masks this channel's streams before they are written; the caller
        then passes the bytes as they were exchanged.  None: the caller passes
        bytes it has masked already (or that need no masking).
        """
        self._rec._check()
        if self.closed or self.closing:
            raise RecordingError(f"session {self.id} is closed")
        if self.id in self._rec._writer.poisoned_sessions:
            raise RecordingError(f"session {self.id} cannot be recorded: one of its operations "
                                 "was refused by the index and kept aside")
        cid = next(self._rec._channel_ids)
        wall = time.time()
        t0 = time.monotonic()
        day = time.strftime("%Y/%m/%d", time.gmtime(wall))
        rel_path = f"{schema.RECORDINGS_DIR}/{day}/s{self.id}-c{cid}.cast"
        safe_env = _redact_env(env)
        header = asciicast.header_line(
            width=width, height=height, timestamp=int(wall), title=self.title, term=term,
            command=sanitize(command) if command is not None else None,
            extra={"session": self.id, "channel": cid, "kind": kind, "started": wall})
        chan = ChannelRecording(self, cid, kind, self._rec.data_dir / rel_path, t0)
        mask_key = self._rec._mask_key(mask) if mask else None
        self._rec._writer.track(cid, chan)
        env_json = json.dumps(safe_env, ensure_ascii=False, sort_keys=True) if safe_env else None
        self._rec._put((OP_CHANNEL_OPEN, cid, self.id, kind, command, term, width, height,
                        env_json, wall, rel_path, header, mask_key),
                       len(header) + len(env_json or "") + len(command or "") + len(term or ""))
        self._channels[cid] = chan
        return chan

    def close(self, *, status: str = "closed", wait_for_channels: bool = False) -> None:
        """Close open channels (without an exit status), then the session.  Never raises.

        ``status``: closed or interrupted.  ``wait_for_channels``: leave open channels to
        their owners instead -- one whose upstream command has not reported its exit
        status yet closes later with it -- and close the session row when the last of them
        closes (its seal covers theirs); no new channel can be opened meanwhile.  The SSH
        layer closes a session this way when the agent's connection ends.
        """
        if self.closed:
            return
        if status not in SESSION_STATUSES:
            log.warning("session %s: unknown close status %r, recorded as 'closed'", self.id, status)
            status = "closed"
        if self._channels and wait_for_channels:
            if not self.closing:
                log.debug("session %s: closed; its row follows when channels %s close",
                          self.id, sorted(self._channels))
            self.closing = status
            return
        for chan in list(self._channels.values()):
            chan.close()
        self._seal(status)

    def _channel_closed(self, cid: int) -> None:
        self._channels.pop(cid, None)
        if self.closing and not self._channels and not self.closed:
            self._seal(self.closing)

    def _seal(self, status: str) -> None:
        if self.closed:
            return
        self.closed = True
        self._rec._sessions.pop(self.id, None)
        try:
            self._rec._put((OP_SESSION_CLOSE, self.id, time.time(), status))
        except RecordingError as exc:
            log.error("session %s: close not recorded: %s", self.id, exc)


def _pdict(principal: Any) -> dict[str, Any] | None:
    if principal is None:
        return None
    if hasattr(principal, "as_dict"):
        found: dict[str, Any] = principal.as_dict()
        return found
    return {"subject": str(principal)}


#: the most of an agent's environment (characters of names and values) a channel row keeps:
#: env requests are not bounded by SSH, and the row's copy used to be as large as sent
ENV_CHARS = 64 * 1024
ENV_CUT = "(not recorded)"     # the key that says what was left out


def _redact_env(env: dict[str, Any] | None) -> dict[str, str] | None:
    """``env`` with secrets' values hidden, at most ``ENV_CHARS`` of it (in order, skipping
    what does not fit; the rest counted under ``ENV_CUT``)."""
    if not env:
        return None
    kept: dict[str, str] = {}
    used = left = left_chars = 0
    for k, v in env.items():
        name = str(k)
        value = "<secret>" if SECRET_NAME.search(name) else str(v)
        size = len(name) + len(value)
        if used + size > ENV_CHARS:
            left, left_chars = left + 1, left_chars + size
            continue
        kept[name] = value
        used += size
    if left:
        kept[ENV_CUT] = (f"{left} more variable(s), {left_chars} characters: over the "
                         f"{ENV_CHARS}-character limit")
    return kept


def _lock(data_dir: Path, name: str = LOCK_NAME) -> int:
    path = data_dir / name
    try:
        fd = open_private_file(path, os.O_RDWR | os.O_CREAT)
    except OSError as exc:
        raise RecordingError(f"cannot create {path}: {exc.strerror or exc}",
                             hint="check the data dir's permissions") from exc
    # A bastion process killed a moment ago may still have its recording worker
    # writing out what it received (it holds the lock until it exits): wait briefly.
    deadline = time.monotonic() + LOCK_WAIT
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except OSError:
            if time.monotonic() < deadline:
                time.sleep(0.05)
                continue
        os.close(fd)
        raise RecordingError(
            f"another bastion process is recording into {data_dir}",
            hint="stop it first, or give this one its own --data-dir")
