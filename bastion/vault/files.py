"""The vault's file helpers, also used by ``bastion.ssh.hostca`` and the demo: a private
directory (0700) and an atomic write (0600, fsynced, never over an existing file unless told)."""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from bastion.errors import VaultError


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) if needed and make it mode 0700."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        if stat.S_IMODE(path.stat().st_mode) != 0o700:
            path.chmod(0o700)
    except OSError as exc:
        raise VaultError(f"cannot prepare directory {path}: {exc.strerror}") from exc
    return path


def atomic_write(path: Path, data: bytes, *, overwrite: bool = False, mode: int = 0o600) -> None:
    """Write ``data`` to ``path`` atomically with ``mode``.

    Written to a temporary file in the same directory, fsynced, then moved into
    place.  Without ``overwrite`` an existing ``path`` is never replaced
    (``os.link`` fails if the name exists) and ``FileExistsError`` is raised.
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        try:
            os.fchmod(fd, mode)
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise
            except OSError:  # file systems without hard links: check, then rename
                if path.exists():
                    raise FileExistsError(str(path)) from None
                os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
