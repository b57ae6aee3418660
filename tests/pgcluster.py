"""A private PostgreSQL cluster for tests: ``initdb`` in a temp dir, loopback port, torn down.

Run as root (CI, the dev machines), the cluster belongs to the ``postgres`` OS user (initdb
refuses root).  Host connections need a password (scram-sha-256): the tests log in as the
``bastion`` role with a password file, as a deployment would.  PostgreSQL not installed is a
failure, not a skip (scripts/test.sh installs the Debian package ``postgresql``).
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

PASSWORD = "pg-test-password-7f3a"      # tests grep logs for it


def _bindir() -> Path:
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if versions:
        return versions[-1].parent
    raise RuntimeError("PostgreSQL is not installed (no initdb): run scripts/test.sh, which "
                       "installs the Debian package postgresql, or apt-get install postgresql")


def _free_port() -> int:
    from tests.ports import free_port          # this test process's own slice of ports
    return free_port()


@dataclass
class PgCluster:
    root: Path
    port: int
    password_file: Path
    bindir: Path
    user: str | None                      # the OS user running the server (None: ourselves)
    env: dict = field(default_factory=dict)

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def sockdir(self) -> Path:
        return self.root / "sock"

    def url(self, db: str = "bastion") -> str:
        return f"postgresql://bastion@127.0.0.1:{self.port}/{db}"

    def store_env(self, db: str = "bastion", node: str | None = None) -> dict[str, str]:
        env = {"BASTION_STORE_URL": self.url(db),
               "BASTION_STORE_PASSWORD_FILE": str(self.password_file)}
        if node:
            env["BASTION_NODE"] = node
        return env

    def _run(self, *argv: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        cmd = list(argv)
        if self.user:
            cmd = ["runuser", "-u", self.user, "--"] + cmd
        return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=timeout)

    def psql(self, sql: str, db: str = "postgres") -> str:
        out = self._run(str(self.bindir / "psql"), "-X", "-q", "-A", "-t", "-h", str(self.sockdir),
                        "-p", str(self.port), "-U", "postgres", "-d", db, "-v", "ON_ERROR_STOP=1",
                        "-c", sql)
        return out.stdout.strip()

    def create_db(self, name: str) -> str:
        """A fresh database owned by the bastion role; its URL."""
        self.psql(f'CREATE DATABASE "{name}" OWNER bastion')
        return self.url(name)

    def start(self, fsync: bool = False) -> None:
        """Start it; ``fsync`` off for tests (cheap), on for bench/store_latency.py."""
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l",
                  str(self.root / "server.log"), "-w", "-t", "60", "-o",
                  f"-p {self.port} -k {self.sockdir} -c listen_addresses=127.0.0.1 "
                  f"-c fsync={'on' if fsync else 'off'} -c synchronous_commit=on "
                  "-c max_connections=100",
                  "start", timeout=90)

    def stop(self, mode: str = "fast") -> None:
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop",
                  check=False, timeout=90)

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


def start_cluster() -> PgCluster:
    bindir = _bindir()
    root = Path(tempfile.mkdtemp(prefix="bastion-pg-"))
    user = None
    if os.geteuid() == 0:
        user = "postgres"
        try:
            pw = pwd.getpwnam(user)
        except KeyError:
            raise RuntimeError("running as root needs the postgres OS user (the Debian "
                               "package postgresql creates it)") from None
        os.chmod(root, 0o700)
        os.chown(root, pw.pw_uid, pw.pw_gid)
    cluster = PgCluster(root=root, port=_free_port(), password_file=root / "pw",
                        bindir=bindir, user=user)
    (root / "pwinit").write_text(PASSWORD + "\n")
    cluster.password_file.write_text(PASSWORD + "\n")
    os.chmod(cluster.password_file, 0o600)
    if user:
        pw = pwd.getpwnam(user)
        os.chown(root / "pwinit", pw.pw_uid, pw.pw_gid)
    (root / "sock").mkdir()
    if user:
        os.chown(root / "sock", pw.pw_uid, pw.pw_gid)
    try:
        cluster._run(str(bindir / "initdb"), "-D", str(cluster.data), "-U", "postgres",
                     "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8",
                     "--locale=C.UTF-8", "--no-sync", timeout=120)
        for attempt in range(5):
            try:
                cluster.start()
                break
            except subprocess.CalledProcessError:
                # the free port was taken between _free_port() and the server's bind (another
                # pytest-xdist worker's cluster, an sshd): try another one
                if attempt == 4:
                    raise
                cluster.port = _free_port()
        cluster.psql(f"CREATE ROLE bastion LOGIN PASSWORD '{PASSWORD}'")
        cluster.create_db("bastion")
    except BaseException:
        log = root / "server.log"
        text = log.read_text(errors="replace") if log.exists() else ""
        cluster.destroy()
        raise RuntimeError(f"could not start a private PostgreSQL cluster: {text[-2000:]}") \
            from None
    return cluster


def wait_port(port: int, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(port)


def start_durable_cluster() -> PgCluster:
    """A private cluster restarted with fsync on, as a deployment runs it (the benchmarks)."""
    cluster = start_cluster()
    try:
        cluster.stop()
        cluster.start(fsync=True)
    except BaseException:
        cluster.destroy()
        raise
    return cluster


@contextmanager
def durable_store(node: str = "bench") -> Iterator[PgCluster]:
    """:func:`start_durable_cluster` with this process's ``BASTION_STORE_*`` pointing at it
    (node ``node``) while the block runs; afterwards the variables are gone and the cluster
    destroyed."""
    cluster = start_durable_cluster()
    env = cluster.store_env(node=node)
    os.environ.update(env)
    try:
        yield cluster
    finally:
        cluster.destroy()
        for key in env:
            os.environ.pop(key, None)


def undo_migration_15(conn) -> None:
    """A store as migration 14 left it, for the tests that build an older store: migration
    15's columns dropped (``nodes``: what each node publishes, bastion.recording.nodeconfig;
    ``schema_version.oldest``: who may still use the store, bastion.store.pgschema)."""
    conn.execute("ALTER TABLE nodes DROP COLUMN policy, DROP COLUMN policy_loaded, "
                 "DROP COLUMN policy_error, DROP COLUMN policy_error_at, "
                 "DROP COLUMN host_ca, DROP COLUMN host_key, DROP COLUMN release, "
                 "DROP COLUMN schema")
    conn.execute("ALTER TABLE schema_version DROP COLUMN oldest")
