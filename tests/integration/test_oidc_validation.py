"""TokenValidator against the dev issuer over real https on 127.0.0.1.

Bad tokens are a table, each refused with its reason (and that reason logged);
good tokens map to the right Principal; JWKS refresh is rate limited; cached
keys keep working while the issuer is down; tokens never reach logs or disk.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from bastion.errors import IdentityError, TokenRejected
from bastion.identity.devtokens import encode_jws, public_jwk
from bastion.identity.oidc import TokenValidator

OTHER_TENANT = "99999999-9999-4999-8999-999999999999"


def tamper_payload(token: str, **changes) -> str:
    """Same header and signature, different claims."""
    head, body, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims.update(changes)
    new = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{head}.{new}.{sig}"


def flip_signature(token: str) -> str:
    head, body, sig = token.split(".")
    mid = len(sig) // 2
    sig = sig[:mid] + ("A" if sig[mid] != "A" else "B") + sig[mid + 1:]
    return f"{head}.{body}.{sig}"


# Each case: reason, a function (issuer, client, clock) -> token, and config overrides.
BAD_TOKENS = {
    "alg none": ("alg none not allowed",
                 lambda i, c, k: i.mint(client=c, now=k(), alg="none", key=None), {}),
    "alg NONE uppercase": ("alg none not allowed",
                           lambda i, c, k: i.mint(client=c, now=k(), headers={"alg": "NONE"},
                                                  alg="none"), {}),
    "HS256 with public key as secret": (
        "symmetric alg not allowed",
        lambda i, c, k: i.mint(client=c, now=k(), alg="HS256", key=i.signer.primary.public_pem),
        {}),
    "unsupported alg": ("unsupported alg",
                        lambda i, c, k: i.mint(client=c, now=k(), headers={"alg": "ES256K"}), {}),
    "wrong iss": ("wrong issuer",
                  lambda i, c, k: i.mint({"iss": "https://login.microsoftonline.com/x/v2.0"},
                                         client=c, now=k()), {}),
    "v1 iss not allowed": ("wrong issuer",
                           lambda i, c, k: i.mint({"iss": f"https://sts.windows.net/{i.tenant_id}/"},
                                                  client=c, now=k()), {}),
    "wrong aud": ("wrong audience",
                  lambda i, c, k: i.mint(client=c, now=k(), audience="api://other"), {}),
    "wrong aud list": ("wrong audience",
                       lambda i, c, k: i.mint({"aud": ["api://a", "api://b"]}, client=c,
                                              now=k()), {}),
    "wrong tid": ("wrong tenant",
                  lambda i, c, k: i.mint({"tid": OTHER_TENANT}, client=c, now=k()),
                  {"tenants": "issuer"}),
    "missing tid with allow-list": ("missing claim tid",
                                    lambda i, c, k: i.mint({"tid": None}, client=c, now=k()),
                                    {"tenants": "issuer"}),
    "expired": ("expired", lambda i, c, k: i.mint(client=c, now=k() - 7200, lifetime=3600), {}),
    "expired past leeway": ("expired",
                            lambda i, c, k: i.mint({"exp": int(k()) - 61}, client=c, now=k()), {}),
    "nbf in the future": ("not yet valid",
                          lambda i, c, k: i.mint({"nbf": int(k()) + 600}, client=c, now=k()), {}),
    "iat in the future": ("issued in the future",
                          lambda i, c, k: i.mint({"iat": int(k()) + 600}, client=c, now=k()), {}),
    "unknown kid": ("unknown kid",
                    lambda i, c, k: i.mint(client=c, now=k(), kid="no-such-kid",
                                           key=rsa.generate_private_key(65537, 2048)), {}),
    "unpublished key": ("unknown kid",
                        lambda i, c, k: i.mint(client=c, now=k(),
                                               kid=i.add_signing_key(published=False).kid), {}),
    "missing kid": ("missing kid",
                    lambda i, c, k: i.mint(client=c, now=k(), headers={"kid": None}), {}),
    "tampered signature": ("bad signature",
                           lambda i, c, k: flip_signature(i.mint(client=c, now=k())), {}),
    "tampered claims": ("bad signature",
                        lambda i, c, k: tamper_payload(i.mint(client=c, now=k()),
                                                       roles=["admins"]), {}),
    "signed by another key with a known kid": (
        "bad signature",
        lambda i, c, k: i.mint(client=c, now=k(), key=rsa.generate_private_key(65537, 2048)), {}),
    "empty signature": ("bad signature",
                        lambda i, c, k: i.mint(client=c, now=k()).rsplit(".", 1)[0] + ".", {}),
    "missing exp": ("missing claim exp", lambda i, c, k: i.mint({"exp": None}, client=c, now=k()),
                    {}),
    "missing aud": ("missing claim aud", lambda i, c, k: i.mint({"aud": None}, client=c, now=k()),
                    {}),
    "missing iss": ("missing claim iss", lambda i, c, k: i.mint({"iss": None}, client=c, now=k()),
                    {}),
    "missing oid and sub": ("missing claim oid/sub",
                            lambda i, c, k: i.mint({"oid": None, "sub": None}, client=c, now=k()),
                            {}),
    "missing configured subject claim": ("missing claim sub",
                                         lambda i, c, k: i.mint({"sub": None}, client=c, now=k()),
                                         {"subject_claim": "sub"}),
    "exp not a number": ("malformed",
                         lambda i, c, k: i.mint({"exp": "tomorrow"}, client=c, now=k()), {}),
    "exp infinite": ("malformed",
                     lambda i, c, k: i.mint({"exp": float("inf")}, client=c, now=k()), {}),
    "iss a list": ("wrong issuer",
                   lambda i, c, k: i.mint({"iss": [i.issuer]}, client=c, now=k()), {}),
    "attacker key embedded in header": (
        "unknown kid",
        lambda i, c, k: _embedded_jwk(i, c, k), {}),
    "oversized": ("token too large", lambda i, c, k: i.mint(client=c, now=k(), pad_to=16385), {}),
    "ES256 header on an RSA key": (
        "key/alg mismatch",
        lambda i, c, k: i.mint(client=c, now=k(), alg="ES256", kid=i.signer.primary.kid,
                               key=i.add_signing_key("ES256", published=False).private_key), {}),
    "PS256 header, JWK says RS256": (
        "key/alg mismatch",
        lambda i, c, k: i.mint(client=c, now=k(), alg="PS256",
                               key=i.signer.primary.private_key), {}),
    "ES384 header on a P-256 key": (
        "key/alg mismatch",
        lambda i, c, k: _es256_key_with_header(i, c, k, "ES384"), {}),
    "RSA key under 2048 bits": (
        "weak key",
        lambda i, c, k: i.mint(client=c, now=k(), kid=i.signer.add_key(
            "RS256", private_key=rsa.generate_private_key(65537, 1024)).kid), {}),
    "crit header": ("unsupported crit header",
                    lambda i, c, k: i.mint(client=c, now=k(), headers={"crit": ["exp"]}), {}),
    "two segments": ("malformed", lambda i, c, k: "abc.def", {}),
    "five segments (JWE)": ("malformed", lambda i, c, k: "a.b.c.d.e", {}),
    "header not JSON": ("malformed", lambda i, c, k: "bm90IGpzb24.e30.c2ln", {}),
    "payload not an object": ("malformed",
                              lambda i, c, k: encode_jws({"alg": "RS256",
                                                          "kid": i.signer.primary.kid},
                                                         [1, 2], i.signer.primary.private_key),
                              {}),
    "non-ascii": ("malformed", lambda i, c, k: "é.é.é", {}),
    "empty": ("malformed", lambda i, c, k: "", {}),
}


def _es256_key_with_header(issuer, client, clock, alg):
    key = issuer.add_signing_key("ES256")           # published, JWK alg ES256, crv P-256
    return issuer.mint(client=client, now=clock(), kid=key.kid, alg="ES256", key=key.private_key,
                       headers={"alg": alg})


def _embedded_jwk(issuer, client, clock):
    """The header carries the attacker's own public key (CVE-2018-0114 style)."""
    key = rsa.generate_private_key(65537, 2048)
    jwk = public_jwk(key, kid="attacker", alg="RS256")
    return issuer.mint(client=client, now=clock(), kid="attacker", key=key,
                       headers={"jwk": jwk, "jku": "https://127.0.0.1:1/keys"})


def make_validator(issuer, clock, **overrides) -> TokenValidator:
    if overrides.get("tenants") == "issuer":
        overrides["tenants"] = (issuer.tenant_id,)
    return TokenValidator(issuer.oidc_config(**overrides), now=clock)


@pytest.mark.parametrize("case", list(BAD_TOKENS))
async def test_bad_tokens_refused_with_reason(case, shared_dev_issuer, shared_agent_client,
                                              clock, caplog):
    dev_issuer, agent_client = shared_dev_issuer, shared_agent_client
    reason, make, overrides = BAD_TOKENS[case]
    validator = make_validator(dev_issuer, clock, **overrides)
    token = make(dev_issuer, agent_client, clock)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(TokenRejected) as info:
        await validator.validate(token)
    assert info.value.reason == reason
    assert f"token rejected: {reason}" in caplog.text
    if token:
        assert token not in caplog.text and token not in str(info.value)


GOOD = {
    "default RS256": ({}, {}, None),
    "PS256 key": ({}, {}, "PS256"),
    "ES256 key": ({}, {}, "ES256"),
    "ES384 key": ({}, {}, "ES384"),
    "EdDSA key": ({}, {}, "EdDSA"),
    "aud in a list": ({"aud": ["api://other", "api://bastion"]}, {}, None),
    "expired within leeway": ({"exp": "now-30"}, {}, None),
    "nbf within leeway": ({"nbf": "now+30"}, {}, None),
    "tenant allow-list": ({}, {"tenants": "issuer"}, None),
    "v1 issuer when allowed": ({"iss": "v1", "ver": "1.0", "azp": None}, {"allow_v1": True}, None),
    "no nbf, no iat": ({"nbf": None, "iat": None}, {}, None),
}


@pytest.mark.parametrize("case", list(GOOD))
async def test_good_tokens_accepted(case, shared_dev_issuer, shared_agent_client, clock):
    dev_issuer, agent_client = shared_dev_issuer, shared_agent_client
    claims, overrides, alg = GOOD[case]
    now = int(clock())
    resolved = {}
    for name, value in claims.items():
        if value == "v1":
            value = f"https://sts.windows.net/{dev_issuer.tenant_id}/"
        elif isinstance(value, str) and value.startswith("now"):
            value = now + int(value[3:])
        resolved[name] = value
    kid = dev_issuer.add_signing_key(alg).kid if alg else None
    token = dev_issuer.mint(resolved, client=agent_client, now=now, kid=kid)
    principal = await make_validator(dev_issuer, clock, **overrides).validate(token)
    assert principal.subject == agent_client.oid
    assert principal.app_id == agent_client.client_id
    assert principal.roles == ("agents",)
    assert principal.tenant == dev_issuer.tenant_id


async def test_principal_mapping(dev_issuer, clock):
    validator = make_validator(dev_issuer, clock)
    token = dev_issuer.mint({"oid": "oid-1", "sub": "sub-1", "azp": "app-1", "appid": None,
                             "name": "Build Agent", "roles": ["agents", "deployers"],
                             "groups": ["g1", "g2"]}, now=clock())
    p = await validator.validate(token)
    assert (p.subject, p.app_id, p.name, p.roles, p.groups, p.issuer) == (
        "oid-1", "app-1", "Build Agent", ("agents", "deployers"), ("g1", "g2"), dev_issuer.issuer)
    by_sub = await make_validator(dev_issuer, clock, subject_claim="sub").validate(token)
    assert by_sub.subject == "sub-1"
    v1 = await validator.validate(dev_issuer.mint({"oid": None, "sub": "s", "azp": None,
                                                   "appid": "app-v1"}, now=clock()))
    assert (v1.subject, v1.app_id) == ("s", "app-v1")


async def test_unknown_kid_refresh_is_rate_limited(dev_issuer, agent_client, clock):
    validator = make_validator(dev_issuer, clock, jwks_refresh_interval=60)
    await validator.validate(dev_issuer.mint(client=agent_client, now=clock()))
    assert dev_issuer.hits["jwks"] == 1

    rotated = dev_issuer.add_signing_key()            # the issuer rotates in a new key
    with pytest.raises(TokenRejected, match="unknown kid"):   # too soon after the first fetch
        await validator.validate(dev_issuer.mint(client=agent_client, now=clock(),
                                                 kid=rotated.kid))
    assert dev_issuer.hits["jwks"] == 1
    clock.advance(60)
    await validator.validate(dev_issuer.mint(client=agent_client, now=clock(), kid=rotated.kid))
    assert dev_issuer.hits["jwks"] == 2               # unknown kid → one refresh → accepted

    third = dev_issuer.add_signing_key()
    for _ in range(5):                                # a flood of unknown kids within the interval
        with pytest.raises(TokenRejected, match="unknown kid"):
            await validator.validate(dev_issuer.mint(client=agent_client, now=clock(),
                                                     kid=third.kid))
    assert dev_issuer.hits["jwks"] == 2               # no request reached the issuer

    clock.advance(60)
    await validator.validate(dev_issuer.mint(client=agent_client, now=clock(), kid=third.kid))
    assert dev_issuer.hits["jwks"] == 3


async def test_withdrawn_key_stops_working_after_max_age(dev_issuer, agent_client, clock):
    validator = TokenValidator(dev_issuer.oidc_config(), now=clock, max_key_age=3600)
    key = dev_issuer.add_signing_key()
    await validator.validate(dev_issuer.mint(client=agent_client, now=clock(), kid=key.kid))
    dev_issuer.signer.publish(key.kid, False)
    clock.advance(600)                                # still within max age: cached key used
    await validator.validate(dev_issuer.mint(client=agent_client, now=clock(), kid=key.kid))
    clock.advance(3600)
    with pytest.raises(TokenRejected, match="unknown kid"):
        await validator.validate(dev_issuer.mint(client=agent_client, now=clock(), kid=key.kid))


async def test_cached_keys_used_while_issuer_is_down(dev_issuer, agent_client, clock, caplog):
    validator = make_validator(dev_issuer, clock, jwks_refresh_interval=1)
    await validator.validate(dev_issuer.mint(client=agent_client, now=clock()))
    dev_issuer.stop()
    clock.advance(5)
    caplog.set_level(logging.WARNING)
    principal = await validator.validate(dev_issuer.mint(client=agent_client, now=clock()))
    assert principal.subject == agent_client.oid
    # An unknown kid triggers a refresh that fails: still a plain rejection, keys kept.
    with pytest.raises(TokenRejected, match="unknown kid"):
        await validator.validate(dev_issuer.mint(client=agent_client, now=clock(),
                                                 kid=dev_issuer.add_signing_key().kid))
    assert "still using 1 cached key" in caplog.text
    await validator.validate(dev_issuer.mint(client=agent_client, now=clock()))

    fresh = make_validator(dev_issuer, clock)         # nothing cached: the issuer is needed
    with pytest.raises(IdentityError) as info:
        await fresh.validate(dev_issuer.mint(client=agent_client, now=clock()))
    assert not isinstance(info.value, TokenRejected)
    assert "cannot connect" in str(info.value)

    dev_issuer.start()                                # same port again: the issuer is back
    clock.advance(10)
    assert (await fresh.validate(dev_issuer.mint(client=agent_client, now=clock()))).subject


async def test_discovery_issuer_must_match(dev_issuer, clock):
    config = dataclasses.replace(dev_issuer.oidc_config(), issuer=dev_issuer.issuer + "/")
    validator = TokenValidator(config, now=clock)
    with pytest.raises(IdentityError, match="names issuer"):
        await validator.refresh()


async def test_issuer_tls_must_be_trusted(dev_issuer, clock):
    config = dataclasses.replace(dev_issuer.oidc_config(), ca_bundle=None)
    with pytest.raises(IdentityError) as info:
        await TokenValidator(config, now=clock).refresh()
    assert "ca_bundle" in (info.value.hint or "")


def test_plain_http_issuer_refused_unless_loopback(dev_issuer):
    config = dataclasses.replace(dev_issuer.oidc_config(), issuer="http://issuer.example/t/v2.0")
    with pytest.raises(IdentityError, match="https"):
        TokenValidator(config)


async def test_token_never_logged_nor_stored(dev_issuer, agent_client, clock, caplog, tmp_path):
    caplog.set_level(logging.DEBUG)
    validator = make_validator(dev_issuer, clock)
    tokens = [dev_issuer.mint(client=agent_client, now=clock()),
              dev_issuer.mint(client=agent_client, now=clock() - 7200, lifetime=60),
              flip_signature(dev_issuer.mint(client=agent_client, now=clock())),
              dev_issuer.mint(client=agent_client, now=clock(), audience="api://x", pad_to=2500)]
    for token in tokens:
        try:
            await validator.validate(token)
        except TokenRejected:
            pass
    text = caplog.text
    assert "token rejected: expired" in text and "token accepted" in text
    disk = b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())
    for token in tokens:
        for part in token.split("."):                 # no segment anywhere, not even the header
            if len(part) > 16 and part != tokens[0].split(".")[0]:
                assert part not in text and part.encode() not in disk
        assert token[:24] not in text and token.encode() not in disk
