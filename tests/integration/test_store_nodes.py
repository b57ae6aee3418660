"""``bastion store nodes`` through the real CLI on a private PostgreSQL cluster, with nodes
recorded by the real recorder and worker: alive, late and gone by their heartbeats, their open
and recorded sessions, a recording a peer sealed and not yet taken back, and the tail keys
(two passphrases: two numbers, and a warning); what each node published of what it enforces
(bastion.recording.nodeconfig: policy digest, a refused reload, host CA and host key) and
which of those differ among the nodes not gone."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bastion import __version__
from bastion.recording import Recorder, leases, nodeconfig, schema
from bastion.store.pgschema import SCHEMA_VERSION as V
from bastion.recording import tailstore as store_tails
from tests.integration.recordkit import AGENT, record_session

pytestmark = pytest.mark.integration

BASTION = str(Path(sys.executable).with_name("bastion"))
LEASE = 60.0


def _key(passphrase: bytes):
    return lambda salt: hashlib.sha256(passphrase + salt).digest()


def _cli(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([BASTION, "store", "nodes", "--policy", "/nonexistent.toml", *args],
                          env=env, capture_output=True, text=True, timeout=120)


def test_store_nodes_lists_each_node_with_its_state_and_sessions(tmp_path, pg_store, monkeypatch):
    env = dict(os.environ, BASTION_STORE_LEASE=str(LEASE))
    schema.connect(tmp_path / "migrate").close()          # the store's schema, no node yet
    empty = _cli(env, "--json")
    assert empty.returncode == 0, empty.stderr
    assert json.loads(empty.stdout) == {"lease_seconds": LEASE, "nodes": [], "differ": {}}
    monkeypatch.setenv("BASTION_NODE", "gone1")          # served, then stopped answering
    rec = Recorder.open(tmp_path / "gone1", store_key_for=_key(b"old passphrase"))
    s = rec.start_session(principal=AGENT, client="127.0.0.1:1", target="web1", login="deploy")
    ch = s.open_channel("exec", command="sleep 100")
    ch.output(b"partial\n")
    rec.flush()
    gone_pid = rec._writer.proc.pid                      # its worker beats every lease/3: freeze it
    os.kill(gone_pid, signal.SIGSTOP)                    # so the backdated heartbeat stays
    conn = schema.connect(tmp_path / "gone1")
    conn.execute("UPDATE nodes SET seen = ? WHERE name = 'gone1'", (time.time() - 3 * LEASE,))
    conn.close()
    monkeypatch.setenv("BASTION_NODE", "a")
    a = Recorder.open(tmp_path / "a", store_key_for=_key(b"pass"))
    record_session(a, "web1", ["uptime"])
    record_session(a, "web2", ["df -h"])
    open_on_a = a.start_session(principal=AGENT, client="127.0.0.1:2", target="web3",
                                login="deploy")
    a.flush()
    conn = schema.connect(tmp_path / "a")               # a takes gone1's session over
    taker = leases.TailTaker(store_tails.key_for(conn, _key(b"pass"), lease=LEASE), tmp_path / "a")
    assert leases.take_over(conn, LEASE, taker=taker) == [s.id]
    conn.execute("INSERT INTO nodes (name, seen) VALUES ('late1', ?)", (time.time() - LEASE / 2,))
    conn.close()
    try:
        done = _cli(env, "--json")
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        by = {n["node"]: n for n in report["nodes"]}
        assert sorted(by) == ["a", "gone1", "late1"]
        assert by["a"]["state"] == "alive" and by["a"]["silent_seconds"] < LEASE / 3
        assert (by["a"]["open_sessions"], by["a"]["sessions"]) == (1, 3)
        assert by["a"]["taken_back_pending"] == 0
        assert by["late1"]["state"] == "late" and by["late1"]["sessions"] == 0
        assert by["late1"]["tail_key"] is None
        assert by["gone1"]["state"] == "gone" and by["gone1"]["silent_seconds"] >= 3 * LEASE
        assert (by["gone1"]["open_sessions"], by["gone1"]["sessions"]) == (0, 1)   # taken over
        assert by["gone1"]["taken_back_pending"] == 1      # the recording a sealed for it
        assert {by["a"]["tail_key"], by["gone1"]["tail_key"]} == {1, 2}          # two keys
        human = _cli(env)
        assert human.returncode == 0, human.stderr
        lines = human.stdout.splitlines()
        print("\n" + human.stdout + human.stderr)
        assert lines[0].startswith("a: alive, heartbeat ") and "1 session(s) open, 3 recorded" \
            in lines[0]
        assert re.match(r"gone1: gone, heartbeat \d+ min ago; 0 session\(s\) open, 1 recorded",
                        lines[1])
        assert "1 recording(s) a peer sealed, not yet taken back" in lines[1]
        assert re.match(r"late1: late, heartbeat \d+ s ago; 0 session\(s\) open", lines[2])
        assert "2 tail keys among these nodes" in human.stderr
        for secret in (b"pass", b"old passphrase"):
            assert hashlib.sha256(secret).hexdigest()[:8] not in human.stdout + done.stdout
    finally:
        open_on_a.close()
        a.close()
        os.kill(gone_pid, signal.SIGCONT)
        ch.close(exit_status=0)
        s.close()
        rec.close()


def test_store_nodes_on_sqlite_says_what_to_do(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_STORE")}
    done = _cli(env)
    assert done.returncode != 0
    assert "no PostgreSQL store is configured" in done.stderr
    assert "bastion status" in done.stderr


def test_a_node_name_with_escapes_in_the_store_is_shown_inert(tmp_path, pg_store):
    conn = schema.connect(tmp_path / "migrate")
    conn.execute("INSERT INTO nodes (name, seen) VALUES (?, ?)",
                 ("evil\x1b[2J\x1b]0;owned\x07", time.time()))
    conn.close()
    env = dict(os.environ, BASTION_STORE_LEASE=str(LEASE))
    done = _cli(env)
    assert done.returncode == 0, done.stderr
    assert "\x1b" not in done.stdout and "\x07" not in done.stdout
    assert done.stdout.startswith("evil␛[2J␛]0;owned␇: alive"), done.stdout


def _values(policy: str, ca: str = "SHA256:ca-one", key: str = "SHA256:key-one", **extra):
    return {"policy": "sha256:" + policy * 64, "policy_loaded": time.time() - 30,
            "host_ca": ca, "host_key": key, **extra}


def _as_node(tmp_path, monkeypatch, name: str):
    monkeypatch.setenv("BASTION_NODE", name)
    return schema.connect(tmp_path / name)


def test_nodes_that_enforce_different_policies_or_keys_are_named(tmp_path, pg_store, monkeypatch,
                                                                  caplog):
    env = dict(os.environ, BASTION_STORE_LEASE=str(LEASE))
    conns = {n: _as_node(tmp_path, monkeypatch, n) for n in ("a-w1", "a-w2", "b-w1", "gone1")}
    try:
        for name in ("a-w1", "a-w2"):
            assert nodeconfig.publish_and_compare(conns[name], name, _values("a"), LEASE) == []
        nodeconfig.publish(conns["gone1"], _values("g", ca="SHA256:ca-old"),
                           now=time.time() - 3 * LEASE)
        # an older release's node: a heartbeat, nothing published: never a difference
        conns["a-w1"].execute("INSERT INTO nodes (name, seen) VALUES ('old1', ?)", (time.time(),))
        refused = _values("b", ca="SHA256:ca-two", policy_error="line 3: not valid TOML",
                          policy_error_at=time.time() - 5)
        with caplog.at_level("WARNING", logger="bastion.store"):
            lines = nodeconfig.publish_and_compare(conns["b-w1"], "b-w1", refused, LEASE)
        assert lines == [
            f"policy differs from live node(s): this node has sha256:{'b' * 12}, a-w1, a-w2 "
            f"have sha256:{'a' * 12}",
            "host CA differs from live node(s): this node has SHA256:ca-two, a-w1, a-w2 have "
            "SHA256:ca-one"]                                 # gone1 is history, old1 unknown
        logged = [r.getMessage() for r in caplog.records if "differs" in r.getMessage()]
        assert len(logged) == 2 and "SIGHUP" in logged[0] and "hostkeys" in logged[1]
        seen = conns["a-w1"].execute("SELECT seen FROM nodes WHERE name = 'gone1'").fetchone()[0]
        nodeconfig.publish(conns["gone1"], _values("g", ca="SHA256:ca-old"))
        assert conns["a-w1"].execute("SELECT seen FROM nodes WHERE name = 'gone1'"
                                     ).fetchone()[0] == seen     # publishing is no heartbeat
        report = nodeconfig.report(conns["a-w1"], ["a-w1", "a-w2"], LEASE)
        assert report["published"] and report["live_peers"] == ["b-w1", "old1"]
        assert [line.split(":")[0] for line in report["differ"]] == \
            ["policy differs from live node(s)", "host CA differs from live node(s)"]
        assert "b-w1 has sha256:" + "b" * 12 in report["differ"][0]
        assert len(report["hints"]) == 2
        assert not nodeconfig.report(conns["a-w1"], ["nobody"], LEASE)["published"]

        done = _cli(env, "--json")
        assert done.returncode == 0, done.stderr
        out = json.loads(done.stdout)
        assert out["differ"] == {
            "policy": {"sha256:" + "a" * 64: ["a-w1", "a-w2"], "sha256:" + "b" * 64: ["b-w1"]},
            "host_ca": {"SHA256:ca-one": ["a-w1", "a-w2"], "SHA256:ca-two": ["b-w1"]}}
        by = {n["node"]: n for n in out["nodes"]}
        assert by["b-w1"]["policy_error"] == "line 3: not valid TOML"
        assert (by["a-w1"]["release"], by["a-w1"]["schema"]) == (__version__, V)
        assert by["old1"]["policy"] is None
        human = _cli(env)
        assert human.returncode == 0, human.stderr
        print("\n" + human.stdout + human.stderr)
        line = {ln.split(":")[0]: ln for ln in human.stdout.splitlines()}
        assert f"; policy sha256:{'a' * 12}; host CA 1, host key 1; bastion {__version__}, " \
               f"schema {V}" in line["a-w1"]
        assert re.search(rf"; policy sha256:{'b' * 12} \(a reload refused \d+ s ago: it keeps "
                         r"that one\); host CA 2, host key 1", line["b-w1"])
        assert "policy" not in line["old1"]
        err = human.stderr
        assert (f"2 different policies among the nodes not gone: sha256:{'a' * 12} on a-w1, "
                f"a-w2; sha256:{'b' * 12} on b-w1") in err
        assert ("2 different host CAs among the nodes not gone: 1 = SHA256:ca-one on a-w1, a-w2; "
                "2 = SHA256:ca-two on b-w1") in err
        assert "host keys" not in err and "SIGHUP" in err and "hostkeys" in err

        # b fixed: the same policy and keys as a (its refused reload cleared): nothing differs
        assert nodeconfig.publish_and_compare(conns["b-w1"], "b-w1", _values("a"), LEASE) == []
        again = _cli(env)
        assert "different" not in again.stderr and "(a reload refused" not in again.stdout
        assert json.loads(_cli(env, "--json").stdout)["differ"] == {}
        assert "schema versions" not in again.stderr
        # b still on the release before (one node upgraded at a time): said, not a difference
        nodeconfig.publish(conns["b-w1"], {**_values("a"), "schema": V - 1})
        mixed = _cli(env)
        assert f"the nodes not gone run 2 schema versions ({V - 1}, {V})" in mixed.stderr
        assert "different" not in mixed.stderr
    finally:
        for conn in conns.values():
            conn.close()


def _forget(env: dict, *names: str) -> subprocess.CompletedProcess:
    return subprocess.run([BASTION, "store", "forget", *names, "--policy", "/nonexistent.toml"],
                          env=env, capture_output=True, text=True, timeout=120)


def test_forget_removes_a_node_gone_for_good_and_refuses_one_that_is_not(tmp_path, pg_store,
                                                                         monkeypatch, caplog):
    env = dict(os.environ, BASTION_STORE_LEASE=str(LEASE))
    monkeypatch.setenv("BASTION_NODE", "old1")           # recorded, then taken out of service
    rec = Recorder.open(tmp_path / "old1", store_key_for=_key(b"old passphrase"))
    record_session(rec, "web1", ["uptime"])
    rec.close()
    conn = schema.connect(tmp_path / "old1")
    conn.execute("UPDATE nodes SET seen = ? WHERE name = 'old1'", (time.time() - 3 * LEASE,))
    conn.close()
    monkeypatch.setenv("BASTION_NODE", "a")               # alive, with a session open
    with caplog.at_level("WARNING", logger="bastion.store"):
        a = Recorder.open(tmp_path / "a", store_key_for=_key(b"pass"))
    assert [r for r in caplog.records if "node old1" in r.getMessage()
            and "another vault passphrase" in r.getMessage()]          # warned at each start
    caplog.clear()
    held = a.start_session(principal=AGENT, client="127.0.0.1:2", target="web3", login="deploy")
    a.flush()
    conn = schema.connect(tmp_path / "a")
    conn.execute("INSERT INTO nodes (name, seen) VALUES ('stuck1', ?)", (time.time() - 3 * LEASE,))
    conn.execute("UPDATE sessions SET node = 'stuck1' WHERE id = ?", (held.id,))  # not taken yet
    try:
        listed = _cli(env)
        assert "bastion store forget old1" in listed.stderr      # stuck1 has a session open
        refused = {name: _forget(env, name) for name in ("a", "stuck1", "nobody")}
        assert all(r.returncode != 0 for r in refused.values())
        assert "node 'a' is not gone: its last heartbeat was" in refused["a"].stderr
        assert "stop that bastion serve and wait for its lease" in refused["a"].stderr
        assert "node 'stuck1' still has 1 session(s) active" in refused["stuck1"].stderr
        assert "no node 'nobody' in the store" in refused["nobody"].stderr
        done = _forget(env, "old1")
        assert done.returncode == 0, done.stderr
        assert re.match(r"forgot node old1 \(its last heartbeat \d+ min ago; its 1 session\(s\) "
                        r"stay in the index under its name\)", done.stdout), done.stdout
        assert sorted(n["node"] for n in json.loads(_cli(env, "--json").stdout)["nodes"]) == \
            ["a", "stuck1"]
        purposes = [r[0] for r in conn.execute("SELECT purpose FROM store_salts")]
        assert store_tails.CHECK_PREFIX + "old1" not in purposes
        assert store_tails.CHECK_PREFIX + "a" in purposes
        nodes_of = conn.execute("SELECT node, count(*) FROM sessions GROUP BY node ORDER BY node")
        assert [tuple(r) for r in nodes_of] == [("old1", 1), ("stuck1", 1)]   # history stays
        # a node starting with another passphrase is no longer warned about the forgotten one
        with caplog.at_level("WARNING", logger="bastion.store"):
            store_tails.key_for(conn, _key(b"pass"), lease=LEASE)      # as a start does
        assert not [r for r in caplog.records if "old1" in r.getMessage()]
        again = _forget(env, "old1")
        assert again.returncode != 0 and "no node 'old1'" in again.stderr
    finally:
        conn.close()
        held.close()
        a.close()


def test_a_node_warns_when_a_peer_drifts_after_it_started_and_once(tmp_path, pg_store,
                                                                   monkeypatch, caplog):
    """Node a published first (no peer then); b starts with another policy; a's periodic
    comparison warns once, not at every check, and says once when b is back in line."""
    schema.connect(tmp_path / "migrate").close()

    def as_node(name, call):
        monkeypatch.setenv("BASTION_NODE", name)     # the connection's node (publish's row)
        return call()
    pa = nodeconfig.Publisher(tmp_path / "a", "a", LEASE)
    pb = nodeconfig.Publisher(tmp_path / "b", "b", LEASE)
    try:
        assert as_node("a", lambda: pa.publish(_values("a"), wait=True)) == []
        assert as_node("a", lambda: pa.check(_values("a"), wait=True)) == []
        assert len(as_node("b", lambda: pb.publish(_values("b"), wait=True))) == 1
        caplog.clear()
        with caplog.at_level("INFO", logger="bastion.store"):
            first = as_node("a", lambda: pa.check(_values("a"), wait=True))
            again = as_node("a", lambda: pa.check(_values("a"), wait=True))
        assert first == again and first[0].startswith("policy differs from live node(s)")
        said = [r.getMessage() for r in caplog.records]
        assert len(said) == 1 and "b has sha256:" + "b" * 12 in said[0] and "SIGHUP" in said[0]
        caplog.clear()
        assert as_node("b", lambda: pb.publish(_values("a"), wait=True)) == []
        with caplog.at_level("INFO", logger="bastion.store"):
            assert as_node("a", lambda: pa.check(_values("a"), wait=True)) == []
            assert as_node("a", lambda: pa.check(_values("a"), wait=True)) == []
        assert [r.getMessage() for r in caplog.records] == [
            "no live node differs from this one any more (policy, host CA, host key)"]
    finally:
        pa.close()
        pb.close()
