"""A userspace TCP delay line on 127.0.0.1, for benchmarks with network latency.

The kernel here has no netem, so :class:`DelayLine` stands in for a distant link: it
listens on 127.0.0.1 (a free port), connects each accepted client to ``127.0.0.1:target``
and holds every chunk for ``one_way`` seconds in each direction before passing it on
(20 ms RTT is ``one_way=0.010``).  Chunks are released in order at their due time; many
can be in flight at once, so the line adds latency, not a bandwidth cap: what limits a
transfer over it is what limits one over a real long link, the windows and outstanding
requests of the protocols on top (SSH channel windows, sftp's outstanding requests).
At most ``max_buffer`` bytes wait in each direction; past that it stops reading (TCP
back-pressure), like a full router queue.

It runs an asyncio loop in a daemon thread; ``start()`` returns once it listens, ``stop()``
closes everything.  Only 127.0.0.1.  Not covered: loss, jitter, reordering, a bandwidth
limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from typing import Any, Iterator

CHUNK = 256 * 1024


class DelayLine:
    """127.0.0.1:<port> -> 127.0.0.1:<target>, ``one_way`` seconds each way (module doc)."""

    def __init__(self, target: int, one_way: float, *, max_buffer: int = 32 * 1024 * 1024):
        self.target = target
        self.one_way = one_way
        self.max_buffer = max_buffer
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self) -> "DelayLine":
        self._thread = threading.Thread(target=self._run, name="delayline", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the delay line did not start")
        return self

    def stop(self) -> None:
        loop = self._loop
        if loop is None:
            return
        loop.call_soon_threadsafe(self._shutdown)
        if self._thread is not None:
            self._thread.join(10)
        self._loop = None

    # -- the loop thread -------------------------------------------------------------
    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            self._server = loop.run_until_complete(
                asyncio.start_server(self._accept, "127.0.0.1", 0))
            self.port = self._server.sockets[0].getsockname()[1]
            self._ready.set()
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        assert self._loop is not None
        self._loop.call_later(0.05, self._loop.stop)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.close()
            return
        task = asyncio.ensure_future(self._both(reader, writer, up_reader, up_writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _both(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    up_reader: asyncio.StreamReader, up_writer: asyncio.StreamWriter) -> None:
        """Both directions; an EOF is passed on alone (half-close), the sockets close once
        both directions ended (or one failed)."""
        pumps = [asyncio.ensure_future(self._pump(reader, up_writer)),
                 asyncio.ensure_future(self._pump(up_reader, writer))]
        try:
            done, pending = await asyncio.wait(pumps, return_when=asyncio.FIRST_EXCEPTION)
            for p in pending:
                p.cancel()
        finally:
            for p in pumps:
                p.cancel()
            writer.close()
            up_writer.close()

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        room = asyncio.Event()
        room.set()
        held = 0

        async def release() -> None:
            nonlocal held
            while True:
                due, data = await queue.get()
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not data:
                    if dst.can_write_eof():
                        dst.write_eof()
                    return
                dst.write(data)
                held -= len(data)
                if held <= self.max_buffer:
                    room.set()
                await dst.drain()

        sender = asyncio.ensure_future(release())
        try:
            while True:
                await room.wait()
                data = await src.read(CHUNK)
                queue.put_nowait((loop.time() + self.one_way, data))
                if not data:
                    break
                held += len(data)
                if held > self.max_buffer:
                    room.clear()
            await sender
        finally:
            sender.cancel()


def _selftest() -> None:
    """A round trip through a line of 10 ms each way takes at least 20 ms."""
    import socket
    import time
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    line = DelayLine(srv.getsockname()[1], 0.010).start()
    try:
        c = socket.create_connection(("127.0.0.1", line.port))
        s, _ = srv.accept()
        t0 = time.perf_counter()
        c.sendall(b"ping")
        s.sendall(s.recv(4))
        assert c.recv(4) == b"ping"
        rtt = time.perf_counter() - t0
        print(f"delay line round trip: {rtt * 1000:.1f} ms (20 ms asked)")
        c.close()
        s.close()
    finally:
        line.stop()
        srv.close()


if __name__ == "__main__":
    _selftest()


def _serve_apart(target: int, one_way: float, ports: Any) -> None:
    line = DelayLine(target, one_way).start()
    ports.put(line.port)
    while True:
        time.sleep(3600)


def start_apart(target: int, one_way: float) -> tuple[Any, int]:
    """A delay line in a process of its own (its CPU and GIL not the caller's): the process
    (for :func:`stop_apart`) and the port it listens on."""
    import multiprocessing
    ctx = multiprocessing.get_context("spawn")
    ports = ctx.Queue()
    proc = ctx.Process(target=_serve_apart, args=(target, one_way, ports), daemon=True)
    proc.start()
    return proc, int(ports.get(timeout=30))


def stop_apart(proc: Any) -> None:
    proc.terminate()
    proc.join(10)


@contextlib.contextmanager
def store_behind(cluster: Any, rtt_ms: float) -> Iterator[None]:
    """While the block runs, ``BASTION_STORE_URL`` reaches ``cluster`` (tests/pgcluster.py)
    through a delay line of ``rtt_ms`` round trip in a process of its own (as it is at 0)."""
    if not rtt_ms:
        yield
        return
    proc, port = start_apart(cluster.port, rtt_ms / 2000)
    url = os.environ["BASTION_STORE_URL"]
    os.environ["BASTION_STORE_URL"] = url.replace(f":{cluster.port}/", f":{port}/")
    try:
        yield
    finally:
        os.environ["BASTION_STORE_URL"] = url
        stop_apart(proc)
