"""`bastion keys ...`, `bastion ca known-hosts`, `bastion ssh-config`, run as real subprocesses."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import asyncssh
import pytest

from bastion.secret import Secret
from bastion.ssh.hostca import HostKeys
from bastion.vault import Vault

BASTION = str(Path(sys.executable).with_name("bastion"))
SSH = shutil.which("ssh")
SSH_KEYGEN = shutil.which("ssh-keygen")
needs_ssh = pytest.mark.skipif(SSH is None or SSH_KEYGEN is None, reason="OpenSSH not installed")
PASSPHRASE = "vault pass for tests"


def run(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
    base.update({"COLUMNS": "200", "NO_COLOR": "1"})
    base.update(env or {})
    return subprocess.run([BASTION, *args], env=base, cwd=cwd, capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)


def test_generate_prints_only_the_public_line_and_list_shows_it(tmp_path: Path):
    keys = tmp_path / "keys"
    r = run("keys", "generate", "web1", "--keys-dir", str(keys),
            env={"BASTION_VAULT_PASSPHRASE": PASSPHRASE})
    assert r.returncode == 0, r.stderr
    line = r.stdout.strip()
    assert len(r.stdout.splitlines()) == 1 and line.endswith(" bastion:web1")
    assert asyncssh.import_public_key(line).algorithm == b"ssh-ed25519"
    # the library, with the passphrase, decrypts what the CLI wrote
    key = Vault(keys, Secret(PASSPHRASE)).load("web1")
    assert key.export_public_key().split()[1] == line.split()[1].encode()
    # listing needs no passphrase; the dir comes from BASTION_KEYS_DIR
    listed = run("keys", "list", "--json", env={"BASTION_KEYS_DIR": str(keys)})
    assert listed.returncode == 0, listed.stderr
    [entry] = json.loads(listed.stdout)
    assert entry["name"] == "web1" and entry["public_line"] == line
    assert entry["fingerprint"] == key.get_fingerprint("sha256")
    table = run("keys", "list", "--keys-dir", str(keys))
    assert "web1" in table.stdout and entry["fingerprint"] in table.stdout


def test_generate_algorithm_and_passphrase_file(tmp_path: Path):
    pw = tmp_path / "pw"
    pw.write_text(PASSPHRASE + "\n")
    r = run("keys", "generate", "db1", "--algorithm", "ecdsa", "--keys-dir", str(tmp_path / "k"),
            env={"BASTION_VAULT_PASSPHRASE_FILE": str(pw)})
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ecdsa-sha2-nistp256 ")
    assert Vault(tmp_path / "k", Secret(PASSPHRASE)).load("db1").algorithm == b"ecdsa-sha2-nistp256"


def test_missing_passphrase_is_a_clear_error(tmp_path: Path):
    r = run("keys", "generate", "web1", "--keys-dir", str(tmp_path / "k"))
    assert r.returncode == 1
    assert "passphrase is not set" in r.stderr
    assert "BASTION_VAULT_PASSPHRASE " in r.stderr.replace("\n", " ")
    assert "BASTION_VAULT_PASSPHRASE_FILE" in r.stderr
    assert r.stdout == "" and not (tmp_path / "k" / "web1.key").exists()


def test_existing_key_needs_force(tmp_path: Path):
    env = {"BASTION_VAULT_PASSPHRASE": PASSPHRASE, "BASTION_KEYS_DIR": str(tmp_path / "k")}
    first = run("keys", "generate", "web1", env=env).stdout
    again = run("keys", "generate", "web1", env=env)
    assert again.returncode == 1 and "already exists" in again.stderr and "--force" in again.stderr
    forced = run("keys", "generate", "web1", "--force", env=env)
    assert forced.returncode == 0 and forced.stdout != first
    assert Vault(tmp_path / "k", None).public_line("web1") == forced.stdout.strip()


def test_wrong_passphrase_and_bad_name(tmp_path: Path):
    env = {"BASTION_KEYS_DIR": str(tmp_path / "k")}
    run("keys", "generate", "web1", env={**env, "BASTION_VAULT_PASSPHRASE": PASSPHRASE})
    wrong = run("keys", "generate", "web2", env={**env, "BASTION_VAULT_PASSPHRASE": "other"})
    assert wrong.returncode == 1 and "wrong vault passphrase" in wrong.stderr
    bad = run("keys", "generate", "../x", env={**env, "BASTION_VAULT_PASSPHRASE": PASSPHRASE})
    assert bad.returncode == 1 and "invalid key name" in bad.stderr


@needs_ssh
def test_import_encrypted_ssh_keygen_key(tmp_path: Path):
    pytest.importorskip("bcrypt", reason="OpenSSH's encrypted key format needs bcrypt")
    src = tmp_path / "id_web1"
    subprocess.run([SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "src secret", "-f", str(src)],
                   check=True, timeout=30)
    env = {"BASTION_VAULT_PASSPHRASE": PASSPHRASE, "BASTION_KEYS_DIR": str(tmp_path / "k")}
    no_pw = run("keys", "import", "web1", str(src), env=env)
    assert no_pw.returncode == 1 and "--source-passphrase-file" in no_pw.stderr
    pw = tmp_path / "srcpw"
    pw.write_text("src secret\n")
    r = run("keys", "import", "web1", str(src), "--source-passphrase-file", str(pw), env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[1] == Path(str(src) + ".pub").read_text().split()[1]
    assert src.exists()                                   # the source is left alone


def test_ca_known_hosts_prints_the_ca_of_the_data_dir(tmp_path: Path):
    data = tmp_path / "data"
    r = run("ca", "known-hosts", "--data-dir", str(data),
            env={"BASTION_VAULT_PASSPHRASE": PASSPHRASE})     # first use: creates the CA
    assert r.returncode == 0, r.stderr
    keys = HostKeys.load_or_create(data, passphrase=Secret(PASSPHRASE))
    lines = [l for l in r.stdout.splitlines() if not l.startswith("#")]
    assert lines == [f"@cert-authority * {keys.ca_public_line()}"]
    narrow = run("ca", "known-hosts", "--data-dir", str(data), "--bastion-host", "127.0.0.1:2222",
                 "--target", "web*", "--target", "db1")
    assert f"@cert-authority [127.0.0.1]:2222,web*,db1 {keys.ca_public_line()}" in narrow.stdout
    bad = run("ca", "known-hosts", "--data-dir", str(data), "--target", "a b")
    assert bad.returncode != 0 and "invalid --target" in bad.stderr


def test_ca_known_hosts_needs_the_passphrase_only_to_create_the_ca(tmp_path: Path):
    data = tmp_path / "data"
    first = run("ca", "known-hosts", "--data-dir", str(data))
    assert first.returncode == 1 and "Traceback" not in first.stderr
    assert "passphrase is not set" in first.stderr and "BASTION_VAULT_PASSPHRASE" in first.stderr
    assert not (data / "hostkeys" / "host_ca").exists()          # nothing written in the clear
    made = run("ca", "known-hosts", "--data-dir", str(data),
               env={"BASTION_VAULT_PASSPHRASE": PASSPHRASE})
    assert made.returncode == 0, made.stderr
    again = run("ca", "known-hosts", "--data-dir", str(data))   # existing CA: no passphrase
    assert again.returncode == 0, again.stderr
    assert again.stdout == made.stdout


def _ssh_G(config: Path, host: str) -> dict[str, str]:
    out = subprocess.run([SSH, "-F", str(config), "-G", host], capture_output=True, text=True,
                         check=True, timeout=30).stdout
    return {k: v for k, _, v in (line.partition(" ") for line in out.splitlines())}


POLICY = """
[[targets]]
name = "web1"
host = "10.0.0.5"
user = "deploy"
key = "web1"
host_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOyqamgH2DOmkVjVLfxx1z+oSESqu3YtydmOjhqSpayo"

[[targets]]
name = "db1"
host = "10.0.0.6"
user = "postgres"
key = "db1"
host_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOyqamgH2DOmkVjVLfxx1z+oSESqu3YtydmOjhqSpayo"
"""


@needs_ssh
def test_ssh_config_as_parsed_by_openssh(tmp_path: Path):
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    kh = tmp_path / "bastion known_hosts"                       # a space: must be quoted
    r = run("ssh-config", "--bastion", "bastion.example:2200", "--policy", str(policy),
            "--known-hosts-file", str(kh), "--data-dir", str(tmp_path / "data"))
    assert r.returncode == 0, r.stderr
    config = tmp_path / "ssh_config"
    config.write_text(r.stdout)
    assert "SSH_ASKPASS=bastion-askpass SSH_ASKPASS_REQUIRE=force" in r.stdout
    assert "BASTION_TOKEN" in r.stdout and "bastion ca known-hosts" in r.stdout
    hop = _ssh_G(config, "bastion")
    assert (hop["hostname"], hop["port"], hop["user"]) == ("bastion.example", "2200", "agent")
    assert hop["preferredauthentications"] == "keyboard-interactive"
    assert hop["stricthostkeychecking"] == "true" and hop["userknownhostsfile"] == str(kh)
    assert hop["pubkeyauthentication"] == "false" and hop["passwordauthentication"] == "no"
    assert "proxyjump" not in hop
    for name, login in [("web1", "deploy"), ("db1", "postgres")]:
        t = _ssh_G(config, name)
        assert t["proxyjump"] == "bastion" and t["user"] == login and t["hostname"] == name
        assert t["preferredauthentications"] == "none"
        assert t["kbdinteractiveauthentication"] == "no" and t["pubkeyauthentication"] == "false"
        assert t["identityagent"] == "none" and t["forwardagent"] == "no"
        assert t["stricthostkeychecking"] == "true" and t["userknownhostsfile"] == str(kh)
    assert "proxyjump" not in _ssh_G(config, "unrelated.example")
    star = run("ssh-config")
    assert "\nHost *\n" in star.stdout and "Host *" in star.stderr


def test_ssh_config_refuses_bad_input(tmp_path: Path):
    assert "HOST:PORT" in run("ssh-config", "--bastion", "a:b:c:x y").stderr
    clash = run("ssh-config", "--target", "bastion")
    assert clash.returncode != 0 and "--alias" in clash.stderr
    assert run("ssh-config", "--target", "web1 ProxyCommand").returncode != 0


class _StandIn(asyncssh.SSHServer):
    """Accepts auth 'none' and forwards only to the inner test server (127.0.0.1:inner_port)."""

    inner_port = 0

    def begin_auth(self, username: str) -> bool:
        return False

    def connection_requested(self, dest_host, dest_port, orig_host, orig_port):
        return dest_host == "127.0.0.1" and dest_port == self.inner_port


@needs_ssh
async def test_generated_files_let_real_ssh_jump_with_strict_host_keys(tmp_path: Path):
    """ssh -F <ssh-config> web1 through a stand-in bastion: both host keys checked by the CA line."""
    data = tmp_path / "data"
    kh = tmp_path / "bastion_known_hosts"
    proc = await asyncio.create_subprocess_exec(
        BASTION, "ca", "known-hosts", "--data-dir", str(data), stdout=subprocess.PIPE,
        env={**os.environ, "BASTION_VAULT_PASSPHRASE": PASSPHRASE})
    kh.write_bytes((await proc.communicate())[0])
    keys = HostKeys.load_or_create(data, passphrase=Secret(PASSPHRASE))
    inner = await asyncssh.create_server(_StandIn, "127.0.0.1", 0,
                                         server_host_keys=[keys.cert_for("web1")],
                                         process_factory=lambda p: p.exit(0))
    _StandIn.inner_port = inner.sockets[0].getsockname()[1]
    outer = await asyncssh.create_server(_StandIn, "127.0.0.1", 0,
                                         server_host_keys=keys.server_host_keys())
    outer_port = outer.sockets[0].getsockname()[1]
    try:
        proc = await asyncio.create_subprocess_exec(
            BASTION, "ssh-config", "--bastion", f"127.0.0.1:{outer_port}", "--target", "web1",
            "--known-hosts-file", str(kh), stdout=subprocess.PIPE)
        config = tmp_path / "ssh_config"
        config.write_bytes((await proc.communicate())[0])

        async def ssh(name: str):
            # -o reaches the target only, not the -J hop: the hop is configured by the file alone
            p = await asyncio.create_subprocess_exec(
                SSH, "-v", "-F", str(config), "-o", "BatchMode=yes", "-o", "HostName=127.0.0.1",
                "-o", f"Port={_StandIn.inner_port}", "-o", f"HostKeyAlias={name}", name, "true",
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            done = asyncio.ensure_future(p.communicate())
            finished, _ = await asyncio.wait({done}, timeout=60)
            if not finished:              # (seen once in CI: say where ssh stood)
                p.kill()
                _, err = await done
                pytest.fail(f"ssh {name} did not finish within 60 s; its -v log:\n"
                            + err.decode(errors="replace")[-4000:])
            _, err = done.result()
            return p.returncode, err.decode()

        code, err = await ssh("web1")
        assert "Host key verification failed" not in err
        assert code == 0, err
        code, err = await ssh("web2")                  # the cert names web1 only
        assert code != 0 and "Host key verification failed" in err
    finally:
        for server in (outer, inner):
            server.close()
            await server.wait_closed()


@pytest.mark.parametrize("command, example", [
    (["keys"], "bastion keys generate web1"),
    (["keys", "generate"], "bastion keys generate web1 >>"),
    (["keys", "import"], "bastion keys import web1"),
    (["keys", "list"], "bastion keys list --json"),
    (["ca"], "bastion ca known-hosts >"),
    (["ca", "known-hosts"], "bastion ca known-hosts --data-dir"),
    (["ssh-config"], "bastion ssh-config --bastion"),
])
def test_every_help_ends_with_an_example(command: list[str], example: str):
    r = run(*command, "--help")
    assert r.returncode == 0
    text = r.stdout.split("\n")
    end = next(i for i, l in enumerate(text) if l in ("Options:", "Arguments:", "Commands:"))
    # the last paragraph above the first section, its wrapped lines joined
    last = " ".join(l.strip() for l in "\n".join(text[:end]).strip().split("\n\n")[-1].split("\n"))
    assert example in last, last
