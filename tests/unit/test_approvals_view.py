"""Approver views: agent text shown in full and inert; the webhook body likewise."""

from __future__ import annotations

import json

from rich.console import Console

from bastion.approvals.model import ApprovalRecord
from bastion.approvals.view import detail, left, requests_table, watch_view
from bastion.approvals.webhook import payload, safe_url

NOW = 1_800_000_000.0
HIDING = "rm -rf /srv/data \x1b[2K\rls -la"          # tries to look like `ls -la`
EVIL_NAME = "bot\x1b]0;owned\x07\u202e"


def rec(**kw) -> ApprovalRecord:
    values = dict(id=42, node="n1", created=NOW - 10, expires=NOW + 125, status="pending",
                  via=None, session_id=1, command_id=2, channel="exec",
                  requester_subject="agent-oid", requester_tenant="t1",
                  requester_app_id="agent-app", requester_name=EVIL_NAME, target="web1",
                  login="deploy", line=HIDING, rule="deletes",
                  commands=[{"argv": ["rm", "-rf", "/srv/data", "\x1b[2K"], "action": "review",
                             "rule": "deletes"}, {"argv": ["ls", "-la"], "action": "allow"}],
                  decision_reason="rm -rf matches rule deletes \x1b[31m")
    values.update(kw)
    return ApprovalRecord(**values)


def render(renderable, width=300) -> str:
    console = Console(width=width, record=True, force_terminal=False, color_system=None)
    console.print(renderable)
    return console.export_text()


def assert_inert(text: str) -> None:
    assert not any(c in text for c in "\x1b\x07\r\u202e"), repr(text)


def test_table_shows_the_whole_line_inert():
    text = render(requests_table([rec()], now=NOW, title="t"))
    assert_inert(text)
    assert "rm -rf /srv/data ␛[2K␍ls -la" in text
    assert "rm -rf /srv/data ␛[2K  [review · deletes]" in text     # the simple commands
    assert "bot␛]0;owned␇\\u202e" in text
    assert "2m 05s left" in text


def test_narrow_terminal_folds_instead_of_cutting():
    line = "systemctl restart " + "x" * 150 + " && rm -rf /important"
    text = render(detail(rec(line=line), now=NOW), width=60)
    joined = "".join(part.strip() for part in text.splitlines())
    assert line.replace(" ", "") in joined.replace(" ", "")
    assert "…" not in render(requests_table([rec(line=line)], now=NOW, title="t"), width=80)


def test_detail_and_watch_view_inert():
    for renderable in (detail(rec(), now=NOW),
                       watch_view([rec()], [rec(id=41, status="denied", via="approver",
                                                 approver_subject="a\x1b[1m",
                                                 answer_reason="no\x1b[8m")],
                                  now=NOW, me="Alice\x1b[5m", prompt="answer")):
        text = render(renderable)
        assert_inert(text)
        assert "␛[2K␍ls -la" in text


def test_answered_rows_show_approver_reason_and_window():
    r = rec(status="approved", via="approver", approver_subject="alice-oid",
            approver_name="Alice", answer_reason="ticket 9", window_until=NOW + 600)
    text = render(requests_table([r], now=NOW, title="t", answers=True), width=400)
    assert "Alice (alice-oid): ticket 9" in text and "window 10m 00s left" in text


def test_refused_rows_say_so_and_stay_inert():
    r = rec(status="denied", via="refused", approver_subject="mallory-oid",
            approver_name="Mallory\x1b[8m", answer_reason="looks fine", refused=NOW - 1,
            refused_reason="answer by Mallory refused (not-an-approver): matches none\x1b[2K")
    text = render(requests_table([r], now=NOW, title="t", answers=True), width=400)
    assert_inert(text)
    assert "denied (refused)" in text and "Mallory␛[8m (mallory-oid): looks fine" in text
    assert "refused by the bastion: answer by Mallory refused" in text      # the cell folds
    assert "(not-an-approver)" in text


def test_left():
    assert [left(s) for s in (-3, 0, 59, 60, 3599, 3600, 5400)] == \
        ["0s", "0s", "59s", "1m 00s", "59m 59s", "1h 00m", "1h 30m"]


def test_webhook_payload_sanitised_and_complete():
    body = payload(rec())
    text = json.dumps(body)
    assert "\\u001b" not in text and "\\u0007" not in text and "\\r" not in text
    assert body["request"]["line"] == "rm -rf /srv/data ␛[2K␍ls -la"
    assert body["request"]["id"] == 42 and body["request"]["timeout_seconds"] == 135
    assert body["request"]["requester"]["subject"] == "agent-oid"
    assert body["answer"]["approve"].startswith("bastion approvals approve 42")
    assert body["request"]["commands"][0]["argv"][-1] == "␛[2K"


def test_safe_url_hides_path_and_query():
    assert safe_url("https://hooks.example.com/services/T0/B0/s3cr3t?x=1") == \
        "https://hooks.example.com"
    assert safe_url("http://127.0.0.1:8080/hook/secret") == "http://127.0.0.1:8080"
