"""The bastion's own host key and host CA, and the host certificates it issues.

Covers: creating on first start, in ``DATA_DIR/hostkeys/`` (dir 0700, files
0600, like sshd's host keys: unencrypted, protected by permissions), the
bastion's outer host key ``ssh_host_ed25519_key`` and the host CA key
``host_ca``; certifying the outer host key for the bastion's own names; issuing
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
  refuses unprotected host keys.
"""

from __future__ import annotations

import re
import secrets
import socket
import stat
import time
from pathlib import Path
from typing import Callable, Iterable, Sequence

import asyncssh

from bastion.errors import TargetError, VaultError
from bastion.vault import atomic_write, ensure_private_dir

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


def _load_or_create_key(path: Path, comment: str) -> asyncssh.SSHKey:
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        key = asyncssh.generate_private_key("ssh-ed25519", comment=comment)
        try:
            atomic_write(path, key.export_private_key("openssh"))
        except FileExistsError:
            return _load_or_create_key(path, comment)   # another process won the race
        except OSError as exc:
            raise VaultError(f"cannot write {path}: {exc.strerror}") from exc
        atomic_write(path.with_name(path.name + ".pub"), key.export_public_key("openssh"),
                     overwrite=True)
        return key
    if mode & 0o077:
        raise VaultError(f"{path} is accessible by other users (mode {mode:o}); refusing to use it",
                         hint=f"chmod 600 {path}")
    try:
        return asyncssh.read_private_key(path)
    except (OSError, ValueError) as exc:
        raise VaultError(f"cannot read host key {path}: {exc}",
                         hint="restore it from backup; deleting it makes a new one that agents "
                              "will not trust") from exc


class HostKeys:
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
                       clock: Callable[[], float] = time.time) -> "HostKeys":
        """Load the host key and CA from ``data_dir/hostkeys``, creating them the first time."""
        directory = Path(data_dir) / HOSTKEYS_DIR
        existed = directory.is_dir()
        if existed:
            mode = stat.S_IMODE(directory.stat().st_mode)
            if mode & 0o077:
                raise VaultError(f"{directory} is accessible by other users (mode {mode:o}); "
                                 "refusing to use it", hint=f"chmod 700 {directory}")
        ensure_private_dir(directory)
        host_key = _load_or_create_key(directory / HOST_KEY_FILE, "bastion")
        ca_key = _load_or_create_key(directory / CA_KEY_FILE, CA_COMMENT)
        names = list(bastion_names) if bastion_names is not None else None
        return cls(host_key, ca_key, bastion_names=names, clock=clock)

    def __repr__(self) -> str:
        return f"HostKeys(ca={self.ca_key.get_fingerprint('sha256')}, names={self.bastion_names})"

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
