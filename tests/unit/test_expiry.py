"""bastion.identity.expiry: what a principal may do once its token has expired (pure)."""

from __future__ import annotations

import pytest

from bastion.identity import expiry
from bastion.identity.principal import Principal

EXP = 1_800_000_000


def who(exp=EXP) -> Principal:
    claims = {} if exp is None else {"exp": exp}
    return Principal(subject="agent-1", name="ci", claims=claims)


@pytest.mark.parametrize("exp, leeway, now, refused", [
    (EXP, 0, EXP, False),              # at exp: still valid (as at login: now > exp fails)
    (EXP, 0, EXP + 1, True),
    (EXP, 60, EXP + 59, False),        # the issuer's clock leeway, as at login
    (EXP, 60, EXP + 61, True),
    (None, 0, EXP + 10**6, False),     # no exp (a principal built without claims)
    ("soon", 0, EXP + 10**6, False),   # not a number: never reaches here past validation
    (True, 0, EXP + 10**6, False),
])
def test_new_work_is_refused_once_the_token_has_expired(exp, leeway, now, refused):
    why = expiry.expired(who(exp), leeway, now=now)
    assert (why is not None) == refused
    if refused:
        assert "ci (agent-1)" in why and "reconnect" in why and "UTC" in why


@pytest.mark.parametrize("grace, deadline", [(300, EXP + 300), (0, EXP), (-5, EXP)])
def test_open_channels_end_after_the_grace_time(grace, deadline):
    assert expiry.channel_deadline(who(), grace) == deadline
    assert expiry.channel_deadline(who(None), grace) is None


def test_the_message_says_what_happened_and_what_to_do():
    text = expiry.ended_message(who(), 300)
    assert text.startswith("bastion: session ended") and "300 s" in text and "fresh token" in text
