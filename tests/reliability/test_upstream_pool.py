"""Issue 16 item 6, the pool itself: bastion.ssh.upstream.UpstreamPool against a real OpenSSH sshd.

The pool runs in this process (so its own counters can be read exactly) and logs in to a real
sshd on 127.0.0.1, either through a relay that adds latency to every answer of the server (so
tasks can be cancelled while a connect or a channel open is in flight) or to a listener that
accepts and never speaks.  Cancelling a task here is what the bastion does when an agent goes
away.  Leaks are counted three ways: the pool's counters, the relay's open connections and the
processes under the sshd (every upstream session runs ``cat``, which only ends when its channel
is closed).  Times are compared with the configured timeouts, never with constants.
"""

from __future__ import annotations

import asyncio
import time

import asyncssh
import pytest

from bastion.config.targets import Target
from bastion.demo.sshd import LocalSshd
from bastion.errors import UpstreamError
from bastion.ssh.upstream import MAX_SESSIONS_PER_CONNECTION, UpstreamPool
from tests.reliability.netfaults import SlowRelay, children

DELAY = 0.2              # relay latency per server answer: a connect takes several, an open two
CONNECT_TIMEOUT = 4.0    # for the relayed target (its connect takes about 1 s)
HOLE_TIMEOUT = 1.0       # for the black hole
IDLE = 3.0               # upstream_idle_timeout of the pools here


@pytest.fixture(scope="module")
def sshd(tmp_path_factory, client_key):
    pub = client_key.export_public_key().decode().strip()
    d = LocalSshd(tmp_path_factory.mktemp("pool-sshd"), [pub]).start()
    yield d
    d.stop()


@pytest.fixture
def relay(sshd):
    r = SlowRelay(sshd.port, DELAY)
    yield r
    r.close()


def _target(sshd, port: int, name: str) -> Target:
    return Target(name=name, host="127.0.0.1", port=port, user=sshd.user, key="k",
                  host_key=sshd.host_key_line)


def _cats(sshd) -> int:
    return sum(1 for _, cmd in children(sshd.proc.pid) if cmd.split()[:1] == ["cat"])


async def _eventually(predicate, timeout: float) -> float | None:
    t0 = time.monotonic()
    while not predicate():
        if time.monotonic() - t0 > timeout:
            return None
        await asyncio.sleep(0.02)
    return time.monotonic() - t0


def _zero(stats: dict, name: str) -> bool:
    row = stats.get(name)
    return row is None or all(v == 0 for k, v in row.items() if k != "connections")


class Agent:
    """What an inner session does with the pool: acquire, open a channel running ``cat``,
    hold it.  ``careful`` agents release when the open fails or is cancelled (as
    bastion.ssh.session does); careless ones do not, and the pool must cope by itself."""

    def __init__(self, pool: UpstreamPool, target: Target, careful: bool = True) -> None:
        self.pool, self.target, self.careful = pool, target, careful
        self.phase = "start"
        self.task = asyncio.ensure_future(self.run())

    async def run(self) -> None:
        self.phase = "connect"
        lease = await self.pool.acquire(self.target)
        self.phase = "open"
        try:
            chan, _ = await lease.create_session(asyncssh.SSHClientSession, "cat")
        except BaseException:
            if self.careful:
                self.pool.release(self.target, lease)
            raise
        self.phase = "running"
        self.chan = chan
        try:
            await chan.wait_closed()
        finally:
            chan.close()
            self.pool.release(self.target, lease)


async def _cancel(agents) -> dict[str, int]:
    where: dict[str, int] = {}
    for a in agents:
        where[a.phase] = where.get(a.phase, 0) + 1
        a.task.cancel()
    await asyncio.gather(*(a.task for a in agents), return_exceptions=True)
    return where


async def test_agents_leaving_during_the_connect_abort_it(sshd, relay, client_key):
    pool = UpstreamPool(load_key=lambda _: client_key, connect_timeout=CONNECT_TIMEOUT,
                        idle_timeout=IDLE)
    target = _target(sshd, relay.port, "slow")
    try:
        agents = [Agent(pool, target, careful=i % 2 == 0) for i in range(6)]
        assert await _eventually(lambda: relay.accepted >= 1, CONNECT_TIMEOUT) is not None
        await asyncio.sleep(DELAY)                  # the key exchange is under way
        stats = pool.stats()["slow"]
        assert stats["connecting"] == 1 and stats["waiting"] == 6, stats   # one connect, shared
        where = await _cancel(agents)
        assert where == {"connect": 6}
        gone = await _eventually(lambda: relay.open == 0, CONNECT_TIMEOUT)
        print(f"\n6 agents cancelled during one shared connect: relay connections {relay.accepted} "
              f"accepted, open again 0 after {gone}s; pool {pool.stats()}")
        assert gone is not None and gone < CONNECT_TIMEOUT / 2   # aborted, not timed out
        assert pool.stats() == {}
        assert _cats(sshd) == 0
    finally:
        await pool.close()


async def test_agents_leaving_during_channel_opens_leave_no_channel_or_connection(
        sshd, relay, client_key):
    pool = UpstreamPool(load_key=lambda _: client_key, connect_timeout=CONNECT_TIMEOUT,
                        idle_timeout=IDLE)
    target = _target(sshd, relay.port, "slow")
    try:
        holder = Agent(pool, target)
        assert await _eventually(lambda: holder.phase == "running", 2 * CONNECT_TIMEOUT)
        assert await _eventually(lambda: _cats(sshd) == 1, CONNECT_TIMEOUT) is not None
        rounds, settled = [], []
        for offset in (0.25, 0.75, 1.25, 1.75):     # x DELAY: before the confirmation, after it
            agents = [Agent(pool, target, careful=i % 2 == 0) for i in range(6)]
            assert await _eventually(lambda: all(a.phase == "open" for a in agents), 5)
            await asyncio.sleep(offset * DELAY)
            rounds.append(await _cancel(agents))
            stats = pool.stats()["slow"]
            assert stats["leases"] == 1 and stats["connections"] == 1, stats   # only the holder
            settled.append(await _eventually(
                lambda: pool.stats()["slow"]["orphans"] == 0 and _cats(sshd) == 1, IDLE))
            assert settled[-1] is not None, (pool.stats(), _cats(sshd))
        print(f"\nphases at cancel per round: {rounds}; orphaned channels closed and their cat "
              f"gone after {settled} s (idle timeout {IDLE}s); relay connections accepted "
              f"{relay.accepted}")
        assert all(r == {"open": 6} for r in rounds)
        assert max(settled) < IDLE                   # not the idle close that did it
        assert relay.accepted == 1                   # all on the pooled connection
        await _cancel([holder])
        idle = await _eventually(lambda: relay.open == 0 and not children(sshd.proc.pid), 3 * IDLE)
        print(f"holder gone: connection closed after {idle}s (idle timeout {IDLE}s); "
              f"pool {pool.stats()}")
        assert idle is not None and IDLE * 0.5 < idle < 2 * IDLE
        assert pool.stats() == {}
    finally:
        await pool.close()


async def test_a_full_connection_gets_a_second_one_and_both_go_idle(sshd, client_key):
    pool = UpstreamPool(load_key=lambda _: client_key, connect_timeout=CONNECT_TIMEOUT,
                        idle_timeout=IDLE)
    target = _target(sshd, sshd.port, "direct")
    try:
        agents = [Agent(pool, target) for _ in range(MAX_SESSIONS_PER_CONNECTION + 1)]
        assert await _eventually(lambda: all(a.phase == "running" for a in agents), 20)
        stats = pool.stats()["direct"]
        assert stats["connections"] == 2 and stats["leases"] == len(agents), stats
        assert await _eventually(lambda: _cats(sshd) == len(agents), 5) is not None
        await _cancel(agents)
        assert await _eventually(lambda: pool.stats() == {}, 3 * IDLE) is not None
        # (sshd's per-connection processes exit after the pool closed them: allow for a
        # loaded machine, several test processes share its cores)
        assert await _eventually(lambda: not children(sshd.proc.pid), 30) is not None
    finally:
        await pool.close()


async def test_four_agents_to_an_unresponsive_target_fail_after_one_timeout(hole, client_key, sshd):
    pool = UpstreamPool(load_key=lambda _: client_key, connect_timeout=HOLE_TIMEOUT,
                        idle_timeout=IDLE)
    target = _target(sshd, hole.port, "hole")

    async def one():
        t0 = time.monotonic()
        with pytest.raises(UpstreamError) as info:
            await pool.acquire(target)
        return time.monotonic() - t0, str(info.value)

    try:
        results = await asyncio.gather(*(one() for _ in range(4)))
        took = [t for t, _ in results]
        print(f"\n4 agents, connect_timeout {HOLE_TIMEOUT}s: failed after "
              f"{', '.join(f'{t:.2f}' for t in took)} s (x{max(took) / HOLE_TIMEOUT:.2f} of the "
              f"timeout); connections the black hole accepted: {hole.accepted}")
        for _, message in results:
            assert f"did not answer within {HOLE_TIMEOUT:g}s" in message
        assert max(took) < 1.5 * HOLE_TIMEOUT
        assert min(took) >= HOLE_TIMEOUT * 0.9
        assert hole.accepted == 1                   # one connect, shared by the four
        assert pool.stats() == {}
        assert await _eventually(lambda: hole.open_connections() == 0, HOLE_TIMEOUT) is not None
    finally:
        await pool.close()


async def test_the_last_agent_leaving_aborts_a_connect_to_an_unresponsive_target(hole, client_key,
                                                                               sshd):
    pool = UpstreamPool(load_key=lambda _: client_key, connect_timeout=10 * HOLE_TIMEOUT,
                        idle_timeout=IDLE)
    target = _target(sshd, hole.port, "hole")
    try:
        tasks = [asyncio.ensure_future(pool.acquire(target)) for _ in range(3)]
        assert await _eventually(lambda: hole.accepted == 1, HOLE_TIMEOUT) is not None
        tasks[0].cancel()
        await asyncio.sleep(0.1)
        assert pool.stats()["hole"]["waiting"] == 2          # the others still wait
        assert hole.open_connections() == 1
        for t in tasks[1:]:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        closed = await _eventually(lambda: hole.open_connections() == 0, HOLE_TIMEOUT)
        print(f"\nlast of 3 agents left: the connect was aborted after {closed}s "
              f"(its timeout {10 * HOLE_TIMEOUT:g}s)")
        assert closed is not None
        assert pool.stats() == {}
    finally:
        await pool.close()


async def test_shutdown_during_a_connect_tells_the_waiting_agent(hole, client_key, sshd):
    pool = UpstreamPool(load_key=lambda _: client_key, connect_timeout=10 * HOLE_TIMEOUT)
    target = _target(sshd, hole.port, "hole")
    task = asyncio.ensure_future(pool.acquire(target))
    assert await _eventually(lambda: hole.accepted == 1, HOLE_TIMEOUT) is not None
    await pool.close()
    with pytest.raises(UpstreamError, match="shutting down"):
        await task
    with pytest.raises(UpstreamError, match="shutting down"):
        await pool.acquire(target)
