"""Reviewer scope over the real API: with `[settings] reviewer_targets = ["label:prod"]` a
reviewer lists, shows, plays, follows and searches only sessions to prod targets; every
other session answers like an unknown one (404), on every route, decided by the server."""

from __future__ import annotations

import json
import time

import pytest

from tests.e2e.harness import POLICY_RULES
from tests.e2e.test_api import ApiRig, _raw, call

RULES = POLICY_RULES.replace(
    'env_allow = ["BASTION_TEST_OK"]',
    'env_allow = ["BASTION_TEST_OK"]\nreviewers = ["role:auditors"]\n'
    'reviewer_targets = ["label:prod"]')


@pytest.fixture(scope="module")
def scoped(tmp_path_factory, issuer):
    r = ApiRig(tmp_path_factory.mktemp("scope"), issuer).setup()
    r.extra_targets = f"""
[[targets]]
name = "web2"
host = "127.0.0.1"
port = {r.sshd.port}
user = "{r.sshd.user}"
key = "web1"
host_key = "{r.sshd.host_key_line}"
labels = ["staging"]
"""
    r.write_policy(r.policy_text(RULES))
    yield r.start_api()
    r.close()


@pytest.fixture(scope="module")
def reviewer(issuer):
    client = issuer.clients.by_name("scope-auditor") or \
        issuer.add_client("scope-auditor", roles=["auditors"])
    return issuer.mint(client=client)


@pytest.fixture(scope="module")
def sessions(scoped, token):
    """{target: session id} of one finished session to each target."""
    for target in ("web1", "web2"):
        assert scoped.ssh(token, f"echo scope-{target}", target=target).out == \
            f"scope-{target}\n"
    # the index as the bastion's host sees it (not through the scoped API)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        out = scoped.cli("sessions", "list", "--json").out
        rows = json.loads(out)
        done = {r["target"]: r["id"] for r in rows if r["status"] != "active"}
        if {"web1", "web2"} <= set(done):
            return done
        time.sleep(0.2)
    raise AssertionError("the sessions never closed in the index")


def test_the_listing_and_the_search_hold_only_sessions_in_scope(scoped, reviewer, sessions):
    status, body = call(scoped, "GET", "/api/v1/sessions?limit=50", reviewer)
    assert status == 200
    assert {s["target"] for s in body["sessions"]} == {"web1"}
    assert sessions["web1"] in {s["id"] for s in body["sessions"]}
    # a filter cannot widen the scope
    status, body = call(scoped, "GET", "/api/v1/sessions?target=web2", reviewer)
    assert status == 200 and body["sessions"] == []
    status, body = call(scoped, "GET", "/api/v1/commands?q=scope", reviewer)
    assert status == 200
    assert [c["line"] for c in body["commands"]] == ["echo scope-web1"]


# (/live of an ended session is 409 unless it names a channel: then it is sent to its end)
@pytest.mark.parametrize("route", ["", "/live?channel={channel}", "/channels/{channel}/recording"])
def test_a_session_out_of_scope_is_unknown_on_every_route(scoped, reviewer, sessions, route):
    for target, expected in (("web1", 200), ("web2", 404)):
        sid = sessions[target]
        channel = scoped.cli("sessions", "show", str(sid), "--json").out
        cid = json.loads(channel)["channels"][0]["id"]
        path = f"/api/v1/sessions/{sid}" + route.format(channel=cid)
        status, body, _ = _raw(scoped, path, reviewer)
        assert status == expected, (target, path, body[:300])
        if expected == 404:
            assert b"no session" in body and b"scope-web2" not in body


def test_the_web_viewers_data_route_is_scoped_the_same_way(scoped, reviewer, sessions):
    """/ui/data/... is the API's own route called with the browser's token: without a
    signed-in browser it is refused before anything is read."""
    status, body, _ = _raw(scoped, f"/ui/data/sessions/{sessions['web2']}", reviewer)
    assert status == 401          # a bearer token is not a browser session
