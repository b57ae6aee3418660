"""The web viewer's sign-in state (bastion.web.signin) and reviewer scope (bastion.api.scope):
pure, with the clock passed in."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

import pytest

from bastion.api.scope import ReviewScope
from bastion.secret import Secret
from bastion.web.signin import LOGIN_LIFETIME, MAX_SESSION, Browsers, Logins, pkce_pair


def test_pkce_pair_is_s256_of_a_long_random_verifier():
    verifier, challenge = pkce_pair()
    assert 43 <= len(verifier) <= 128
    digest = hashlib.sha256(verifier.encode()).digest()
    assert challenge == base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    assert pkce_pair()[0] != verifier


@pytest.mark.parametrize("cookie, later, ok", [
    ("same", 0, True),
    (None, 0, False),                  # the callback came to a browser that did not start it
    ("other", 0, False),
    ("same", LOGIN_LIFETIME + 1, False),
])
def test_a_login_finishes_once_in_the_browser_that_started_it(cookie, later, ok):
    logins = Logins()
    state, _ = logins.start("https://h/ui/callback", now=1000.0)
    got = logins.finish(state, state if cookie == "same" else cookie, now=1000.0 + later)
    assert (got is not None) == ok
    if ok:
        assert got.redirect_uri == "https://h/ui/callback"
        assert "verifier" not in repr(got)
    assert logins.finish(state, state, now=1000.0) is None         # never twice


@pytest.mark.parametrize("token_exp, at, alive", [
    (2000.0, 1999.0, True),
    (2000.0, 2000.0, False),                          # ends with the token
    (None, 1000.0 + MAX_SESSION - 1, True),
    (None, 1000.0 + MAX_SESSION, False),              # never longer than MAX_SESSION
    (1000.0 + 2 * MAX_SESSION, 1000.0 + MAX_SESSION, False),
])
def test_a_browser_session_lasts_as_long_as_its_token_and_no_longer_than_the_cap(
        token_exp, at, alive):
    browsers = Browsers()
    sid, lasts = browsers.open(Secret("tok"), "rita", token_exp, now=1000.0)
    assert lasts == min(MAX_SESSION, (token_exp or 1e18) - 1000.0)
    assert (browsers.get(sid, now=at) is not None) == alive
    assert browsers.get(sid + "x", now=1001.0) is None
    assert browsers.get(None, now=1001.0) is None
    browsers.close(sid)
    assert browsers.get(sid, now=1001.0) is None
    assert sid not in repr(browsers.__dict__)                        # kept by hash only


@dataclass
class T:
    name: str
    labels: tuple[str, ...] = ()


TARGETS = [T("web1", ("prod",)), T("web2"), T("db1", ("prod", "db"))]


@pytest.mark.parametrize("selectors, target, allowed", [
    ((), "anything", True),                         # no scope: every session
    ((), None, True),
    (("label:prod",), "web1", True),
    (("label:prod",), "web2", False),
    (("label:prod",), "db1", True),
    (("label:prod",), "gone1", False),              # not in [[targets]] any more: no labels
    (("web*",), "web2", True),
    (("web*",), "gone-web", False),
    (("gone*",), "gone1", True),                    # a name glob still matches an old target
    (("label:db", "web2"), "web2", True),
    (("label:db", "web2"), "web1", False),
    (("label:prod",), None, False),                 # a session without a target
])
def test_reviewer_scope(selectors, target, allowed):
    scope = ReviewScope(selectors, TARGETS)
    assert scope.allows(target) is allowed
    names = scope.names(["web1", "web2", "db1", "gone1"])
    if not selectors:
        assert names is None
    else:
        assert names == [n for n in ["web1", "web2", "db1", "gone1"] if scope.allows(n)]


CONFIG = '''
[oidc]
issuer = "https://login.microsoftonline.com/t/v2.0"
audience = "api://bastion"
WEB

[settings]
reviewers = ["role:auditors"]
SCOPE

[[targets]]
name = "web1"
host = "10.0.0.5"
user = "deploy"
key = "web1"
host_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIN6hGegfdxPvbo1EcXEbNFvrlXaq3EpoPVTs2rPKUGlb"
labels = ["prod"]
'''


@pytest.mark.parametrize("web, scope, client, targets, error", [
    ("", "", None, (), None),
    ('web_client_id = "abc"', 'reviewer_targets = ["label:prod", "db*"]', "abc",
     ("label:prod", "db*"), None),
    ("", 'reviewer_targets = ["label:"]', None, None, "names no label"),
    ("", 'reviewer_targets = [7]', None, None, "reviewer_targets"),
    ("web_client_id = 7", "", None, None, "web_client_id"),
])
def test_config_keys_of_the_viewer_and_the_scope(web, scope, client, targets, error):
    from bastion.config import parse_config
    from bastion.errors import ConfigError
    text = CONFIG.replace("WEB", web).replace("SCOPE", scope)
    if error:
        with pytest.raises(ConfigError, match=error):
            parse_config(text)
        return
    cfg = parse_config(text)
    assert cfg.oidc.web_client_id == client
    assert cfg.settings.reviewer_targets == targets
    assert ReviewScope.of(cfg).allows("web1")
