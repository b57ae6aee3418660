"""Bad tokens through the real ssh client: each refused, the agent told only "Permission
denied", the bastion log naming the reason, and the token itself nowhere in the log."""

from __future__ import annotations

import time

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from bastion.identity.devtokens import encode_jws


def _hs256_with_public_key(issuer, client):
    pem = issuer.signer.primary.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return issuer.mint(client=client, alg="HS256", key=pem)


def _alg_none(issuer, client):
    claims = issuer.app_claims(client, "api://bastion", time.time(), 600)
    return encode_jws({"alg": "none", "typ": "JWT", "kid": issuer.signer.primary.kid}, claims)


def _tampered(issuer, client):
    header, payload, signature = issuer.mint(client=client).split(".")
    flipped = ("A" if signature[10] != "A" else "B")
    return ".".join((header, payload, signature[:10] + flipped + signature[11:]))


BAD = {
    "alg none": ("alg none not allowed", _alg_none),
    "HS256 signed with the public key": ("symmetric alg not allowed", _hs256_with_public_key),
    "wrong iss": ("wrong issuer", lambda i, c: i.mint({"iss": "https://evil.example/v2.0"},
                                                      client=c)),
    "wrong aud": ("wrong audience", lambda i, c: i.mint(client=c, audience="api://other")),
    "wrong tid": ("wrong tenant", lambda i, c: i.mint({"tid": "11111111-2222-3333-4444-555555555555"},
                                                      client=c)),
    "expired": ("expired", lambda i, c: i.mint(client=c, now=time.time() - 7200, lifetime=600)),
    "nbf in the future": ("not yet valid", lambda i, c: i.mint({"nbf": int(time.time()) + 3600},
                                                              client=c)),
    "unknown kid": ("unknown kid", lambda i, c: i.mint(client=c, kid="no-such-kid",
                                                       key=rsa.generate_private_key(65537, 2048))),
    "tampered signature": ("bad signature", _tampered),
    "missing oid and sub": ("missing claim oid/sub", lambda i, c: i.mint({"oid": None, "sub": None},
                                                                        client=c)),
    "oversized": ("token too large", lambda i, c: i.mint(client=c, pad_to=17000)),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_token_refused_with_the_right_logged_reason(rig, issuer, agent_client, case):
    reason, make = BAD[case]
    bad = make(issuer, agent_client)
    before = len(rig.log())
    r = rig.ssh(bad, "true")
    assert r.returncode == 255
    assert "Permission denied" in r.err
    assert reason not in r.err                       # the agent gets a plain denial
    rig.wait_log("login refused")
    deadline = time.monotonic() + 10
    while reason not in rig.log()[before:] and time.monotonic() < deadline:
        time.sleep(0.05)
    new_log = rig.log()[before:]
    assert reason in new_log, new_log[-2000:]
    assert bad not in rig.log()
    assert bad.split(".")[-1][:30] not in rig.log() or not bad.split(".")[-1][:30]
