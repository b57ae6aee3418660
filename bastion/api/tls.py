"""The API's TLS certificate: from files, or self-signed on first start (like the host CA).

``load_or_create(data_dir, names, cert=None, key=None)`` returns ``(SSLContext, cert_path,
fingerprint)``.  Without ``cert``/``key`` files the certificate lives in ``DATA_DIR/api/``
(``cert.pem`` 0644, ``key.pem`` 0600 in the 0700 data dir): an EC P-256 key and a
certificate for ``names`` (the listen address, this host's names, 127.0.0.1 and
localhost), valid 825 days.  Clients trust it with ``--server-ca DATA_DIR/api/cert.pem``
or by its SHA-256 fingerprint, printed at start.  TLS 1.2 at least.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import logging
import os
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bastion.errors import ConfigError

log = logging.getLogger("bastion.api")

VALID_DAYS = 825


def fingerprint(cert_pem: bytes) -> str:
    """``SHA256:hex:pairs`` of the certificate's DER encoding."""
    der = x509.load_pem_x509_certificate(cert_pem).public_bytes(serialization.Encoding.DER)
    digest = hashlib.sha256(der).hexdigest().upper()
    return "SHA256:" + ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


def _san(names: tuple[str, ...]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for name in dict.fromkeys(names):
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


def _create(directory: Path, names: tuple[str, ...]) -> tuple[Path, Path]:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bastion API")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
            .add_extension(_san(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(key, hashes.SHA256()))
    key_path, cert_path = directory / "key.pem", directory / "cert.pem"
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def load_or_create(data_dir: Path, names: tuple[str, ...], cert: Path | None = None,
                   key: Path | None = None) -> tuple[ssl.SSLContext, Path, str]:
    if (cert is None) != (key is None):
        raise ConfigError("--api-cert and --api-key go together",
                          hint="pass both, or neither for a self-signed certificate")
    if cert is None or key is None:
        directory = data_dir / "api"
        cert, key = directory / "cert.pem", directory / "key.pem"
        if not (cert.exists() and key.exists()):
            cert, key = _create(directory, names)
            log.info("API certificate created in %s (%s)", directory,
                     fingerprint(cert.read_bytes()))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(str(cert), str(key))
        pem = cert.read_bytes()
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot use the API certificate {cert}: {exc}",
                          hint="pass --api-cert/--api-key with a PEM certificate and key") from None
    return ctx, cert, fingerprint(pem)
