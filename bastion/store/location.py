"""Where the index lives: ``[store]`` of policy.toml, or the environment.

Resolution, first found wins:

1. ``BASTION_STORE_URL`` / ``BASTION_STORE_PASSWORD_FILE`` / ``BASTION_NODE``;
2. what ``bastion serve`` configured (:func:`configure`, from its policy's ``[store]``;
   it does not when ``BASTION_STORE_URL`` is set);
3. ``[store]`` of the policy file named by ``BASTION_POLICY`` (so that CLI readers on a
   node find the same store as its server);
4. nothing: the SQLite file ``DATA_DIR/index.sqlite`` (the default, one node).

``url`` is a libpq URL (``postgresql://bastion@db1:5432/bastion?sslmode=verify-full``).
The password comes from ``password_file`` (its first line), or from libpq's own environment
or files (``PGPASSWORD``, ``~/.pgpass``, ``PGPASSFILE``); a password written into the URL is
accepted but never shown: :func:`safe_url` is the only form that reaches a log or a message.
``node`` names this bastion in the shared store (default: the host name): whose sessions a
restart marks interrupted, whose approval requests it expires.

Not covered: connecting (pgconn.py), the SQLite file (bastion.recording.schema).
"""

from __future__ import annotations

import functools
import os
import re
import socket
import stat
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bastion.errors import ConfigError

ENV_URL = "BASTION_STORE_URL"
ENV_PASSWORD_FILE = "BASTION_STORE_PASSWORD_FILE"
ENV_NODE = "BASTION_NODE"
SCHEMES = ("postgresql", "postgres")
_NODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")


@dataclass(frozen=True)
class StoreSettings:
    url: str | None = None              # None: SQLite in the data dir
    password_file: str | None = None
    node: str = ""

    @property
    def postgres(self) -> bool:
        return bool(self.url)

    def __repr__(self) -> str:          # never the password a URL may carry
        return (f"StoreSettings(url={safe_url(self.url)!r}, password_file={self.password_file!r}, "
                f"node={self.node!r})")

    def password(self) -> str | None:
        """The password from ``password_file`` (first line), else None (libpq finds one)."""
        if not self.password_file:
            return None
        path = Path(self.password_file)
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
            if mode & 0o077:                # as libpq refuses a ~/.pgpass others can read
                raise ConfigError(f"the store's password file {path} is accessible by other "
                                  f"users (mode {mode:o}); refusing to use it",
                                  hint=f"chmod 600 {path}")
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read the store's password file {self.password_file}: "
                              f"{exc.strerror or exc}",
                              hint="fix [store] password_file or BASTION_STORE_PASSWORD_FILE") \
                from None
        return (text.splitlines() or [""])[0]

    def env(self) -> dict[str, str]:
        """The variables a child process (the recording worker) needs to find this store.

        The password file is passed by name; ``PGPASSWORD``, if that is where the password
        is, is passed as is (the worker writes the index, so it needs the credential)."""
        if not self.postgres:
            return {}
        out = {ENV_URL: str(self.url), ENV_NODE: self.node}
        if self.password_file:
            out[ENV_PASSWORD_FILE] = self.password_file
        for name in ("PGPASSWORD", "PGPASSFILE"):
            if name in os.environ:
                out[name] = os.environ[name]
        return out


def safe_url(url: str | None) -> str | None:
    """The URL without a password (``postgresql://bastion:***@db1/bastion``)."""
    if not url:
        return url
    return re.sub(r"(://[^/:@]*):[^@/]*@", r"\1:***@", url)


def check(url: str | None, password_file: str | None, node: str | None,
          where: str) -> StoreSettings:
    """Validate the three values; raises ConfigError naming ``where`` they came from."""
    if url is not None:
        scheme = url.split(":", 1)[0].lower()
        if scheme not in SCHEMES:
            raise ConfigError(f"{where}: url must be a postgresql:// URL, got {safe_url(url)!r}",
                              hint="leave it out to keep the SQLite index in the data dir")
    if not node:
        return StoreSettings(url=url or None, password_file=password_file or None,
                             node=socket.gethostname() or "bastion")
    name = node
    if not _NODE.fullmatch(name):
        raise ConfigError(f"{where}: node must be letters, digits, '.', '_' or '-' "
                          f"(at most 63), got {name!r}")
    return StoreSettings(url=url or None, password_file=password_file or None, node=name)


_configured: StoreSettings | None = None


def configure(settings: StoreSettings | None) -> None:
    """Set this process's store (``bastion serve``; None: resolve from the environment)."""
    global _configured
    _configured = settings


def current() -> StoreSettings:
    """This process's store (see the module doc for the order)."""
    return _resolve(os.environ.get(ENV_URL) or None, os.environ.get(ENV_PASSWORD_FILE),
                    os.environ.get(ENV_NODE), os.environ.get("BASTION_POLICY"), _configured)


@functools.lru_cache(maxsize=16)
def _resolve(url: str | None, password_file: str | None, node: str | None,
             policy: str | None, configured: StoreSettings | None) -> StoreSettings:
    if url:
        return check(url, password_file, node, ENV_URL)
    if configured is not None:
        return configured
    if policy:
        table = _policy_store(Path(policy))
        if table.get("url"):
            pwfile = password_file or table.get("password_file")
            if pwfile and not os.path.isabs(pwfile):
                pwfile = str(Path(policy).resolve().parent / pwfile)
            return check(table.get("url"), pwfile, node or table.get("node"),
                         f"{policy} [store]")
    return check(None, None, node, ENV_NODE)


def _policy_store(path: Path) -> dict[str, Any]:
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}              # the command that needs the policy reports it properly
    table = raw.get("store")
    return table if isinstance(table, dict) else {}
