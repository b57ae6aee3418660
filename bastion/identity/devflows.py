"""OAuth flows of the dev issuer's token endpoint: client credentials and device code
(the authorization code is :mod:`bastion.identity.devauthz`'s).

Client authentication: ``client_secret`` (compared by SHA-256 hash) or an RFC
7523 ``client_assertion`` signed with a registered certificate's key, found by
its ``x5t#S256`` (or ``x5t``) thumbprint, with ``iss`` = ``sub`` = client id and
``aud`` = the token endpoint (what msal sends for ``--certificate``).

Scopes: client credentials take one ``RESOURCE/.default`` (the token's ``aud``
is RESOURCE); device code takes ``RESOURCE/NAME`` scopes (``scp`` lists the
NAMEs) next to openid/profile/offline_access.  Errors are Entra-shaped JSON
(``error``, ``error_description``).  No HTTP here: see
:mod:`bastion.identity.devissuer`.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import TYPE_CHECKING, Any

import jwt
from cryptography import x509

from bastion.identity.devtokens import b64url

if TYPE_CHECKING:
    from bastion.identity.devissuer import DevIssuer

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
RESERVED_SCOPES = ("openid", "profile", "offline_access", "email")


def _error(status: int, error: str, description: str) -> tuple[int, dict]:
    return status, {"error": error, "error_description": description}


def _b64_hex(value: str) -> str | None:
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).hex()
    except (binascii.Error, ValueError):
        return None


class TokenEndpoint:
    def __init__(self, issuer: "DevIssuer") -> None:
        self.issuer = issuer

    # -- client authentication ---------------------------------------------------------------

    def _authenticate(self, form: dict[str, str]):
        """(client, None) or (None, error response)."""
        client_id = form.get("client_id", "")
        client = self.issuer.clients.get(client_id)
        if client is None:
            return None, _error(400, "unauthorized_client",
                                f"AADSTS700016: application {client_id!r} not found in the "
                                "dev issuer (add it with --add-client)")
        if "client_secret" in form:
            if client.check_secret(form["client_secret"]):
                return client, None
            return None, _error(401, "invalid_client",
                                "AADSTS7000215: invalid client secret provided")
        if form.get("client_assertion_type") == ASSERTION_TYPE and form.get("client_assertion"):
            return self._assertion(client, form["client_assertion"])
        return None, _error(401, "invalid_client",
                            "AADSTS7000218: the request body must contain client_secret or "
                            "client_assertion")

    def _assertion(self, client, assertion: str):
        bad = _error(401, "invalid_client", "AADSTS700027: client assertion failed validation")
        try:
            header = jwt.get_unverified_header(assertion)
        except jwt.PyJWTError:
            return None, bad
        sha256 = _b64_hex(header.get("x5t#S256", "")) if header.get("x5t#S256") else None
        sha1 = _b64_hex(header.get("x5t", "")) if header.get("x5t") else None
        cert = client.certificate_by_thumbprint(sha256=sha256, sha1=sha1)
        if cert is None:
            return None, _error(401, "invalid_client",
                                "AADSTS700027: the certificate is not registered for this client")
        public_key = x509.load_pem_x509_certificate(cert["pem"].encode()).public_key()
        try:
            claims = jwt.decode(assertion, public_key, algorithms=["RS256", "PS256"],
                                audience=self.issuer.token_endpoint, issuer=client.client_id,
                                options={"require": ["exp", "iss", "sub", "aud"]}, leeway=60)
        except jwt.PyJWTError:
            return None, bad
        if claims.get("sub") != client.client_id:
            return None, bad
        return client, None

    # -- endpoints ---------------------------------------------------------------------------

    def token(self, form: dict[str, str]) -> tuple[int, dict]:
        grant = form.get("grant_type")
        if grant == "client_credentials":
            return self._client_credentials(form)
        if grant == DEVICE_GRANT:
            return self._device_token(form)
        if grant == "authorization_code":
            status, body = self.issuer.authz.exchange(form)
            return status, body
        return _error(400, "unsupported_grant_type",
                      f"AADSTS70003: grant_type {grant!r} is not supported by the dev issuer")

    def _client_credentials(self, form: dict[str, str]) -> tuple[int, dict]:
        client, error = self._authenticate(form)
        if error:
            return error
        scopes = [s for s in form.get("scope", "").split() if s not in RESERVED_SCOPES]
        if len(scopes) != 1 or not scopes[0].endswith("/.default"):
            return _error(400, "invalid_scope",
                          "AADSTS1002012: client credentials need one scope of the form "
                          "RESOURCE/.default, e.g. api://bastion/.default")
        audience = scopes[0][:-len("/.default")]
        lifetime = self.issuer.token_lifetime
        now = self.issuer.now()
        claims = self.issuer.app_claims(client, audience, now, lifetime)
        if "client_assertion" in form:
            claims["azpacr"] = "2"
        token = self.issuer.signer.sign(claims)
        return 200, {"token_type": "Bearer", "expires_in": lifetime, "ext_expires_in": lifetime,
                     "access_token": token}

    def devicecode(self, form: dict[str, str]) -> tuple[int, dict]:
        client_id = form.get("client_id", "")
        if self.issuer.clients.get(client_id) is None:
            return _error(400, "unauthorized_client",
                          f"AADSTS700016: application {client_id!r} not found in the dev issuer")
        scopes = tuple(s for s in form.get("scope", "").split() if s not in RESERVED_SCOPES)
        if len(scopes) < 1 or any("/" not in s for s in scopes) or \
                len({s.rsplit("/", 1)[0] for s in scopes}) != 1:
            return _error(400, "invalid_scope",
                          "AADSTS70011: give scopes of one resource, e.g. api://bastion/access")
        code = self.issuer.new_device_code(client_id, scopes)
        uri = f"{self.issuer.base_url}/device"
        user_code = f"{code.user_code[:4]}-{code.user_code[4:]}"
        lifetime = int(code.expires_at - self.issuer.now())
        return 200, {
            "device_code": code.device_code, "user_code": user_code, "verification_uri": uri,
            "expires_in": lifetime, "interval": 1,
            "message": f"To sign in, use a web browser to open the page {uri} and enter the code "
                       f"{user_code} to authenticate. (Dev issuer: approve it from the issuer "
                       f"process.)",
        }

    def _device_token(self, form: dict[str, str]) -> tuple[int, dict]:
        code = self.issuer.device_code(form.get("device_code", ""))
        if code is None or code.client_id != form.get("client_id"):
            return _error(400, "invalid_grant", "AADSTS70000: unknown device code")
        if code.status == "used":
            return _error(400, "invalid_grant", "AADSTS70000: the device code was already used")
        if code.expires_at <= self.issuer.now():
            return _error(400, "expired_token", "AADSTS70020: the device code expired")
        if code.status == "denied":
            return _error(400, "access_denied", "AADSTS70016: the user declined the sign-in")
        if code.status != "approved":
            return _error(400, "authorization_pending",
                          "AADSTS70016: OAuth 2.0 device flow error: authorization is pending")
        code.status = "used"
        return 200, user_tokens(self.issuer, code.user, code.client_id, code.scopes)


def user_tokens(issuer: "DevIssuer", user: dict[str, Any], client_id: str,
                scopes: tuple[str, ...]) -> dict[str, Any]:
    """The token response of a user's sign-in (device code, authorization code)."""
    now = issuer.now()
    lifetime = issuer.token_lifetime
    resource = scopes[0].rsplit("/", 1)[0]
    names = [s.rsplit("/", 1)[1] for s in scopes if not s.endswith("/.default")]
    claims = issuer.user_claims(user, client_id, resource, names, now, lifetime)
    id_claims = {k: claims[k] for k in ("iss", "iat", "nbf", "exp", "sub", "oid", "tid",
                                         "name", "preferred_username")}
    id_claims.update({"aud": client_id, "ver": "2.0"})
    signer = issuer.signer
    client_info = b64url(json.dumps({"uid": claims["oid"], "utid": issuer.tenant_id}).encode())
    return {"token_type": "Bearer", "scope": " ".join(scopes),
            "expires_in": lifetime, "ext_expires_in": lifetime,
            "access_token": signer.sign(claims), "id_token": signer.sign(id_claims),
            "client_info": client_info}
