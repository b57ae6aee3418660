"""Start a real OpenSSH ``sshd`` on loopback as a demo or test target.

The daemon runs in the foreground (``-D -e``) from a private directory holding
its own host key, config and ``authorized_keys``; it binds 127.0.0.1 only and
lets in exactly the public keys given (normally the bastion's vault key for the
target).  It runs as the current user: as root it logs in root (key only); as
another user it can only log in that user (sshd without privilege separation).

Not for production: this is how ``bastion demo`` and the test-suite get a real
peer without touching the machine's own sshd.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from bastion.errors import BastionError

SSHD_CANDIDATES = ("/usr/sbin/sshd", "/usr/local/sbin/sshd", "/usr/bin/sshd")


def find_sshd() -> str:
    for path in SSHD_CANDIDATES:
        if os.access(path, os.X_OK):
            return path
    found = shutil.which("sshd")
    if found:
        return found
    raise BastionError("OpenSSH sshd not found",
                       hint="install it: apt-get install openssh-server (scripts/test.sh does)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 10.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise BastionError(f"process exited with status {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise BastionError(f"nothing listening on 127.0.0.1:{port} after {timeout:g}s")


@dataclass
class LocalSshd:
    """A running loopback sshd.  Use :meth:`start` and :meth:`stop` (or ``with``)."""

    workdir: Path
    authorized_keys: list[str]
    port: int = 0
    user: str = field(default_factory=getpass.getuser)
    extra_config: str = ""
    allow_tcp_forwarding: bool = False     # True for a plain OpenSSH jump host (benchmarks)
    use_pam: bool = False                  # True lets root's sshd log in a locked account (tests)
    max_startups: str = "100:30:200"       # sshd's MaxStartups (start:rate:full)
    proc: subprocess.Popen | None = None
    host_key_line: str = ""

    def start(self) -> "LocalSshd":
        sshd = find_sshd()
        self.workdir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.workdir, 0o700)
        host_key = self.workdir / "ssh_host_ed25519_key"
        if not host_key.exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "demo-target",
                            "-f", str(host_key)], check=True)
        pub = (self.workdir / "ssh_host_ed25519_key.pub").read_text().split()
        self.host_key_line = f"{pub[0]} {pub[1]}"
        auth = self.workdir / "authorized_keys"
        auth.write_text("".join(k.strip() + "\n" for k in self.authorized_keys))
        os.chmod(auth, 0o600)
        if not self.port:
            self.port = free_port()
        config = self.workdir / "sshd_config"
        config.write_text(
            f"ListenAddress 127.0.0.1:{self.port}\n"
            f"HostKey {host_key}\n"
            f"AuthorizedKeysFile {auth}\n"
            f"PidFile {self.workdir / 'sshd.pid'}\n"
            "PubkeyAuthentication yes\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "PermitRootLogin prohibit-password\n"
            "StrictModes no\n"
            f"UsePAM {'yes' if self.use_pam else 'no'}\n"
            f"AllowTcpForwarding {'yes' if self.allow_tcp_forwarding else 'no'}\n"
            "X11Forwarding no\nAllowAgentForwarding no\n"
            "PrintMotd no\nPrintLastLog no\n"
            f"MaxSessions 64\nMaxStartups {self.max_startups}\n"
            "AcceptEnv LANG LC_* BASTION_TEST_*\n"
            "Subsystem sftp internal-sftp\n"
            # a login shell per command must not re-run heavy start-up files (pyenv init in
            # root's .bashrc here) that serialise under many concurrent agents
            "SetEnv SHLVL=1\n"
            + self.extra_config)
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        log = open(self.workdir / "sshd.log", "ab")
        self.proc = subprocess.Popen([sshd, "-D", "-e", "-f", str(config)],
                                     stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                     start_new_session=True)
        log.close()
        try:
            wait_for_port(self.port, proc=self.proc)
        except BastionError as exc:
            self.stop()
            tail = (self.workdir / "sshd.log").read_text(errors="replace")[-2000:]
            raise BastionError(f"sshd did not start: {exc}\n{tail}") from exc
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> "LocalSshd":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
