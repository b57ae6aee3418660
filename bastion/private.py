"""File modes: what the bastion creates is private to its user, and what it is given is checked.

Covers: the modes everything is created with (directories 0700, files 0600, on top of the
077 umask ``bastion`` sets for itself), creating a directory chain with those modes, files a
user asks for (``-o``: never through a symlink, never over a file unless told), checking
that an existing data or keys dir is not open to other users (``bastion serve`` refuses one
unless started with ``--no-strict-modes``), and tightening what an older bastion created
with looser modes.  Does not cover: the vault's own files (bastion.vault writes them 0600
through ``atomic_write``) or the host key checks (bastion.ssh.hostca refuses open host keys
whatever the strictness, as sshd does).

No logging, no asyncio: callers decide what to say.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator

UMASK = 0o077
DIR_MODE = 0o700
FILE_MODE = 0o600
OPEN_BITS = 0o077          # any permission for the group or others


def set_private_umask() -> int:
    """Set the process umask to 077; returns the previous one."""
    return os.umask(UMASK)


def make_private_dirs(path: Path) -> Path:
    """Create ``path`` and its missing parents, each new one with mode 0700.

    Existing directories are left as they are (their modes are checked elsewhere).
    ``Path.mkdir(parents=True, mode=...)`` would create the parents with the default
    mode, which is why each level is made here.
    """
    path = Path(path)
    missing = []
    probe = path
    while not probe.exists():
        missing.append(probe)
        if probe.parent == probe:
            break
        probe = probe.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=DIR_MODE)
        except FileExistsError:
            if not directory.is_dir():
                raise
            continue
        os.chmod(directory, DIR_MODE)        # whatever the umask
    return path


def open_private_file(path: Path, flags: int) -> int:
    """``os.open`` that creates with 0600 and never follows a symlink at ``path``."""
    return os.open(path, flags | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0),
                   FILE_MODE)


class OutputExists(FileExistsError):
    """The output path exists (``symlink`` says whether it is a symbolic link)."""

    def __init__(self, path: Path, symlink: bool) -> None:
        super().__init__(f"{path} exists")
        self.path = path
        self.symlink = symlink


@contextlib.contextmanager
def new_output_file(path: Path, *, overwrite: bool = False) -> Iterator[BinaryIO]:
    """A binary file object for a file the user asked for (``-o PATH``), mode 0600.

    Never follows a symlink at ``path``.  Without ``overwrite`` an existing ``path``
    (file, symlink, anything) raises :class:`OutputExists` and nothing is written.  With
    ``overwrite`` the data goes to a new file beside it that then replaces ``path``
    itself (a symlink is replaced, its target left alone; a directory is not replaced).
    On an error inside the block nothing is left behind.
    """
    path = Path(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    if st is not None:
        if not overwrite:
            raise OutputExists(path, stat.S_ISLNK(st.st_mode))
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(21, "Is a directory", str(path))
    if st is None:
        # O_EXCL | O_NOFOLLOW: a name that appears meanwhile (even a dangling symlink) fails
        fd = open_private_file(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        final = None
        written = path
    else:
        written = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        fd = open_private_file(written, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        final = path
    ok = False
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        if final is not None:
            os.replace(written, final)
        ok = True
    finally:
        if not ok:
            with contextlib.suppress(OSError):
                os.unlink(written)


def open_mode(path: Path) -> int | None:
    """The permission bits of directory ``path`` if other users have any, else None.

    None too when ``path`` does not exist (it will be created private).
    """
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        return None
    return mode if mode & OPEN_BITS else None


def describe_open(mode: int) -> str:
    """What other users can do with a directory of ``mode``: ``read and written`` and so on."""
    verbs = []
    if mode & 0o044:
        verbs.append("read")
    if mode & 0o022:
        verbs.append("written")
    if mode & 0o011 and not verbs:
        verbs.append("entered")
    return " and ".join(verbs)


@dataclass
class Tightened:
    dirs: int = 0
    files: int = 0

    @property
    def count(self) -> int:
        return self.dirs + self.files


def tighten_tree(root: Path, *, skip: tuple[str, ...] = ()) -> Tightened:
    """Remove group/other permissions from everything under ``root`` (not ``root`` itself).

    For data dirs written by an older bastion (index 0644, recording dirs 0755, recordings
    0640).  Symlinks are neither followed nor changed; top-level names in ``skip`` are left
    alone (the host keys, which are refused rather than repaired).  Returns what changed.
    """
    done = Tightened()
    stack = [Path(root)]
    top = True
    while stack:
        directory = stack.pop()
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue
        for entry in entries:
            if top and entry.name in skip:
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISDIR(st.st_mode):
                stack.append(Path(entry.path))
                wanted = mode & ~OPEN_BITS
                if mode != wanted:
                    os.chmod(entry.path, wanted)
                    done.dirs += 1
            elif stat.S_ISREG(st.st_mode):
                wanted = mode & ~OPEN_BITS
                if mode != wanted:
                    os.chmod(entry.path, wanted)
                    done.files += 1
        top = False
    return done
