"""The PostgreSQL store end to end: real ssh -> `bastion serve` -> real sshd, the index in a
private PostgreSQL cluster (tests/pgcluster.py), and two nodes sharing it.

Node A and node B are two `bastion serve` processes (own data dir, vault and host CA, own
port) on one store: the core flows run on A; a command held on A is approved through B's
CLI; sessions of both show in one list; a kill -9 of A marks only A's sessions interrupted
at its restart; `verify` passes; with PostgreSQL stopped new sessions are refused (never run
unrecorded) and come back when it returns.  Held commands touch files in the test's own
canary directory.
"""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from bastion.recording import player
from tests.e2e.harness import BastionRig
from tests.e2e.test_approvals import APPROVAL_RULES, _wait_for_request
from tests.pgcluster import PASSWORD
from tests.reliability.test_recording_faults import GH, _read_until, _worker_pid

pytestmark = pytest.mark.e2e


def _rig(tmp_path_factory, issuer, store_env, node: str) -> BastionRig:
    r = BastionRig(tmp_path_factory.mktemp(node), issuer,
                   store_env={**store_env, "BASTION_NODE": node}).setup()
    r.write_policy(r.policy_text(APPROVAL_RULES.replace("TIMEOUT", "60")))
    return r.start()


@pytest.fixture(scope="module")
def store_env(pg_cluster):
    pg_cluster.create_db("e2e_nodes")
    # a 3 s lease: a node silent that long has its sessions closed by a peer (recording.leases)
    return {**pg_cluster.store_env("e2e_nodes"), "BASTION_STORE_LEASE": "3"}


@pytest.fixture(scope="module")
def node_a(tmp_path_factory, issuer, store_env):
    r = _rig(tmp_path_factory, issuer, store_env, "node-a")
    yield r
    r.close()


@pytest.fixture(scope="module")
def node_b(tmp_path_factory, issuer, store_env):
    r = _rig(tmp_path_factory, issuer, store_env, "node-b")
    yield r
    r.close()


@pytest.fixture(scope="module")
def approver_token(issuer):
    lead = issuer.add_client("e2e-pg-lead", roles=["sre-leads"])
    return issuer.mint(client=lead)


def _json(rig, *args):
    return json.loads(rig.cli(*args, "--json").out)


def _until(fn, what: str, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"never happened: {what}")


def test_core_flows_on_postgresql(node_a, token, issuer, agent_client):
    ok = node_a.ssh(token, "echo pg-allowed-marker-1")
    assert ok.returncode == 0, ok.err
    assert ok.out.strip() == "pg-allowed-marker-1"
    denied = node_a.ssh(token, f"rm -rf {node_a.canary_dir}")
    assert denied.returncode == 126
    assert (node_a.canary_dir / "canary.txt").read_text() == "still here\n"
    bad = issuer.mint(client=agent_client, audience="api://elsewhere")
    assert node_a.ssh(bad, "true").returncode == 255
    assert not (node_a.data_dir / "index.sqlite").exists(), "the index went to SQLite"

    hits = _until(lambda: _json(node_a, "commands", "search", "pg-allowed-marker-1"),
                  "the allowed command is searchable")
    assert hits[0]["action"] == "allow" and hits[0]["rule"] == "read-only-tools"
    [deny] = _json(node_a, "commands", "search", "rm -rf", "--action", "deny")
    assert deny["rule"] == "no-recursive-delete"
    assert _json(node_a, "commands", "search", "pg-allowed*")      # a prefix
    assert not _json(node_a, "commands", "search", "pg-allowed-marker-2")
    show = _until(lambda: (s := _json(node_a, "sessions", "show", str(hits[0]["session_id"])))
                  and s["status"] == "closed" and s, "the session closes")
    assert show["node"] == "node-a" and show["target"] == "web1"
    assert [c["line"] for c in show["commands"]] == ["echo pg-allowed-marker-1"]
    [chan] = show["channels"]
    assert b"pg-allowed-marker-1" in (node_a.data_dir / chan["path"]).read_bytes()
    refused = _json(node_a, "sessions", "list", "--status", "refused")
    assert any("wrong audience" in (r.get("reason") or "") for r in refused)
    assert _json(node_a, "sessions", "list", "--target", "web*")
    assert not _json(node_a, "sessions", "list", "--target", "db*")
    status = json.loads(node_a.cli("status", "--json", check=False).out)
    assert status["running"] and "PostgreSQL" in status["index"]["store"]
    assert status["index"]["active_sessions"] == 0
    verify = node_a.cli("verify", "--json", check=False)
    assert verify.returncode == 0, verify.out + verify.err
    assert json.loads(verify.out)["rows_checked"] >= 4


def test_a_command_held_on_node_a_is_approved_through_node_b(node_a, node_b, token,
                                                             approver_token):
    marker = node_a.canary_dir / "approved-across-nodes"
    proc = node_a.ssh_popen(token, f"touch {marker}")
    try:
        rid = _wait_for_request(proc)
        assert not marker.exists()
        pending = _json(node_b, "approvals", "list")
        assert [r["id"] for r in pending] == [rid]
        answer = node_b.cli("approvals", "approve", str(rid), "--reason", "via node b",
                            check=False, env={"BASTION_TOKEN": approver_token})
        assert answer.returncode == 0, answer.err
        assert proc.wait(20) == 0
        assert marker.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
    row = next(r for r in _json(node_a, "approvals", "list", "--all") if r["id"] == rid)
    assert row["status"] == "approved" and row["node"] == "node-a"
    assert row["answer_reason"] == "via node b"


def test_a_command_denied_through_node_b_never_runs_on_node_a(node_a, node_b, token,
                                                              approver_token):
    marker = node_a.canary_dir / "denied-across-nodes"
    proc = node_a.ssh_popen(token, f"touch {marker}")
    try:
        rid = _wait_for_request(proc)
        answer = node_b.cli("approvals", "deny", str(rid), "--reason", "no", check=False,
                            env={"BASTION_TOKEN": approver_token})
        assert answer.returncode == 0, answer.err
        assert proc.wait(20) == 125
        assert not marker.exists()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_sessions_of_both_nodes_in_one_list_with_distinct_ids(node_a, node_b, token):
    assert node_a.ssh(token, "echo from-node-a-xyz").returncode == 0
    assert node_b.ssh(token, "echo from-node-b-xyz").returncode == 0

    def both():
        rows = _json(node_b, "sessions", "list", "--limit", "1000")
        nodes = {r["node"] for r in rows}
        return rows if {"node-a", "node-b"} <= nodes else None
    rows = _until(both, "sessions of both nodes listed")
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids))
    only_a = _json(node_b, "sessions", "list", "--limit", "1000", "--node", "node-a")
    assert only_a and {r["node"] for r in only_a} == {"node-a"}
    assert len(only_a) == sum(1 for r in rows if r["node"] == "node-a")
    hits = _json(node_a, "commands", "search", "xyz*")
    assert {h["line"] for h in hits} >= {"echo from-node-a-xyz", "echo from-node-b-xyz"}


def test_a_reviewer_on_node_b_plays_and_exports_a_session_recorded_on_node_a(node_a, node_b,
                                                                             token):
    assert node_a.ssh(token, "echo played-elsewhere-marker").returncode == 0
    [hit] = _until(lambda: _json(node_b, "commands", "search", "played-elsewhere-marker"),
                   "the command is indexed")
    show = _until(lambda: (s := _json(node_b, "sessions", "show", str(hit["session_id"])))
                  and s["status"] == "closed" and s, "the session closes")
    [chan] = show["channels"]
    assert not (node_b.data_dir / chan["path"]).exists()      # recorded on A, not here
    cast = node_b.cli("sessions", "export", str(show["id"]), "--format", "cast").stdout
    assert cast == (node_a.data_dir / chan["path"]).read_bytes()   # byte for byte
    played = node_b.cli("sessions", "play", str(show["id"]), "--json").out
    assert "played-elsewhere-marker" in played
    report = json.loads(node_b.cli("verify", "--json").out)
    assert report["ok"] and report["files_elsewhere"] == 0      # A's checked through the store


def _digest(rig) -> str:
    return _json(rig, "policy", "check")["digest"]


def test_nodes_that_differ_are_named_by_the_node_the_store_and_status(node_a, node_b):
    """Each rig has its own target sshd (so its own policy) and its own host CA and key: the
    node that started second warned at its start, the first at its next comparison; the
    store and `bastion status` say so; a reload is published at once."""
    log_b = node_b.wait_log("policy differs from live node(s)")
    assert f"this node has {_digest(node_b)[:19]}, node-a has {_digest(node_a)[:19]}" in log_b
    assert "host CA differs from live node(s)" in log_b and "host key differs" in log_b
    # node a had no peer when it started: its periodic comparison (every lease/2) says it
    node_a.wait_log(f"this node has {_digest(node_a)[:19]}, node-b has {_digest(node_b)[:19]}",
                    timeout=20)
    listed = _json(node_a, "store", "nodes")
    assert listed["differ"]["policy"] == {_digest(node_a): ["node-a"],
                                          _digest(node_b): ["node-b"]}
    assert set(listed["differ"]) == {"policy", "host_ca", "host_key"}
    status = json.loads(node_a.cli("status", "--json").out)
    assert status["serve"]["policy"]["digest"] == _digest(node_a)
    assert status["serve"]["policy"]["refused"] is None
    peers = status["index"]["peers"]
    assert peers["published"] and "node-b" in peers["live_peers"]
    assert [line.split(":")[0] for line in peers["differ"]] == [
        "policy differs from live node(s)", "host CA differs from live node(s)",
        "host key differs from live node(s)"]
    human = node_a.cli("status").out
    assert "peers" in human and "node-b has " + _digest(node_b)[:19] in human

    before = node_b.policy_path.read_text()
    try:
        node_b.write_policy(before + '\n[[rules]]\nname = "e2e-digest"\naction = "deny"\n'
                                     'commands = ["no-such-e2e-program"]\n')
        node_b.proc.send_signal(signal.SIGHUP)
        changed = _digest(node_b)

        def published():
            rows = {n["node"]: n for n in _json(node_a, "store", "nodes")["nodes"]}
            return rows["node-b"]["policy"] == changed
        _until(published, "node b's reloaded policy is published")
        assert json.loads(node_b.cli("status", "--json").out)["serve"]["policy"]["digest"] \
            == changed
    finally:
        node_b.write_policy(before)
        node_b.proc.send_signal(signal.SIGHUP)
    restored = _digest(node_b)
    _until(lambda: {n["node"]: n for n in _json(node_a, "store", "nodes")["nodes"]}
           ["node-b"]["policy"] == restored, "node b's restored policy is published")


def test_kill_9_of_node_a_marks_only_its_sessions_interrupted(node_a, node_b, token):
    on_a = node_a.ssh_popen(token, "echo before-kill-a; sleep 60")
    on_b = node_b.ssh_popen(token, "echo live-on-b; sleep 15")
    try:
        def active():
            rows = _json(node_b, "sessions", "list", "--status", "active")
            return {r["node"]: r["id"] for r in rows} if len(rows) == 2 else None
        ids = _until(active, "one active session on each node")
        node_a.stop(signal.SIGKILL)
        on_a.kill()
        node_a.start()                                   # marks its own session interrupted
        a_row = _json(node_b, "sessions", "show", str(ids["node-a"]))
        b_row = _json(node_b, "sessions", "show", str(ids["node-b"]))
        assert a_row["status"] == "interrupted"
        # live until its sleep ends: never marked interrupted by node A's restart
        assert b_row["status"] in ("active", "closed"), "node A's restart touched node B's session"
        assert node_b.cli("verify").returncode == 0
        assert node_a.cli("verify").returncode == 0
        assert on_b.wait(30) == 0
    finally:
        for p in (on_a, on_b):
            if p.poll() is None:
                p.kill()
                p.wait()
    _until(lambda: _json(node_b, "sessions", "show", str(ids["node-b"]))["status"] == "closed",
           "node B closes its own session")
    result = node_b.cli("verify", "--json", check=False)
    assert result.returncode == 0, result.out                  # A's repaired recording too
    interrupted = _json(node_b, "sessions", "show", str(ids["node-a"]))["channels"][0]
    cast = node_b.cli("sessions", "export", str(ids["node-a"]), "--format", "cast").stdout
    assert cast == (node_a.data_dir / interrupted["path"]).read_bytes()
    assert b"recording interrupted" in cast and b"before-kill-a" in cast


def test_a_node_killed_for_good_has_its_sessions_closed_by_a_peer(node_a, node_b, token):
    on_a = node_a.ssh_popen(token, "echo lease-marker-output; sleep 60")
    try:
        def active_on_a():
            rows = _json(node_b, "sessions", "list", "--status", "active")
            return [r["id"] for r in rows if r["node"] == "node-a"]
        [sid] = _until(active_on_a, "a session open on node A")
        _until(lambda: b"lease-marker-output" in node_a.index_bytes(), "its output committed")
        node_a.stop(signal.SIGKILL)                   # and it does not come back (yet)
        on_a.kill()
        row = _until(lambda: (r := _json(node_b, "sessions", "show", str(sid)))
                     and r["status"] == "interrupted" and r, "node B closes node A's session",
                     timeout=30)
        assert "node node-a stopped answering" in row["reason"]
        assert "marked interrupted by node node-b" in row["reason"]
        cast = node_b.cli("sessions", "export", str(sid), "--format", "cast").stdout
        assert b"lease-marker-output" in cast
        assert b"node node-a stopped answering; marked by node node-b" in cast
        assert node_b.cli("verify").returncode == 0
    finally:
        if on_a.poll() is None:
            on_a.kill()
        if node_a.proc.poll() is not None:
            node_a.start()                            # its recording becomes the sealed copy
    local = node_a.data_dir / row["channels"][0]["path"]
    assert local.read_bytes() == cast
    assert node_a.cli("verify").returncode == 0


def test_a_peer_writes_what_the_dead_nodes_masker_held_back_masked(node_a, node_b, token,
                                                                   tmp_path):
    """The agent on A was shown a line and a token that A's masker still held back undecided
    (not in A's recording yet); A dies whole (its bastion stopped first so that neither
    process writes anything more, then both killed): B, past the lease, writes both from the
    store's tail journal into the recording before its marker, the token masked."""
    secret = GH.encode()
    agent = node_a.ssh_popen(token, "sh -c 'echo held-back-plain-line; "
                                    f"printf \"token %s%s\" {GH[:4]} {GH[4:]}; head -n 1'")
    try:
        got = _read_until(agent, secret)
        [sid] = [r["id"] for r in _json(node_b, "sessions", "list", "--status", "active")
                 if r["node"] == "node-a"]
        worker = _worker_pid(node_a)
        os.kill(node_a.proc.pid, signal.SIGSTOP)      # it cannot start another worker
        os.kill(worker, signal.SIGKILL)
        node_a.stop(signal.SIGKILL)
        agent.kill()
        row = _until(lambda: (r := _json(node_b, "sessions", "show", str(sid)))
                     and r["status"] == "interrupted" and r, "node B closes node A's session",
                     timeout=30)
        assert "marked interrupted by node node-b" in row["reason"]
        cast = node_b.cli("sessions", "export", str(sid), "--format", "cast").stdout
        assert node_b.cli("verify").returncode == 0
    finally:
        if agent.poll() is None:
            agent.kill()
        if node_a.proc.poll() is not None:
            node_a.start()
    assert b"held-back-plain-line" in got                 # shown to the agent...
    path = tmp_path / "from-b.cast"
    path.write_bytes(cast)
    _, events = player.load(path)
    # ...and recorded, from the store, masked as A's worker would have
    assert player.stream_bytes(events, "stdout") == \
        b"held-back-plain-line\ntoken [MASKED:github-token]"
    output = [e.data for e in events if e.code in ("o", "e", "ob", "eb")]
    assert not [d for d in output if GH[:12] in d or GH[-12:] in d]
    assert cast.index(b"[MASKED:github-token]") < cast.index(b"node node-a stopped answering")
    local = node_a.data_dir / row["channels"][0]["path"]
    assert local.read_bytes() == cast                     # A's restart: the sealed copy
    assert node_a.cli("verify").returncode == 0


def test_postgresql_down_refuses_new_sessions_then_recovers(node_a, pg_cluster, token):
    assert node_a.ssh(token, "echo before-outage").returncode == 0
    pg_cluster.stop("fast")
    try:
        results = [node_a.ssh(token, "echo during-outage-marker") for _ in range(2)]
        for r in results:
            assert "during-outage-marker" not in r.out, "a session ran without its index"
            assert r.returncode == 255
        assert "recorded" in results[-1].err, results[-1].err
        for r in results:                    # the store's address is not the agents' business
            assert f":{pg_cluster.port}" not in r.err and "postgresql://" not in r.err
    finally:
        pg_cluster.start()
    ok = _until(lambda: (r := node_a.ssh(token, "echo after-outage-marker")).returncode == 0 and r,
                "sessions are accepted again once PostgreSQL is back", timeout=60)
    assert ok.out.strip() == "after-outage-marker"
    assert _until(lambda: _json(node_a, "commands", "search", "after-outage-marker"),
                  "the command after the outage is indexed")
    assert node_a.cli("verify").returncode == 0


def test_the_store_password_is_never_logged(node_a, node_b):
    for rig in (node_a, node_b):
        assert PASSWORD not in rig.log()
