"""End-to-end harness: a real ``bastion serve`` process between the real OpenSSH
client and a real OpenSSH sshd, all on 127.0.0.1, with the dev issuer over https.

Nothing here is mocked: the bastion is started through its CLI, the agent is
``/usr/bin/ssh`` with ``bastion-askpass`` answering the token prompts, the target
is ``sshd`` from openssh-server logging in with the vault key.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bastion.cli.ca import known_hosts_text
from bastion.demo.sshd import LocalSshd, free_port, wait_for_port
from bastion.vault import Vault

VENV_BIN = Path(sys.executable).parent
BASTION = str(VENV_BIN / "bastion")
ASKPASS = str(VENV_BIN / "bastion-askpass")
VAULT_PASSPHRASE = "e2e-vault-passphrase-not-a-secret"
# BASTION_TEST_STORE=postgresql runs every rig on a PostgreSQL store (one private cluster for
# the run, a fresh database per rig); the default is the SQLite index in the data dir
TEST_STORE = os.environ.get("BASTION_TEST_STORE", "sqlite")
_pg = None
_long = 0


def pg_store_env(name: str) -> dict:
    """A fresh database on the run's private cluster (started on first use, torn down at exit)."""
    global _pg
    if _pg is None:
        import atexit

        from tests.pgcluster import start_cluster
        _pg = start_cluster()
        atexit.register(_pg.destroy)
    db = "rig_" + "".join(c if c.isalnum() else "_" for c in name).lower()
    if len(db) > 63:                      # PostgreSQL's identifier limit: keep names distinct
        global _long
        _long += 1
        db = f"{db[:55]}_{_long}"
    _pg.create_db(db)
    return {**_pg.store_env(db), "BASTION_NODE": db[:63]}

POLICY_RULES = """
[settings]
default = "deny"
opaque = "review"
env_allow = ["BASTION_TEST_OK"]

[[rules]]
name = "read-only-tools"
action = "allow"
commands = ["echo", "cat", "ls", "head", "true", "false", "exit", "printf", "wc", "sleep",
            "sh", "bash", "kill", "tr", "id", "uname", "stty", "rm", "sudo", "env", "seq", "od"]

[[rules]]
name = "no-recursive-delete"
action = "deny"
commands = ["rm -r", "rm -R", "rm --recursive"]

[[rules]]
name = "no-shadow"
action = "deny"
commands = ["* /etc/shadow"]

[[rules]]
name = "status-is-fine"
action = "allow"
commands = ["systemctl status"]

[[rules]]
name = "restarts-need-review"
action = "review"
commands = ["systemctl restart"]
"""


@dataclass
class Result:
    returncode: int
    stdout: bytes
    stderr: bytes

    @property
    def out(self) -> str:
        return self.stdout.decode(errors="replace")

    @property
    def err(self) -> str:
        return self.stderr.decode(errors="replace")


@dataclass
class BastionRig:
    root: Path
    issuer: object                       # bastion.identity.devissuer.DevIssuer
    sshd: LocalSshd | None = None
    port: int = 0
    proc: subprocess.Popen | None = None
    extra_targets: str = ""
    extra_policy: str = ""
    store_env: dict = field(default_factory=dict)   # a PostgreSQL store (tests/pgcluster.py)
    workers: int = 1                     # `serve --workers` (1: one process; the product default is the cores)
    sshd_max_startups: str = "100:30:200"   # the target sshd's MaxStartups
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.data_dir = self.root / "data"
        self.keys_dir = self.root / "keys"
        self.policy_path = self.root / "policy.toml"
        self.log_path = self.root / "bastion.log"
        self.known_hosts = self.root / "known_hosts"
        self.ssh_config = self.root / "ssh_config"
        self.canary_dir = self.root / "canary"
        if TEST_STORE == "postgresql" and not self.store_env:
            self.store_env = pg_store_env(f"{self.root.parent.name}_{self.root.name}")

    # -- set-up ------------------------------------------------------------------
    @property
    def env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BASTION_", "SSH_"))}
        env.update(COLUMNS="250",     # reviewer tables on one line each, for the assertions
                   BASTION_VAULT_PASSPHRASE=VAULT_PASSPHRASE, BASTION_KEYS_DIR=str(self.keys_dir),
                   BASTION_DATA_DIR=str(self.data_dir), BASTION_POLICY=str(self.policy_path),
                   BASTION_WORKERS=str(self.workers))
        env.update(self.store_env)
        return env

    def cli(self, *args: str, input: bytes | None = None, check: bool = True,
            env: dict | None = None) -> Result:
        p = subprocess.run([BASTION, *args], env={**self.env, **(env or {})}, input=input,
                           capture_output=True, timeout=60)
        if check and p.returncode != 0:
            raise AssertionError(f"bastion {' '.join(args)} failed ({p.returncode}):\n"
                                 f"{p.stderr.decode(errors='replace')}")
        return Result(p.returncode, p.stdout, p.stderr)

    def setup(self) -> "BastionRig":
        self.root.mkdir(parents=True, exist_ok=True)
        self.canary_dir.mkdir(exist_ok=True)
        (self.canary_dir / "canary.txt").write_text("still here\n")
        # in this process, as `bastion keys generate web1` does it (its CLI: test_cli_keys)
        pub = Vault.from_env(self.keys_dir, self.env).generate("web1")
        self.sshd = LocalSshd(self.root / "sshd", [pub], max_startups=self.sshd_max_startups).start()
        self.write_policy()
        self.port = free_port()
        return self

    def policy_text(self, rules: str = POLICY_RULES) -> str:
        issuer = self.issuer
        return f"""
[oidc]
issuer = "{issuer.issuer}"
audience = "api://bastion"
tenants = ["{issuer.tenant_id}"]
ca_bundle = "{issuer.ca_path}"

[[targets]]
name = "web1"
host = "127.0.0.1"
port = {self.sshd.port}
user = "{self.sshd.user}"
key = "web1"
host_key = "{self.sshd.host_key_line}"
labels = ["prod"]
{self.extra_targets}
[[grants]]
who = ["role:agents"]
targets = ["web*", "label:prod"]
channels = ["exec", "shell"]
{rules}
{self.extra_policy}
"""

    def write_policy(self, text: str | None = None) -> None:
        self.policy_path.write_text(text if text is not None else self.policy_text())

    log_level = "debug"

    def start(self) -> "BastionRig":
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [BASTION, "serve", "--listen", f"127.0.0.1:{self.port}", "--log-level", self.log_level],
            env=self.env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            start_new_session=True)
        log.close()
        try:
            wait_for_port(self.port, timeout=30, proc=self.proc)
        except Exception as exc:
            log_text = self.log()
            self.close()            # no sshd or bastion left behind by a failed start
            raise AssertionError(f"bastion did not start: {exc}\n{log_text}") from exc
        # what `bastion ca known-hosts` prints, made in this process (test_cli_keys and
        # test_data_path's check that the CLI prints this very text)
        self.known_hosts.write_text(
            known_hosts_text(self.data_dir, f"127.0.0.1:{self.port}", ["*"], environ=self.env))
        self.ssh_config.write_text(self.render_ssh_config())
        return self

    def render_ssh_config(self) -> str:
        """What `bastion ssh-config` prints (every target through the bastion), plus the
        env names the env test sends."""
        from bastion.cli.ca import render_ssh_config
        return (render_ssh_config(f"127.0.0.1:{self.port}", [], known_hosts=str(self.known_hosts))
                + "\nHost *\n    SendEnv BASTION_TEST_*\n    ConnectTimeout 15\n")

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode if self.proc else None

    def close(self) -> None:
        self.stop()
        if self.sshd:
            self.sshd.stop()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def wait_log(self, needle: str, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log()
            if needle in text:
                return text
            time.sleep(0.05)
        raise AssertionError(f"{needle!r} not in the bastion log:\n{self.log()[-3000:]}")

    def index(self):
        """A read-write connection to this rig's index, SQLite or PostgreSQL alike (rows by
        position and by name; ``?`` parameters): for tests that read or tamper with rows."""
        from bastion.store.pgconn import PgConnection, Row
        if not self.store_env:
            import sqlite3
            conn = sqlite3.connect(self.data_dir / "index.sqlite")
            conn.row_factory = lambda cur, row: Row(row, tuple(d[0] for d in cur.description))
            return conn
        from bastion.store.location import check
        return PgConnection(check(self.store_env["BASTION_STORE_URL"],
                                  self.store_env.get("BASTION_STORE_PASSWORD_FILE"),
                                  "test-reader", "test"))

    def index_bytes(self) -> bytes:
        """Everything the index holds, as bytes to search: the SQLite file and its WAL, or
        every row of the PostgreSQL store (recordings' copies included)."""
        if not self.store_env:
            files = sorted(self.data_dir.glob("index.sqlite*"))
            assert files, f"no index.sqlite in {self.data_dir}"
            return b"\n".join(p.read_bytes() for p in files)
        conn = self.index()
        try:
            return "\n".join(conn.iterdump()).encode("utf-8", "backslashreplace")
        finally:
            conn.close()

    # -- the agent ---------------------------------------------------------------
    def agent_env(self, token: str) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BASTION_", "SSH_"))}
        env.pop("DISPLAY", None)
        env.update(SSH_ASKPASS=ASKPASS, SSH_ASKPASS_REQUIRE="force", BASTION_TOKEN=token)
        return env

    def ssh(self, token: str, command: str | None, *, login: str | None = None,
            target: str = "web1", input: bytes | None = None, args: tuple = (),
            timeout: float = 60, env: dict | None = None) -> Result:
        login = login or self.sshd.user
        argv = ["ssh", "-F", str(self.ssh_config), *args, f"{login}@{target}"]
        if command is not None:
            argv.append(command)
        full_env = self.agent_env(token)
        full_env.update(env or {})
        p = subprocess.run(argv, env=full_env, input=input if input is not None else b"",
                           capture_output=True, timeout=timeout, start_new_session=True)
        return Result(p.returncode, p.stdout, p.stderr)

    def ssh_popen(self, token: str, command: str | None, *, args: tuple = (),
                  login: str | None = None) -> subprocess.Popen:
        login = login or self.sshd.user
        argv = ["ssh", "-F", str(self.ssh_config), *args, f"{login}@web1"]
        if command is not None:
            argv.append(command)
        return subprocess.Popen(argv, env=self.agent_env(token), stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True)


def have_openssh() -> bool:
    from bastion.demo.sshd import find_sshd
    try:
        find_sshd()
    except Exception:  # noqa: BLE001
        return False
    return shutil.which("ssh") is not None and shutil.which("ssh-keygen") is not None


class PtyAgent:
    """The real ssh client on a real pseudo-terminal, as a person (or an agent with a tty) runs it."""

    def __init__(self, rig: BastionRig, token: str, *, cols: int = 80, rows: int = 24,
                 command: str | None = None, host: str = "web1") -> None:
        import fcntl
        import pty
        import struct
        import termios
        self._fcntl, self._struct, self._termios = fcntl, struct, termios
        self.master, slave = pty.openpty()
        self.resize(cols, rows, signal_child=False, fd=slave)
        argv = ["ssh", "-F", str(rig.ssh_config), "-t", f"{rig.sshd.user}@{host}"]
        if command:
            argv.append(command)

        def make_controlling_tty():
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        self.proc = subprocess.Popen(argv, env=rig.agent_env(token), stdin=slave, stdout=slave,
                                     stderr=slave, start_new_session=True,
                                     preexec_fn=make_controlling_tty)
        os.close(slave)
        self.buf = b""
        self.pos = 0          # read_until looks from here on

    def resize(self, cols: int, rows: int, *, signal_child: bool = True, fd: int | None = None):
        size = self._struct.pack("HHHH", rows, cols, 0, 0)
        self._fcntl.ioctl(self.master if fd is None else fd, self._termios.TIOCSWINSZ, size)
        if signal_child:
            self.proc.send_signal(signal.SIGWINCH)

    def send(self, data: bytes, timeout: float = 60.0) -> None:
        """Type ``data``, reading the screen meanwhile, as a terminal does: a long write
        otherwise waits on ssh, which waits on its output, which waits on this reader."""
        import select
        view = memoryview(data)
        deadline = time.monotonic() + timeout
        os.set_blocking(self.master, False)
        try:
            while view:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"the terminal took {len(data) - len(view)} of "
                                         f"{len(data)} bytes; got {self.buf[-800:]!r}")
                readable, writable, _ = select.select([self.master], [self.master], [], left)
                if readable:
                    try:
                        self.buf += os.read(self.master, 65536)
                    except (BlockingIOError, OSError):
                        pass
                if writable:
                    try:
                        view = view[os.write(self.master, view):]
                    except BlockingIOError:
                        pass
        finally:
            os.set_blocking(self.master, True)

    def wait_ready(self) -> None:
        """Until the remote shell answers: from then on the local tty is raw (ssh set it),
        so a ^C goes to the remote side instead of killing the local ssh."""
        self.send(b"echo ready-$((40+2))\r")
        self.read_until(b"ready-42", timeout=30)

    def read_until(self, needle: bytes, timeout: float = 15.0) -> bytes:
        import select
        deadline = time.monotonic() + timeout
        start = self.pos
        while self.buf.find(needle, start) < 0:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{needle!r} not seen; got {self.buf[-800:]!r}")
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                try:
                    chunk = os.read(self.master, 65536)
                except OSError:
                    chunk = b""
                if not chunk:
                    raise AssertionError(f"EOF before {needle!r}; got {self.buf[-800:]!r}")
                self.buf += chunk
        self.pos = self.buf.find(needle, start) + len(needle)
        return self.buf[start:self.pos]

    def wait(self, timeout: float = 15.0) -> int:
        import select
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            ready, _, _ = select.select([self.master], [], [], 0.1)
            if ready:
                try:
                    self.buf += os.read(self.master, 65536)
                except OSError:
                    pass
        return self.proc.wait(max(0.1, deadline - time.monotonic()))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        try:
            os.close(self.master)
        except OSError:
            pass


def wait_rows(rig: "BastionRig", sql: str, *params: object, want: int = 1) -> list[dict]:
    """Rows of ``sql`` (as dicts) once there are ``want`` of them, or what there is after
    15 s: the recording worker writes them after the agent's command has ended."""
    deadline = time.monotonic() + 15
    while True:
        conn = rig.index()
        try:
            rows = [dict(r) for r in conn.execute(sql, params)]
        finally:
            conn.close()
        if len(rows) >= want or time.monotonic() > deadline:
            return rows
        time.sleep(0.1)
