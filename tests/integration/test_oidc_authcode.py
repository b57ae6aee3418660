"""The dev issuer's authorization code flow with PKCE over real https (the web viewer's
sign-in): redirect URIs matched exactly, S256 required, codes one-time and short-lived, the
code_verifier checked; the access token validates like any other."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.parse
import urllib.request

import pytest

from bastion.identity.devauthz import CODE_LIFETIME, s256
from bastion.identity.oidc import TokenValidator
from bastion.web.signin import pkce_pair

REDIRECT = "https://127.0.0.1:8443/ui/callback"
USER = {"name": "Rita Reviewer", "roles": ["auditors"]}


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


@pytest.fixture(scope="module")
def issuer(shared_dev_issuer):
    shared_dev_issuer.auto_approve = dict(USER)
    return shared_dev_issuer


@pytest.fixture(scope="module")
def web_client(issuer):
    client = issuer.add_client("web-viewer", secret=False)
    issuer.authz.register(client.client_id, REDIRECT)
    return client


def _open(issuer, req):
    ctx = ssl.create_default_context(cafile=str(issuer.ca_path))
    opener = urllib.request.build_opener(_NoRedirect(), urllib.request.HTTPSHandler(context=ctx))
    try:
        with opener.open(req, timeout=10) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def authorize(issuer, **params):
    url = f"{issuer.authority}/oauth2/v2.0/authorize?" + urllib.parse.urlencode(params)
    status, headers, body = _open(issuer, urllib.request.Request(url))
    if status == 302:
        location = headers["Location"]
        query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))
        return status, location, query
    return status, None, json.loads(body)


def exchange(issuer, **form):
    req = urllib.request.Request(issuer.token_endpoint,
                                 data=urllib.parse.urlencode(form).encode())
    status, _, body = _open(issuer, req)
    return status, json.loads(body)


def _params(client, challenge, **over):
    params = {"client_id": client.client_id, "response_type": "code", "redirect_uri": REDIRECT,
              "scope": "api://bastion/.default openid", "state": "st-123",
              "code_challenge": challenge, "code_challenge_method": "S256"}
    params.update(over)
    return {k: v for k, v in params.items() if v is not None}


async def test_a_code_with_its_verifier_gives_a_token_the_bastion_accepts(issuer, web_client):
    verifier, challenge = pkce_pair()
    assert s256(verifier) == challenge
    status, location, query = authorize(issuer, **_params(web_client, challenge))
    assert status == 302 and location.startswith(REDIRECT + "?")
    assert query["state"] == "st-123" and query["code"]
    status, tokens = exchange(issuer, grant_type="authorization_code", code=query["code"],
                              client_id=web_client.client_id, redirect_uri=REDIRECT,
                              code_verifier=verifier)
    assert status == 200, tokens
    principal = await TokenValidator(issuer.oidc_config()).validate(tokens["access_token"])
    assert principal.name == "Rita Reviewer" and principal.roles == ("auditors",)
    # one use only
    again = exchange(issuer, grant_type="authorization_code", code=query["code"],
                     client_id=web_client.client_id, redirect_uri=REDIRECT,
                     code_verifier=verifier)
    assert again[0] == 400 and again[1]["error"] == "invalid_grant"


@pytest.mark.parametrize("change, error", [
    ({"code_verifier": "x" * 43}, "does not match"),              # another verifier
    ({"code_verifier": "short"}, "missing or malformed"),
    ({"code_verifier": None}, "missing or malformed"),
    ({"redirect_uri": REDIRECT + "/"}, "invalid, used or expired"),
    ({"client_id": "someone-else"}, "invalid, used or expired"),
])
def test_an_exchange_with_anything_wrong_fails_and_burns_the_code(issuer, web_client, change,
                                                                  error):
    verifier, challenge = pkce_pair()
    _, _, query = authorize(issuer, **_params(web_client, challenge))
    form = {"grant_type": "authorization_code", "code": query["code"],
            "client_id": web_client.client_id, "redirect_uri": REDIRECT,
            "code_verifier": verifier, **change}
    status, body = exchange(issuer, **{k: v for k, v in form.items() if v is not None})
    assert status == 400 and error in body["error_description"], body
    # the right request afterwards finds the code gone
    status, body = exchange(issuer, grant_type="authorization_code", code=query["code"],
                            client_id=web_client.client_id, redirect_uri=REDIRECT,
                            code_verifier=verifier)
    assert status == 400 and body["error"] == "invalid_grant"


def test_an_expired_code_is_refused(issuer, web_client):
    verifier, challenge = pkce_pair()
    _, _, query = authorize(issuer, **_params(web_client, challenge))
    real_now = issuer.now
    issuer.now = lambda: real_now() + CODE_LIFETIME + 1
    try:
        status, body = exchange(issuer, grant_type="authorization_code", code=query["code"],
                                client_id=web_client.client_id, redirect_uri=REDIRECT,
                                code_verifier=verifier)
    finally:
        issuer.now = real_now
    assert status == 400 and body["error"] == "invalid_grant"


@pytest.mark.parametrize("change", [
    {"redirect_uri": "https://127.0.0.1:8443/ui/callback?x=1"},
    {"redirect_uri": "https://evil.example/ui/callback"},
    {"redirect_uri": None},
    {"client_id": "unknown-client"},
])
def test_an_unregistered_client_or_redirect_is_never_redirected_to(issuer, web_client, change):
    _, challenge = pkce_pair()
    status, location, body = authorize(issuer, **_params(web_client, challenge, **change))
    assert status == 400 and location is None and body["error"]


@pytest.mark.parametrize("change, error", [
    ({"code_challenge_method": "plain"}, "invalid_request"),
    ({"code_challenge_method": None}, "invalid_request"),
    ({"code_challenge": None}, "invalid_request"),
    ({"code_challenge": "too-short"}, "invalid_request"),
    ({"response_type": "token"}, "unsupported_response_type"),
    ({"scope": "openid"}, "invalid_scope"),
])
def test_a_request_without_s256_pkce_goes_back_with_an_error(issuer, web_client, change, error):
    _, challenge = pkce_pair()
    status, location, query = authorize(issuer, **_params(web_client, challenge, **change))
    assert status == 302 and location.startswith(REDIRECT)
    assert query["error"] == error and query["state"] == "st-123" and "code" not in query


def test_without_a_dev_user_the_sign_in_is_refused(issuer, web_client):
    _, challenge = pkce_pair()
    issuer.auto_approve = None
    try:
        status, _, query = authorize(issuer, **_params(web_client, challenge))
    finally:
        issuer.auto_approve = dict(USER)
    assert status == 302 and query["error"] == "access_denied"
    assert "--approve-as" in query["error_description"]
