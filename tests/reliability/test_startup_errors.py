"""Issues 16 item 9, 19 item 2: start-up errors say what to do in one line (and a hint),
without a Python traceback, and exit 2."""

from __future__ import annotations

import socket
import subprocess

import pytest

from tests.e2e.harness import BASTION, BastionRig


@pytest.fixture(scope="module")
def rig(tmp_path_factory, issuer):
    r = BastionRig(tmp_path_factory.mktemp("startup"), issuer).setup()
    yield r
    r.close()


def _serve(rig, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([BASTION, "serve", *args], env=rig.env, capture_output=True,
                          timeout=60, stdin=subprocess.DEVNULL)


def test_port_in_use(rig):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        port = busy.getsockname()[1]
        p = _serve(rig, "--listen", f"127.0.0.1:{port}")
    finally:
        busy.close()
    err = p.stderr.decode()
    assert p.returncode == 2
    assert "Traceback" not in err
    assert f"error: cannot listen on 127.0.0.1:{port}: the port is already in use" in err
    assert _last_two(err)[1].startswith("hint: ")


@pytest.mark.parametrize("listen, message", [
    ("256.1.1.1:2222", "not an address of this machine"),
    ("127.0.0.1:70000", "--listen port must be 0-65535"),
    ("no-port", "--listen must be HOST:PORT"),
])
def test_bad_listen_address(rig, listen, message):
    p = _serve(rig, "--listen", listen)
    err = p.stderr.decode()
    assert p.returncode == 2
    assert "Traceback" not in err
    error = next(line for line in err.splitlines() if line.startswith("error: "))
    assert message in error, error


def test_data_dir_is_a_file(rig, tmp_path):
    f = tmp_path / "not-a-dir"
    f.write_text("")
    p = _serve(rig, "--listen", "127.0.0.1:0", "--data-dir", str(f))
    err = p.stderr.decode()
    assert p.returncode == 2
    assert "Traceback" not in err
    assert _last_two(err) == [f"error: --data-dir {f} is not a directory",
                              "hint: pass a directory for --data-dir (it is created if missing)"]


def test_missing_vault_key_names_the_command_to_run(rig, tmp_path):
    # (the rig's policy names web1; an empty keys dir has no key for it)
    p = _serve(rig, "--listen", "127.0.0.1:0", "--keys-dir", str(tmp_path / "empty-keys"),
               "--data-dir", str(tmp_path / "data"))
    err = p.stderr.decode()
    assert p.returncode == 2 and "Traceback" not in err
    error, hint = _last_two(err)
    assert error.startswith("error: no key 'web1' in the vault")
    assert hint.startswith("hint: create it with: bastion keys generate web1")


def _last_two(err: str) -> list[str]:
    """The error and hint lines: each whole on one line, whatever the terminal width."""
    return [line.rstrip() for line in err.splitlines() if line.strip()][-2:]
