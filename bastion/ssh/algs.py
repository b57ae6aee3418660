"""Which ciphers the bastion offers, and why.

The OpenSSH client picks the first cipher of *its own* list that the server also
offers; its list starts with chacha20-poly1305, then AES-CTR, then AES-GCM.  In
the bastion (Python, asyncssh over the ``cryptography`` package), AES-GCM is the
fastest by far (measured here: about 85 MB/s through the bastion against 55 MB/s
with chacha20-poly1305), so by default the bastion offers only AES-GCM, which every
OpenSSH since 6.2 supports.  ``[settings] ciphers`` overrides the list (e.g. to add
chacha20-poly1305@openssh.com for old clients).  The upstream connection, where
the bastion is the client, prefers the same list, then asyncssh's defaults.
"""

from __future__ import annotations

import asyncssh

from bastion.errors import ConfigError

DEFAULT_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")


def _supported() -> set[str]:
    return {alg.decode() for alg in asyncssh.encryption.get_encryption_algs()}


def check_ciphers(ciphers) -> None:
    unknown = [c for c in (ciphers or ()) if c not in _supported()]
    if unknown:
        raise ConfigError(f"settings.ciphers: unsupported cipher(s) {', '.join(unknown)}",
                          hint="supported: " + ", ".join(sorted(_supported())))


def server_algs(ciphers=None) -> dict:
    """Keyword arguments for the outer and inner server options."""
    return {"encryption_algs": list(ciphers or DEFAULT_CIPHERS)}


def client_algs(ciphers=None) -> dict:
    """Keyword arguments for upstream connections: ours first, then asyncssh's defaults."""
    preferred = list(ciphers or DEFAULT_CIPHERS)
    rest = [a.decode() for a in asyncssh.encryption.get_default_encryption_algs()
            if a.decode() not in preferred]
    return {"encryption_algs": preferred + rest}
