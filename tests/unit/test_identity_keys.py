"""Pure helpers of token validation: key/alg fit, JWKS parsing, issuer forms, URL rules."""

from __future__ import annotations

import pytest

from bastion.errors import IdentityError
from bastion.identity.fetch import check_url
from bastion.identity.jwks import parse_jwks
from bastion.identity.oidc import ALLOWED_ALGS, entra_v1_issuer, key_fits_alg

RSA = {"kty": "RSA", "kid": "r", "n": "AQAB", "e": "AQAB"}
EC256 = {"kty": "EC", "kid": "e", "crv": "P-256", "x": "AA", "y": "AA"}
EC384 = {**EC256, "crv": "P-384"}
ED = {"kty": "OKP", "kid": "o", "crv": "Ed25519", "x": "AA"}
OCT = {"kty": "oct", "kid": "h", "k": "c2VjcmV0"}


@pytest.mark.parametrize("jwk, alg, fits", [
    (RSA, "RS256", True), (RSA, "RS512", True), (RSA, "PS256", True),
    (RSA, "ES256", False), (RSA, "EdDSA", False), (RSA, "HS256", False),
    ({**RSA, "alg": "RS256"}, "RS256", True),
    ({**RSA, "alg": "RS256"}, "PS256", False),       # JWK alg differs from the header's
    ({**RSA, "alg": "RS256"}, "RS384", False),
    (EC256, "ES256", True), (EC256, "ES384", False), (EC384, "ES384", True),
    (EC256, "RS256", False), ({**EC256, "crv": "P-521"}, "ES512", True),
    (ED, "EdDSA", True), ({**ED, "crv": "X25519"}, "EdDSA", False), (ED, "ES256", False),
    (OCT, "HS256", False), (OCT, "RS256", False),
])
def test_key_fits_alg(jwk, alg, fits):
    assert key_fits_alg(jwk, alg) is fits


def test_allowed_algs_are_asymmetric_only():
    assert not [a for a in ALLOWED_ALGS if a.upper().startswith("HS") or a.lower() == "none"]


def test_parse_jwks_keeps_only_signing_asymmetric_keys():
    doc = {"keys": [RSA, EC256, ED, OCT, {**RSA, "kid": "enc", "use": "enc"},
                    {**RSA, "kid": "sig", "use": "sig"}, {"kty": "RSA"}, "junk",
                    {**EC256, "kid": ""}, {**RSA, "kid": 5}]}
    assert sorted(parse_jwks(doc)) == ["e", "o", "r", "sig"]


@pytest.mark.parametrize("doc", [{}, {"keys": "x"}, {"keys": None}])
def test_parse_jwks_rejects_bad_documents(doc):
    with pytest.raises(IdentityError):
        parse_jwks(doc)


@pytest.mark.parametrize("issuer, v1", [
    ("https://login.microsoftonline.com/1111-2222/v2.0", "https://sts.windows.net/1111-2222/"),
    ("https://127.0.0.1:8443/abcd/v2.0", "https://sts.windows.net/abcd/"),
    ("https://login.microsoftonline.com/common/v2.0", None),
    ("https://login.microsoftonline.com/organizations/v2.0", None),
    ("https://issuer.example", None),
])
def test_entra_v1_issuer(issuer, v1):
    assert entra_v1_issuer(issuer) == v1


@pytest.mark.parametrize("url, ok", [
    ("https://login.microsoftonline.com/t/v2.0", True),
    ("http://127.0.0.1:8080/t", True),
    ("http://localhost/t", True),
    ("http://[::1]:80/t", True),
    ("http://issuer.example/t", False),
    ("http://10.0.0.1/t", False),
    ("ftp://127.0.0.1/t", False),
    ("file:///etc/passwd", False),
    ("https:///nohost", False),
])
def test_check_url(url, ok):
    if ok:
        check_url(url, "issuer")
    else:
        with pytest.raises(IdentityError):
            check_url(url, "issuer")
