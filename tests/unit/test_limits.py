"""Login abuse limits: [settings] validation and the pure bookkeeping of bastion.ssh.limits."""

from __future__ import annotations

import pytest

from bastion.config import parse_config
from bastion.errors import ConfigError
from bastion.ssh.limits import PreauthGate, RefusedCounter, cap, source_of
from tests.unit.test_config import BASE


def test_defaults_are_openssh_like():
    s = parse_config(BASE).settings
    assert (s.max_auth_tries, s.login_grace_time, s.max_startups, s.max_startups_per_source) == \
        (6, 30.0, 100, 10)


def test_settings_are_read():
    s = parse_config("[settings]\nmax_auth_tries = 3\nlogin_grace_time = 12.5\n"
                     "max_startups = 500\nmax_startups_per_source = 20\n" + BASE).settings
    assert (s.max_auth_tries, s.login_grace_time, s.max_startups, s.max_startups_per_source) == \
        (3, 12.5, 500, 20)


@pytest.mark.parametrize("line, message", [
    ("max_auth_tries = 0", "settings.max_auth_tries must be a whole number >= 1"),
    ("max_auth_tries = 2.5", "settings.max_auth_tries must be a whole number >= 1"),
    ("max_startups = true", "settings.max_startups must be a whole number >= 1"),
    ("login_grace_time = 0", "settings.login_grace_time must be a number >= 1"),
    ("max_startups = 5\nmax_startups_per_source = 6",
     "settings.max_startups_per_source (6) must not exceed settings.max_startups (5)"),
])
def test_bad_settings_are_refused_with_a_clear_message(line, message):
    with pytest.raises(ConfigError) as info:
        parse_config(f"[settings]\n{line}\n" + BASE)
    assert message in str(info.value)


def test_preauth_gate_caps_per_source_and_overall():
    gate = PreauthGate()
    assert [gate.admit("a", max_total=3, max_per_source=2) for _ in range(3)][:2] == [None, None]
    assert "max_startups_per_source 2" in gate.admit("a", max_total=3, max_per_source=2)
    assert gate.admit("b", max_total=3, max_per_source=2) is None
    assert "max_startups 3" in gate.admit("c", max_total=3, max_per_source=2)
    gate.release("a")
    assert gate.admit("c", max_total=3, max_per_source=2) is None
    gate.release("nobody")                   # unknown source: no effect
    assert gate.total == 3 and gate.dropped == 3


def test_refused_counter_one_row_then_a_summary_per_source_per_minute():
    c = RefusedCounter()
    t = 600.0
    assert c.note("1.2.3.4", "x", "token rejected: malformed", t) == [("1.2.3.4", "x", "token rejected: malformed")]
    for i in range(99):
        assert c.note("1.2.3.4", "x", "token rejected: expired", t + i * 0.5) == []
    assert c.note("5.6.7.8", "y", "r", t + 1) == [("5.6.7.8", "y", "r")]
    assert c.flush(t + 59) == []
    rows = c.note("1.2.3.4", "x", "again", t + 60)           # next minute
    assert rows[0][0] == "1.2.3.4" and rows[0][2].startswith("99 more refused logins in the minute")
    assert "last: token rejected: expired" in rows[0][2]
    assert rows[1] == ("1.2.3.4", "x", "again")
    assert c.flush(None) == []              # 5.6.7.8 had one only; 1.2.3.4 one in the new minute


def test_cap_and_source():
    assert cap("abc", 5) == "abc" and cap(None, 5) is None
    assert cap("x" * 10, 4) == "xxxx...[6 more]"
    assert source_of("10.0.0.1:2222") == "10.0.0.1"
    assert source_of("::1:50000") == "::1"
