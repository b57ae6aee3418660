"""Issue 16 item 6 end to end: real OpenSSH agents through a real ``bastion serve`` to a real sshd,
going away while the bastion connects upstream, and four of them meeting an unresponsive target.

The targets sit behind loopback seams the test owns: ``hole`` is a listener that accepts and never
speaks; ``slow`` is a relay in front of the real sshd that holds each answer of the server for
``DELAY`` seconds, so an agent can be killed (SIGKILL, no goodbye) while the bastion's upstream
connect or channel open is in flight.  Leaks are counted at the target: the relay's open
connections and the processes under the sshd (every agent runs ``cat``, which only ends when its
upstream channel is closed).  Times are compared with the configured timeouts, never constants.
"""

from __future__ import annotations

import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.e2e.harness import POLICY_RULES, BastionRig
from tests.reliability.netfaults import Blackhole, SlowRelay, children, kill_group, wait_until

CONNECT_TIMEOUT = 3.0        # [settings] connect_timeout
IDLE = 4.0                   # [settings] upstream_idle_timeout
DELAY = 0.3                  # the relay's latency per server answer


@pytest.fixture(scope="module")
def net():
    hole = Blackhole()
    yield hole
    hole.close()


@pytest.fixture(scope="module")
def rig(tmp_path_factory, issuer, net):
    r = BastionRig(tmp_path_factory.mktemp("upstream"), issuer).setup()
    relay = SlowRelay(r.sshd.port, DELAY)
    r.relay, r.hole = relay, net
    targets = ""
    for name, port in (("hole", net.port), ("slow", relay.port)):
        targets += f"""
[[targets]]
name = "{name}"
host = "127.0.0.1"
port = {port}
user = "{r.sshd.user}"
key = "web1"
host_key = "{r.sshd.host_key_line}"
labels = ["prod"]
"""
    r.extra_targets = targets
    settings = (f"[settings]\nconnect_timeout = {CONNECT_TIMEOUT}\n"
                f"upstream_idle_timeout = {IDLE}\n")
    r.write_policy(r.policy_text(POLICY_RULES.replace("[settings]\n", settings, 1)))
    r.start()
    yield r
    r.close()
    relay.close()


def _agent(rig, token, target: str, command: str) -> subprocess.Popen:
    argv = ["ssh", "-F", str(rig.ssh_config), f"{rig.sshd.user}@{target}", command]
    return subprocess.Popen(argv, env=rig.agent_env(token), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)


def _cats(rig) -> int:
    return sum(1 for _, cmd in children(rig.sshd.proc.pid) if cmd.split()[:1] == ["cat"])


def test_four_agents_to_an_unresponsive_target_all_fail_within_one_connect_timeout(rig, token):
    before = rig.hole.accepted

    def one(_):
        t0 = time.monotonic()
        r = rig.ssh(token, "true", target="hole", timeout=60)
        return time.monotonic() - t0, r

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(one, range(4)))
    took = sorted(t for t, _ in results)
    print(f"\n4 agents to a target that accepts and never speaks, connect_timeout "
          f"{CONNECT_TIMEOUT:g}s: exit after {', '.join(f'{t:.2f}' for t in took)} s "
          f"(slowest x{took[-1] / CONNECT_TIMEOUT:.2f} of the timeout, login included); "
          f"connections the target accepted: {rig.hole.accepted - before}")
    for _, r in results:
        assert r.returncode == 255
        assert f"did not answer within {CONNECT_TIMEOUT:g}s" in r.err, r.err
    assert took[-1] < 2 * CONNECT_TIMEOUT
    assert rig.hole.accepted - before <= 4


def test_agents_killed_while_the_bastion_connects_leave_no_upstream(rig, token):
    relay = rig.relay
    assert wait_until(lambda: relay.open == 0, 3 * IDLE) is not None
    before = relay.accepted
    agents = [_agent(rig, token, "slow", "cat") for _ in range(6)]
    try:
        assert wait_until(lambda: relay.accepted > before, 30) is not None
        time.sleep(DELAY)                     # the key exchange is under way
    finally:
        for a in agents:
            kill_group(a)
            a.wait()
    gone = wait_until(lambda: relay.open == 0, 3 * IDLE)
    print(f"\n6 agents killed during the upstream connect: {relay.accepted - before} upstream "
          f"connection(s) started, all closed after {gone}s (connect_timeout {CONNECT_TIMEOUT:g}s, "
          f"idle timeout {IDLE:g}s); sshd children {children(rig.sshd.proc.pid)}")
    assert gone is not None and gone < CONNECT_TIMEOUT      # aborted, neither timed out nor idle
    assert _cats(rig) == 0


def test_agents_killed_while_their_channel_opens_leave_no_channel_or_connection(rig, token):
    relay = rig.relay
    assert wait_until(lambda: relay.open == 0, 3 * IDLE) is not None
    holder = _agent(rig, token, "slow", "cat")
    try:
        holder.stdin.write(b"held\n")
        holder.stdin.flush()
        assert holder.stdout.readline() == b"held\n"
        accepted = relay.accepted
        assert _cats(rig) == 1
        settled = []
        for _ in range(3):
            agents = [_agent(rig, token, "slow", "cat") for _ in range(6)]
            try:
                chunks = relay.client_chunks
                # the first channel open on the pooled connection is on its way: kill the agents
                # one by one over two round trips (before the target confirms it, and after)
                assert wait_until(lambda: relay.client_chunks > chunks, 30, 0.005) is not None
                for a in agents:
                    kill_group(a)
                    time.sleep(2 * DELAY / len(agents))
            finally:
                for a in agents:
                    kill_group(a)
                    a.wait()
            settled.append(wait_until(lambda: _cats(rig) == 1, 3 * IDLE))
            assert settled[-1] is not None, children(rig.sshd.proc.pid)
            # the target's close of those channels reaches the bastion one relay delay later;
            # until then the pool counts them against the connection
            time.sleep(3 * DELAY)
        print(f"\n3 x 6 agents killed while their upstream channel opened: only the holder's cat "
              f"left after {', '.join(f'{s:.2f}' for s in settled)} s (idle timeout {IDLE:g}s); "
              f"upstream connections made meanwhile: {relay.accepted - accepted}")
        assert max(settled) < IDLE             # closed by the pool, not by the idle close
        assert relay.accepted == accepted      # on the pooled connection: nothing was left full
        holder.stdin.close()
        assert holder.wait(30) == 0
    finally:
        kill_group(holder)
    closed = wait_until(lambda: relay.open == 0 and not children(rig.sshd.proc.pid), 3 * IDLE)
    print(f"holder done: upstream connection closed after {closed}s (idle timeout {IDLE:g}s)")
    assert closed is not None and 0.5 * IDLE < closed < 2 * IDLE
    assert "upstream closed after" in rig.wait_log("upstream closed after")
    assert "Traceback" not in rig.log()
