"""The in-process rig: ``bastion.ssh`` serving in this process, a real sshd behind it.

:class:`InProcBastion` builds :class:`bastion.services.Services` from a policy, a vault
and the e2e rig's real sshd (bastion.demo.sshd.LocalSshd, set up by
:class:`tests.e2e.harness.BastionRig` without its ``bastion serve`` process), and runs
``start_listener(services, "127.0.0.1", 0)`` on an event loop of its own, in a thread, for
the whole tier: the upstream pool, the approval broker and the recording worker keep living
on that one loop while each test drives it from its own loop with an asyncssh client
(:func:`agent`: a token by keyboard-interactive, then the inner host through the tunnel).

Faults are injected by wrapping or hitting the real objects (the recording worker process,
the sshd process serving a connection), never by replacing the data path.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import threading
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Callable

import asyncssh

from tests.e2e.test_asyncssh_client import _TokenClient

WAITING = re.compile(r"waiting for approval, request (\d+), up to (\d+) s")
WAIT = 30.0                  # seconds a test waits for what the bastion should say


class InProcBastion:
    """``Services`` and the listener on a loop in a thread (see the module doc)."""

    def __init__(self, services: Any) -> None:
        from bastion.ssh.server import start_listener
        self.services = services
        self.data_dir: Path = services.data_dir
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="inproc-bastion",
                                        daemon=True)
        self._thread.start()
        self.acceptor = self.run(start_listener(services, "127.0.0.1", 0))
        self.port: int = self.acceptor.get_port()
        self.trusted = asyncssh.import_known_hosts(
            "".join(services.hostkeys.known_hosts_lines()))

    def run(self, coro: Any, timeout: float = 60.0) -> Any:
        """Run ``coro`` on the bastion's loop; its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Call ``fn`` on the bastion's loop (where its objects live); its result."""
        async def on_loop() -> Any:
            return fn(*args)
        return self.run(on_loop())

    def close(self) -> None:
        self.acceptor.close()
        try:
            self.run(self.services.close(), timeout=120)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(30)
            self.loop.close()

    # -- what the index says ------------------------------------------------------------
    def rows(self, sql: str, *params: Any) -> list[sqlite3.Row]:
        """Rows of the index once everything recorded so far is written."""
        self.services.recorder.flush()
        from bastion.store import location
        if location.current().postgres:     # BASTION_TEST_STORE=postgresql: the rig's store
            from bastion.recording import schema
            conn = schema.connect(self.data_dir, readonly=True)
        else:
            conn = sqlite3.connect(f"file:{self.data_dir / 'index.sqlite'}?mode=ro", uri=True,
                                   timeout=10)
            conn.row_factory = sqlite3.Row
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    def channel(self, command: str) -> sqlite3.Row:
        """The one channel row whose command is ``command`` (tests make each one unique)."""
        found = self.rows("SELECT * FROM channels WHERE command = ?", command)
        assert len(found) == 1, f"{len(found)} channel rows for {command!r}"
        return found[0]

    def command(self, line: str) -> sqlite3.Row:
        found = self.rows("SELECT * FROM commands WHERE line = ?", line)
        assert len(found) == 1, f"{len(found)} command rows for {line!r}"
        return found[0]

    def recorded(self, channel: sqlite3.Row, stream: str = "o") -> str:
        """One stream of the channel's recording (``o`` stdout, ``e`` stderr, ``i`` input)."""
        from bastion.proto.asciicast import Reassembler
        streams = Reassembler()
        for event in self._events(channel):
            streams.feed(event)
        return streams.bytes(stream).decode(errors="replace")

    def markers(self, channel: sqlite3.Row) -> list[str]:
        """The markers of the channel's recording, in order."""
        return [event.data for event in self._events(channel) if event.code == "m"]

    def _events(self, channel: sqlite3.Row) -> list[Any]:
        from bastion.proto.asciicast import iter_cast
        with open(self.data_dir / channel["path"], "rb") as fh:
            _header, events = iter_cast(fh)
            return list(events)

    def approval(self, request_id: int, *, settled: bool = False,
                 timeout: float = 20.0) -> sqlite3.Row:
        """The approval request's row; ``settled``: once it is no longer pending."""
        deadline = time.monotonic() + timeout
        while True:
            row = self.rows("SELECT * FROM approvals WHERE id = ?", request_id)[0]
            if not settled or row["status"] != "pending" or time.monotonic() > deadline:
                return row
            time.sleep(0.05)

    # -- faults -------------------------------------------------------------------------
    def worker_pid(self) -> int:
        pid = self.services.recorder.status()["worker_pid"]
        assert pid, "no recording worker is running"
        return int(pid)

    def recovered(self) -> None:
        """Wait until recording works again after a fault (the tier's next test needs it)."""
        assert self.services.recorder.wait_state("ok", timeout=60) == "ok"


@asynccontextmanager
async def agent(bastion: InProcBastion, token: str, user: str, target: str = "web1"):
    """An agent's connection to ``user@target`` through the bastion: (outer, inner)."""
    async with asyncssh.connect("127.0.0.1", bastion.port, username="agent",
                                client_factory=lambda: _TokenClient(token),
                                known_hosts=bastion.trusted, preferred_auth="keyboard-interactive",
                                client_keys=None, agent_path=None, config=None) as outer:
        async with asyncssh.connect(target, 22, tunnel=outer, username=user,
                                    known_hosts=bastion.trusted, client_keys=None,
                                    agent_path=None, config=None) as inner:
            yield outer, inner


async def run(bastion: InProcBastion, token: str, user: str, command: str,
              target: str = "web1") -> asyncssh.SSHCompletedProcess:
    """Run ``command`` on ``user@target`` through the bastion, as an agent; its result."""
    async with agent(bastion, token, user, target) as (_outer, inner):
        return await asyncio.wait_for(inner.run(command, check=False), WAIT)


async def wait_for(stream: Any, pattern: re.Pattern[str]) -> re.Match[str]:
    """Read ``stream`` (an asyncssh process's stdout or stderr) until ``pattern`` appears
    (within ``WAIT`` s)."""
    seen = ""

    async def read() -> re.Match[str]:
        nonlocal seen
        while True:
            line = await stream.readline()
            if not line:
                raise AssertionError(f"{pattern.pattern!r} never came; got {seen!r}")
            seen += line
            found = pattern.search(seen)
            if found:
                return found
    return await asyncio.wait_for(read(), WAIT)
