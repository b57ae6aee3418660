"""Signing keys, JWS encoding and the client registry of the dev issuer.

:class:`Signer` holds the dev issuer's signing keys (one persisted RSA key, plus
keys tests add at run time), publishes them as a JWKS and signs JWTs with any
header and claims, including deliberately bad ones (``alg: none``, HS256 with
the public key as secret, a key that does not match the header) so tests can
prove the validator refuses them.  :class:`ClientRegistry` keeps registered
clients in ``clients.json`` (secrets only as SHA-256 hashes; the secret itself
goes to a 0600 file for the CLI flow).

Issued tokens are never stored anywhere.  Not here: HTTP (see
:mod:`bastion.identity.devissuer`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import get_default_algorithms

from bastion.identity.devca import make_client_certificate, thumbprints, write_private
from bastion.secret import Secret

SIGNING_KEY_FILE = "signing-key.pem"
CLIENTS_FILE = "clients.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _json(obj: dict) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def encode_jws(header: dict, claims: dict, key=None, alg: str | None = None) -> str:
    """Compact JWS of ``claims`` with exactly ``header`` (no checks at all).

    ``alg`` defaults to ``header["alg"]``.  ``key``: a cryptography private key
    for RS/PS/ES/EdDSA, bytes for HS* (any bytes, a PEM public key included),
    ignored for ``none`` (empty signature).
    """
    alg = alg or header.get("alg", "none")
    signing_input = f"{b64url(_json(header))}.{b64url(_json(claims))}".encode("ascii")
    if alg.lower() == "none":
        signature = b""
    elif alg.upper().startswith("HS"):
        digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
        signature = hmac.new(key, signing_input, digest).digest()
    else:
        signature = get_default_algorithms()[alg].sign(signing_input, key)
    return signing_input.decode("ascii") + "." + b64url(signature)


def new_private_key(alg: str):
    """A fresh private key suited to ``alg``."""
    if alg[:2] in ("RS", "PS"):
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    curves = {"ES256": ec.SECP256R1(), "ES384": ec.SECP384R1(), "ES512": ec.SECP521R1()}
    if alg in curves:
        return ec.generate_private_key(curves[alg])
    if alg == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(f"no key type for alg {alg!r}")


def public_jwk(private_key, *, kid: str, alg: str | None = None) -> dict:
    """The public JWK of a private key, with ``kid``, ``use: sig`` and ``alg`` if given."""
    public = private_key.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        jwk = json.loads(get_default_algorithms()["RS256"].to_jwk(public))
    elif isinstance(public, ec.EllipticCurvePublicKey):
        jwk = json.loads(get_default_algorithms()["ES256"].to_jwk(public))
    else:
        jwk = json.loads(get_default_algorithms()["EdDSA"].to_jwk(public))
    jwk = {k: v for k, v in jwk.items() if k in ("kty", "n", "e", "crv", "x", "y")}
    jwk.update({"kid": kid, "use": "sig"})
    if alg:
        jwk["alg"] = alg
    return jwk


def thumbprint_kid(jwk: dict) -> str:
    """RFC 7638 JWK thumbprint (SHA-256, base64url): a stable kid."""
    members = {k: jwk[k] for k in ("crv", "e", "kty", "n", "x", "y") if k in jwk}
    return b64url(hashlib.sha256(json.dumps(members, sort_keys=True, separators=(",", ":"))
                                 .encode()).digest())


@dataclass
class SigningKey:
    kid: str
    alg: str
    private_key: object = field(repr=False)
    published: bool = True

    @property
    def jwk(self) -> dict:
        return public_jwk(self.private_key, kid=self.kid, alg=self.alg)

    @property
    def public_pem(self) -> bytes:
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


class Signer:
    """The dev issuer's signing keys.  The first (RS256) key persists in the state dir."""

    def __init__(self, state_dir: Path) -> None:
        path = state_dir / SIGNING_KEY_FILE
        if path.is_file():
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        else:
            key = new_private_key("RS256")
            write_private(path, key.private_bytes(serialization.Encoding.PEM,
                                                  serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))
        kid = thumbprint_kid(public_jwk(key, kid=""))
        self.primary = SigningKey(kid=kid, alg="RS256", private_key=key)
        self._keys: dict[str, SigningKey] = {kid: self.primary}
        self._lock = threading.Lock()

    def add_key(self, alg: str = "RS256", *, kid: str | None = None, published: bool = True,
                private_key=None) -> SigningKey:
        """Add a key (in memory only).  Unpublished keys sign tokens with an unknown kid."""
        key = private_key or new_private_key(alg)
        kid = kid or "test-" + secrets.token_hex(6)
        signing_key = SigningKey(kid=kid, alg=alg, private_key=key, published=published)
        with self._lock:
            self._keys[kid] = signing_key
        return signing_key

    def publish(self, kid: str, published: bool = True) -> None:
        with self._lock:
            self._keys[kid].published = published

    def key(self, kid: str) -> SigningKey:
        return self._keys[kid]

    def jwks(self) -> dict:
        with self._lock:
            return {"keys": [k.jwk for k in self._keys.values() if k.published]}

    def sign(self, claims: dict, *, kid: str | None = None, alg: str | None = None,
             key=None, headers: dict | None = None) -> str:
        """Sign ``claims``.  Defaults: the primary key, its alg and kid, ``typ: JWT``.

        ``alg`` is how the token is signed (and the header's ``alg`` unless
        ``headers`` says otherwise); ``key`` overrides the signing key (anything
        :func:`encode_jws` takes); ``headers`` are merged last (a value of None
        removes that header), so a token can claim an alg it was not signed with.
        """
        signing_key = self._keys.get(kid or self.primary.kid)
        alg = alg or (signing_key.alg if signing_key else "RS256")
        header = {"typ": "JWT", "alg": alg, "kid": kid or self.primary.kid}
        for name, value in (headers or {}).items():
            if value is None:
                header.pop(name, None)
            else:
                header[name] = value
        if key is None:
            if signing_key is None:
                raise KeyError(f"no signing key with kid {kid!r}: pass key=")
            key = signing_key.private_key
        return encode_jws(header, claims, key, alg)


@dataclass
class DevClient:
    """A registered client.

    ``secret`` and ``private_key_pem`` (for a generated certificate) are only
    known right after creation; afterwards they are in ``secret_file`` /
    ``certificate_file`` (key + certificate PEM) if files were written.
    """

    client_id: str
    name: str
    oid: str
    roles: tuple[str, ...] = ()
    secret_sha256: str | None = field(default=None, repr=False)
    certificates: tuple[dict, ...] = field(default=(), repr=False)   # {"sha256","sha1","pem"}
    secret: Secret | None = field(default=None, repr=False, compare=False)
    private_key_pem: Secret | None = field(default=None, repr=False, compare=False)
    secret_file: Path | None = field(default=None, compare=False)
    certificate_file: Path | None = field(default=None, compare=False)

    def as_json(self) -> dict:
        return {"client_id": self.client_id, "name": self.name, "oid": self.oid,
                "roles": list(self.roles), "secret_sha256": self.secret_sha256,
                "certificates": list(self.certificates)}

    def check_secret(self, secret: str) -> bool:
        if not self.secret_sha256:
            return False
        digest = hashlib.sha256(secret.encode()).hexdigest()
        return hmac.compare_digest(digest, self.secret_sha256)

    def certificate_by_thumbprint(self, sha256: str | None = None, sha1: str | None = None
                                  ) -> dict | None:
        for cert in self.certificates:
            if (sha256 and hmac.compare_digest(cert["sha256"], sha256)) or \
                    (sha1 and hmac.compare_digest(cert["sha1"], sha1)):
                return cert
        return None


class ClientRegistry:
    """Clients in ``<state>/clients.json``; their secrets and keys in ``<state>/clients/``."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / CLIENTS_FILE
        self.files_dir = state_dir / "clients"
        self._lock = threading.Lock()
        self._clients: dict[str, DevClient] = {}
        if self.path.is_file():
            for raw in json.loads(self.path.read_text()).get("clients", []):
                client = DevClient(client_id=raw["client_id"], name=raw["name"], oid=raw["oid"],
                                   roles=tuple(raw.get("roles", ())),
                                   secret_sha256=raw.get("secret_sha256"),
                                   certificates=tuple(raw.get("certificates", ())))
                self._attach_files(client)
                self._clients[client.client_id] = client

    def _attach_files(self, client: DevClient) -> None:
        secret_file = self.files_dir / f"{client.name}.secret"
        cert_file = self.files_dir / f"{client.name}.pem"
        client.secret_file = secret_file if secret_file.is_file() else None
        client.certificate_file = cert_file if cert_file.is_file() else None

    def _save(self) -> None:
        data = {"clients": [c.as_json() for c in self._clients.values()]}
        write_private(self.path, json.dumps(data, indent=2).encode())

    def get(self, client_id: str) -> DevClient | None:
        return self._clients.get(client_id)

    def by_name(self, name: str) -> DevClient | None:
        return next((c for c in self._clients.values() if c.name == name), None)

    def all(self) -> list[DevClient]:
        return list(self._clients.values())

    def add(self, name: str, *, roles=(), secret: bool | str = True, certificate: bool | bytes = False,
            client_id: str | None = None, oid: str | None = None,
            write_files: bool = True) -> DevClient:
        """Register a client.  See :meth:`bastion.identity.devissuer.DevIssuer.add_client`."""
        if not _NAME.match(name):
            raise ValueError(f"client name {name!r}: use letters, digits, '.', '_' or '-'")
        with self._lock:
            if self.by_name(name):
                raise ValueError(f"a client named {name!r} already exists")
            client = DevClient(client_id=client_id or str(uuid.uuid4()), name=name,
                               oid=oid or str(uuid.uuid4()), roles=tuple(roles))
            key_pem = None
            if secret:
                value = secret if isinstance(secret, str) else secrets.token_urlsafe(32)
                client.secret = Secret(value)
                client.secret_sha256 = hashlib.sha256(value.encode()).hexdigest()
            if certificate:
                if isinstance(certificate, bytes):
                    cert_pem = certificate
                else:
                    key_pem, cert_pem = make_client_certificate(f"bastion dev client {name}")
                sha256, sha1 = thumbprints(cert_pem)
                client.certificates = ({"sha256": sha256, "sha1": sha1,
                                        "pem": cert_pem.decode()},)
            if write_files:
                self.files_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
                if client.secret is not None:
                    client.secret_file = self.files_dir / f"{name}.secret"
                    write_private(client.secret_file, client.secret.reveal().encode() + b"\n")
                if key_pem is not None:
                    client.certificate_file = self.files_dir / f"{name}.pem"
                    write_private(client.certificate_file,
                                  key_pem + client.certificates[0]["pem"].encode())
            self._clients[client.client_id] = client
            self._save()
        if key_pem is not None:
            client.private_key_pem = Secret(key_pem)
        return client
