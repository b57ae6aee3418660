"""The HTTPS API of `bastion serve --api-listen` with real tokens from the dev issuer: who may
call what is decided by the server; an answer through the API (or `bastion approvals
--server`) releases a command the real ssh client is holding; /metrics parses with the
Prometheus project's own parser."""

from __future__ import annotations

import json
import re
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bastion.demo.sshd import free_port, wait_for_port
from tests.e2e.harness import BASTION, BastionRig
from tests.e2e.test_approvals import APPROVAL_RULES, _wait_for_request

API_RULES = APPROVAL_RULES.replace("TIMEOUT", "60").replace(
    'approvers = ["role:sre-leads"]',
    'approvers = ["role:sre-leads"]\nreviewers = ["role:auditors"]\nadmins = ["role:secops"]')


class ApiRig(BastionRig):
    api_port: int = 0

    @property
    def env(self) -> dict:
        env = super().env
        if self.api_port:
            env["BASTION_API_LISTEN"] = f"127.0.0.1:{self.api_port}"
        return env

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    @property
    def cert(self):
        return self.data_dir / "api" / "cert.pem"

    def start_api(self) -> "ApiRig":
        """Start the bastion with its API on a free port (unless one is set) and wait for it."""
        self.api_port = self.api_port or free_port()
        self.start()
        wait_for_port(self.api_port, timeout=30, proc=self.proc)
        return self


@pytest.fixture(scope="module")
def api(tmp_path_factory, issuer):
    r = ApiRig(tmp_path_factory.mktemp("api"), issuer).setup()
    r.write_policy(r.policy_text(API_RULES))
    yield r.start_api()
    r.close()


@pytest.fixture(scope="module")
def lead(issuer):
    return issuer.mint(client=issuer.add_client("api-sre-lead", roles=["sre-leads"]))


@pytest.fixture(scope="module")
def auditor(issuer):
    return issuer.mint(client=issuer.add_client("api-auditor", roles=["auditors"]))


def call(rig, method: str, path: str, token: str | None = None, body: dict | None = None):
    """(status, JSON or text) of one request, trusting only the API's own certificate."""
    ctx = ssl.create_default_context(cafile=str(rig.cert))
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(rig.url + path, method=method, headers=headers,
                                 data=json.dumps(body).encode() if body is not None else None)
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=30) as resp:
            status, raw, ctype = resp.status, resp.read(), resp.headers["content-type"]
    except urllib.error.HTTPError as exc:
        status, raw, ctype = exc.code, exc.read(), exc.headers["content-type"]
    return status, (json.loads(raw) if ctype.startswith("application/json") else raw.decode())


def _raw(rig, path: str, token: str, headers: dict | None = None):
    """(status, body bytes, headers) of a GET."""
    ctx = ssl.create_default_context(cafile=str(rig.cert))
    req = urllib.request.Request(rig.url + path, headers={
        "Authorization": f"Bearer {token}", **(headers or {})})
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=30) as resp:
            return resp.status, resp.read(), {k.lower(): v for k, v in resp.headers.items()}
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), {k.lower(): v for k, v in exc.headers.items()}


def _session_ids(rig, reviewer: str) -> set[int]:
    """Every session the index has now (to tell the next one from them)."""
    _, body = call(rig, "GET", "/api/v1/sessions?limit=1000", reviewer)
    return {int(s["id"]) for s in body["sessions"]}


def _active_session(rig, reviewer: str, before: set[int]) -> int:
    """The id of the agent's running session with a command, as a reviewer sees it: one not
    in ``before`` (an earlier test's session may still show active while its close is being
    written, and the new one without its command yet)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        _, body = call(rig, "GET", "/api/v1/sessions?status=active&limit=20", reviewer)
        active = [s for s in body["sessions"] if s["n_commands"] and int(s["id"]) not in before]
        if active:
            return int(active[0]["id"])
        time.sleep(0.2)
    raise AssertionError("the agent's session never showed up as active")


def test_health_needs_no_token_and_the_api_is_https_only(api):
    assert call(api, "GET", "/healthz") == (200, {"status": "ok", "recording": "ok"})
    assert call(api, "GET", "/readyz") == (200, {"ready": True, "checks": {
        "recording": "ok", "index": "ok", "issuer": "ok"}})
    with pytest.raises((urllib.error.URLError, ConnectionError)):   # plain http: no answer
        urllib.request.urlopen(f"http://127.0.0.1:{api.api_port}/healthz", timeout=10)


@pytest.mark.parametrize("who, status", [
    (None, 401), ("garbage", 401), ("expired", 401), ("agent", 403), ("lead", 403),
    ("auditor", 200),
])
def test_sessions_are_for_reviewers(api, issuer, token, lead, auditor, who, status):
    tokens = {None: None, "garbage": "not-a-jwt", "agent": token, "lead": lead,
              "auditor": auditor,
              "expired": issuer.mint(client=issuer.clients.by_name("api-auditor"),
                                     now=time.time() - 7200, lifetime=600)}
    got, body = call(api, "GET", "/api/v1/sessions", tokens[who])
    assert got == status, body
    if status == 200:
        assert isinstance(body["sessions"], list)
    else:
        assert body["error"]


def test_a_reviewer_lists_and_shows_what_an_agent_did(api, token, auditor):
    assert api.ssh(token, "echo api-$((6*7))").out == "api-42\n"
    status, body = call(api, "GET", "/api/v1/sessions?limit=5", auditor)
    assert status == 200
    sid = body["sessions"][0]["id"]
    status, one = call(api, "GET", f"/api/v1/sessions/{sid}", auditor)
    assert status == 200
    assert [c["line"] for c in one["commands"]] == ["echo api-$((6*7))"]
    assert one["commands"][0]["action"] == "allow"
    assert call(api, "GET", "/api/v1/sessions/999999", auditor)[0] == 404
    # the same through the CLI from "another machine" (no data dir here)
    env = {"BASTION_TOKEN": auditor, "BASTION_DATA_DIR": str(api.root / "nowhere"),
           "COLUMNS": "120"}
    remote = ("--server", api.url, "--server-ca", str(api.cert))
    listed = json.loads(api.cli("sessions", "list", "--json", *remote, env=env).out)
    assert sid in [s["id"] for s in listed] and listed[0]["started"].endswith("Z")
    table = api.cli("sessions", "list", "--limit", "3", *remote, env=env).out
    assert re.search(rf"^ {sid} +\d{{4}}-\d\d-\d\d ", table, re.M), table
    cid = one["channels"][0]["id"]
    whole = _raw(api, f"/api/v1/sessions/{sid}/channels/{cid}/recording", auditor)
    assert whole[0] == 200 and whole[1].startswith(b'{"version": 2') and b"api-42" in whole[1]
    part = _raw(api, f"/api/v1/sessions/{sid}/channels/{cid}/recording", auditor,
                {"Range": "bytes=5-24"})
    assert part[0] == 206 and part[1] == whole[1][5:25]
    assert part[2]["content-range"] == f"bytes 5-24/{len(whole[1])}"
    tail = _raw(api, f"/api/v1/sessions/{sid}/channels/{cid}/recording", auditor,
                {"Range": "bytes=-10"})
    assert tail[1] == whole[1][-10:]
    assert _raw(api, f"/api/v1/sessions/{sid}/channels/{cid}/recording", auditor,
                {"Range": f"bytes={len(whole[1])}-"})[0] == 416
    assert _raw(api, f"/api/v1/sessions/{sid}/channels/{cid}/recording", token)[0] == 403
    status, found = call(api, "GET", "/api/v1/commands?q=api&limit=5", auditor)
    assert status == 200 and "echo api-$((6*7))" in [c["line"] for c in found["commands"]]
    assert call(api, "GET", "/api/v1/commands", auditor)[0] == 400          # no q
    assert call(api, "GET", "/api/v1/commands?q=api", token)[0] == 403       # not a reviewer
    played = json.loads(api.cli("sessions", "play", str(sid), "--json", *remote, env=env).out)
    assert "api-42" in "".join(e[2] for e in played[0]["events"])
    shown = api.cli("sessions", "show", str(sid), *remote, env=env).out
    assert "echo api-$((6*7))" in shown and "allow" in shown
    refused = api.cli("sessions", "list", *remote, env={**env, "BASTION_TOKEN": token},
                      check=False)
    assert refused.returncode == 1 and "HTTP 403" in refused.err


def test_an_answer_through_the_api_releases_the_held_command(api, token, lead, auditor):
    marker = api.canary_dir / "api-approved"
    proc = api.ssh_popen(token, f"touch {marker}")
    try:
        rid = _wait_for_request(proc)
        status, pending = call(api, "GET", "/api/v1/approvals", lead)
        assert status == 200 and rid in [a["id"] for a in pending["approvals"]]
        # not an approver, no reason, the agent itself: refused by the server
        assert call(api, "POST", f"/api/v1/approvals/{rid}/approve", auditor,
                    {"reason": "x"})[0] == 403
        assert call(api, "POST", f"/api/v1/approvals/{rid}/approve", lead, {})[0] == 400
        assert call(api, "POST", f"/api/v1/approvals/{rid}/approve", token,
                    {"reason": "mine"})[0] == 403
        assert not marker.exists()
        answered = time.monotonic()
        status, record = call(api, "POST", f"/api/v1/approvals/{rid}/approve", lead,
                              {"reason": "ticket API-1"})
        assert status == 200 and record["status"] == "approved", record
        assert proc.wait(20) == 0
        print(f"\ncommand released {time.monotonic() - answered:.3f} s after the API answer")
        assert marker.exists()
        # answered once: a second answer is refused
        assert call(api, "POST", f"/api/v1/approvals/{rid}/deny", lead,
                    {"reason": "late"})[0] in (403, 409)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_the_cli_answers_remotely_with_server(api, token, lead):
    marker = api.canary_dir / "cli-remote"
    proc = api.ssh_popen(token, f"touch {marker}")
    try:
        rid = _wait_for_request(proc)
        remote = ("--server", api.url, "--server-ca", str(api.cert))
        # no data dir and no policy here: only the API (a data dir that does not exist)
        env = {"BASTION_TOKEN": lead, "BASTION_DATA_DIR": str(api.root / "nowhere"),
               "BASTION_POLICY": str(api.root / "nowhere.toml")}
        listed = api.cli("approvals", "list", "--json", *remote, env=env)
        assert rid in [a["id"] for a in json.loads(listed.out)]
        said = api.cli("approvals", "deny", str(rid), "--reason", "not now", *remote, env=env)
        assert f"request {rid} denied" in said.out
        assert proc.wait(20) == 125 and not marker.exists()
        untrusted = api.cli("approvals", "list", "--server", api.url, env=env, check=False)
        assert untrusted.returncode != 0 and "--server-ca" in untrusted.err
    finally:
        if proc.poll() is None:
            proc.kill()


def test_metrics_parse_with_the_prometheus_parser(api, token):
    api.ssh(token, "true")
    status, text = call(api, "GET", "/metrics")
    assert status == 200
    families = {f.name: f for f in text_string_to_metric_families(text)}
    logins = {s.labels["result"]: s.value for s in families["bastion_logins"].samples
              if s.name == "bastion_logins_total"}
    assert logins["ok"] >= 1
    decisions = [s for s in families["bastion_decisions"].samples
                 if s.name == "bastion_decisions_total"]
    assert any(s.labels == {"action": "allow", "channel": "exec", "rule": "read-only-tools"}
               and s.value >= 1 for s in decisions)
    assert families["bastion_recording_up"].samples[0].value == 1
    assert "bastion_sessions_open" in families


def test_metrics_say_when_a_policy_reload_was_refused(api):
    def scrape() -> dict:
        return _samples(call(api, "GET", "/metrics")[1])

    def until(pred, what: str) -> dict:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            now = scrape()
            if pred(now):
                return now
            time.sleep(0.1)
        raise AssertionError(f"never happened: {what}")

    refused_key = ("bastion_policy_reloads_total", (("result", "refused"),))
    ok_key = ("bastion_policy_reloads_total", (("result", "ok"),))
    loaded_key = ("bastion_policy_loaded_timestamp_seconds", ())
    before = scrape()
    assert before[("bastion_policy_reload_refused", ())] == 0
    assert before[loaded_key] > 0
    good = api.policy_path.read_text()
    try:
        api.write_policy(good + "\n[[rules\n")
        api.proc.send_signal(signal.SIGHUP)
        broken = until(lambda m: m[("bastion_policy_reload_refused", ())] == 1,
                       "the refused reload shows")
        assert broken.get(refused_key, 0) >= before.get(refused_key, 0) + 1
        assert broken[loaded_key] == before[loaded_key]          # the old policy in force
    finally:
        api.write_policy(good)
        api.proc.send_signal(signal.SIGHUP)
    fixed = until(lambda m: m[("bastion_policy_reload_refused", ())] == 0, "the fix shows")
    assert fixed.get(ok_key, 0) >= before.get(ok_key, 0) + 1
    assert fixed[loaded_key] > before[loaded_key]


def _samples(text: str) -> dict:
    """{(sample name, sorted labels): value} of an exposition, read by Prometheus's parser."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def test_metrics_count_relayed_and_recorded_bytes_and_time_upstream_connects(api, token):
    before = _samples(call(api, "GET", "/metrics")[1])
    payload = "x" * 5000
    result = api.ssh(token, "cat", input=payload.encode())     # 5000 bytes each way
    assert result.out == payload
    status, text = call(api, "GET", "/metrics")
    assert status == 200
    after = _samples(text)

    def grew(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)
    assert grew("bastion_relayed_bytes_total", direction="agent_to_host") >= 5000
    assert grew("bastion_relayed_bytes_total", direction="host_to_agent") >= 5000
    assert grew("bastion_recorded_bytes_total", stream="output") >= 5000
    assert grew("bastion_recorded_bytes_total", stream="input") >= 5000
    # the histogram: cumulative buckets, +Inf equal to the count, a sum of positive times
    families = {f.name: f for f in text_string_to_metric_families(text)}
    connect = families["bastion_upstream_connect_seconds"]
    assert connect.type == "histogram"
    buckets = [(float(s.labels["le"]), s.value) for s in connect.samples
               if s.name.endswith("_bucket")]
    assert buckets == sorted(buckets) and buckets[-1][0] == float("inf")
    assert all(a[1] <= b[1] for a, b in zip(buckets, buckets[1:]))
    count = after[("bastion_upstream_connect_seconds_count", ())]
    assert count >= 1 and buckets[-1][1] == count
    assert after[("bastion_upstream_connect_seconds_sum", ())] > 0
    for gauge in ("bastion_recorder_queue_bytes", "bastion_recorder_queue_ops",
                  "bastion_recorder_lag_seconds"):
        assert after[(gauge, ())] >= 0


def test_a_reviewer_watches_a_running_session_from_another_machine(api, token, auditor):
    # (seq's lines are longer than the masker's hold-back, ~460 bytes, so each burst is
    # decided and recorded at once; the command waits for a line on its stdin after the first
    # burst, so the watcher must show it while the command still runs, however slow the machine)
    before = _session_ids(api, auditor)
    proc = api.ssh_popen(token, "echo live-11; seq -s . 1 150; head -n1 >/dev/null; "
                                "for i in 2 3 4 5 6; do echo live-$((i*11)); seq -s . 1 150; "
                                "done")
    try:
        sid = _active_session(api, auditor, before)
        watcher = subprocess.Popen(
            [BASTION, "sessions", "watch", str(sid), "--server", api.url,
             "--server-ca", str(api.cert)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env={**api.env, "BASTION_TOKEN": auditor})
        try:
            first = watcher.stdout.readline()
            assert first.strip() == b"live-11"
            assert proc.poll() is None                  # shown while the command still runs
            proc.stdin.write(b"go\n")
            proc.stdin.flush()
            rest, err = watcher.communicate(timeout=30)
            assert watcher.returncode == 0, err
            assert [line for line in rest.splitlines() if line.startswith(b"live-")] == [
                b"live-22", b"live-33", b"live-44", b"live-55", b"live-66"]
            assert b"the channel ended" in err
            # the API's `event: marker`: the command and its decision, shown on stderr
            assert re.search(rb"\xe2\x94\x80\xe2\x94\x80 command \d+: allow \[[^\]]+\]: echo live-11;",
                             err), err
        finally:
            if watcher.poll() is None:
                watcher.kill()
        assert proc.wait(20) == 0
        # the agent is no reviewer
        assert call(api, "GET", f"/api/v1/sessions/{sid}/live", token)[0] == 403
    finally:
        if proc.poll() is None:
            proc.kill()


def test_an_admin_terminates_a_running_session(api, issuer, token, auditor, tmp_path):
    admin = issuer.mint(client=issuer.add_client("api-admin", roles=["secops"]))
    canary = api.canary_dir / "after-kill"
    # (the command waits for its stdin: an agent that simply went away would give it EOF and
    # the canary would appear; a terminated session's command is closed at once, no EOF)
    before = _session_ids(api, auditor)
    proc = api.ssh_popen(token, f"echo started; head -n1 >/dev/null; touch {canary}")
    try:
        sid = _active_session(api, auditor, before)
        # a reviewer is not an admin; no reason is refused; an unknown session is a 404
        assert call(api, "POST", f"/api/v1/sessions/{sid}/terminate", auditor,
                    {"reason": "x"})[0] == 403
        assert call(api, "POST", f"/api/v1/sessions/{sid}/terminate", admin, {})[0] == 400
        assert call(api, "POST", "/api/v1/sessions/999999/terminate", admin,
                    {"reason": "x"})[0] == 404
        killed = api.cli("sessions", "kill", str(sid), "--reason", "incident INC-7",
                         "--server", api.url, "--server-ca", str(api.cert),
                         env={"BASTION_TOKEN": admin})
        assert f"session {sid} terminated" in killed.err
        assert proc.wait(20) != 0
        err = proc.stderr.read().decode(errors="replace")
        assert "terminated by api-admin" in err and "incident INC-7" in err, err
        time.sleep(2)
        assert not canary.exists()                      # the command did not run on
        _, shown = call(api, "GET", f"/api/v1/sessions/{sid}", auditor)
        path = api.data_dir / shown["channels"][0]["path"]
        deadline = time.monotonic() + 10
        while b"terminated by api-admin" not in path.read_bytes():
            assert time.monotonic() < deadline, path.read_text()[-500:]
            time.sleep(0.2)
    finally:
        if proc.poll() is None:
            proc.kill()
