"""A login storm upstream: bastion.ssh.upstream.UpstreamPool (bastion.ssh.upconnect) against a real
OpenSSH sshd whose ``MaxStartups 2:100:2`` drops every unauthenticated connection beyond two.

The pool runs in this process (its counters are read exactly).  Agents that acquire in the same
loop turn share connects by eights (``MAX_SESSIONS_PER_CONNECTION``), so 40 of them start five
connects at once: three more than the sshd takes.  What is checked:

* with a bound above the sshd's (``upstream_connects`` 50) the drops happen and each dropped
  connect is tried again until it gets in: every agent runs its command;
* with a bound below it (1) the connects wait in line and the sshd drops none;
* a queued connect gives up after ``upstream_queue_timeout`` with a message naming the target;
* agents to a target that never answers all fail after one ``connect_timeout`` (the queued
  connects fail with the one ahead of them; only one ever reaches the target);
* an agent leaving the queue leaves nothing behind, and the slot goes to the next in line;
* raising the bound (a reload) starts queued connects at once, lowering it starts none;
* a refused TCP connect, a host key mismatch and a refused key are not tried again.

Times are compared with the configured timeouts, never with constants.
"""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import asyncssh
import pytest

from bastion.api.metricsview import exposition
from bastion.config.targets import Target
from bastion.demo.sshd import LocalSshd, free_port
from bastion.errors import HostKeyMismatch, UpstreamError
from bastion.metrics import METRICS
from bastion.ssh.upconnect import LOGIN_FACTOR
from bastion.ssh.upstream import MAX_SESSIONS_PER_CONNECTION, UpstreamPool

AGENTS = 5 * MAX_SESSIONS_PER_CONNECTION     # five connects at once
CONNECT_TIMEOUT = 20.0       # generous: a dropped connect is retried within it
HOLE_TIMEOUT = 1.0           # for the target that never answers
RETRIES = "bastion_upstream_connect_retries_total"


@pytest.fixture(scope="module")
def sshd(tmp_path_factory, client_key):
    pub = client_key.export_public_key().decode().strip()
    d = LocalSshd(tmp_path_factory.mktemp("storm-sshd"), [pub], max_startups="2:100:2").start()
    yield d
    d.stop()


def _target(sshd, port: int, name: str, **kw) -> Target:
    return Target(name=name, host="127.0.0.1", port=port, user=sshd.user, key="k",
                  host_key=kw.pop("host_key", sshd.host_key_line), **kw)


def _queue_waits() -> tuple[float, float]:
    """The queue-wait histogram: (observations in its first bucket, 0 s; all observations)."""
    series = METRICS.snapshot().histograms.get("bastion_upstream_connect_queue_seconds")
    counts = series[1].get(()) if series else None
    return (counts[0], counts[-1]) if counts else (0.0, 0.0)


def _drops(sshd) -> int:
    return (sshd.workdir / "sshd.log").read_text(errors="replace").count("past MaxStartups")


async def _settled(pool: UpstreamPool) -> bool:
    """Whether the pool is empty within a few loop turns (a cancelled connect ends in its own)."""
    for _ in range(50):
        if pool.stats() == {} and pool.connecting() == 0 and pool.queued() == 0:
            return True
        await asyncio.sleep(0.01)
    return False


class _Output(asyncssh.SSHClientSession):
    def __init__(self) -> None:
        self.out: list[str] = []

    def data_received(self, data, datatype) -> None:
        self.out.append(data)


async def _run(pool: UpstreamPool, target: Target, n: int) -> list:
    """``n`` agents at once, each running ``echo`` upstream: their outputs (or errors)."""
    async def one(i: int):
        lease = await pool.acquire(target)
        try:
            chan, session = await lease.create_session(_Output, f"echo ok-{i}")
            await chan.wait_closed()
            return "".join(session.out).strip()
        finally:
            lease.release()
    return await asyncio.gather(*(one(i) for i in range(n)), return_exceptions=True)


async def test_connects_past_maxstartups_are_retried_until_they_get_in(sshd, client_key):
    pool = UpstreamPool(load_key=lambda _: client_key, connect_timeout=CONNECT_TIMEOUT,
                        max_connects=50)
    retries, drops = METRICS.value(RETRIES), _drops(sshd)
    try:
        results = await _run(pool, _target(sshd, sshd.port, "storm"), AGENTS)
    finally:
        await pool.close()
    retried, dropped = METRICS.value(RETRIES) - retries, _drops(sshd) - drops
    print(f"\n{AGENTS} agents, 5 connects at once, sshd MaxStartups 2:100:2, upstream_connects "
          f"50: sshd dropped {dropped}, the pool tried again {retried:g} times; "
          f"{sum(1 for r in results if isinstance(r, str))} ran their command")
    assert results == [f"ok-{i}" for i in range(AGENTS)]
    assert dropped >= 1 and retried >= dropped      # the storm was real, and survived


async def test_the_bound_queues_connects_and_the_sshd_drops_none(sshd, client_key):
    pool = UpstreamPool(load_key=lambda _: client_key, connect_timeout=CONNECT_TIMEOUT,
                        max_connects=1)
    target = _target(sshd, sshd.port, "storm")
    retries, drops, waits = METRICS.value(RETRIES), _drops(sshd), _queue_waits()
    try:
        run = asyncio.ensure_future(_run(pool, target, AGENTS))
        for _ in range(100):                           # every agent asks; five connects
            await asyncio.sleep(0)
            if pool.queued() == 4:
                break
        stats = pool.stats()["storm"]
        assert stats["connecting"] == 5 and stats["queued"] == 4, stats
        text = exposition(SimpleNamespace(recorder=None, pool=pool))     # what /metrics shows
        assert "\nbastion_upstream_connects_queued 4\n" in text
        assert "\nbastion_upstream_connects_in_progress 1\n" in text
        results = await run
    finally:
        await pool.close()
    print(f"\nupstream_connects 1: stats at start {stats}; sshd dropped "
          f"{_drops(sshd) - drops}, retries {METRICS.value(RETRIES) - retries:g}")
    assert results == [f"ok-{i}" for i in range(AGENTS)]
    assert _drops(sshd) == drops
    assert METRICS.value(RETRIES) == retries
    now = _queue_waits()               # (connects that did not wait, all connects)
    assert (now[0] - waits[0], now[1] - waits[1]) == (1, 5)


async def test_a_queued_connect_gives_up_after_the_queue_timeout(hole, sshd, client_key):
    wait = HOLE_TIMEOUT / 2
    pool = UpstreamPool(load_key=lambda _: client_key, connect_timeout=20 * HOLE_TIMEOUT,
                        max_connects=1, queue_timeout=wait)
    target = _target(sshd, hole.port, "hole")
    try:
        first = [asyncio.ensure_future(pool.acquire(target))
                 for _ in range(MAX_SESSIONS_PER_CONNECTION)]
        await asyncio.sleep(0.1)                       # their connect has the one slot
        t0 = time.monotonic()
        with pytest.raises(UpstreamError) as info:
            await pool.acquire(target)                 # the second connect: queued
        took = time.monotonic() - t0
        print(f"\nqueued connect, upstream_queue_timeout {wait:g}s: failed after {took:.2f}s: "
              f"{info.value}")
        assert str(info.value) == f"1 connects to target hole already in progress; waited {wait:g}s"
        assert wait * 0.9 <= took < 20 * HOLE_TIMEOUT / 2
        assert not any(t.done() for t in first)        # the first connect goes on
        assert pool.stats()["hole"]["queued"] == 0
        assert hole.accepted == 1
        for t in first:
            t.cancel()
        await asyncio.gather(*first, return_exceptions=True)
        assert await _settled(pool), (pool.stats(), pool.connecting(), pool.queued())
    finally:
        await pool.close()


async def test_agents_to_a_silent_target_fail_after_one_timeout_not_one_per_place_in_line(
        hole, sshd, client_key):
    pool = UpstreamPool(load_key=lambda _: client_key, connect_timeout=HOLE_TIMEOUT,
                        max_connects=1)
    target = _target(sshd, hole.port, "hole")
    n = 3 * MAX_SESSIONS_PER_CONNECTION                 # three connects: one runs, two queue

    async def one():
        t0 = time.monotonic()
        with pytest.raises(UpstreamError) as info:
            await pool.acquire(target)
        return time.monotonic() - t0, str(info.value)

    try:
        results = await asyncio.gather(*(one() for _ in range(n)))
    finally:
        await pool.close()
    took = [t for t, _ in results]
    print(f"\n{n} agents, 3 connects, upstream_connects 1, connect_timeout {HOLE_TIMEOUT:g}s: "
          f"all failed after {min(took):.2f}..{max(took):.2f}s; the target saw {hole.accepted} "
          f"connection(s); e.g. {results[-1][1]!r}")
    for _, message in results:
        assert f"did not answer within {HOLE_TIMEOUT:g}s" in message
    assert sum("this one was not tried" in m for _, m in results) == 2 * MAX_SESSIONS_PER_CONNECTION
    assert max(took) < 1.5 * HOLE_TIMEOUT                # not 3 x the timeout
    assert hole.accepted == 1


async def test_an_agent_leaving_the_queue_leaves_it_and_the_next_gets_the_turn(
        hole, sshd, client_key):
    pool = UpstreamPool(load_key=lambda _: client_key, connect_timeout=20 * HOLE_TIMEOUT,
                        max_connects=1)
    target = _target(sshd, hole.port, "hole")
    try:
        first = [asyncio.ensure_future(pool.acquire(target))
                 for _ in range(MAX_SESSIONS_PER_CONNECTION)]
        await asyncio.sleep(0.1)
        second = [asyncio.ensure_future(pool.acquire(target))    # a second connect: queued
                  for _ in range(MAX_SESSIONS_PER_CONNECTION)]
        await asyncio.sleep(0.1)
        third = [asyncio.ensure_future(pool.acquire(target))]    # a third, queued behind it
        await asyncio.sleep(0.1)
        assert pool.stats()["hole"]["queued"] == 2 and pool.queued() == 2
        for t in second:                   # all its agents leave: the connect leaves the queue
            t.cancel()
        await asyncio.gather(*second, return_exceptions=True)
        await asyncio.sleep(0)
        assert pool.stats()["hole"]["queued"] == 1
        assert hole.accepted == 1
        for t in first:                    # the connect in progress is given up: the next goes
            t.cancel()
        await asyncio.gather(*first, return_exceptions=True)
        for _ in range(250):                 # the third connect reaches the target
            if hole.accepted == 2:
                break
            await asyncio.sleep(0.02)
        assert hole.accepted == 2
        stats = pool.stats()["hole"]
        assert stats["queued"] == 0 and stats["connecting"] == 1, stats
        assert pool.connecting() == 1
        for t in third:
            t.cancel()
        await asyncio.gather(*third, return_exceptions=True)
        assert await _settled(pool), (pool.stats(), pool.connecting(), pool.queued())
    finally:
        await pool.close()


async def test_raising_the_bound_starts_the_queued_connects_at_once(hole, sshd, client_key):
    pool = UpstreamPool(load_key=lambda _: client_key, connect_timeout=20 * HOLE_TIMEOUT,
                        max_connects=1)
    target = _target(sshd, hole.port, "hole")
    agents = []
    try:
        for _ in range(3):                 # three connects to a target that never answers
            agents += [asyncio.ensure_future(pool.acquire(target))
                       for _ in range(MAX_SESSIONS_PER_CONNECTION)]
            await asyncio.sleep(0.1)
        assert (pool.connecting(), pool.queued(), hole.accepted) == (1, 2, 1)
        assert pool.set_max_connects(1) == 0             # the same bound: nobody moves
        assert pool.set_max_connects(2) == 1             # one more slot: the next in line
        assert pool.set_max_connects(8) == 1             # and the last; no connect ends meanwhile
        assert (pool.connecting(), pool.queued()) == (3, 0)
        for _ in range(250):
            if hole.accepted == 3:
                break
            await asyncio.sleep(0.02)
        assert hole.accepted == 3
        assert pool.set_max_connects(1) == 0             # lowering stops nothing under way
        assert pool.connecting() == 3
        assert not any(t.done() for t in agents)
    finally:
        for t in agents:
            t.cancel()
        await asyncio.gather(*agents, return_exceptions=True)
        await pool.close()


@pytest.mark.parametrize("case", ["refused", "host-key", "auth"])
async def test_a_refusal_is_not_tried_again(case, sshd, client_key):
    other = asyncssh.generate_private_key("ssh-ed25519")
    if case == "refused":
        target, key = _target(sshd, free_port(), "gone"), client_key
        expect = UpstreamError, "cannot reach target gone"
    elif case == "host-key":
        target = _target(sshd, sshd.port, "moved",
                         host_key=other.export_public_key().decode().strip())
        key, expect = client_key, (HostKeyMismatch, "does not match the pinned one")
    else:
        target, key = _target(sshd, sshd.port, "locked"), other
        expect = UpstreamError, "refused the vault key"
    pool = UpstreamPool(load_key=lambda _: key, connect_timeout=CONNECT_TIMEOUT, max_connects=1)
    retries = METRICS.value(RETRIES)
    try:
        results = await asyncio.gather(*(pool.acquire(target) for _ in range(9)),
                                       return_exceptions=True)
    finally:
        await pool.close()
    for r in results:
        assert isinstance(r, expect[0]) and expect[1] in str(r), r
    assert sum("this one was not tried" in str(r) for r in results) == 1    # the second connect
    assert METRICS.value(RETRIES) == retries


class _SlowFirst:
    """A target whose first connection says its SSH version and then nothing (a login that
    would take longer than the timeout); the next ones reach the real sshd.  With ``hold``,
    every connection reaches the real sshd, whose answers after its version line are held
    back that many seconds once (a login slower than ``connect_timeout``, not dead)."""

    def __init__(self, sshd_port: int, hold: float | None = None) -> None:
        self.sshd_port = sshd_port
        self.hold = hold
        self.accepted = 0
        self.tasks: set = set()
        self.stalled: list = []

    async def start(self) -> "_SlowFirst":
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader, writer) -> None:
        self.accepted += 1
        if self.accepted == 1 and self.hold is None:
            writer.write(b"SSH-2.0-OpenSSH_9.2p1 slow\r\n")
            self.stalled.append(writer)              # kept open, never another byte
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.sshd_port)

        async def pipe(src, dst, hold: float | None = None) -> None:
            try:
                if hold is not None:                 # the version line, then a pause
                    dst.write(await src.readline())
                    await asyncio.sleep(hold)
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()
        for task in (asyncio.ensure_future(pipe(reader, up_writer)),
                     asyncio.ensure_future(pipe(up_reader, writer, self.hold))):
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def close(self) -> None:
        for writer in self.stalled:
            writer.close()
        self.server.close()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def test_a_target_that_answered_but_was_slow_does_not_fail_the_connects_behind(
        sshd, client_key):
    # the first connect gets the target's version line and then times out (a slow login, as
    # in a storm where the bastion's own CPU is short): the connects queued behind it are not
    # failed with it, they get their turn, and here the target lets them in
    slow = await _SlowFirst(sshd.port).start()
    pool = UpstreamPool(load_key=lambda _: client_key, connect_timeout=HOLE_TIMEOUT,
                        max_connects=1)
    target = _target(sshd, slow.port, "slow")
    n = 3 * MAX_SESSIONS_PER_CONNECTION                 # three connects: one runs, two queue
    try:
        results = await _run(pool, target, n)
    finally:
        await pool.close()
        await slow.close()
    failed = [r for r in results if not isinstance(r, str)]
    print(f"\n{n} agents, 3 connects, upstream_connects 1, the first login stalls after the "
          f"banner: {len(failed)} failed, e.g. {failed[0] if failed else None!r}")
    assert len(failed) == MAX_SESSIONS_PER_CONNECTION   # only the stalled connect's agents
    for exc in failed:
        assert isinstance(exc, UpstreamError) and exc.target_answered
        assert (f"answered but the login did not complete within "
                f"{LOGIN_FACTOR * HOLE_TIMEOUT:g}s") in str(exc)
    ran = [i for i, r in enumerate(results) if r == f"ok-{i}"]
    assert len(ran) == n - MAX_SESSIONS_PER_CONNECTION  # the agents of the two queued connects
    assert slow.accepted == 3


async def test_a_target_that_answered_gets_more_time_to_complete_its_login(sshd, client_key):
    # the version line comes at once, the rest of the login after 1.5 x connect_timeout: a
    # slow target, not a dead one, so the login completes (within LOGIN_FACTOR x the timeout)
    slow = await _SlowFirst(sshd.port, hold=1.5 * HOLE_TIMEOUT).start()
    pool = UpstreamPool(load_key=lambda _: client_key, connect_timeout=HOLE_TIMEOUT)
    t0 = time.monotonic()
    try:
        results = await _run(pool, _target(sshd, slow.port, "slow"), 2)
    finally:
        await pool.close()
        await slow.close()
    took = time.monotonic() - t0
    print(f"\nlogin held {1.5 * HOLE_TIMEOUT:g}s after the version line, connect_timeout "
          f"{HOLE_TIMEOUT:g}s: {results} after {took:.2f}s")
    assert results == ["ok-0", "ok-1"]
    assert took >= 1.5 * HOLE_TIMEOUT
