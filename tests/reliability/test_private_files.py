"""Issue 16 item 8 (and the disk-full refusal of item 9) through a real ``bastion serve``.

* everything the bastion creates -- index, -wal, -shm, lock, recording dirs and files, host
  keys, vault keys -- is 0600 in 0700 directories, although this test runs it under umask 022;
* a data or keys dir other users can read, write or enter is refused with one line (no
  traceback) unless ``--no-strict-modes``; modes an older bastion left are tightened;
* the host key and host CA are stored encrypted with the vault passphrase; unencrypted ones
  are migrated at start (one log line each) and agents keep trusting the same CA;
* neither the passphrase nor any private key reaches the bastion's log (debug level);
* a session refused because the disk is full (a real tmpfs out of inodes) does not tell the
  agent where the data dir is.

With ``BASTION_TEST_STORE=postgresql`` the index is the store, not a file: the same modes are
checked on everything the bastion creates, no ``index.sqlite*`` may be written, and a start
refused for an open dir must not have touched its store (a fresh database, left empty).
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import stat
import subprocess
import time
from pathlib import Path

import asyncssh
import pytest

from bastion.demo.sshd import free_port, wait_for_port
from bastion.secret import Secret
from bastion.vault import Vault
from bastion.vault.files import atomic_write
from tests.e2e.harness import BASTION, VAULT_PASSPHRASE, BastionRig, pg_store_env

HOSTKEY_NAMES = ("ssh_host_ed25519_key", "host_ca")


def _modes(root: Path) -> dict[str, int]:
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            found[os.path.relpath(path, root)] = os.lstat(path).st_mode
    return found


def _private_material(key: asyncssh.SSHKey) -> list[str]:
    body = key.export_private_key("openssh").decode().splitlines()[1:-1]
    return [line for line in body if len(line) > 20]


def _start_under_open_umask(rig: BastionRig) -> BastionRig:
    old = os.umask(0o022)                 # what serve inherits: it must not rely on it
    try:
        return rig.start()
    finally:
        os.umask(old)


@pytest.fixture(scope="module")
def rig(tmp_path_factory, issuer):
    r = BastionRig(tmp_path_factory.mktemp("private"), issuer).setup()
    _start_under_open_umask(r)
    yield r
    r.close()


def test_everything_created_is_private(rig, token):
    result = rig.ssh(token, "echo recorded")
    assert result.returncode == 0, result.err
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not list(rig.data_dir.glob("recordings/*/*/*/*.cast")):
        time.sleep(0.05)
    for root in (rig.data_dir, rig.keys_dir):
        assert stat.S_IMODE(root.stat().st_mode) == 0o700, root
        modes = _modes(root)
        for name, mode in modes.items():
            want = 0o700 if stat.S_ISDIR(mode) else 0o600
            assert stat.S_IMODE(mode) == want, f"{root.name}/{name} is {stat.S_IMODE(mode):o}"
    names = set(_modes(rig.data_dir))
    assert "recorder.lock" in names
    if rig.store_env:                     # PostgreSQL: the index is the store, no file of it
        assert not [n for n in names if n.startswith("index.sqlite")], sorted(names)
    else:
        assert {"index.sqlite", "index.sqlite-wal", "index.sqlite-shm"} <= names
    assert any(n.endswith(".cast") for n in names)


def test_host_keys_are_encrypted_and_no_secret_reaches_the_log(rig, token):
    assert rig.ssh(token, "echo hello").returncode == 0
    hostkeys = rig.data_dir / "hostkeys"
    assert sorted(p.name for p in hostkeys.iterdir()) == sorted(
        [f"{n}.key" for n in HOSTKEY_NAMES] + [f"{n}.pub" for n in HOSTKEY_NAMES])
    passphrase = Secret(VAULT_PASSPHRASE)
    host_vault = Vault(hostkeys, passphrase)
    secrets = [VAULT_PASSPHRASE]
    for name in HOSTKEY_NAMES:
        secrets += _private_material(host_vault.load(name))
    secrets += _private_material(Vault(rig.keys_dir, passphrase).load("web1"))
    log = rig.log()
    assert "DEBUG" in log                               # the most talkative level was on
    for path in hostkeys.iterdir():
        text = path.read_text()
        assert "PRIVATE KEY" not in text
        assert not [s for s in secrets if s in text]
    leaked = [s for s in secrets if s in log]
    assert not leaked, "a secret is in the bastion log"
    assert "Traceback" not in log


def _serve(rig, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([BASTION, "serve", "--listen", "127.0.0.1:0", *args],
                          env={**rig.env, **(env or {})}, capture_output=True, timeout=60,
                          stdin=subprocess.DEVNULL)


def _own_store(rig, tmp_path: Path) -> dict:
    """For a second ``bastion serve`` beside the rig's: on PostgreSQL a fresh database of its
    own (as its own data dir is on SQLite), so it never shares the rig's node or rows."""
    return pg_store_env(f"{tmp_path.parent.name}_{tmp_path.name}") if rig.store_env else {}


def _store_tables(store: dict) -> list[str]:
    """The tables of a PostgreSQL store (``store``: its environment)."""
    from bastion.store.location import check
    from bastion.store.pgconn import PgConnection
    conn = PgConnection(check(store["BASTION_STORE_URL"], store["BASTION_STORE_PASSWORD_FILE"],
                              "test-reader", "test"))
    try:
        return [r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")]
    finally:
        conn.close()


@pytest.mark.parametrize("which, mode, verb", [
    ("data", 0o755, "read"),
    ("data", 0o750, "read"),
    ("data", 0o701, "entered"),
    ("data", 0o777, "read and written"),
    ("keys", 0o744, "read"),
    ("keys", 0o730, "written"),
])
def test_an_open_data_or_keys_dir_is_refused(rig, tmp_path, which, mode, verb):
    data, keys = tmp_path / "data", tmp_path / "keys"
    shutil.copytree(rig.keys_dir, keys)
    data.mkdir(mode=0o700)
    victim = data if which == "data" else keys
    victim.chmod(mode)
    store = _own_store(rig, tmp_path)
    p = _serve(rig, "--data-dir", str(data), "--keys-dir", str(keys), env=store)
    err = p.stderr.decode()
    assert p.returncode == 2                                          # a start-up failure
    assert "Traceback" not in err
    option = "--data-dir" if which == "data" else "--keys-dir"
    first = err.splitlines()[0]
    assert first == f"error: {option} {victim} can be {verb} by other users (mode {mode:o})"
    assert "--no-strict-modes" in " ".join(err.split())
    assert stat.S_IMODE(victim.stat().st_mode) == mode               # left as it was
    assert not (data / "index.sqlite").exists()                      # nothing started
    if store:
        assert _store_tables(store) == []                            # not even migrated


@pytest.mark.parametrize("how", ["flag", "env"])
def test_no_strict_modes_starts_with_an_open_dir_and_says_so(rig, tmp_path, how):
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    data.chmod(0o750)
    port = free_port()
    args = [BASTION, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", str(data)]
    env = {**rig.env, **_own_store(rig, tmp_path)}
    if how == "flag":
        args.append("--no-strict-modes")
    else:
        env["BASTION_STRICT_MODES"] = "0"
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(args, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=True)
    try:
        wait_for_port(port, timeout=30, proc=proc)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    text = log_path.read_text()
    assert f"--data-dir {data} can be read by other users (mode 750); starting anyway" in text
    assert stat.S_IMODE(data.stat().st_mode) == 0o750                 # the operator's choice
    if env.get("BASTION_STORE_URL"):      # PostgreSQL: no index file; what it made is private
        modes = _modes(data)
        assert "recorder.lock" in modes and not [n for n in modes if n.startswith("index.sqlite")]
        for name, mode in modes.items():
            want = 0o700 if stat.S_ISDIR(mode) else 0o600
            assert stat.S_IMODE(mode) == want, f"{name} is {stat.S_IMODE(mode):o}"
    else:
        assert stat.S_IMODE((data / "index.sqlite").stat().st_mode) == 0o600   # ours stay private


def _legacy_data_dir(data: Path) -> dict[str, asyncssh.SSHKey]:
    """A data dir as a bastion before issue 16 item 8 left it: host keys unencrypted,
    index 0644, recording dirs 0755, recordings 0640 (the data dir itself was 0700)."""
    hostkeys = data / "hostkeys"
    hostkeys.mkdir(mode=0o700, parents=True)
    data.chmod(0o700)
    keys = {}
    for name, comment in (("ssh_host_ed25519_key", "bastion"), ("host_ca", "bastion-host-ca")):
        key = asyncssh.generate_private_key("ssh-ed25519", comment=comment)
        atomic_write(hostkeys / name, key.export_private_key("openssh"))
        atomic_write(hostkeys / f"{name}.pub", key.export_public_key("openssh"), overwrite=True)
        keys[name] = key
    conn = sqlite3.connect(data / "index.sqlite")
    conn.execute("PRAGMA user_version")
    conn.close()
    (data / "index.sqlite").chmod(0o644)
    day = data / "recordings" / "2020" / "01" / "01"
    day.mkdir(parents=True)
    for d in (data / "recordings", day.parent.parent, day.parent, day):
        d.chmod(0o755)
    (day / "s1-c1.cast").write_text('{"version": 2}\n')
    (day / "s1-c1.cast").chmod(0o640)
    return keys


def test_an_older_data_dir_is_migrated_and_agents_keep_trusting_it(tmp_path_factory, issuer,
                                                                   token):
    r = BastionRig(tmp_path_factory.mktemp("legacy"), issuer).setup()
    old = _legacy_data_dir(r.data_dir)
    old_ca = old["host_ca"].export_public_key("openssh").decode().split()[:2]
    try:
        _start_under_open_umask(r)
        # the known_hosts agents already had: the old CA, written before this start
        r.known_hosts.write_text(f"@cert-authority * {' '.join(old_ca)} bastion-host-ca\n")
        result = r.ssh(token, "echo still trusted")
        assert result.returncode == 0, result.err
        assert result.out == "still trusted\n"
        log = r.log()
    finally:
        r.close()
    migrated = [l for l in log.splitlines() if "migrated: re-written encrypted with the vault "
                "passphrase" in l]
    assert len(migrated) == 2, log[-3000:]
    assert any("host_ca" in l for l in migrated)
    assert "made 4 directories and 2 files" in log          # recordings tree, cast, index
    hostkeys = r.data_dir / "hostkeys"
    assert not (hostkeys / "host_ca").exists() and not (hostkeys / "ssh_host_ed25519_key").exists()
    ca = Vault(hostkeys, Secret(VAULT_PASSPHRASE)).load("host_ca")
    assert ca.export_public_key("openssh").decode().split()[:2] == old_ca
    for name, mode in _modes(r.data_dir).items():
        assert stat.S_IMODE(mode) & 0o077 == 0, f"{name} is {stat.S_IMODE(mode):o}"
    for key in old.values():
        assert not [s for s in _private_material(key) if s in log]


# --------------------------------------------------------------------------- disk full

@pytest.fixture
def tmpfs(tmp_path):
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m,nr_inodes=300,mode=0700",
                        "bastion-test", str(mnt)], capture_output=True, timeout=30)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=30)


def test_a_full_disk_refusal_does_not_tell_the_agent_the_data_path(tmp_path_factory, issuer,
                                                                   token, tmpfs):
    r = BastionRig(tmp_path_factory.mktemp("full"), issuer)
    r.data_dir = tmpfs / "bastion-data"
    r.setup().start()
    try:
        assert r.ssh(token, "echo before").returncode == 0       # the day's dirs exist now
        filler = tmpfs / "filler"
        filler.mkdir()
        n = 0
        while True:                                            # use up every inode left
            try:
                (filler / str(n)).touch()
            except OSError:
                break
            n += 1
        result = r.ssh(token, "echo must-not-run-unrecorded")
        log = r.log()
    finally:
        r.close()
    assert result.returncode == 255
    assert "must-not-run-unrecorded" not in result.out
    assert "No space left on device" in result.err
    for secret_place in (str(tmpfs), str(r.data_dir), "bastion-data", "recordings/"):
        assert secret_place not in result.err, result.err
    assert str(r.data_dir) in log                 # the operator's log has the file
