"""`ssh -L` through the bastion by destination: the real ssh client's local forward, opened
from the target (a real sshd) to a TCP service, allowed only where a grant's `forward` names
it; recorded as open/close markers and byte counts, never contents."""

from __future__ import annotations

import errno
import socket
import subprocess
import threading
import time

import pytest

from bastion.demo.sshd import LocalSshd, free_port
from bastion.vault import Vault
from tests.e2e.harness import BastionRig


class Echo:
    """A TCP service on the target side: answers each line with "echo: LINE"."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        with conn:
            buf = b""
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                buf += data
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    conn.sendall(b"echo: " + line + b"\n")

    def close(self) -> None:
        self.sock.close()


class ForwardRig(BastionRig):
    def setup(self) -> "ForwardRig":
        self.root.mkdir(parents=True, exist_ok=True)
        self.canary_dir.mkdir(exist_ok=True)
        pub = Vault.from_env(self.keys_dir, self.env).generate("web1")
        sshd = LocalSshd(self.root / "sshd", [pub])
        sshd.allow_tcp_forwarding = True          # the target allows it; the bastion decides
        self.sshd = sshd.start()
        self.port = free_port()
        return self


@pytest.fixture(scope="module")
def services():
    allowed, other = Echo(), Echo()
    yield allowed, other
    allowed.close()
    other.close()


@pytest.fixture(scope="module")
def frig(tmp_path_factory, issuer, services):
    allowed, _ = services
    r = ForwardRig(tmp_path_factory.mktemp("fwd"), issuer)
    r.extra_policy = f"""
[[grants]]
who = ["role:agents"]
targets = ["web1"]
channels = ["exec"]
forward = ["127.0.0.1:{allowed.port}", "db*.internal:5432"]
"""
    r.setup()
    r.write_policy()
    r.start()
    yield r
    r.close()


def _forward(rig, token, dest_port: int) -> tuple[subprocess.Popen, int]:
    local = free_port()
    proc = rig.ssh_popen(token, None, args=("-N", "-L", f"127.0.0.1:{local}:127.0.0.1:{dest_port}"))
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", local), timeout=1).close()
            return proc, local
        except OSError:
            assert proc.poll() is None, proc.stderr.read().decode(errors="replace")
            assert time.monotonic() < deadline, "ssh -L never listened"
            time.sleep(0.2)


def _talk(local: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", local), timeout=10) as s:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        got = b""
        while chunk := s.recv(65536):
            got += chunk
        return got


def test_an_allowed_destination_is_relayed_and_recorded_without_contents(frig, token, services):
    allowed, _ = services
    proc, local = _forward(frig, token, allowed.port)
    try:
        secret = b"the-contents-are-not-recorded"
        payload = b"".join(b"%s %d\n" % (secret, i) for i in range(2000))   # ~64 KB
        got = _talk(local, payload)
        assert got == b"".join(b"echo: %s %d\n" % (secret, i) for i in range(2000))
    finally:
        proc.terminate()
        proc.wait(20)
    db = frig.index()
    deadline = time.monotonic() + 15
    while True:
        rows = db.execute("SELECT kind, command, bytes_in, bytes_out, path, ended FROM channels "
                          "WHERE kind = 'forward' AND command = ? AND ended IS NOT NULL "
                          "AND bytes_in = ?", (f"127.0.0.1:{allowed.port}", len(payload))).fetchall()
        if rows:
            break
        assert time.monotonic() < deadline, db.execute("SELECT * FROM channels").fetchall()
        time.sleep(0.2)
    kind, command, bytes_in, bytes_out, path, _ = rows[0]
    assert bytes_out == len(got)
    cast = (frig.data_dir / path).read_bytes()
    assert b"forward opened to 127.0.0.1" in cast and b"forward closed" in cast
    assert secret not in cast                              # contents are not recorded


def test_a_destination_no_grant_names_is_refused(frig, token, services):
    _, other = services
    before = other.accepted
    proc, local = _forward(frig, token, other.port)     # ssh listens; the bastion refuses
    try:
        try:
            assert _talk(local, b"hello\n") == b""
        except (ConnectionResetError, BrokenPipeError, OSError) as exc:
            # closed at once, maybe before our shutdown (ENOTCONN): the same answer, nothing
            # relayed; anything but a closed connection is still a failure
            assert isinstance(exc, (ConnectionResetError, BrokenPipeError)) \
                or exc.errno == errno.ENOTCONN, exc
        time.sleep(0.5)
        assert other.accepted == before                   # never reached
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    assert b"no grant lets" in err and b"forward" in err, err
