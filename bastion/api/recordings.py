"""Recorded output through the API (docs/API.md), for reviewers whose scope has the session
(``Api._readable``): ``/api/v1/sessions/ID/live`` (server-sent events: a channel's output as
it is recorded) and ``/api/v1/sessions/ID/channels/CID/recording`` (the stored asciicast file,
masked, with ``Range``).  Each view is audited."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from typing import TYPE_CHECKING, Any

from bastion.api.http import Request, Response, error
from bastion.errors import BastionError, RecordingError
from bastion.logfmt import fields as log_fields

if TYPE_CHECKING:
    from bastion.api.routes import Api, _Caller

audit = logging.getLogger("bastion.audit")

_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
RECORDING_CHUNK = 1 << 16
LIVE_KEEPALIVE = 15.0      # s between comments that keep proxies from closing the stream


async def live(api: Api, req: Request, who: _Caller, session_id: int) -> Response:
    """Server-sent events: the channel's recorded output as it is written (masked as
    stored), its markers (``event: marker``: each command and its decision, approvals,
    exit status, interruption), ``event: end`` once the channel has ended and all of it
    is sent.
    ``format=asciicast``: the messages asciinema-player's eventsource driver reads
    (``{"cols", "rows", "time"}`` once the header is read, ``[t, "o", text]`` events,
    ``event: done`` at the end); the web viewer's live page uses it.  Another node's
    session (PostgreSQL store) is followed through the store's copy
    (bastion.recording.follow).  Without ``channel``, a session that has ended is 409."""
    from bastion.proto.asciicast import MARKER
    from bastion.recording.follow import OUTPUT_CODES, POLL, LiveChannel, check_live, live_channel
    try:
        channel_arg = req.arg("channel")
        channel_id = int(channel_arg) if channel_arg else None
    except ValueError:
        return error(400, "channel must be a channel id")
    session = await api._readable(req, who, session_id)
    if isinstance(session, Response):
        return session
    try:
        if channel_id is None:
            check_live(session)
    except RecordingError as exc:
        return error(409, str(exc), exc.hint)
    try:
        channel = live_channel(session, channel_id)
    except RecordingError as exc:
        return error(404, str(exc), exc.hint)
    try:
        live = await asyncio.to_thread(LiveChannel, api.services.data_dir, channel)
    except BastionError as exc:
        return error(503, str(exc), exc.hint)
    cid = channel["id"]
    player = req.arg("format") == "asciicast"
    audit.info("api live view of session %s channel %s by %s", session_id, cid,
               who.principal.subject,
               extra=log_fields("api_live", session=session_id, channel=cid,
                                principal=who.principal.subject))
    sent_reset = False

    def frames(events: list[Any]) -> bytes:
        nonlocal sent_reset
        out = b""
        if player and not sent_reset and live.header is not None:
            sent_reset = True
            size = {"cols": live.header.get("width") or 80,
                    "rows": live.header.get("height") or 24, "time": 0}
            out += f"data: {json.dumps(size)}\n\n".encode()
        for ev in events:
            if ev.code in OUTPUT_CODES:
                item = [ev.time, "o", ev.text()] if player else \
                    {"t": ev.time, "code": ev.code, "data": ev.text()}
                out += f"data: {json.dumps(item)}\n\n".encode()
            elif ev.code == MARKER and not player:
                mark = {"t": ev.time, "text": ev.text()}
                out += f"event: marker\ndata: {json.dumps(mark)}\n\n".encode()
        return out

    def done() -> bytes:
        return f"event: {'done' if player else 'end'}\ndata: {json.dumps(live.end)}\n\n".encode()

    async def stream() -> Any:
        try:
            if not player:
                head = {"session": session_id, "channel": cid, "from_store": live.from_store}
                yield f"event: channel\ndata: {json.dumps(head)}\n\n".encode()
            quiet = 0.0
            while True:
                try:
                    events, ended = await asyncio.to_thread(live.poll)
                except BastionError as exc:     # the store went away: say so, then stop
                    err = {"error": str(exc),       # (the hint may name the store)
                           "hint": "the bastion cannot read its session index now: "
                                   "follow again later, or ask its operator"}
                    yield f"event: error\ndata: {json.dumps(err)}\n\n".encode()
                    return
                if events or ended:
                    yield frames(events) + (done() if ended else b"")
                    if ended:
                        return
                    quiet = 0.0
                    continue
                await asyncio.sleep(POLL)
                quiet += POLL
                if quiet >= LIVE_KEEPALIVE:
                    quiet = 0.0
                    yield b": keepalive\n\n"
        finally:
            await asyncio.to_thread(live.close)
    return Response(200, content_type="text/event-stream", stream=stream())

async def recording(api: Api, req: Request, who: _Caller, session_id: int,
                    channel_id: int) -> Response:
    """A channel's asciicast file as stored (masked), with ``Range: bytes=A-B``."""
    session = await api._readable(req, who, session_id)
    if isinstance(session, Response):
        return session
    channel = next((c for c in session["channels"] if c["id"] == channel_id), None)
    if channel is None or not channel.get("path"):
        return error(404, f"session {session_id} has no recorded channel {channel_id}")
    from bastion.recording.located import recording_file
    path = await asyncio.to_thread(recording_file, api.services.data_dir, channel)
    try:
        size = path.stat().st_size
    except OSError:
        return error(404, f"the recording of channel {channel_id} is missing",
                     hint="`bastion verify` reports missing files")
    start, end, status = 0, size - 1, 200
    header = req.headers.get("range")
    if header:
        m = _RANGE.fullmatch(header.strip())
        if not m or (not m.group(1) and not m.group(2)):
            return error(416, f"unsupported Range {header!r}", hint="bytes=START-[END]")
        if m.group(1):
            start = int(m.group(1))
            end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
        else:                                          # bytes=-N: the last N bytes
            start = max(0, size - int(m.group(2)))
        if start >= size or start > end:
            resp = error(416, f"range outside the {size} bytes of the recording")
            resp.headers.append((b"content-range", f"bytes */{size}".encode()))
            return resp
        status = 206
    audit.info("api recording session %s channel %s by %s", session_id, channel_id,
               who.principal.subject,
               extra=log_fields("api_recording", session=session_id, channel=channel_id,
                                principal=who.principal.subject))

    def read(offset: int, n: int) -> bytes:
        with open(path, "rb") as fh:
            fh.seek(offset)
            return fh.read(n)

    async def body() -> Any:
        pos, left = start, end - start + 1
        while left > 0:
            chunk = await asyncio.to_thread(read, pos, min(RECORDING_CHUNK, left))
            if not chunk:
                return
            pos += len(chunk)
            left -= len(chunk)
            yield chunk
    headers = [(b"accept-ranges", b"bytes")]
    if status == 206:
        headers.append((b"content-range", f"bytes {start}-{end}/{size}".encode()))
    return Response(status, content_type="application/x-asciicast", headers=headers,
                    stream=body())
