"""The bastion's own host key and host CA, and the host certificates it issues.

Covers: creating on first start, in ``DATA_DIR/hostkeys/`` (dir 0700, files
0600), the bastion's outer host key ``ssh_host_ed25519_key`` and the host CA key
``host_ca``, both encrypted with the vault passphrase in the vault's format
(``NAME.key``, public half in ``NAME.pub``; bastion.vault); migrating the
unencrypted files an older bastion wrote (``NAME``, OpenSSH format): re-written
encrypted at the next start, the plain file removed, one log line; reading the
public halves without the passphrase (``bastion ca known-hosts``); certifying the
outer host key for the bastion's own names; issuing
per-target host certificates for inner connections; the ``@cert-authority``
line agents put in known_hosts.  Does not cover: upstream keys (``bastion.vault``),
user certificates, revocation lists.

Decisions:

* The outer host key is presented *with a certificate* from the same CA (valid
  for the names in ``bastion_names``: 127.0.0.1, ::1, localhost and the host name
  by default), so one ``@cert-authority`` line covers the bastion and every
  target.  The outer certificate is re-issued at each start (so the names can
  change with the configuration) and is valid for ``OUTER_VALIDITY``; the plain
  key is offered too, for clients that pin it instead.
* Inner certificates: one host key per process, generated in memory and never
  written, is certified per target name.  Agents trust the CA, not a key, so a
  fresh key each start costs nothing; nothing but the CA needs protecting on
  disk, and a certificate only vouches for the one name it lists.  Certificates
  are valid from ``BACKDATE`` seconds in the past (clock skew) for
  ``INNER_VALIDITY`` and re-issued when less than ``RENEW_MARGIN`` is left.
* Files that are group- or world-accessible are refused (fail closed), as sshd
  refuses unprotected host keys, encrypted or not.
* Why encrypted although sshd keeps its host keys in the clear: the CA key vouches for
  every target name to every agent, so a copy of the data dir (a backup, a support
  bundle) must not be enough to impersonate them; the passphrase lives apart from it,
  like the upstream keys'.  Known limit: the plain file a migration removes may survive
  in backups, snapshots or the disk's free blocks -- where that matters, make a new CA
  (remove ``hostkeys/``) and hand agents the new ``@cert-authority`` line.
"""

from __future__ import annotations

import logging
import re
import secrets
import socket
import stat
import time
from pathlib import Path
from typing import Callable, Iterable, Sequence

import asyncssh

from bastion.errors import TargetError, VaultError
from bastion.secret import Secret
from bastion.vault import Vault
from bastion.vault.files import ensure_private_dir

log = logging.getLogger("bastion.hostca")

HOSTKEYS_DIR = "hostkeys"
HOST_KEY_FILE = "ssh_host_ed25519_key"
CA_KEY_FILE = "host_ca"
CA_COMMENT = "bastion-host-ca"
BACKDATE = 5 * 60
INNER_VALIDITY = 24 * 3600
RENEW_MARGIN = 3600
OUTER_VALIDITY = 365 * 24 * 3600
_PRINCIPAL = re.compile(r"^[A-Za-z0-9:][A-Za-z0-9_.\-:]{0,252}$")


def default_bastion_names() -> tuple[str, ...]:
    """Names the outer certificate is valid for unless configured otherwise."""
    names = ["127.0.0.1", "::1", "localhost"]
    try:
        hostname = socket.gethostname()   # local call, no DNS lookup
    except OSError:  # pragma: no cover
        hostname = ""
    if hostname and hostname not in names:
        names.append(hostname)
    return tuple(names)


def known_hosts_pattern(host: str, port: int = 22) -> str:
    """How OpenSSH names ``host:port`` in known_hosts: ``host`` or ``[host]:port``."""
    return host if port == 22 else f"[{host}]:{port}"


def _check_principal(name: str) -> str:
    if not isinstance(name, str) or not _PRINCIPAL.fullmatch(name):
        raise TargetError(f"cannot issue a host certificate for {name!r}: not a host name",
                          hint="target names are letters, digits, '.', '_', '-'")
    return name


def _refuse_open(path: Path) -> bool:
    """True if ``path`` exists; a VaultError if others can access it."""
    try:
        mode = stat.S_IMODE(path.lstat().st_mode)
    except FileNotFoundError:
        return False
    if mode & 0o077:
        raise VaultError(f"{path} is accessible by other users (mode {mode:o}); refusing to use it",
                         hint=f"chmod 600 {path}")
    return True


def _read_plain(path: Path) -> asyncssh.SSHKey:
    """An unencrypted host key as an older bastion wrote it (OpenSSH format)."""
    try:
        return asyncssh.read_private_key(path)
    except (OSError, ValueError, asyncssh.KeyImportError) as exc:
        raise VaultError(f"cannot read host key {path}: {exc}",
                         hint="restore it from backup; deleting it makes a new one that agents "
                              "will not trust") from exc


def _load_encrypted(vault: Vault, name: str) -> asyncssh.SSHKey:
    try:
        return vault.load(name)
    except VaultError as exc:
        if "passphrase" in str(exc):
            raise VaultError(f"cannot decrypt host key {vault.key_path(name)}: {exc}",
                             hint=exc.hint) from exc
        raise VaultError(f"cannot read host key {vault.key_path(name)}: {exc}",
                         hint="restore it from backup; deleting it makes a new one that agents "
                              "will not trust") from exc


def _same_key(a: asyncssh.SSHKey, b: asyncssh.SSHKey) -> bool:
    return a.export_public_key("openssh").split()[:2] == b.export_public_key("openssh").split()[:2]


def _load_or_create_key(vault: Vault, name: str, comment: str) -> asyncssh.SSHKey:
    encrypted = vault.key_path(name)
    plain = vault.keys_dir / name
    has_encrypted = _refuse_open(encrypted)
    has_plain = _refuse_open(plain)
    if has_encrypted:
        key = _load_encrypted(vault, name)
        if has_plain:                # a migration stopped after writing the encrypted copy
            if not _same_key(_read_plain(plain), key):
                raise VaultError(f"{plain} and {encrypted} hold different keys",
                                 hint=f"keep the one agents trust and remove the other "
                                      f"(the CA's fingerprint is {key.get_fingerprint('sha256')} "
                                      f"in {encrypted.name})")
            plain.unlink()
            log.warning("host key %s: removed the unencrypted copy %s (it was migrated)",
                        name, plain)
        return key
    if has_plain:
        key = _read_plain(plain)
        _store(vault, name, key)
        plain.unlink()
        log.warning("host key %s migrated: re-written encrypted with the vault passphrase "
                    "(%s, %s); the unencrypted file %s was removed", name, encrypted,
                    key.get_fingerprint("sha256"), plain)
        return key
    key = asyncssh.generate_private_key("ssh-ed25519", comment=comment)
    if not _store(vault, name, key):
        return _load_encrypted(vault, name)      # another process made it meanwhile
    log.info("host key %s created (%s), encrypted with the vault passphrase", name,
             key.get_fingerprint("sha256"))
    return key


def _store(vault: Vault, name: str, key: asyncssh.SSHKey) -> bool:
    """Write ``key`` encrypted; False if another process wrote NAME first."""
    try:
        vault.store(name, key)
    except VaultError as exc:
        if vault.key_path(name).exists() and "already exists" in str(exc):
            return False
        raise VaultError(f"cannot store host key {name}: {exc}", hint=exc.hint) from exc
    return True


def _hostkeys_dir(data_dir: Path) -> Path:
    directory = Path(data_dir) / HOSTKEYS_DIR
    if directory.is_dir():
        mode = stat.S_IMODE(directory.stat().st_mode)
        if mode & 0o077:
            raise VaultError(f"{directory} is accessible by other users (mode {mode:o}); "
                             "refusing to use it", hint=f"chmod 700 {directory}")
    return directory


def _public_key(directory: Path, name: str) -> asyncssh.SSHKey | None:
    """The public half of host key NAME without the passphrase; None if it does not exist."""
    vault = Vault(directory, None)
    if _refuse_open(vault.key_path(name)):
        try:
            return asyncssh.import_public_key(vault.public_line(name))
        except (asyncssh.KeyImportError, ValueError) as exc:
            raise VaultError(f"cannot read host key {vault.key_path(name)}: {exc}") from exc
    plain = directory / name
    if _refuse_open(plain):
        return _read_plain(plain).convert_to_public()
    return None


class PublicHostKeys:
    """The public halves of the host key and CA: what agents are told to trust."""

    def __init__(self, host_key: asyncssh.SSHKey, ca_key: asyncssh.SSHKey) -> None:
        self.host_key = host_key
        self.ca_key = ca_key

    @classmethod
    def read(cls, data_dir: Path) -> "PublicHostKeys | None":
        """Read both public halves from ``data_dir/hostkeys`` (no passphrase needed).

        None when either key does not exist yet (``HostKeys.load_or_create`` makes them).
        The public half of an encrypted key is authenticated only when the key is next
        decrypted (bastion.vault's known limit).
        """
        directory = _hostkeys_dir(data_dir)
        if not directory.is_dir():
            return None
        host_key = _public_key(directory, HOST_KEY_FILE)
        ca_key = _public_key(directory, CA_KEY_FILE)
        if host_key is None or ca_key is None:
            return None
        return cls(host_key, ca_key)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(ca={self.ca_key.get_fingerprint('sha256')})"

    # -- what agents are told to trust
    def ca_public_line(self) -> str:
        """``ssh-ed25519 AAAA... bastion-host-ca``."""
        line = self.ca_key.export_public_key("openssh").decode("ascii").strip()
        parts = line.split()
        return " ".join(parts[:2] + [CA_COMMENT])

    def known_hosts_lines(self, bastion_host_pattern: str = "*", target_pattern: str = "*", *,
                          include_plain_host_key: bool = False) -> str:
        """The known_hosts text for agents, newline-terminated.

        One ``@cert-authority PATTERNS CA-KEY`` line whose patterns cover the
        bastion (write ``[host]:port`` for a port other than 22, see
        :func:`known_hosts_pattern`) and the targets.  With ``*`` (the default)
        the CA is trusted for every name: keep the line in a known_hosts file of
        its own, used only for bastion connections.  ``include_plain_host_key``
        adds a plain line for the bastion's key, for clients that do not use
        certificates.
        """
        patterns: list[str] = []
        for pattern in (bastion_host_pattern, target_pattern):
            for part in pattern.split(","):
                part = part.strip()
                if not part or any(c.isspace() for c in part):
                    raise TargetError(f"invalid known_hosts pattern {pattern!r}")
                if part not in patterns:
                    patterns.append(part)
        if "*" in patterns:
            patterns = ["*"]
        lines = [f"@cert-authority {','.join(patterns)} {self.ca_public_line()}"]
        if include_plain_host_key:
            key = self.host_key.export_public_key("openssh").decode("ascii").split()[:2]
            lines.append(f"{bastion_host_pattern} {' '.join(key)} bastion")
        return "\n".join(lines) + "\n"


class HostKeys(PublicHostKeys):
    """The bastion's host key, its host CA, and the certificates they make."""

    def __init__(self, host_key: asyncssh.SSHKey, ca_key: asyncssh.SSHKey, *,
                 bastion_names: Sequence[str] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.host_key = host_key
        self.ca_key = ca_key
        self.bastion_names = tuple(_check_principal(n) for n in
                                   (bastion_names or default_bastion_names()))
        self._clock = clock
        self._inner_key = asyncssh.generate_private_key("ssh-ed25519", comment="bastion-inner")
        self._certs: dict[str, asyncssh.SSHCertificate] = {}
        self._expiry: dict[str, float] = {}
        now = int(clock())
        self.host_cert = ca_key.generate_host_certificate(
            host_key, "bastion outer host key", serial=secrets.randbits(63),
            principals=list(self.bastion_names), valid_after=now - BACKDATE,
            valid_before=now + OUTER_VALIDITY, comment="bastion")

    @classmethod
    def load_or_create(cls, data_dir: Path, bastion_names: Iterable[str] | None = None, *,
                       vault: Vault | None = None, passphrase: Secret[str] | None = None,
                       clock: Callable[[], float] = time.time) -> "HostKeys":
        """Load the host key and CA from ``data_dir/hostkeys``, creating them the first time.

        They are encrypted with the vault passphrase: ``vault`` (the upstream keys' vault,
        whose passphrase and derived key are reused) or ``passphrase``.  Without either,
        a VaultError says how to set it.  Unencrypted keys of an older bastion are
        migrated (see the module doc).
        """
        directory = _hostkeys_dir(data_dir)
        ensure_private_dir(directory)
        keys = vault.sibling(directory) if vault is not None else Vault(directory, passphrase)
        host_key = _load_or_create_key(keys, HOST_KEY_FILE, "bastion")
        ca_key = _load_or_create_key(keys, CA_KEY_FILE, CA_COMMENT)
        names = list(bastion_names) if bastion_names is not None else None
        return cls(host_key, ca_key, bastion_names=names, clock=clock)

    # -- what the server presents
    def server_host_keys(self) -> list:
        """For ``asyncssh.create_server(server_host_keys=...)``.

        asyncssh offers a (key, certificate) pair under both the certificate
        algorithm and the plain key algorithm.
        """
        return [(self.host_key, self.host_cert)]

    def cert_for(self, target_name: str) -> tuple[asyncssh.SSHKey, asyncssh.SSHCertificate]:
        """A host key and a certificate for the principal ``target_name`` (cached, renewed)."""
        _check_principal(target_name)
        now = self._clock()
        cert = self._certs.get(target_name)
        if cert is None or self._expiry[target_name] - now < RENEW_MARGIN:
            start = int(now)
            cert = self.ca_key.generate_host_certificate(
                self._inner_key, f"bastion target {target_name}", serial=secrets.randbits(63),
                principals=[target_name], valid_after=start - BACKDATE,
                valid_before=start + INNER_VALIDITY, comment=f"bastion:{target_name}")
            self._certs[target_name] = cert
            self._expiry[target_name] = start + INNER_VALIDITY
        return self._inner_key, cert
