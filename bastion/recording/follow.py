"""Following a recording as it is written: the live view (``sessions watch``, the API).

The recording worker appends a channel's events to its asciicast file as soon as they are
decided (masked: bastion.recording.sink), so a reader that follows the file shows exactly
what the recording holds, secrets masked, from any process that can read the data dir.
On a PostgreSQL store the same bytes are committed to ``recording_chunks`` with the batch
that wrote them (bastion.store.chunks), so a node that does not have the file follows the
store's copy instead: :class:`StoreBytes` reads the chunks past what it has seen, by
offset, each time it is asked (the callers ask every ``POLL`` seconds while nothing comes).

Why polling and not ``LISTEN``/``NOTIFY`` for new chunks: a notification per inserted chunk
would put a statement (and a trigger and its schema migration) on the recording worker's
hot path for every byte of every session, followed or not, to save a reader one indexed
query (the primary key ``(channel_id, offset)``) per 0.2 s, which is also the local file
follower's interval.  A notification lost with a connection would need the same poll as a
fallback anyway.

* :class:`Follower` returns the complete new events at each :meth:`Follower.read`, from a
  file or the store alike; a line still being written waits for its end.
* :func:`live_channel` picks the channel to follow; :func:`check_live` refuses a session
  that has ended (there is nothing live: replay it instead).
* :class:`LiveChannel` is the loop both the CLI and the API run: new events, and whether
  the channel has ended and everything it recorded was returned.

Not covered: the terminal filtering of what is shown (bastion.proto.sanitize, by the CLI).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any, Protocol

from bastion.errors import RecordingError
from bastion.proto import asciicast

READ_MAX = 1 << 20
OUTPUT_CODES = asciicast.OUTPUT_CODES
POLL = 0.2                 # s between looks at a followed recording while nothing comes
ROWS_FIRST, ROWS_MIN, ROWS_MAX = 16, 4, 1024   # store rows a query: about READ_MAX of them
_SEALED = ("closed", "interrupted", "refused")


class ByteSource(Protocol):
    name: str

    def read(self, pos: int, size: int) -> bytes:
        """Up to ``size`` bytes of the recording from ``pos``; b"" when nothing is there yet."""


class FileBytes:
    """A recording file in this node's data dir (it may not exist yet)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = str(path)

    def read(self, pos: int, size: int) -> bytes:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(pos)
                return fh.read(size)
        except FileNotFoundError:
            return b""                                  # not created yet, or pruned
        except OSError as exc:
            raise RecordingError(f"cannot read recording {self.path}: {exc}") from exc


class StoreBytes:
    """A recording's copy in the shared store (``recording_chunks``), read by offset.

    The rows of a channel do not overlap and are committed in order, so what is contiguous
    from ``pos`` is final; a hole (never seen so far) ends a read.  The row holding ``pos``
    is found even when its boundaries differ from the rows read before (a recording whose
    copy was replaced from its file at a restart: chunks.replace_all).  ``conn``: an index
    connection, set by the caller for the time of its reads (LiveChannel.poll)."""

    def __init__(self, conn: Any, channel_id: int) -> None:
        self.conn = conn
        self.channel_id = int(channel_id)
        self.name = f"channel {self.channel_id} in the store"
        self.rows = ROWS_FIRST

    def read(self, pos: int, size: int) -> bytes:
        try:
            got = self.conn.execute(
                'SELECT "offset", data FROM recording_chunks WHERE channel_id = ? AND "offset" >= '
                '(SELECT COALESCE(MAX("offset"), 0) FROM recording_chunks WHERE channel_id = ? '
                'AND "offset" <= ?) ORDER BY "offset" LIMIT ?',
                (self.channel_id, self.channel_id, pos, self.rows)).fetchall()
        except sqlite3.Error as exc:
            raise RecordingError(f"the session index is unavailable: {exc}",
                                 hint="check that PostgreSQL is up, then follow again") from exc
        rows = [(int(off), bytes(data)) for off, data in got]
        self.rows = rows_for(rows, size, self.rows)
        return contiguous(rows, pos, size)


def rows_for(rows: list[tuple[int, bytes]], size: int, current: int) -> int:
    """How many rows the next query asks for: about ``size`` bytes of rows as large as these
    (an interactive session commits small rows, a bulk one 256 KiB rows)."""
    if not rows:
        return current
    mean = max(1, sum(len(data) for _, data in rows) // len(rows))
    return max(ROWS_MIN, min(ROWS_MAX, size // mean))


def contiguous(rows: list[tuple[int, bytes]], pos: int, size: int) -> bytes:
    """The bytes from ``pos`` that ``rows`` (offset, data; sorted) hold without a gap, at
    most about ``size`` (whole rows past the first)."""
    out = bytearray()
    at = pos
    for offset, data in rows:
        end = offset + len(data)
        if end <= at:
            continue                                    # wholly before pos
        if offset > at:
            break                                       # a hole: not committed (yet)
        out += data[at - offset:]
        at = end
        if len(out) >= size:
            break
    return bytes(out)


class Follower:
    """The events of one recording, a few at a time, as they are appended."""

    def __init__(self, source: Path | ByteSource) -> None:
        self.source: ByteSource = FileBytes(source) if isinstance(source, Path) else source
        self.pos = 0
        self.header: dict[str, Any] | None = None
        self._partial = b""

    @property
    def path(self) -> str:
        return self.source.name

    def read(self) -> list[asciicast.Event]:
        """The events completed since the last call (output, input, resizes, markers)."""
        data = self.source.read(self.pos, READ_MAX)
        self.pos += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        events: list[asciicast.Event] = []
        for line in lines:
            if not line.strip():
                continue
            try:
                if self.header is None:
                    self.header = asciicast.parse_header(line)
                else:
                    events.append(asciicast.parse_event(line))
            except asciicast.CastFormatError as exc:
                raise RecordingError(f"recording {self.path} is not valid asciicast v2: {exc}",
                                     hint="`bastion verify` tells whether it was modified") from None
        return events


def live_channel(session: dict[str, Any], channel_id: int | None = None) -> dict[str, Any]:
    """The channel of ``session`` (query.get_session) to follow: ``channel_id``, else the
    newest open one, else the newest."""
    channels: list[dict[str, Any]] = [c for c in session.get("channels", []) if c.get("path")]
    if channel_id is not None:
        for ch in channels:
            if ch["id"] == channel_id:
                return ch
        raise RecordingError(f"session {session['id']} has no channel {channel_id}",
                             hint="`bastion sessions show` lists its channels")
    if not channels:
        raise RecordingError(f"session {session['id']} has no recorded channel yet",
                             hint="try again once the agent has opened one")
    open_ones = [c for c in channels if c.get("ended") is None]
    return (open_ones or channels)[-1]


def check_live(session: dict[str, Any]) -> None:
    """Refuse to follow a session that has ended: nothing more will be recorded."""
    status = session.get("status")
    if status == "active":
        return
    sid = session["id"]
    what = {"interrupted": "was interrupted", "refused": "was refused"}.get(
        str(status), "has ended")
    raise RecordingError(f"session {sid} {what}: there is nothing live to follow",
                         hint=f"replay what it recorded with `bastion sessions play {sid}` "
                              "(or follow one channel anyway with --channel)")


class LiveChannel:
    """One channel followed until it ends: the loop of ``sessions watch`` and the API.

    Reads this node's file when it has it (the node recording it, or SQLite), else the
    store's copy (another node's session on PostgreSQL).  The channel has ended when its row
    has ``ended`` or its session is no longer active (closed, or interrupted by a restart or
    a peer's lease); that row is committed after the recording's last bytes, so what is
    read after seeing it is everything.

    Each :meth:`poll` borrows a reader connection and gives it back (on PostgreSQL from the
    process's small pool, which the API's requests share: a follow that lasts hours must not
    hold one of them)."""

    def __init__(self, data_dir: Path, channel: dict[str, Any]) -> None:
        from bastion.store import location
        self.data_dir = Path(data_dir)
        self.channel_id = int(channel["id"])
        path = self.data_dir / str(channel["path"])
        self.from_store = not path.exists() and location.current().postgres
        self._store = StoreBytes(None, self.channel_id)
        self.follower = Follower(self._store if self.from_store else FileBytes(path))
        self.end: dict[str, Any] = {}      # once ended: the channel's status, the session's reason

    @property
    def header(self) -> dict[str, Any] | None:
        return self.follower.header

    def poll(self) -> tuple[list[asciicast.Event], bool]:
        """(new events, ended).  Nothing new and not ended: call again after ``POLL``."""
        from bastion.recording import schema
        conn = schema.connect(self.data_dir, readonly=True)
        self._store.conn = conn
        try:
            events = self.follower.read()
            if events or not self._ended(conn):
                return events, False
            while True:                                 # the rest, however long
                pos = self.follower.pos
                events += self.follower.read()
                if self.follower.pos == pos:
                    return events, True
        finally:
            self._store.conn = None
            conn.close()

    def _ended(self, conn: Any) -> bool:
        try:
            row = conn.execute(
                "SELECT c.ended, s.status, c.status, s.reason FROM channels c JOIN sessions s "
                "ON s.id = c.session_id WHERE c.id = ?", (self.channel_id,)).fetchone()
        except sqlite3.Error as exc:
            raise RecordingError(f"the session index is unavailable: {exc}",
                                 hint="check that the store is up, then follow again") from exc
        if row is None:
            self.end = {"status": "pruned"}
            return True
        if row[0] is None and row[1] not in _SEALED:
            return False
        interrupted = "interrupted" in (row[1], row[2])
        self.end = {"status": "interrupted" if interrupted else str(row[2] or row[1])}
        if interrupted and row[3]:
            self.end["reason"] = str(row[3])
        return True

    def close(self) -> None:
        """Nothing is held between polls; kept for the callers' ``finally``."""
