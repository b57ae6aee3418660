"""``bastion serve --workers 2``: two processes accept on one port and share one index.

Real peers: OpenSSH ``ssh -J`` agents, a real sshd, SQLite (or PostgreSQL with
BASTION_TEST_STORE) shared by the workers.  A session's worker is read from its id
(bastion.recording.shares: worker w takes ids with ``id % STRIDE == w``; on PostgreSQL
from ``sessions.node``, ``NODE-wN``)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import pytest

from bastion.recording.shares import STRIDE
from tests.e2e.harness import POLICY_RULES, BastionRig


@pytest.fixture
def wrig(tmp_path_factory, issuer):
    r = BastionRig(tmp_path_factory.mktemp("workers"), issuer, workers=2).setup().start()
    r.wait_log("bastion listening on", timeout=30)      # the parent's, once both accept
    yield r
    r.close()


def workers_of(rig: BastionRig) -> dict[int, int]:
    """{worker index: pid} of the rig's serve parent's worker processes."""
    found = {}
    for task in Path(f"/proc/{rig.proc.pid}/task").iterdir():
        for pid in (task / "children").read_text().split():
            try:
                env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            for item in env:
                if item.startswith(b"BASTION_WORKER="):
                    found[int(item.split(b"=", 1)[1].split(b":")[0])] = int(pid)
    return found


def worker_of(rig: BastionRig, row: dict) -> int:
    if rig.store_env:
        return int(str(row["node"]).rsplit("-w", 1)[1])
    return int(row["id"]) % STRIDE


def session_rows(rig: BastionRig) -> list[dict]:
    conn = rig.index()
    try:
        cols = "id, status, reason" + (", node" if rig.store_env else "")
        return [dict(zip(cols.split(", "), tuple(r), strict=True))
                for r in conn.execute(f"SELECT {cols} FROM sessions ORDER BY id")]
    finally:
        conn.close()


def settled_rows(rig: BastionRig, count: int, timeout: float = 20.0) -> list[dict]:
    """The session rows once ``count`` of them are no longer active (closes are written
    by the recording workers a moment after the agent's ssh exits)."""
    deadline = time.monotonic() + timeout
    rows = session_rows(rig)
    while time.monotonic() < deadline:
        rows = session_rows(rig)
        if sum(r["status"] != "active" for r in rows) >= count:
            break
        time.sleep(0.1)
    return rows


def _without_echo() -> str:
    return POLICY_RULES.replace('commands = ["echo", ', 'commands = [')


def test_many_agents_land_in_one_index_through_both_workers(wrig, token):
    log = wrig.log()
    assert log.count("bastion listening on") == 1 and "with 2 workers" in log
    assert sorted(workers_of(wrig)) == [1, 2]

    def one(i: int) -> tuple[int, str]:
        r = wrig.ssh(token, f"echo agent-{i}")
        return r.returncode, r.out

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(24)))
    assert results == [(0, f"agent-{i}\n") for i in range(24)]
    rows = settled_rows(wrig, 24)
    assert len(rows) == 24 and all(r["status"] == "closed" for r in rows)
    assert {worker_of(wrig, r) for r in rows} == {1, 2}      # both workers took sessions
    listed = json.loads(wrig.cli("sessions", "list", "--json").out)
    assert len(listed) == 24
    status = wrig.cli("status", "--json")                 # exit 0: every worker records
    info = json.loads(status.out)
    assert info["serve"]["state"] == "ok" and info["serve"]["workers"] == 2
    assert sorted(info["workers"]) == ["1", "2"]
    assert {info["workers"][k]["pid"] for k in ("1", "2")} == set(workers_of(wrig).values())
    assert wrig.cli("verify").returncode == 0


def test_sighup_reaches_every_worker(wrig, token):
    assert wrig.ssh(token, "echo before").returncode == 0
    wrig.write_policy(wrig.policy_text(_without_echo()))
    wrig.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 15
    while wrig.log().count("policy reloaded") < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert wrig.log().count("policy reloaded") >= 2
    # every worker enforces the new file, and `bastion status` shows it for each
    digest = json.loads(wrig.cli("policy", "check", "--json").out)["digest"]
    info = json.loads(wrig.cli("status", "--json").out)
    assert {w["policy"]["digest"] for w in info["workers"].values()} == {digest}
    assert "different policies" not in wrig.cli("status").out
    seen = set()
    for i in range(40):                          # until both workers have denied one
        r = wrig.ssh(token, f"echo after-{i}")
        assert r.returncode == 126 and "<default>" in r.err
        seen = {worker_of(wrig, row) for row in session_rows(wrig)[1:]}
        if seen == {1, 2}:
            break
    assert seen == {1, 2}


def _open_on_both(rig: BastionRig, token: str) -> dict[int, tuple]:
    """A long session on each worker: {worker: (ssh process, session row)}."""
    held: dict[int, tuple] = {}
    strays = []
    for _ in range(40):
        proc = rig.ssh_popen(token, "echo started; sleep 60")
        assert proc.stdout.readline() == b"started\n"
        row = [r for r in session_rows(rig) if r["status"] == "active"
               and all(r["id"] != h[1]["id"] for h in held.values())
               and all(r["id"] != s[1]["id"] for s in strays)][-1]
        w = worker_of(rig, row)
        if w in held:
            strays.append((proc, row))
        else:
            held[w] = (proc, row)
        if len(held) == 2:
            break
    for proc, _ in strays:
        proc.kill()
        proc.wait()
    assert sorted(held) == [1, 2]
    return held


def test_a_killed_worker_is_restarted_and_only_its_session_is_interrupted(wrig, token):
    held = _open_on_both(wrig, token)
    pids = workers_of(wrig)
    os.kill(pids[2], signal.SIGKILL)
    wrig.wait_log("worker 2 (pid", timeout=15)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        now = workers_of(wrig)
        if 2 in now and now[2] != pids[2] and "interrupted" in {
                r["status"] for r in session_rows(wrig)}:
            break
        time.sleep(0.1)
    assert workers_of(wrig)[2] != pids[2] and workers_of(wrig)[1] == pids[1]
    rows = {r["id"]: r for r in session_rows(wrig)}
    assert rows[held[2][1]["id"]]["status"] == "interrupted"
    assert rows[held[1][1]["id"]]["status"] == "active"          # worker 1's goes on
    proc1 = held[1][0]
    assert proc1.poll() is None
    out = wrig.cli("sessions", "export", str(held[2][1]["id"])).out
    assert "recording interrupted" in out and "started" in out   # valid, marked recording
    held[2][0].wait(15)
    assert wrig.ssh(token, "echo after-restart").out == "after-restart\n"
    proc1.kill()
    proc1.wait()
    assert wrig.cli("verify").returncode == 0


def test_sigterm_stops_every_worker_cleanly(wrig, token):
    held = _open_on_both(wrig, token)
    pids = workers_of(wrig)
    assert wrig.stop(signal.SIGTERM) == 0
    for pid in pids.values():
        assert not Path(f"/proc/{pid}").exists() or \
            Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    for proc, _ in held.values():
        _, err = proc.communicate(timeout=15)
        assert b"shutting down" in err
    rows = session_rows(wrig)                  # serve has exited: everything is written
    assert rows and all(r["status"] == "closed" for r in rows)
    assert wrig.log().count("bastion stopped") >= 1
    assert wrig.cli("verify").returncode == 0


def test_a_second_serve_on_the_same_data_dir_is_refused(wrig):
    r = wrig.cli("serve", "--listen", "127.0.0.1:0", "--workers", "1", check=False)
    assert r.returncode == 2 and "another bastion process is recording into" in r.err
    r = wrig.cli("serve", "--listen", "127.0.0.1:0", "--workers", "2", check=False)
    assert r.returncode == 2 and "another bastion process is recording into" in r.err


def test_a_killed_parent_takes_its_workers_and_the_next_start_recovers_all(wrig, token):
    held = _open_on_both(wrig, token)
    pids = workers_of(wrig)
    os.kill(wrig.proc.pid, signal.SIGKILL)
    wrig.proc.wait(10)
    deadline = time.monotonic() + 20                 # the workers get SIGTERM (PDEATHSIG)
    while any(Path(f"/proc/{p}").exists() for p in pids.values()) and \
            time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(Path(f"/proc/{p}").exists() for p in pids.values())
    for proc, _ in held.values():
        proc.kill()
        proc.wait()
    wrig.start()                                     # same data dir and port, 2 workers again
    wrig.wait_log("with 2 workers", timeout=30)
    rows = session_rows(wrig)
    assert rows and all(r["status"] != "active" for r in rows)
    assert wrig.ssh(token, "echo again").out == "again\n"
    assert wrig.cli("verify").returncode == 0


def _serve_once(rig: BastionRig, *args: str):
    return rig.cli("serve", "--workers", "2", *args, check=False)


def test_a_port_another_serve_with_workers_listens_on_is_refused(wrig, tmp_path):
    other = tmp_path / "other-data"                  # another data dir, the same user and port
    r = _serve_once(wrig, "--listen", f"127.0.0.1:{wrig.port}", "--data-dir", str(other))
    assert r.returncode == 2 and "Traceback" not in r.err
    assert f"cannot listen on 127.0.0.1:{wrig.port}: the port is already in use" in r.err


def test_a_worker_that_cannot_start_stops_the_start_with_its_error(tmp_path_factory, issuer):
    r = BastionRig(tmp_path_factory.mktemp("badworkers"), issuer, workers=2).setup()
    try:
        r.write_policy(r.policy_text().replace('action = "deny"', 'action = "maybe"', 1))
        p = _serve_once(r, "--listen", "127.0.0.1:0")
        assert p.returncode == 2 and "Traceback" not in p.err
        assert "maybe" in p.err and "worker 1 exited with status 2 while starting" in p.err
    finally:
        r.close()


def test_a_worker_count_out_of_range_exits_2_with_a_hint(wrig):
    r = _serve_once(wrig, "--listen", "127.0.0.1:0", "--workers", "0")
    assert r.returncode == 2 and "--workers must be 1-63, got 0" in r.err and "hint:" in r.err


@contextlib.contextmanager
def api_workers_rig(tmp_path_factory, issuer, name: str) -> Iterator[BastionRig]:
    """A started ``serve --workers 2`` with the API on (worker 1 serves it), closed after."""
    from tests.e2e.test_api import ApiRig
    r = ApiRig(tmp_path_factory.mktemp(name), issuer, workers=2).setup()
    try:
        r.start_api()
        r.wait_log("bastion listening on", timeout=30)
        yield r
    finally:
        r.close()


def test_worker_1_serves_the_api_and_its_metrics_gauges_cover_both_workers(
        tmp_path_factory, issuer, token):
    from prometheus_client.parser import text_string_to_metric_families

    from tests.e2e.test_api import call
    with api_workers_rig(tmp_path_factory, issuer, "wapi") as r:
        assert r.log().count("API listening on") == 1        # worker 1 only
        held = _open_on_both(r, token)
        status, text = call(r, "GET", "/metrics")
        assert status == 200
        gauges = {f.name: f.samples[0].value for f in text_string_to_metric_families(text)
                  if f.type == "gauge" and f.samples}
        assert gauges["bastion_workers"] == 2
        # one held on each worker, plus any stray whose ssh was killed: its session stays open
        # until its upstream command ends (the row says so too), so count against the index
        active = [row for row in session_rows(r) if row["status"] == "active"]
        assert {worker_of(r, row) for row in active} == {1, 2}
        assert gauges["bastion_sessions_open"] == len(active) >= 2
        assert gauges["bastion_recording_up"] == 1
        for proc, _ in held.values():
            proc.kill()
            proc.wait()


def test_a_command_held_on_either_worker_is_released_by_an_answer_from_the_cli(
        tmp_path_factory, issuer, token):
    from tests.e2e.test_approvals import APPROVAL_RULES, _answer, _wait_for_request
    lead = issuer.mint(client=issuer.add_client("workers-sre-lead", roles=["sre-leads"]))
    r = BastionRig(tmp_path_factory.mktemp("wappr"), issuer, workers=2).setup()
    r.write_policy(r.policy_text(APPROVAL_RULES.replace("TIMEOUT", "60")))
    try:
        r.start()
        r.wait_log("bastion listening on", timeout=30)
        seen: set[int] = set()
        for i in range(30):                      # until a held command ran on each worker
            marker = r.canary_dir / f"approved-{i}"
            proc = r.ssh_popen(token, f"touch {marker}")
            try:
                rid = _wait_for_request(proc)
                assert not marker.exists()       # held
                assert _answer(r, "approve", rid, lead).returncode == 0
                assert proc.wait(20) == 0 and marker.exists()
            finally:
                if proc.poll() is None:
                    proc.kill()
                proc.wait()
            seen = {worker_of(r, row) for row in session_rows(r)}
            if seen == {1, 2}:
                break
        assert seen == {1, 2}
    finally:
        r.close()
