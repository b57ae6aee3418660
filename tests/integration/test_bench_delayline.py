"""bench.delayline: bytes pass through unchanged in both directions, EOF is passed on, and many
chunks are in flight at once (the line delays, it does not serialise)."""

from __future__ import annotations

import hashlib
import os
import socket
import threading

from bench.delayline import DelayLine


def _echo_server() -> tuple[socket.socket, threading.Thread]:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()

    def serve() -> None:
        conn, _ = srv.accept()
        with conn:
            while True:
                data = conn.recv(65536)
                if not data:
                    conn.shutdown(socket.SHUT_WR)
                    return
                conn.sendall(data)
    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return srv, t


def test_bytes_pass_both_ways_unchanged_and_eof_follows():
    srv, t = _echo_server()
    line = DelayLine(srv.getsockname()[1], 0.002, max_buffer=256 * 1024).start()
    try:
        payload = os.urandom(3 * 1024 * 1024 + 17)     # more than max_buffer: back-pressure
        c = socket.create_connection(("127.0.0.1", line.port))
        c.settimeout(30)
        got = bytearray()

        def read() -> None:
            while True:
                data = c.recv(65536)
                if not data:
                    return
                got.extend(data)
        reader = threading.Thread(target=read)
        reader.start()
        c.sendall(payload)
        c.shutdown(socket.SHUT_WR)
        reader.join(30)
        assert not reader.is_alive()                  # the echo's EOF came back through
        assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
        c.close()
    finally:
        line.stop()
        srv.close()
        t.join(5)
