"""A small HTTPS/1.1 server on asyncio streams, with h11 as its sans-IO protocol core.

Why h11 and not a web framework: the API is a handful of JSON routes and one event stream,
served from inside ``bastion serve``'s event loop; h11 parses and frames HTTP/1.1 (it is what
httpx and uvicorn use underneath) and leaves the IO here, the way ``proto/`` leaves it to
``ssh/``.  One request at a time per connection (keep-alive), bodies capped, slow clients
cut off by timeouts.

``Handler``: ``async (Request) -> Response``.  A :class:`Response` has either a body
(bytes) or ``stream``, an async iterator of byte chunks sent as they come (chunked
encoding: server-sent events).  Not covered: routes and auth (``bastion.api.routes``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Awaitable, Callable
from urllib.parse import parse_qs, urlsplit

import h11

log = logging.getLogger("bastion.api")

MAX_BODY = 64 * 1024             # requests carry small JSON documents
MAX_HEADERS = 16 * 1024
READ_TIMEOUT = 30.0              # a request must arrive whole within this
IDLE_TIMEOUT = 60.0              # keep-alive between requests
SECURITY_HEADERS = [
    (b"cache-control", b"no-store"),
    (b"x-content-type-options", b"nosniff"),
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
    (b"referrer-policy", b"no-referrer"),
    (b"strict-transport-security", b"max-age=31536000"),
]


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]          # lower-case names; the last value wins
    body: bytes
    client: str

    def arg(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else None

    def json(self) -> Any:
        """The body as JSON (an object); ValueError when it is not one."""
        data = json.loads(self.body.decode("utf-8") or "{}")
        if not isinstance(data, dict):
            raise ValueError("the body must be a JSON object")
        return data


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    stream: AsyncIterator[bytes] | None = None


def json_response(status: int, data: Any) -> Response:
    return Response(status, (json.dumps(data, ensure_ascii=True, default=str) + "\n").encode())


def error(status: int, message: str, hint: str | None = None) -> Response:
    body: dict[str, Any] = {"error": message}
    if hint:
        body["hint"] = hint
    return json_response(status, body)


Handler = Callable[[Request], Awaitable[Response]]


class _Closed(Exception):
    pass


async def _next_event(conn: h11.Connection, reader: asyncio.StreamReader,
                      wait: float) -> Any:
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        data = await asyncio.wait_for(reader.read(16384), wait)
        conn.receive_data(data)          # b"" is EOF: h11 then reports ConnectionClosed


async def _send(conn: h11.Connection, writer: asyncio.StreamWriter, event: Any) -> None:
    data = conn.send(event)
    if data:
        writer.write(data)
        await writer.drain()


async def _respond(conn: h11.Connection, writer: asyncio.StreamWriter, resp: Response) -> None:
    own = {name for name, _ in resp.headers}        # a response may set its own CSP (the web UI)
    headers = [(b"content-type", resp.content_type.encode()),
               *(h for h in SECURITY_HEADERS if h[0] not in own), *resp.headers]
    if resp.stream is None:
        headers.append((b"content-length", str(len(resp.body)).encode()))
        await _send(conn, writer, h11.Response(status_code=resp.status, headers=headers))
        if resp.body:
            await _send(conn, writer, h11.Data(data=resp.body))
    else:
        await _send(conn, writer, h11.Response(status_code=resp.status, headers=headers))
        async for chunk in resp.stream:
            if chunk:
                await _send(conn, writer, h11.Data(data=chunk))
    await _send(conn, writer, h11.EndOfMessage())


async def _read_request(conn: h11.Connection, reader: asyncio.StreamReader,
                        client: str, first_timeout: float) -> Request | Response:
    event = await _next_event(conn, reader, first_timeout)
    if isinstance(event, h11.ConnectionClosed):
        raise _Closed
    if not isinstance(event, h11.Request):
        raise _Closed
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in event.headers}
    body = b""
    while True:
        part = await _next_event(conn, reader, READ_TIMEOUT)
        if isinstance(part, h11.Data):
            body += part.data
            if len(body) > MAX_BODY:
                return error(413, f"request body over {MAX_BODY} bytes")
        elif isinstance(part, h11.EndOfMessage):
            break
        else:
            raise _Closed
    target = urlsplit(event.target.decode("latin-1"))
    return Request(method=event.method.decode("ascii", "replace"), path=target.path,
                   query=parse_qs(target.query), headers=headers, body=body, client=client)


async def _connection(handler: Handler, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
    peer = writer.get_extra_info("peername")
    client = f"{peer[0]}:{peer[1]}" if peer else "?"
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADERS)
    timeout = READ_TIMEOUT
    try:
        while True:
            try:
                got = await _read_request(conn, reader, client, timeout)
            except h11.RemoteProtocolError as exc:
                if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                    await _respond(conn, writer, error(exc.error_status_hint or 400,
                                                        "malformed HTTP request"))
                return
            if isinstance(got, Response):
                await _respond(conn, writer, got)
                return
            try:
                resp = await handler(got)
            except Exception:  # noqa: BLE001 - one request's bug is a 500, not a dead server
                log.exception("api: %s %s failed", got.method, got.path)
                resp = error(500, "internal error (see the bastion log)")
            await _respond(conn, writer, resp)
            if conn.our_state is h11.MUST_CLOSE or resp.stream is not None:
                return
            conn.start_next_cycle()
            timeout = IDLE_TIMEOUT
    except (_Closed, asyncio.TimeoutError, ConnectionError, ssl.SSLError, h11.LocalProtocolError):
        return
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except (ConnectionError, ssl.SSLError, OSError):
            pass


async def start_http(handler: Handler, host: str, port: int,
                     ssl_context: ssl.SSLContext | None) -> asyncio.AbstractServer:
    """Listen on ``host:port`` (0: any free port) and serve ``handler``."""
    return await asyncio.start_server(lambda r, w: _connection(handler, r, w), host, port,
                                      ssl=ssl_context, ssl_handshake_timeout=READ_TIMEOUT)
