"""`bastion serve --log-format json` (BASTION_LOG_FORMAT=json): one JSON object per line, with
stable field names on the audit events a SIEM reads, and never the token."""

from __future__ import annotations

import json

import pytest

from tests.e2e.harness import BastionRig


class JsonLogRig(BastionRig):
    @property
    def env(self) -> dict:
        return {**super().env, "BASTION_LOG_FORMAT": "json"}


@pytest.fixture(scope="module")
def jrig(tmp_path_factory, issuer):
    r = JsonLogRig(tmp_path_factory.mktemp("jsonlog"), issuer).setup().start()
    yield r
    r.close()


def _events(rig) -> list[dict]:
    lines = [line for line in rig.log().splitlines() if line.strip()]
    assert lines
    return [json.loads(line) for line in lines]            # every line is one JSON object


def test_audit_events_carry_their_fields(jrig, token):
    assert jrig.ssh(token, "echo json-$((2+3))").out == "json-5\n"
    denied = jrig.ssh(token, f"rm -rf {jrig.canary_dir}")
    assert denied.returncode == 126 and (jrig.canary_dir / "canary.txt").exists()
    jrig.wait_log("no-recursive-delete")
    events = _events(jrig)
    for e in events:
        assert {"time", "level", "logger", "event", "message"} <= set(e)
        assert e["time"].endswith("Z")
    login = next(e for e in events if e["event"] == "login")
    assert login["logger"] == "bastion.audit" and login["principal"] and login["client"]
    decisions = [e for e in events if e["event"] == "decision"]
    allow = next(e for e in decisions if e["action"] == "allow")
    assert allow["rule"] == "read-only-tools" and allow["target"] == "web1"
    assert allow["channel"] == "exec" and isinstance(allow["session"], int)
    assert allow["principal"] == login["principal"] and allow["line"] == "echo json-$((2+3))"
    deny = next(e for e in decisions if e["action"] == "deny")
    assert deny["rule"] == "no-recursive-delete" and deny["level"] == "warning"
    assert next(e for e in events if e["event"] == "inner_login")["target"] == "web1"


def test_no_token_in_the_json_log(jrig, token):
    jrig.ssh(token, "true")
    text = jrig.log()
    assert token not in text and token[:40] not in text
