"""Following a session live from another node: two `bastion serve` nodes on one private
PostgreSQL cluster (tests/pgcluster.py); the agent's real ssh runs a command through node A
that prints in steps, each released by a line the test writes to its stdin; a reviewer on
node B follows it with the real CLI (`sessions play --follow` / `sessions watch` against
node B's data dir and store, and `sessions watch --server` through node B's API), sees
output printed after it started while the session is still open, and exits when it ends.
Node B has no recording file of A's sessions: what it shows comes from the store's copy.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import time

import pytest

from tests.e2e.harness import BASTION, BastionRig, PtyAgent
from tests.e2e.test_api import API_RULES, ApiRig, _raw, call
from tests.pgcluster import PASSWORD

pytestmark = pytest.mark.e2e

# (seq's lines are longer than the masker's hold-back, ~460 bytes, so each step is decided
# and recorded at once; `head -n1` waits for the test's next line, so the session is open
# for as long as the test wants)
STEPS = ("echo step-one-$((1*7)); seq -s . 1 150; head -n1 >/dev/null; "
         "printf '%s \\033]52;c;cGFzdGU=\\007\\n' step-two-$((2*7)); seq -s . 1 150; "
         "head -n1 >/dev/null; echo step-three-$((3*7)); seq -s . 1 150")


@pytest.fixture(scope="module")
def store_env(pg_cluster):
    pg_cluster.create_db("e2e_follow")
    return {**pg_cluster.store_env("e2e_follow"), "BASTION_STORE_LEASE": "3"}


def _node(rig_class, tmp_path_factory, issuer, store_env, name: str):
    r = rig_class(tmp_path_factory.mktemp(f"follow-{name[-1]}"), issuer,
                  store_env={**store_env, "BASTION_NODE": name}).setup()
    r.write_policy(r.policy_text(API_RULES))
    return r


@pytest.fixture(scope="module")
def node_a(tmp_path_factory, issuer, store_env):
    r = _node(BastionRig, tmp_path_factory, issuer, store_env, "node-a")
    yield r.start()
    r.close()


@pytest.fixture(scope="module")
def node_b(tmp_path_factory, issuer, store_env):
    r = _node(ApiRig, tmp_path_factory, issuer, store_env, "node-b")    # its API: the live view
    yield r.start_api()
    r.close()


@pytest.fixture(scope="module")
def auditor(issuer):
    return issuer.mint(client=issuer.add_client("follow-auditor", roles=["auditors"]))


class Lines:
    """A follower process's stdout, line by line, never blocking past a deadline."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        self.buf = b""
        self.lines: list[bytes] = []

    def until(self, needle: bytes, timeout: float = 30.0) -> bytes:
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while True:
            for line in self.lines:
                if needle in line:
                    return line
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{needle!r} never shown; shown: {self.lines!r} {self.buf!r}")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise AssertionError(f"the follower exited before {needle!r}: {self.lines!r}")
                *done, self.buf = (self.buf + chunk).split(b"\n")
                self.lines += done


def _active_on_a(rig: BastionRig) -> int:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        rows = json.loads(rig.cli("sessions", "list", "--status", "active", "--json").out)
        mine = [r["id"] for r in rows if r["node"] == "node-a" and r.get("n_commands")]
        if mine:
            return int(mine[0])
        time.sleep(0.2)
    raise AssertionError("no active session of node A in the shared store")


def _release(agent: subprocess.Popen) -> None:
    agent.stdin.write(b"go\n")
    agent.stdin.flush()


def _follow(node_a, node_b, token, argv: list[str], env: dict) -> None:
    """The agent runs STEPS on node A; ``argv`` (a follower on node B) shows every step live
    and exits 0 when the session ends."""
    agent = node_a.ssh_popen(token, STEPS)
    follower = None
    try:
        sid = _active_on_a(node_b)
        follower = subprocess.Popen([BASTION, *[a.replace("SID", str(sid)) for a in argv]],
                                    env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, start_new_session=True)
        out = Lines(follower)
        assert out.until(b"step-one-").strip() == b"step-one-7"   # what was there before it
        _release(agent)
        # printed after the follower started, shown while the session is still open
        line = out.until(b"step-two-")
        assert line.startswith(b"step-two-14")
        assert b"\x1b]52" not in line and b"\x07" not in line     # no clipboard write shown
        assert agent.poll() is None
        row = json.loads(node_b.cli("sessions", "show", str(sid), "--json").out)
        assert row["status"] == "active"
        assert not (node_b.data_dir / row["channels"][0]["path"]).exists()
        _release(agent)
        rest, err = follower.communicate(timeout=30)       # it ends with the session
        assert follower.returncode == 0, err
        assert b"step-three-21" in out.buf + rest
        assert b"the channel ended" in err
        # the command's marker with the policy's decision, on stderr unless --no-markers
        shown = re.search(rb"\xe2\x94\x80\xe2\x94\x80 command \d+: allow \[[^\]]+\]: echo step-one-", err)
        assert bool(shown) == ("--no-markers" not in argv), err
        assert agent.wait(20) == 0
    finally:
        for p in (agent, follower):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
    return err


def test_play_follow_on_node_b_shows_a_session_of_node_a_live(node_a, node_b, token):
    err = _follow(node_a, node_b, token, ["sessions", "play", "SID", "--follow"], node_b.env)
    assert b"from the store's copy" in err


def test_watch_through_node_b_api_shows_a_session_of_node_a_live(node_a, node_b, token,
                                                                  auditor):
    env = {**node_b.env, "BASTION_TOKEN": auditor}
    for key in ("BASTION_STORE_URL", "BASTION_STORE_PASSWORD_FILE"):
        env.pop(key, None)                  # the remote CLI reaches only the API, no store
    err = _follow(node_a, node_b, token, ["sessions", "watch", "SID", "--server", node_b.url,
                                          "--server-ca", str(node_b.cert), "--no-markers"], env)
    assert b"from the store's copy" in err


def test_an_interactive_shell_on_node_a_is_followed_from_node_b(node_a, node_b, token):
    # (each command prints 1.4 KiB after its marker: more than the masker holds back)
    pad = b"echo TOKEN; printf '%01400d\\n' 0\r"
    agent = PtyAgent(node_a, token, cols=200, rows=50)
    follower = None
    try:
        agent.wait_ready()
        sid = _active_on_a(node_b)
        follower = subprocess.Popen([BASTION, "sessions", "watch", str(sid)], env=node_b.env,
                                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, start_new_session=True)
        out = Lines(follower)
        agent.send(pad.replace(b"TOKEN", b"typed-later-$((40+2))"))
        agent.read_until(b"0" * 1400)
        out.until(b"typed-later-42")                # typed after the follower started
        assert agent.proc.poll() is None
        agent.send(b"exit\r")
        assert agent.wait(20) == 0
        _, err = follower.communicate(timeout=30)
        assert follower.returncode == 0, err
        assert b"the channel ended" in err and b"interrupted" not in err
        # the line typed while it was followed, with its decision, as it was decided
        assert re.search(rb"command \d+: allow \[[^\]]+\]: echo typed-later-\$\(\(40\+2\)\)",
                         err), err
    finally:
        agent.close()
        if follower is not None and follower.poll() is None:
            follower.kill()
            follower.wait()


def test_a_session_that_ended_or_never_was_is_refused_with_what_to_do(node_a, node_b, token,
                                                                       auditor):
    assert node_a.ssh(token, "echo over-and-done").returncode == 0
    rows = json.loads(node_b.cli("sessions", "list", "--json").out)
    sid = next(r["id"] for r in rows if r["node"] == "node-a" and r["status"] == "closed")
    ended = node_b.cli("sessions", "watch", str(sid), check=False)
    assert ended.returncode != 0
    assert f"session {sid} has ended" in ended.err
    assert f"bastion sessions play {sid}" in ended.err
    status, body = call(node_b, "GET", f"/api/v1/sessions/{sid}/live", auditor)
    assert status == 409 and "has ended" in json.dumps(body)
    # naming the channel, as the web viewer's live page does: sent to its end (the store's copy)
    cid = json.loads(node_b.cli("sessions", "show", str(sid), "--json").out)["channels"][0]["id"]
    status, body, headers = _raw(node_b, f"/api/v1/sessions/{sid}/live?channel={cid}"
                                         "&format=asciicast", auditor)
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    frames = [json.loads(line[6:]) for line in body.decode().splitlines()
              if line.startswith("data: [")]
    assert any(f[1] == "o" and "over-and-done" in f[2] for f in frames)
    assert body.rstrip().endswith(b'event: done\ndata: {"status": "closed"}')
    remote = node_b.cli("sessions", "watch", str(sid), "--server", node_b.url, "--server-ca",
                        str(node_b.cert), check=False, env={"BASTION_TOKEN": auditor})
    assert remote.returncode != 0
    assert f"session {sid} has ended" in remote.err and "sessions play" in remote.err
    mixed = node_b.cli("sessions", "play", str(sid), "--follow", "--json", check=False)
    assert mixed.returncode != 0 and "--follow shows the output as it is recorded" in mixed.err
    unknown = node_b.cli("sessions", "play", "999999999", "--follow", check=False)
    assert unknown.returncode != 0
    assert "no session 999999999" in unknown.err and "sessions list" in unknown.err


def test_the_follower_ends_when_a_peer_marks_the_session_interrupted(node_a, node_b, token):
    agent = node_a.ssh_popen(token, "echo before-the-crash-$((6*7)); seq -s . 1 150; sleep 60")
    follower = None
    try:
        sid = _active_on_a(node_b)
        follower = subprocess.Popen([BASTION, "sessions", "watch", str(sid)], env=node_b.env,
                                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, start_new_session=True)
        out = Lines(follower)
        out.until(b"before-the-crash-42")
        node_a.stop(signal.SIGKILL)            # node B's lease (3 s) closes its session
        agent.kill()
        rest, err = follower.communicate(timeout=60)
        assert follower.returncode == 0, err
        assert b"the channel ended (interrupted: " in err
        assert b"node node-a stopped answering" in err
        row = json.loads(node_b.cli("sessions", "show", str(sid), "--json").out)
        assert row["status"] == "interrupted"
    finally:
        for p in (agent, follower):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
        if node_a.proc.poll() is not None:
            node_a.start()


def test_a_follow_ends_clearly_when_postgresql_goes_away(node_a, node_b, token, auditor,
                                                         pg_cluster):
    agent = node_a.ssh_popen(token, "echo until-the-outage-$((5*5)); seq -s . 1 150; sleep 60")
    followers = []
    try:
        sid = _active_on_a(node_b)
        remote_env = {**node_b.env, "BASTION_TOKEN": auditor}
        for argv, env in ((["sessions", "watch", str(sid)], node_b.env),
                          (["sessions", "watch", str(sid), "--server", node_b.url,
                            "--server-ca", str(node_b.cert)], remote_env)):
            proc = subprocess.Popen([BASTION, *argv], env=env, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    start_new_session=True)
            followers.append(proc)
            Lines(proc).until(b"until-the-outage-25")
        pg_cluster.stop("fast")
        try:
            for proc, where in zip(followers, ("local", "remote"), strict=True):
                _, err = proc.communicate(timeout=60)
                assert proc.returncode not in (0, None), err
                assert b"the session index is unavailable" in err, err
                assert PASSWORD.encode() not in err
                if where == "local":                 # the operator's hint names the store
                    assert b"check that PostgreSQL is up" in err, err
                else:                                # an API client is not told where it is
                    assert b"follow again later" in err, err
                    assert f":{pg_cluster.port}".encode() not in err
        finally:
            pg_cluster.start()
    finally:
        for p in (agent, *followers):
            if p.poll() is None:
                p.kill()
                p.wait()
