"""bastion.logfmt: JSON lines with stable fields; nothing a terminal would act on."""

from __future__ import annotations

import json
import logging

import pytest

from bastion.logfmt import JsonFormatter, TextFormatter, fields, formatter


def _record(msg, *args, extra=None, exc_info=None):
    record = logging.LogRecord("bastion.audit", logging.WARNING, __file__, 1, msg, args, exc_info)
    for key, value in (extra or {}).items():
        setattr(record, key, value)
    return record


def test_audit_fields_and_the_message():
    line = JsonFormatter().format(_record(
        "decision principal=%s action=%s", "oid-1", "deny",
        extra=fields("decision", principal="oid-1", action="deny", rule="r", session=7,
                     login=None)))
    data = json.loads(line)
    assert data["event"] == "decision" and data["level"] == "warning"
    assert data["message"] == "decision principal=oid-1 action=deny"
    assert (data["principal"], data["action"], data["rule"], data["session"]) == (
        "oid-1", "deny", "r", 7)
    assert "login" not in data                                   # None values left out
    assert data["time"].endswith("Z") and len(data["time"]) == len("2026-12-06T03:04:05.123Z")


def test_plain_records_and_reserved_names_stay_stable():
    data = json.loads(JsonFormatter().format(_record("hello", extra=fields("x", message="forged",
                                                                          level="debug"))))
    assert data["event"] == "x" and data["message"] == "hello" and data["level"] == "warning"
    assert json.loads(JsonFormatter().format(_record("plain")))["event"] == "log"


def test_one_ascii_line_whatever_the_text():
    line = JsonFormatter().format(_record("a\nb \x1b]0;t\x07 \u202e", extra=fields("e", v="\r")))
    assert "\n" not in line and "\x1b" not in line and line.isascii()


def test_exceptions_are_a_field():
    try:
        raise ValueError("boom")
    except ValueError:
        import sys
        data = json.loads(JsonFormatter().format(_record("failed", exc_info=sys.exc_info())))
    assert "ValueError: boom" in data["error"]


def test_unknown_format_is_refused():
    assert isinstance(formatter("json"), JsonFormatter)
    with pytest.raises(ValueError, match="text, json"):
        formatter("xml")


def test_text_lines_are_always_encodable():
    line = formatter("text").format(_record("open %s: naïve ␀", "/tmp/bad\udcffname"))
    assert isinstance(formatter("text"), TextFormatter)
    assert line.endswith("open /tmp/bad\\udcffname: naïve ␀")
    line.encode("utf-8")                              # a strict handler writes it
