"""A login storm upstream, end to end: real OpenSSH agents (``ssh -J``) through a real ``bastion
serve`` to one target whose real sshd has ``MaxStartups 2:100:2`` (it drops every unauthenticated
connection beyond two, before its SSH banner).

The bastion shares a connect among up to eight agents, so 24 agents need three upstream
connects.  Agents log in spread over time; a relay the test owns in front of the sshd
(netfaults.HeldRelay) holds the bastion's connects until the third is there and then lets the
three reach the sshd in the same instant: one of them is dropped, every time.  With
``upstream_connects`` above what the sshd takes (50), the bastion must try the dropped one again
(bastion.ssh.upconnect): every agent's command runs.  Without the retry, a third of them fail.

And the other side of the queue: 24 agents to a target that accepts and never speaks, with
``upstream_connects = 1`` (one connect runs, two wait), all fail about one ``connect_timeout``
after the target took the connect, not one per place in the queue, and only one connect ever
reaches it.  Times are compared with the configured timeout, never with constants.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from bastion.ssh.upstream import MAX_SESSIONS_PER_CONNECTION
from tests.e2e.harness import POLICY_RULES, BastionRig
from tests.reliability.netfaults import Blackhole, HeldRelay

AGENTS = 3 * MAX_SESSIONS_PER_CONNECTION     # three upstream connects; the sshd takes two
STORM_TIMEOUT = 30.0         # connect_timeout of the storm rig: the relay holds connects meanwhile
HOLE_TIMEOUT = 8.0           # connect_timeout of the rig with the silent target (all 24 agents
                             # must be waiting before it runs out, however loaded the machine)


def _rig(tmp_path_factory, issuer, name: str, port_of, settings: str) -> BastionRig:
    r = BastionRig(tmp_path_factory.mktemp(name), issuer, sshd_max_startups="2:100:2").setup()
    r.extra_targets = f"""
[[targets]]
name = "{name}"
host = "127.0.0.1"
port = {port_of(r)}
user = "{r.sshd.user}"
key = "web1"
host_key = "{r.sshd.host_key_line}"
labels = ["prod"]
"""
    # every agent comes from 127.0.0.1: the bastion's own pre-auth limit per source (10) up
    settings += "max_startups_per_source = 100\n"
    r.write_policy(r.policy_text(POLICY_RULES.replace("[settings]\n", "[settings]\n" + settings, 1)))
    return r.start()


@pytest.fixture
def storm(tmp_path_factory, issuer):
    relay: HeldRelay | None = None

    def port_of(r):
        nonlocal relay
        relay = HeldRelay(r.sshd.port, count=3)
        return relay.port

    r = _rig(tmp_path_factory, issuer, "storm", port_of,
             f"connect_timeout = {STORM_TIMEOUT}\nupstream_connects = 50\n")
    r.relay = relay
    yield r
    r.close()
    relay.close()


@pytest.fixture
def silent(tmp_path_factory, issuer):
    hole = Blackhole()
    r = _rig(tmp_path_factory, issuer, "hole", lambda _: hole.port,
             f"connect_timeout = {HOLE_TIMEOUT}\nupstream_connects = 1\n")
    r.hole = hole
    yield r
    r.close()
    hole.close()


def _all_at_once(rig: BastionRig, token: str, target: str, command) -> list:
    def one(i: int):
        r = rig.ssh(token, command(i), target=target, timeout=120)
        return time.monotonic(), r
    with ThreadPoolExecutor(AGENTS) as pool:
        return list(pool.map(one, range(AGENTS)))


def test_a_storm_past_the_targets_maxstartups_runs_every_command(storm, token):
    results = _all_at_once(storm, token, "storm", lambda i: f"echo ok-{i}")
    log = storm.log()
    sshd_log = (storm.sshd.workdir / "sshd.log").read_text(errors="replace")
    failed = [(i, r.err.strip()[-200:]) for i, (_, r) in enumerate(results) if r.returncode]
    print(f"\n{AGENTS} agents at once, 3 upstream connects released together, sshd MaxStartups "
          f"2:100:2, upstream_connects 50: {AGENTS - len(failed)} ran their command; sshd drop "
          f"lines {sshd_log.count('past MaxStartups')}, bastion retries "
          f"{log.count('dropped before the SSH banner')}; relay connections {storm.relay.accepted}"
          f"; failures {failed[:3]}")
    assert storm.relay.released                 # the three connects met the sshd at once
    for i, (_, r) in enumerate(results):
        assert r.returncode == 0 and r.out.strip() == f"ok-{i}", (i, r.err)
    assert "past MaxStartups" in sshd_log       # the sshd did drop one
    assert "dropped before the SSH banner" in log


def test_agents_to_a_silent_target_fail_after_one_timeout_not_one_per_place_in_line(
        silent, token):
    results = _all_at_once(silent, token, "hole", lambda i: "true")
    hole = silent.hole
    assert hole.accepted == 1, hole.accepted    # the queued connects never reached it
    after = sorted(t - hole.accept_times[0] for t, _ in results)
    log = silent.log()
    print(f"\n{AGENTS} agents to a target that never speaks, upstream_connects 1, connect_timeout "
          f"{HOLE_TIMEOUT:g}s: every agent out {after[0]:.2f}..{after[-1]:.2f}s after the target "
          f"took the one connect (x{after[-1] / HOLE_TIMEOUT:.2f} of the timeout); "
          f"{log.count('connect started after')} queued connects started")
    for _, r in results:
        assert r.returncode == 255
        assert f"did not answer within {HOLE_TIMEOUT:g}s" in r.err, r.err
    assert sum("this one was not tried" in r.err for _, r in results) == 2 * MAX_SESSIONS_PER_CONNECTION
    assert after[0] >= 0.9 * HOLE_TIMEOUT
    assert after[-1] < 1.5 * HOLE_TIMEOUT       # three in line would be 3 x the timeout
