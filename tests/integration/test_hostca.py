"""Host key, host CA and host certificates, checked with the real OpenSSH tools."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import asyncssh
import pytest

from bastion.errors import TargetError, VaultError
from bastion.secret import Secret
from bastion.ssh.hostca import (
    BACKDATE, INNER_VALIDITY, RENEW_MARGIN, HostKeys, PublicHostKeys, known_hosts_pattern,
)
from bastion.vault import Vault
from bastion.vault.files import atomic_write

SSH = shutil.which("ssh")
SSH_KEYGEN = shutil.which("ssh-keygen")
needs_ssh = pytest.mark.skipif(SSH is None, reason="OpenSSH ssh client not installed")
needs_keygen = pytest.mark.skipif(SSH_KEYGEN is None, reason="ssh-keygen not installed")


PASSPHRASE = Secret("host keys passphrase for tests")


def load(data_dir: Path, names=None) -> HostKeys:
    return HostKeys.load_or_create(data_dir, names, passphrase=PASSPHRASE)


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_created_with_private_permissions(tmp_path: Path):
    load(tmp_path / "data")
    d = tmp_path / "data" / "hostkeys"
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    names = sorted(p.name for p in d.iterdir())
    assert names == ["host_ca.key", "host_ca.pub", "ssh_host_ed25519_key.key",
                     "ssh_host_ed25519_key.pub"]
    for p in d.iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p


def test_same_keys_after_restart(tmp_path: Path):
    first = load(tmp_path)
    again = load(tmp_path)
    assert again.ca_public_line() == first.ca_public_line()
    assert (again.host_key.export_public_key() == first.host_key.export_public_key())
    other = load(tmp_path / "elsewhere")
    assert other.ca_public_line() != first.ca_public_line()


@pytest.mark.parametrize("victim, mode", [
    ("hostkeys/host_ca.key", 0o640), ("hostkeys/ssh_host_ed25519_key.key", 0o604),
    ("hostkeys", 0o750),
])
def test_unprotected_files_are_refused(tmp_path: Path, victim: str, mode: int):
    load(tmp_path)
    os.chmod(tmp_path / victim, mode)
    with pytest.raises(VaultError, match="accessible by other users") as info:
        load(tmp_path)
    assert "chmod" in info.value.hint


def test_damaged_ca_is_an_error_not_a_new_ca(tmp_path: Path):
    load(tmp_path)
    (tmp_path / "hostkeys" / "host_ca.key").write_text("garbage")
    with pytest.raises(VaultError, match="cannot read host key"):
        load(tmp_path)


def test_ca_public_line():
    keys = HostKeys(asyncssh.generate_private_key("ssh-ed25519"),
                    asyncssh.generate_private_key("ssh-ed25519"))
    line = keys.ca_public_line()
    assert re.fullmatch(r"ssh-ed25519 [A-Za-z0-9+/=]+ bastion-host-ca", line)
    assert asyncssh.import_public_key(line).public_data == keys.ca_key.public_data


@pytest.mark.parametrize("bastion, targets, plain, expected_first", [
    ("*", "*", False, "@cert-authority * "),
    ("[127.0.0.1]:2222", "*", False, "@cert-authority * "),
    ("[127.0.0.1]:2222", "web*", False, "@cert-authority [127.0.0.1]:2222,web* "),
    ("[127.0.0.1]:2222", "web1,db1", True, "@cert-authority [127.0.0.1]:2222,web1,db1 "),
    ("bastion.example", "bastion.example", False, "@cert-authority bastion.example "),
])
def test_known_hosts_lines(bastion: str, targets: str, plain: bool, expected_first: str):
    keys = HostKeys(asyncssh.generate_private_key("ssh-ed25519"),
                    asyncssh.generate_private_key("ssh-ed25519"))
    lines = keys.known_hosts_lines(bastion, targets, include_plain_host_key=plain).splitlines()
    assert lines[0] == expected_first + keys.ca_public_line()
    if plain:
        host_blob = keys.host_key.export_public_key().decode().split()[1]
        assert lines[1] == f"{bastion} ssh-ed25519 {host_blob} bastion"
    else:
        assert len(lines) == 1


@pytest.mark.parametrize("pattern", ["", "a b", "web1,,"])
def test_known_hosts_bad_pattern(pattern: str):
    keys = HostKeys(asyncssh.generate_private_key("ssh-ed25519"),
                    asyncssh.generate_private_key("ssh-ed25519"))
    with pytest.raises(TargetError):
        keys.known_hosts_lines("127.0.0.1", pattern)


@pytest.mark.parametrize("host, port, expected", [
    ("127.0.0.1", 22, "127.0.0.1"), ("127.0.0.1", 2222, "[127.0.0.1]:2222"),
    ("::1", 2222, "[::1]:2222"), ("web1", 22, "web1"),
])
def test_known_hosts_pattern(host: str, port: int, expected: str):
    assert known_hosts_pattern(host, port) == expected


def test_cert_cached_and_renewed_near_expiry():
    clock = FakeClock()
    keys = HostKeys(asyncssh.generate_private_key("ssh-ed25519"),
                    asyncssh.generate_private_key("ssh-ed25519"), clock=clock)
    key, cert = keys.cert_for("web1")
    assert cert.principals == ["web1"]
    assert cert._valid_after == int(clock.now) - BACKDATE
    assert cert._valid_before == int(clock.now) + INNER_VALIDITY
    assert keys.cert_for("web1")[1] is cert
    key2, cert2 = keys.cert_for("web2")
    assert key2 is key and cert2.principals == ["web2"]          # one inner key, a cert per name
    clock.now += INNER_VALIDITY - RENEW_MARGIN - 1
    assert keys.cert_for("web1")[1] is cert                       # still comfortably valid
    clock.now += 2
    renewed = keys.cert_for("web1")[1]
    assert renewed is not cert and renewed._valid_before > cert._valid_before


@pytest.mark.parametrize("name", ["", "a b", "web1,web2", "-x", "x\n", "*"])
def test_cert_for_refuses_odd_names(name: str):
    keys = HostKeys(asyncssh.generate_private_key("ssh-ed25519"),
                    asyncssh.generate_private_key("ssh-ed25519"))
    with pytest.raises(TargetError):
        keys.cert_for(name)


def _keygen_L(tmp_path: Path, cert: asyncssh.SSHCertificate) -> str:
    path = tmp_path / "cert.pub"
    path.write_bytes(cert.export_certificate())
    return subprocess.run([SSH_KEYGEN, "-L", "-f", str(path)], check=True, capture_output=True,
                          text=True, timeout=30).stdout


@needs_keygen
def test_cert_as_read_by_ssh_keygen(tmp_path: Path):
    keys = load(tmp_path)
    _, cert = keys.cert_for("web1")
    out = _keygen_L(tmp_path, cert)
    assert "host certificate" in out
    principals = re.search(r"Principals:\s*\n((?:\s{12,}\S+\n)+)", out).group(1).split()
    assert principals == ["web1"]
    ca_fp = keys.ca_key.get_fingerprint("sha256")
    assert f"Signing CA: ED25519 {ca_fp}" in out
    assert "Valid: from " in out and "forever" not in out


@needs_keygen
def test_outer_cert_lists_the_bastion_names(tmp_path: Path):
    keys = load(tmp_path, ["127.0.0.1", "bastion.example"])
    out = _keygen_L(tmp_path, keys.host_cert)
    principals = re.search(r"Principals:\s*\n((?:\s{12,}\S+\n)+)", out).group(1).split()
    assert principals == ["127.0.0.1", "bastion.example"]
    assert keys.server_host_keys() == [(keys.host_key, keys.host_cert)]


# --------------------------------------------------------------------------- real ssh client

class _NoAuth(asyncssh.SSHServer):
    def begin_auth(self, username: str) -> bool:
        return False          # accept "none": the host-key check is what is under test


async def _ssh(port: int, name: str, known_hosts: Path, *,
               alias: bool = True) -> subprocess.CompletedProcess:
    """Real OpenSSH to 127.0.0.1:port, checking the host key as if the host were called ``name``
    (``alias=False``: as ssh does by itself, i.e. ``[127.0.0.1]:port`` and principal 127.0.0.1)."""
    args = [SSH, "-F", "/dev/null", "-p", str(port), "-o", "HostName=127.0.0.1",
            *(["-o", f"HostKeyAlias={name}"] if alias else []), "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "BatchMode=yes", "-o", "ConnectTimeout=20", f"agent@{name}", "true"]
    proc = await asyncio.create_subprocess_exec(*args, stdin=subprocess.DEVNULL,
                                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return subprocess.CompletedProcess(args, proc.returncode, out.decode(), err.decode())


async def _server(host_keys) -> tuple[asyncssh.SSHAcceptor, int]:
    server = await asyncssh.create_server(_NoAuth, "127.0.0.1", 0, server_host_keys=host_keys,
                                          process_factory=lambda process: process.exit(0))
    return server, server.sockets[0].getsockname()[1]


@needs_ssh
async def test_real_ssh_accepts_target_cert_for_its_name_only(tmp_path: Path):
    keys = load(tmp_path / "data")
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(keys.known_hosts_lines())
    server, port = await _server([keys.cert_for("web1")])
    try:
        ok = await _ssh(port, "web1", known_hosts)
        assert "Host key verification failed" not in ok.stderr
        assert ok.returncode == 0, ok.stderr
        wrong = await _ssh(port, "web2", known_hosts)
        assert wrong.returncode != 0
        assert "Host key verification failed" in wrong.stderr
        assert "not a listed principal" in wrong.stderr
    finally:
        server.close()
        await server.wait_closed()


@needs_ssh
async def test_real_ssh_rejects_a_cert_from_another_ca(tmp_path: Path):
    ours = load(tmp_path / "ours")
    theirs = load(tmp_path / "theirs")
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(ours.known_hosts_lines())
    server, port = await _server([theirs.cert_for("web1")])
    try:
        result = await _ssh(port, "web1", known_hosts)
        assert result.returncode != 0
        assert "Host key verification failed" in result.stderr
    finally:
        server.close()
        await server.wait_closed()


@needs_ssh
async def test_real_ssh_accepts_the_bastion_outer_cert(tmp_path: Path):
    keys = load(tmp_path / "data", ["127.0.0.1", "localhost"])
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(keys.known_hosts_lines())
    server, port = await _server(keys.server_host_keys())
    try:
        ok = await _ssh(port, "127.0.0.1", known_hosts, alias=False)
        assert ok.returncode == 0, ok.stderr
        other = await _ssh(port, "bastion.example", known_hosts)   # not a listed name
        assert other.returncode != 0 and "Host key verification failed" in other.stderr
    finally:
        server.close()
        await server.wait_closed()


# --------------------------------------------------------------------------- encrypted at rest

def _private_material(key: asyncssh.SSHKey) -> list[str]:
    """Lines of the key's OpenSSH private encoding: none may appear in a file or a log."""
    body = key.export_private_key("openssh").decode().splitlines()[1:-1]
    return [line for line in body if len(line) > 20]


def test_keys_are_encrypted_with_the_vault_passphrase(tmp_path: Path):
    keys = load(tmp_path)
    d = tmp_path / "hostkeys"
    for path in d.iterdir():
        text = path.read_text()
        assert "PRIVATE KEY" not in text and PASSPHRASE.reveal() not in text
        for secret_key in (keys.host_key, keys.ca_key):
            assert not any(line in text for line in _private_material(secret_key))
    for name in ("host_ca", "ssh_host_ed25519_key"):
        envelope = json.loads((d / f"{name}.key").read_text())
        assert envelope["header"]["format"] == "bastion-vault-key"
        assert envelope["header"]["name"] == name
    assert (d / "host_ca.pub").read_text().split()[:2] == keys.ca_public_line().split()[:2]


def test_wrong_or_missing_passphrase_is_refused(tmp_path: Path):
    load(tmp_path)
    with pytest.raises(VaultError, match="wrong vault passphrase"):
        HostKeys.load_or_create(tmp_path, passphrase=Secret("not the passphrase"))
    with pytest.raises(VaultError, match="passphrase is not set") as info:
        HostKeys.load_or_create(tmp_path)
    assert "BASTION_VAULT_PASSPHRASE" in info.value.hint


def test_a_new_data_dir_without_passphrase_is_refused_not_written_plain(tmp_path: Path):
    with pytest.raises(VaultError, match="passphrase is not set"):
        HostKeys.load_or_create(tmp_path)
    assert not any(p.suffix == "" and p.is_file() for p in (tmp_path / "hostkeys").iterdir())


def _legacy(directory: Path) -> dict[str, asyncssh.SSHKey]:
    """Host keys as a bastion before issue 16 item 8 wrote them: OpenSSH format, unencrypted."""
    directory.mkdir(mode=0o700, parents=True)
    keys = {}
    for name, comment in (("ssh_host_ed25519_key", "bastion"), ("host_ca", "bastion-host-ca")):
        key = asyncssh.generate_private_key("ssh-ed25519", comment=comment)
        atomic_write(directory / name, key.export_private_key("openssh"))
        atomic_write(directory / f"{name}.pub", key.export_public_key("openssh"), overwrite=True)
        keys[name] = key
    return keys


def test_unencrypted_keys_are_migrated_once_and_stay_the_same_keys(tmp_path: Path, caplog):
    old = _legacy(tmp_path / "hostkeys")
    before = PublicHostKeys.read(tmp_path)           # what `ca known-hosts` printed before
    with caplog.at_level(logging.INFO, logger="bastion.hostca"):
        keys = load(tmp_path)
    assert keys.ca_key.export_public_key() == old["host_ca"].export_public_key()
    assert keys.host_key.export_public_key() == old["ssh_host_ed25519_key"].export_public_key()
    assert keys.ca_public_line() == before.ca_public_line()      # agents keep trusting it
    d = tmp_path / "hostkeys"
    assert sorted(p.name for p in d.iterdir()) == [
        "host_ca.key", "host_ca.pub", "ssh_host_ed25519_key.key", "ssh_host_ed25519_key.pub"]
    migrated = [r.getMessage() for r in caplog.records if "migrated" in r.getMessage()]
    assert len(migrated) == 2
    assert all("re-written encrypted with the vault passphrase" in m for m in migrated)
    logged = caplog.text
    assert PASSPHRASE.reveal() not in logged
    for key in old.values():
        assert not any(line in logged for line in _private_material(key))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="bastion.hostca"):
        again = load(tmp_path)
    assert "migrated" not in caplog.text
    assert again.ca_public_line() == keys.ca_public_line()


def test_an_interrupted_migration_finishes(tmp_path: Path):
    old = _legacy(tmp_path / "hostkeys")
    vault = Vault(tmp_path / "hostkeys", PASSPHRASE)
    vault.store("host_ca", old["host_ca"])              # written encrypted, plain not yet removed
    keys = load(tmp_path)
    assert keys.ca_key.export_public_key() == old["host_ca"].export_public_key()
    assert not (tmp_path / "hostkeys" / "host_ca").exists()


def test_two_different_ca_keys_are_refused(tmp_path: Path):
    _legacy(tmp_path / "hostkeys")
    Vault(tmp_path / "hostkeys", PASSPHRASE).store(
        "host_ca", asyncssh.generate_private_key("ssh-ed25519"))
    with pytest.raises(VaultError, match="hold different keys"):
        load(tmp_path)
    assert (tmp_path / "hostkeys" / "host_ca").exists()       # nothing removed


def test_an_unprotected_unencrypted_key_is_refused_not_migrated(tmp_path: Path):
    _legacy(tmp_path / "hostkeys")
    os.chmod(tmp_path / "hostkeys" / "host_ca", 0o644)
    with pytest.raises(VaultError, match="accessible by other users"):
        load(tmp_path)
    assert not (tmp_path / "hostkeys" / "host_ca.key").exists()


def test_public_halves_are_read_without_the_passphrase(tmp_path: Path):
    assert PublicHostKeys.read(tmp_path) is None
    keys = load(tmp_path)
    public = PublicHostKeys.read(tmp_path)
    assert public.ca_public_line() == keys.ca_public_line()
    assert public.known_hosts_lines("[127.0.0.1]:2222", include_plain_host_key=True) == \
        keys.known_hosts_lines("[127.0.0.1]:2222", include_plain_host_key=True)


def test_host_keys_share_the_upstream_vaults_salt(tmp_path: Path):
    vault = Vault(tmp_path / "keys", PASSPHRASE)
    vault.generate("web1")
    HostKeys.load_or_create(tmp_path / "data", vault=vault)
    salts = {json.loads(p.read_text())["header"]["kdf"]["salt"]
             for p in [tmp_path / "keys" / "web1.key",
                       *(tmp_path / "data" / "hostkeys").glob("*.key")]}
    assert len(salts) == 1                                      # one scrypt per process
