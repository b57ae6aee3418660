"""The vault: upstream private keys in ``keys/``, encrypted at rest.

Covers: generating and importing the keys the bastion uses to log in to targets,
listing them (without the passphrase), and decrypting them for the upstream
connection (cached in memory for the life of the process).  The small file helpers
(atomic, no-clobber, 0600/0700) that ``bastion.ssh.hostca`` reuses are in
:mod:`bastion.vault.files`.
The bastion's own host key and host CA are kept in this format too, in
``DATA_DIR/hostkeys`` with the same passphrase (:meth:`Vault.sibling`); which
keys those are and how they are made is ``bastion.ssh.hostca``'s.
Does not cover: upstream user certificates, or any key agent.

At-rest format (one JSON file per key, ``keys/NAME.key``; the public half also
in ``keys/NAME.pub`` for people)::

    {"header": {"format": "bastion-vault-key", "version": 1, "name": "web1",
                "algorithm": "ssh-ed25519", "public": "ssh-ed25519 AAAA... bastion:web1",
                "fingerprint": "SHA256:...", "created": "2025-...Z",
                "kdf": {"name": "scrypt", "n": 32768, "r": 8, "p": 1, "salt": B64},
                "check": B64, "cipher": {"name": "aes-256-gcm", "nonce": B64}},
     "ciphertext": B64}

The plaintext is the key in OpenSSH private key format, unencrypted.  scrypt
derives 64 bytes from the passphrase: the first 32 are the AES-256-GCM key, the
last 32 key an HMAC whose output is ``check``.  The whole header, serialised
canonically, is the GCM associated data, so the name, the public key and the
parameters cannot be altered or the file renamed without detection.

Why this and not OpenSSH's own encrypted format: that format needs the
``bcrypt`` package (bcrypt_pbkdf) and encrypts with AES-CTR and no
authentication of the surrounding data; ours uses only ``cryptography``, a
memory-hard KDF, authenticated encryption, and tells a wrong passphrase
(``check`` differs) from a damaged or tampered file (``check`` matches, tag
does not).  All keys written with one passphrase share one salt, so the
bastion runs scrypt once per process however many keys it loads.  Known limit:
``list()`` reads the header without the passphrase, so what it shows is
authenticated only when the key is next loaded.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from bastion.errors import VaultError
from bastion.secret import Secret
from bastion.vault.files import atomic_write, ensure_private_dir

PASSPHRASE_ENV = "BASTION_VAULT_PASSPHRASE"
PASSPHRASE_FILE_ENV = "BASTION_VAULT_PASSPHRASE_FILE"
FORMAT = "bastion-vault-key"
VERSION = 1
KEY_SUFFIX = ".key"
PUB_SUFFIX = ".pub"
# scrypt cost: 2**15 * 8 * 128 bytes = 32 MiB of memory, tens of ms, once per process.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2 ** 15, 8, 1
_SCRYPT_MAX_N = 2 ** 20
_CHECK_LABEL = b"bastion-vault passphrase check v1"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")

ALGORITHMS = {  # CLI name -> (asyncssh algorithm, generate kwargs)
    "ed25519": ("ssh-ed25519", {}),
    "rsa": ("ssh-rsa", {"key_size": 3072}),
    "ecdsa": ("ecdsa-sha2-nistp256", {}),
}

_HINT_PASSPHRASE = (f"set {PASSPHRASE_ENV} to the vault passphrase, or {PASSPHRASE_FILE_ENV} "
                    "to a file holding it")


@dataclass(frozen=True)
class KeyInfo:
    """What ``list()`` shows about one key; no secret in it."""

    name: str
    algorithm: str
    fingerprint: str
    public_line: str
    created: str

    def as_dict(self) -> dict:
        return {"name": self.name, "algorithm": self.algorithm, "fingerprint": self.fingerprint,
                "public_line": self.public_line, "created": self.created}


def check_name(name: str) -> str:
    """Return ``name`` if it is a valid key name, else raise VaultError."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise VaultError(f"invalid key name {name!r}",
                         hint="use 1-64 letters, digits, '.', '_' or '-', starting with a letter "
                              "or digit")
    return name


# --------------------------------------------------------------------------- passphrase

def passphrase_from_env(environ: dict | None = None) -> Secret[str] | None:
    """Read the vault passphrase from the environment; None if neither variable is set."""
    env = os.environ if environ is None else environ
    value, file_name = env.get(PASSPHRASE_ENV), env.get(PASSPHRASE_FILE_ENV)
    if value is not None and file_name:
        raise VaultError(f"both {PASSPHRASE_ENV} and {PASSPHRASE_FILE_ENV} are set",
                         hint="set only one of them")
    if file_name:
        try:
            value = Path(file_name).read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise VaultError(f"cannot read {PASSPHRASE_FILE_ENV} file {file_name}: "
                             f"{exc.strerror}") from exc
    if value is None:
        return None
    if value == "":
        raise VaultError("the vault passphrase is empty", hint=_HINT_PASSPHRASE)
    return Secret(value)


# --------------------------------------------------------------------------- envelope

def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: object, what: str, path: Path) -> bytes:
    try:
        return base64.b64decode(str(text), validate=True)
    except (ValueError, TypeError) as exc:
        raise VaultError(f"key file {path} is damaged ({what} is not base64)") from exc


def _canonical(header: dict) -> bytes:
    return json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")


def _check_value(check_key: bytes) -> bytes:
    return hmac.new(check_key, _CHECK_LABEL, hashlib.sha256).digest()


def _read_envelope(path: Path) -> tuple[dict, bytes]:
    try:
        raw = json.loads(path.read_bytes())
        header, ciphertext = raw["header"], raw["ciphertext"]
        if header.get("format") != FORMAT:
            raise ValueError("not a bastion vault key")
        if header.get("version") != VERSION:
            raise VaultError(f"key file {path} has format version {header.get('version')!r}; "
                             f"this bastion reads version {VERSION}",
                             hint="upgrade bastion or re-import the key")
        for field in ("name", "algorithm", "public", "fingerprint", "check"):
            if not isinstance(header[field], str):
                raise ValueError(f"{field} is not a string")
        if not isinstance(header.get("created", ""), str):
            raise ValueError("created is not a string")
        kdf = header["kdf"]
        if kdf.get("name") != "scrypt" or header["cipher"].get("name") != "aes-256-gcm":
            raise ValueError("unknown kdf or cipher")
        for p in ("n", "r", "p"):
            if not isinstance(kdf.get(p), int) or kdf[p] < 1:
                raise ValueError(f"bad scrypt {p}")
        if kdf["n"] > _SCRYPT_MAX_N or kdf["r"] * kdf["p"] > 64:
            raise ValueError("scrypt parameters out of range")
    except FileNotFoundError:
        raise
    except VaultError:
        raise
    except OSError as exc:
        raise VaultError(f"cannot read key file {path}: {exc.strerror}") from exc
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise VaultError(f"key file {path} is damaged or not a bastion vault key ({exc})",
                         hint="restore it from backup or generate/import the key again") from exc
    return header, _unb64(ciphertext, "ciphertext", path)


def _info(header: dict) -> KeyInfo:
    return KeyInfo(name=header["name"], algorithm=header["algorithm"],
                   fingerprint=header["fingerprint"], public_line=header["public"],
                   created=header.get("created", ""))


# --------------------------------------------------------------------------- the vault

class Vault:
    """Upstream private keys in ``keys_dir``, encrypted with one passphrase.

    ``passphrase`` may be None: listing still works; anything that encrypts or
    decrypts raises :class:`VaultError` naming the environment variables.
    Decrypted keys are cached per process and re-read only if the file changes.
    """

    def __init__(self, keys_dir: Path, passphrase: Secret[str] | None) -> None:
        self.keys_dir = Path(keys_dir)
        self._passphrase = passphrase
        self._derived: dict[tuple, tuple[bytes, bytes]] = {}   # kdf params -> (enc key, check key)
        self._cache: dict[str, tuple[tuple, asyncssh.SSHKey]] = {}
        self._kdf_parent: Vault | None = None

    @classmethod
    def from_env(cls, keys_dir: Path, environ: dict | None = None) -> "Vault":
        return cls(keys_dir, passphrase_from_env(environ))

    def __repr__(self) -> str:
        return f"Vault({str(self.keys_dir)!r}, passphrase={self._passphrase!r})"

    def sibling(self, directory: Path) -> "Vault":
        """A vault over another directory, encrypted with this one's passphrase.

        For the bastion's host keys (bastion.ssh.hostca).  Derived keys are shared, and
        the first key written there reuses this vault's salt, so scrypt runs once per
        process for both.
        """
        other = Vault(directory, self._passphrase)
        other._derived = self._derived
        other._kdf_parent = self
        return other

    # -- paths
    def key_path(self, name: str) -> Path:
        return self.keys_dir / (check_name(name) + KEY_SUFFIX)

    def pub_path(self, name: str) -> Path:
        return self.keys_dir / (check_name(name) + PUB_SUFFIX)

    # -- public operations
    def generate(self, name: str, algorithm: str = "ed25519", *, force: bool = False) -> str:
        """Create a new key NAME; return its public line for authorized_keys."""
        check_name(name)
        self._require_passphrase()
        if algorithm not in ALGORITHMS:
            raise VaultError(f"unknown key algorithm {algorithm!r}",
                             hint="choose one of: " + ", ".join(ALGORITHMS))
        self._refuse_existing(name, force)
        alg, kwargs = ALGORITHMS[algorithm]
        key = asyncssh.generate_private_key(alg, comment=f"bastion:{name}", **kwargs)
        return self._store(name, key, force=force)

    def import_key(self, name: str, path: Path, source_passphrase: Secret[str] | None = None,
                   *, force: bool = False) -> str:
        """Encrypt the private key in ``path`` (OpenSSH or PEM) into the vault as NAME."""
        check_name(name)
        self._require_passphrase()
        self._refuse_existing(name, force)
        path = Path(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise VaultError(f"cannot read {path}: {exc.strerror}") from exc
        pw = source_passphrase.reveal() if source_passphrase is not None else None
        try:
            key = asyncssh.import_private_key(data, pw)
        except asyncssh.KeyEncryptionError as exc:
            text = str(exc)
            if "bcrypt" in text:
                raise VaultError(f"{path} is an encrypted OpenSSH key and the 'bcrypt' package "
                                 "is not installed", hint="pip install bcrypt, or convert the "
                                 "key first with: ssh-keygen -p -m PEM -f FILE") from exc
            raise VaultError(f"cannot decrypt {path}: wrong source passphrase",
                             hint="check the file given with --source-passphrase-file") from exc
        except asyncssh.KeyImportError as exc:
            if "assphrase" in str(exc):
                raise VaultError(f"{path} is encrypted and no source passphrase was given",
                                 hint="pass --source-passphrase-file FILE") from exc
            raise VaultError(f"{path} is not a private key asyncssh can read ({exc})",
                             hint="give an OpenSSH or PEM private key file") from exc
        except ValueError as exc:
            raise VaultError(f"cannot import {path}: {exc}") from exc
        finally:
            pw = None
        key.set_comment(f"bastion:{name}")
        return self._store(name, key, force=force)

    def store(self, name: str, key: asyncssh.SSHKey, *, force: bool = False) -> str:
        """Encrypt ``key`` (an asyncssh private key) into the vault as NAME; its public line.

        Without ``force`` an existing NAME is a VaultError ("already exists").
        """
        check_name(name)
        self._require_passphrase()
        self._refuse_existing(name, force)
        return self._store(name, key, force=force)

    def list(self) -> list[KeyInfo]:
        """Every key in the vault, sorted by name.  Needs no passphrase."""
        if not self.keys_dir.is_dir():
            return []
        infos = []
        for path in sorted(self.keys_dir.glob("*" + KEY_SUFFIX)):
            if path.name.startswith(".") or not _NAME.fullmatch(path.name[: -len(KEY_SUFFIX)]):
                continue
            header, _ = _read_envelope(path)
            if header["name"] != path.name[: -len(KEY_SUFFIX)]:
                raise VaultError(f"key file {path} holds key {header['name']!r}",
                                 hint="do not rename vault files; import the key under the "
                                      "new name")
            infos.append(_info(header))
        return infos

    def info(self, name: str) -> KeyInfo:
        return _info(self._header_or_missing(name)[0])

    def public_line(self, name: str) -> str:
        """The key's public line (``ssh-ed25519 AAAA... bastion:NAME``); no passphrase needed."""
        return self.info(name).public_line

    def unlock(self) -> list[str]:
        """Check the passphrase against every key (no decryption); return their names.

        For ``bastion serve`` to fail at start, not at the first connection.
        Runs scrypt once per distinct salt (normally once).
        """
        names = []
        for info in self.list():
            header, _ = self._header_or_missing(info.name)
            path = self.key_path(info.name)
            _, check_key = self._derive(header["kdf"], path)
            if not hmac.compare_digest(_check_value(check_key),
                                       _unb64(header["check"], "check", path)):
                raise VaultError("wrong vault passphrase", hint=f"key {info.name!r} was encrypted "
                                 f"with another passphrase; {_HINT_PASSPHRASE}")
            names.append(info.name)
        return names

    def load(self, name: str) -> asyncssh.SSHKey:
        """Decrypt and return key NAME (cached until its file changes)."""
        path = self.key_path(name)
        signature = self._signature(path)
        cached = self._cache.get(name)
        if cached is not None and cached[0] == signature:
            return cached[1]
        header, ciphertext = self._header_or_missing(name)
        if header["name"] != name:
            raise VaultError(f"key file {path} holds key {header['name']!r}, not {name!r}",
                             hint="do not rename vault files; import the key under the new name")
        enc_key, check_key = self._derive(header["kdf"], path)
        if not hmac.compare_digest(_check_value(check_key),
                                   _unb64(header["check"], "check", path)):
            raise VaultError("wrong vault passphrase", hint=f"key {name!r} was encrypted with "
                             f"another passphrase; {_HINT_PASSPHRASE}")
        nonce = _unb64(header["cipher"].get("nonce"), "nonce", path)
        try:
            plaintext = AESGCM(enc_key).decrypt(nonce, ciphertext, _canonical(header))
        except (InvalidTag, ValueError) as exc:
            raise VaultError(f"key file {path} is damaged or was tampered with "
                             "(authentication failed)",
                             hint="restore it from backup or generate/import the key again") from exc
        try:
            key = asyncssh.import_private_key(plaintext)
        except (asyncssh.KeyImportError, ValueError) as exc:
            raise VaultError(f"key file {path} decrypted but holds no usable key") from exc
        finally:
            plaintext = b""
        if key.export_public_key("openssh").decode("ascii").split()[:2] != header["public"].split()[:2]:
            raise VaultError(f"key file {path}: private key does not match its public key")
        self._cache[name] = (signature, key)
        return key

    # -- internals
    def _header_or_missing(self, name: str) -> tuple[dict, bytes]:
        path = self.key_path(name)
        try:
            return _read_envelope(path)
        except FileNotFoundError:
            raise VaultError(f"no key {name!r} in the vault {self.keys_dir}",
                             hint=f"create it with: bastion keys generate {name} "
                                  f"(or bastion keys import {name} FILE)") from None

    def _refuse_existing(self, name: str, force: bool) -> None:
        if not force and self.key_path(name).exists():
            raise VaultError(f"key {name!r} already exists in {self.keys_dir}",
                             hint="pass --force to replace it (the old key is lost)")

    @staticmethod
    def _signature(path: Path) -> tuple:
        try:
            st = path.stat()
        except OSError:
            return ()
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _require_passphrase(self) -> bytes:
        if self._passphrase is None:
            raise VaultError("the vault passphrase is not set", hint=_HINT_PASSPHRASE)
        return self._passphrase.reveal().encode("utf-8")

    def _derive(self, kdf: dict, path: Path) -> tuple[bytes, bytes]:
        salt = _unb64(kdf.get("salt"), "salt", path)
        params = (salt, kdf["n"], kdf["r"], kdf["p"])
        if params not in self._derived:
            secret = Scrypt(salt=salt, length=64, n=kdf["n"], r=kdf["r"], p=kdf["p"]).derive(
                self._require_passphrase())
            self._derived[params] = (secret[:32], secret[32:])
        return self._derived[params]

    def subkey(self, purpose: str) -> bytes:
        """A 32-byte key for ``purpose``, the same at every start with the same passphrase:
        HKDF-SHA256 over the scrypt output of the salt the vault's keys share.  Needs a key
        in this vault (or the one it is a :meth:`sibling` of) to take the salt from, and
        checks the passphrase against it."""
        kdf = self._existing_kdf()
        if kdf is None:
            raise VaultError(f"no key in {self.keys_dir} to derive a {purpose} key from",
                             hint="create the bastion's host keys first (bastion serve does)")
        enc_key, check_key = self._derive(kdf, self.keys_dir)
        return HKDF(algorithm=SHA256(), length=32, salt=None,
                    info=b"bastion-vault subkey v1: " + purpose.encode()).derive(enc_key + check_key)

    def salted_subkey(self, purpose: str, salt: bytes) -> bytes:
        """A 32-byte key for ``purpose`` from the passphrase and ``salt`` alone: the same on
        every node with the same passphrase, whatever keys its own vault holds (a shared
        store keeps the salt: bastion.recording.tailstore).  scrypt runs once per salt and process."""
        kdf = {"name": "scrypt", "n": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P, "salt": _b64(salt)}
        enc_key, check_key = self._derive(kdf, self.keys_dir)
        return HKDF(algorithm=SHA256(), length=32, salt=None,
                    info=b"bastion-vault salted subkey v1: " + purpose.encode()).derive(
                        enc_key + check_key)

    def _kdf_for_new_key(self) -> dict[str, Any]:
        """Reuse the salt of an existing key (after checking the passphrase against it)."""
        kdf = self._existing_kdf()
        if kdf is not None:
            return kdf
        return {"name": "scrypt", "n": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P,
                "salt": _b64(secrets.token_bytes(16))}

    def _existing_kdf(self) -> dict[str, Any] | None:
        """The KDF of the first readable key here or in the parent vault (passphrase checked)."""
        for info_path in sorted(self.keys_dir.glob("*" + KEY_SUFFIX)) if self.keys_dir.is_dir() else []:
            try:
                header, _ = _read_envelope(info_path)
            except (VaultError, FileNotFoundError):
                continue
            _, check_key = self._derive(header["kdf"], info_path)
            if not hmac.compare_digest(_check_value(check_key),
                                       _unb64(header["check"], "check", info_path)):
                raise VaultError("wrong vault passphrase",
                                 hint=f"the vault's existing keys use another passphrase; "
                                      f"{_HINT_PASSPHRASE}")
            return dict(header["kdf"])
        if self._kdf_parent is not None:
            return self._kdf_parent._existing_kdf()
        return None

    def _store(self, name: str, key: asyncssh.SSHKey, *, force: bool) -> str:
        self._require_passphrase()
        ensure_private_dir(self.keys_dir)
        kdf = self._kdf_for_new_key()
        enc_key, check_key = self._derive(kdf, self.keys_dir)
        public = key.export_public_key("openssh").decode("ascii").strip()
        nonce = secrets.token_bytes(12)
        header = {
            "format": FORMAT, "version": VERSION, "name": name,
            "algorithm": key.algorithm.decode("ascii"), "public": public,
            "fingerprint": key.get_fingerprint("sha256"),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "kdf": kdf, "check": _b64(_check_value(check_key)),
            "cipher": {"name": "aes-256-gcm", "nonce": _b64(nonce)},
        }
        plaintext = key.export_private_key("openssh")
        ciphertext = AESGCM(enc_key).encrypt(nonce, plaintext, _canonical(header))
        plaintext = b""
        body = json.dumps({"header": header, "ciphertext": _b64(ciphertext)}, indent=1).encode()
        try:
            atomic_write(self.key_path(name), body + b"\n", overwrite=force)
        except FileExistsError:
            raise VaultError(f"key {name!r} already exists in {self.keys_dir}",
                             hint="pass --force to replace it (the old key is lost)") from None
        except OSError as exc:
            raise VaultError(f"cannot write key {name!r}: {exc.strerror}") from exc
        try:
            atomic_write(self.pub_path(name), (public + "\n").encode(), overwrite=True)
        except OSError as exc:
            raise VaultError(f"cannot write {self.pub_path(name)}: {exc.strerror}") from exc
        self._cache[name] = (self._signature(self.key_path(name)), key)
        return public
