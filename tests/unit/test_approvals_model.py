"""Who may answer an approval request, and the pure helpers around it (no IO)."""

from __future__ import annotations

import json

import pytest

from bastion.approvals.model import (
    ApprovalOutcome, ApprovalRecord, Approver, check_answer, check_reason, command_summary,
    decision_fields, parse_window, principal_columns, window_allowed,
)
from bastion.approvals.notices import (
    outcome_marker, outcome_message, record_outcome, record_request, request_marker,
    waiting_message,
)
from bastion.config import parse_config
from bastion.errors import ApprovalError, ConfigError
from bastion.identity.principal import Principal

NOW = 1_800_000_000.0
APPROVERS = ("role:sre-leads", "sub:boss-oid")


def record(**kw) -> ApprovalRecord:
    values = dict(id=42, node="n1", created=NOW - 10, expires=NOW + 290, status="pending",
                  via=None, session_id=1, command_id=2, channel="exec",
                  requester_subject="agent-oid", requester_tenant="t1",
                  requester_app_id="agent-app", requester_name="deploy-bot", target="web1",
                  login="deploy", line="systemctl restart nginx", rule="restarts")
    values.update(kw)
    return ApprovalRecord(**values)


ALICE = Approver(subject="alice-oid", tenant="t1", app_id="cli-app", name="Alice",
                 roles=("sre-leads",))


@pytest.mark.parametrize("approver, rec, kw, words", [
    # approver selectors
    (Approver(subject="bob-oid", roles=("agents",)), record(), {}, "is not an approver"),
    (Approver(subject="boss-oid"), record(), {}, None),
    (Approver(subject="x", groups=("sre-leads",)), record(), {}, "is not an approver"),
    (ALICE, record(), {"approvers": ()}, "no approvers are configured"),
    # four-eyes: the subject decides, whatever the app id or tenant
    (Approver(subject="agent-oid", app_id="agent-app", roles=("sre-leads",)), record(), {},
     "your own"),
    (Approver(subject="agent-oid", app_id="other-app", roles=("sre-leads",)), record(), {},
     "your own"),
    (Approver(subject="agent-oid", tenant="t2", app_id="other-app", roles=("sre-leads",)),
     record(), {}, "your own"),
    # state and deadline
    (ALICE, record(status="approved", via="approver", approver_subject="boss-oid"), {},
     "already approved by boss-oid"),
    (ALICE, record(status="denied", via="approver"), {}, "already denied"),
    (ALICE, record(status="expired", via="restart"), {}, "already expired"),
    (ALICE, record(status="cancelled", via="cancelled"), {}, "already cancelled"),
    (ALICE, record(expires=NOW), {}, "has expired"),
    (ALICE, record(expires=NOW - 1), {}, "has expired"),
    # grant windows
    (ALICE, record(), {"window": 600, "window_max": 900}, None),
    (ALICE, record(), {"window": 900, "window_max": 900}, None),
    (ALICE, record(), {"window": 901, "window_max": 900}, "exceeds"),
    (ALICE, record(), {"window": 600, "window_max": 0}, "disabled by policy"),
    (ALICE, record(), {"window": 600, "window_max": 900, "approve": False}, "only goes with"),
    (ALICE, record(rule="<opaque>"), {"window": 60, "window_max": 900}, "no grant window"),
    (ALICE, record(rule="<error>"), {"window": 60, "window_max": 900}, "no grant window"),
    (ALICE, record(rule=None), {"window": 60, "window_max": 900}, "no grant window"),
    (ALICE, record(rule="<opaque>"), {}, None),          # approving once is fine
])
def test_check_answer(approver, rec, kw, words):
    args = {"approvers": APPROVERS, "now": NOW, "approve": True}
    args.update(kw)
    if words is None:
        check_answer(rec, approver, **args)
        return
    with pytest.raises(ApprovalError) as info:
        check_answer(rec, approver, **args)
    assert words in str(info.value)


def test_refusal_message_is_inert():
    evil = Approver(subject="x\x1b]0;t\x07", name="Mallory\x1b[2K", roles=("agents",))
    with pytest.raises(ApprovalError) as info:
        check_answer(record(), evil, approvers=APPROVERS, now=NOW, approve=True)
    assert "\x1b" not in str(info.value) and "\x07" not in str(info.value)


@pytest.mark.parametrize("text, seconds", [
    (None, 0), ("", 0), ("900", 900), ("15m", 900), ("1h", 3600), ("1h30m", 5400),
    ("90s", 90), ("2h5m10s", 7510),
])
def test_parse_window(text, seconds):
    assert parse_window(text) == seconds


@pytest.mark.parametrize("text", ["15 minutes", "-5", "m", "1.5h", "15m junk"])
def test_parse_window_rejects(text):
    with pytest.raises(ApprovalError):
        parse_window(text)


@pytest.mark.parametrize("reason, ok", [("ticket 1", True), ("  ", False), ("", False),
                                        (None, False), ("x" * 1000, True), ("x" * 1001, False)])
def test_reason_required_and_bounded(reason, ok):
    if ok:
        assert check_reason(reason) == reason.strip()
    else:
        with pytest.raises(ApprovalError):
            check_reason(reason)


@pytest.mark.parametrize("rule, allowed", [("restarts", True), ("<opaque>", False),
                                           ("<error>", False), ("<default>", False),
                                           (None, False), ("", False)])
def test_window_allowed(rule, allowed):
    assert window_allowed(rule) is allowed


def test_decision_fields_from_engine_decision():
    config = parse_config('[[rules]]\nname = "restarts"\naction = "review"\n'
                          'commands = ["systemctl restart"]\n'
                          '[[rules]]\nname = "nav"\naction = "allow"\ncommands = ["cd"]\n')
    decision = config.policy.evaluate(Principal(subject="a"), None,
                                      "cd /tmp && systemctl restart nginx")
    rule, reason, commands = decision_fields(decision)
    assert rule == "restarts" and "restart" in reason
    assert [c["argv"] for c in commands] == [["cd", "/tmp"], ["systemctl", "restart", "nginx"]]
    json.dumps(commands)                      # storable as is
    assert [command_summary(c) for c in commands] == [
        "cd /tmp  [allow · nav]", "systemctl restart nginx  [review · restarts]"]


@pytest.mark.parametrize("command, summary", [
    ({"argv": ["systemctl", "restart", "x"], "action": "review", "rule": "r", "via": "sudo"},
     "systemctl restart x  [review · r · via sudo]"),
    ({"argv": ["$cmd"], "action": "review", "rule": "<opaque>", "opaque": True,
      "why": "command name is a variable"},
     "$cmd  [review · <opaque> · opaque: command name is a variable]"),
    ("plain text", "plain text"),
])
def test_command_summary(command, summary):
    assert command_summary(command) == summary


def test_principal_columns_keep_identity_not_token():
    p = Principal(subject="oid-1", tenant="t", app_id="app", name="bot", roles=("agents",),
                  claims={"raw": "eyJ-the-token-never-goes-here"})
    cols = principal_columns(p)
    assert (cols["requester_subject"], cols["requester_tenant"], cols["requester_app_id"],
            cols["requester_name"]) == ("oid-1", "t", "app", "bot")
    assert "eyJ" not in cols["requester_json"]


def test_record_outcome_of_final_rows():
    approved = record(status="approved", via="approver", approver_subject="alice-oid",
                      approver_name="Alice", answered=NOW, answer_reason="ok")
    out = approved.outcome()
    assert (out.approved, out.approver, out.reason, out.via) == (True, "Alice (alice-oid)", "ok",
                                                                 "approver")
    expired = record(status="expired", via="timeout", answered=NOW, answer_reason="timed out")
    assert expired.outcome().approved is False and expired.outcome().via == "timeout"
    with pytest.raises(ValueError):
        record().outcome()


# -- notices -----------------------------------------------------------------------------

class _Pending:
    def __init__(self, id_, timeout, outcome=None):
        self.id, self.timeout, self.outcome = id_, timeout, outcome


def test_waiting_message_format():
    assert waiting_message(_Pending(42, 300.0)) == \
        "bastion: waiting for approval, request 42, up to 300 s"


@pytest.mark.parametrize("outcome, words", [
    (ApprovalOutcome(7, True, "Alice (a)", "ticket 9", NOW, "approver"),
     ["approved by Alice (a)", "request 7", "ticket 9"]),
    (ApprovalOutcome(7, False, "Alice (a)", "no way", NOW, "approver"),
     ["denied by Alice (a)", "no way", "not run"]),
    (ApprovalOutcome(7, False, None, "x", NOW, "timeout"), ["not approved", "in time"]),
    (ApprovalOutcome(7, False, None, "x", NOW, "restart"), ["restarted"]),
    (ApprovalOutcome(7, False, None, "x", NOW, "shutdown"), ["shutting down"]),
    (ApprovalOutcome(7, False, None, "x", NOW, "no-approvers"), ["no approvers"]),
    (ApprovalOutcome(8, True, "Alice (a)", "w", NOW, "window", window_until=NOW + 60,
                     granted_by=7), ["grant window of request 7", "Alice (a)"]),
])
def test_outcome_message(outcome, words):
    text = outcome_message(outcome)
    for w in words:
        assert w in text


def test_outcome_message_is_inert():
    out = ApprovalOutcome(7, False, "Ev\x1b[2Kil\u202e", "no\r\x1b]0;x\x07", NOW, "approver")
    for text in (outcome_message(out), outcome_marker(out)):
        assert not any(c in text for c in "\x1b\r\x07\u202e")


class _Rec:
    def __init__(self):
        self.markers, self.approvers = [], []

    def marker(self, label):
        self.markers.append(label)

    def command_approver(self, command_id, approver):
        self.approvers.append((command_id, approver))


def test_record_helpers_mark_and_name_the_approver():
    rec = _Rec()
    record_request(rec, _Pending(42, 300))
    record_outcome(rec, ApprovalOutcome(42, True, "Alice (a)", "ok", NOW, "approver"), 5)
    record_outcome(rec, ApprovalOutcome(43, False, "Alice (a)", "no", NOW, "approver"), 6)
    assert rec.markers[0] == request_marker(_Pending(42, 300))
    assert "approval request 42: approved by Alice (a) via approver" in rec.markers[1]
    assert "not approved" in rec.markers[2]
    assert rec.approvers == [(5, "Alice (a) (request 42)")]      # only approved commands


# -- settings ----------------------------------------------------------------------------

@pytest.mark.parametrize("line, field, value", [
    ('approval_window_max = "15m"', "approval_window_max", 900),
    ("approval_window_max = 600", "approval_window_max", 600),
    ('approval_window_max = "1h30m"', "approval_window_max", 5400),
    ('approval_webhook = "https://chat.example/hook"', "approval_webhook",
     "https://chat.example/hook"),
    ('approval_webhook = "http://127.0.0.1:9000/x"', "approval_webhook",
     "http://127.0.0.1:9000/x"),
])
def test_settings_accept(line, field, value):
    settings = parse_config(f"[settings]\n{line}\n").settings
    assert getattr(settings, field) == value


def test_settings_defaults_disable_windows_and_webhook():
    settings = parse_config("").settings
    assert settings.approval_window_max == 0 and settings.approval_webhook is None


@pytest.mark.parametrize("line, words", [
    ('approval_window_max = "soon"', "approval_window_max"),
    ("approval_window_max = -1", "approval_window_max"),
    ('approval_webhook = "http://chat.example/hook"', "https"),
    ('approval_webhook = "ftp://x/y"', "not an http(s) URL"),
    ('approval_webhook = "https://user:pw@chat.example/"', "credentials"),
])
def test_settings_refuse(line, words):
    with pytest.raises(ConfigError) as info:
        parse_config(f"[settings]\n{line}\n")
    assert words in str(info.value) and "line 2" in str(info.value)
