"""``/metrics`` of ``bastion serve --workers 2`` counts what every worker did.

Real peers: OpenSSH ``ssh -J`` agents through two workers on one port, a real sshd, the
index (SQLite, or PostgreSQL with BASTION_TEST_STORE) as the witness: each scrape's summed
counters must equal what the index holds, whichever worker served what (read from the
rows: bastion.recording.shares), also across a worker that stops answering and one killed
with kill -9 and started again by the parent (bastion.workermetrics)."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.test_workers import api_workers_rig, session_rows, worker_of, workers_of


@pytest.fixture
def mrig(tmp_path_factory, issuer):
    with api_workers_rig(tmp_path_factory, issuer, "wmetrics") as r:
        yield r


def scrape(rig) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} of one GET /metrics (Prometheus's own parser)."""
    from tests.e2e.test_api import call
    status, text = call(rig, "GET", "/metrics")
    assert status == 200
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def counted(samples: dict) -> dict[str, float]:
    """What the test compares with the index: ok logins, and exec decisions by action."""
    out = {"logins_ok": samples.get(("bastion_logins_total", (("result", "ok"),)), 0.0)}
    for (name, labels), value in samples.items():
        if name == "bastion_decisions_total" and dict(labels).get("channel") == "exec":
            key = "decisions_" + dict(labels)["action"]
            out[key] = out.get(key, 0.0) + value
    return out


def indexed(rig) -> dict[str, float]:
    """The same, from the index: sessions, and commands by action."""
    conn = rig.index()
    try:
        sessions = conn.execute("SELECT COUNT(*) FROM sessions").fetchone()[0]
        by_action = conn.execute("SELECT action, COUNT(*) FROM commands GROUP BY action"
                                 ).fetchall()
    finally:
        conn.close()
    return {"logins_ok": float(sessions),
            **{f"decisions_{a}": float(n) for a, n in by_action}}


def relayed(samples: dict) -> tuple[float, float]:
    return (samples[("bastion_relayed_bytes_total", (("direction", "agent_to_host"),))],
            samples[("bastion_relayed_bytes_total", (("direction", "host_to_agent"),))])


def indexed_bytes(rig) -> tuple[float, float]:
    conn = rig.index()
    try:
        got = conn.execute("SELECT COALESCE(SUM(bytes_in), 0), COALESCE(SUM(bytes_out), 0) "
                           "FROM channels").fetchone()
    finally:
        conn.close()
    return float(got[0]), float(got[1])


def run_agents(rig, token, start: int, count: int) -> list[tuple[int, str]]:
    """``count`` agents, each one ``ssh -J`` session with one command; every third one is
    denied by policy (``cat /etc/shadow``: rule no-shadow)."""
    def one(i: int) -> tuple[int, str]:
        command = "cat /etc/shadow" if i % 3 == 2 else f"echo agent-{i}"
        r = rig.ssh(token, command)
        return r.returncode, r.out

    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(one, range(start, start + count)))


def expected(start: int, count: int) -> list[tuple[int, str]]:
    return [(126, "") if i % 3 == 2 else (0, f"agent-{i}\n") for i in range(start, start + count)]


def settle(rig, sessions: int, timeout: float = 20.0) -> None:
    """Until the index holds ``sessions`` closed sessions (closes are written a moment
    after the agent's ssh exits)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = session_rows(rig)
        if len(rows) == sessions and all(r["status"] == "closed" for r in rows):
            return
        time.sleep(0.1)
    raise AssertionError(f"index: {session_rows(rig)}")


def served_by(rig) -> Counter:
    return Counter(worker_of(rig, row) for row in session_rows(rig))


def until_both_served(rig, token, done: int, at_least: dict[int, int]) -> int:
    """Run agents in rounds of 6 until each worker w has served ``at_least[w]`` sessions
    (the kernel picks the worker); the number of agents run in all."""
    for _ in range(10):
        got = run_agents(rig, token, done, 6)
        assert got == expected(done, 6)
        done += 6
        settle(rig, done)
        seen = served_by(rig)
        if all(seen[w] >= n for w, n in at_least.items()):
            return done
    raise AssertionError(f"sessions per worker: {served_by(rig)}")


def test_every_scrape_sums_both_workers_counters(mrig, token):
    done = until_both_served(mrig, token, 0, {1: 2, 2: 2})
    want = indexed(mrig)
    assert want["logins_ok"] == done and want["decisions_deny"] == done // 3
    assert want["decisions_deny"] + want["decisions_allow"] == done
    per_worker = served_by(mrig)
    assert per_worker[1] < done and per_worker[2] < done        # neither alone is the total
    for _ in range(6):                                          # every scrape, not the first
        samples = scrape(mrig)
        assert counted(samples) == want
        assert samples[("bastion_workers", ())] == 2
        assert samples[("bastion_metrics_stale_workers", ())] == 0
        # histograms are summed too: every worker logs each upstream connect it times
        connects = mrig.log().count("upstream connected: web1")
        assert connects >= 1
        assert samples[("bastion_upstream_connect_seconds_count", ())] == connects
        assert samples[("bastion_upstream_connect_seconds_bucket", (("le", "+Inf"),))] == connects
        # and bytes: the index's per-channel byte counts, both workers' channels
        assert relayed(samples) == indexed_bytes(mrig) and relayed(samples)[1] > 0
    files = sorted(p.name for p in (mrig.data_dir / "metrics").iterdir())
    assert files == ["w1.json", "w1.sock", "w2.json", "w2.sock"]
    for p in (mrig.data_dir / "metrics").iterdir():
        assert p.stat().st_mode & 0o077 == 0
    assert (mrig.data_dir / "metrics").stat().st_mode & 0o777 == 0o700


def test_counters_never_go_down_when_a_worker_hangs_or_is_killed(mrig, token):
    done = until_both_served(mrig, token, 0, {1: 1, 2: 1})
    history = []

    def check(want_stale: int | None = None) -> dict[str, float]:
        samples = scrape(mrig)
        now = counted(samples)
        assert now == indexed(mrig)
        for before in history:                      # monotonic, series by series
            assert all(now.get(k, 0) >= v for k, v in before.items())
        history.append(now)
        if want_stale is not None:
            assert samples[("bastion_metrics_stale_workers", ())] == want_stale
        return now

    check(want_stale=0)
    pids = workers_of(mrig)
    os.kill(pids[2], signal.SIGSTOP)                 # worker 2 cannot answer: its file counts
    try:
        check(want_stale=1)
        check(want_stale=1)
    finally:
        os.kill(pids[2], signal.SIGKILL)             # kill -9 (a stopped process dies too)
    mrig.wait_log("worker 2 (pid", timeout=15)
    for _ in range(3):
        check()                                      # while it is being started again
    deadline = time.monotonic() + 30
    while mrig.log().count("worker 2 accepting on") < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert workers_of(mrig)[2] != pids[2]
    check(want_stale=0)                              # the new worker 2 answers, from its totals
    assert "worker 2: counting on from its predecessor's metrics" in mrig.log()
    before = served_by(mrig)
    done = until_both_served(mrig, token, done, {1: before[1] + 1, 2: before[2] + 1})
    for _ in range(3):
        now = check(want_stale=0)
    assert now["logins_ok"] == done


def test_a_refused_reload_counts_every_worker_that_refused_it(mrig):
    key = ("bastion_policy_reload_refused", ())
    assert scrape(mrig)[key] == 0
    good = mrig.policy_path.read_text()
    try:
        mrig.write_policy(good + "\n[[rules\n")
        mrig.proc.send_signal(signal.SIGHUP)          # the parent passes it to both workers
        deadline = time.monotonic() + 20
        while scrape(mrig)[key] != 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        samples = scrape(mrig)
        assert samples[key] == 2
        assert samples[("bastion_policy_reloads_total", (("result", "refused"),))] >= 2
    finally:
        mrig.write_policy(good)
        mrig.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 20
    while scrape(mrig)[key] != 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert scrape(mrig)[key] == 0
