"""rsync over exec end to end: the real ``rsync`` client through ``-e 'ssh -F ...'`` (``-J`` to
the bastion), the real ``rsync --server`` on the real sshd behind it.

The bastion recognises the server command, resolves its paths on the target and decides
them as trees (docs/TRANSFERS.md, "rsync"); canaries sit in this module's temp dir and in a
uniquely named file under the test user's ~/.ssh.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.e2e.harness import POLICY_RULES, BastionRig, Result
from tests.e2e.test_sftp import sha, transfers

pytestmark = pytest.mark.skipif(shutil.which("rsync") is None,
                                reason="rsync is not installed (scripts/test.sh installs it)")


def _policy(files: Path) -> str:
    return f"""
[[rules]]
name = "up-tree"
action = "allow"
reads = ["{files}/up/**", "{files}/pub/**"]
writes = ["{files}/up/**"]

[[rules]]
name = "no-ssh-writes"
action = "deny"
writes = ["{files}/fakessh/**", "~/.ssh/**"]

[[rules]]
name = "no-secret-reads"
action = "deny"
reads = ["{files}/secret/**"]

[[rules]]
name = "held-writes"
action = "review"
writes = ["{files}/held/**"]

[[rules]]
name = "held-allow"
action = "allow"
writes = ["{files}/held/**"]
"""


@pytest.fixture(scope="module")
def rrig(tmp_path_factory, issuer):
    root = Path(os.path.realpath(tmp_path_factory.mktemp("rsyncrig")))
    r = BastionRig(root, issuer).setup()
    files = root / "files"
    for d in ("pub", "up", "secret", "fakessh", "held", "elsewhere"):
        (files / d).mkdir(parents=True)
    (files / "fakessh" / "authorized_keys").write_text("ssh-ed25519 AAAA canary\n")
    (files / "secret" / "key").write_text("the secret\n")
    os.symlink(files / "fakessh", files / "up" / "sneaky")
    os.symlink(files / "secret", files / "pub" / "peek")
    r.files = files
    r.write_policy(r.policy_text(POLICY_RULES + _policy(files)))
    r.start()
    yield r
    r.close()


def rsync(rig: BastionRig, token: str, *args: str, timeout: float = 120) -> Result:
    argv = ["rsync", "-e", f"ssh -F {rig.ssh_config}", *args]
    p = subprocess.run(argv, env=rig.agent_env(token), capture_output=True, timeout=timeout,
                       stdin=subprocess.DEVNULL, start_new_session=True)
    return Result(p.returncode, p.stdout, p.stderr)


def remote(rig: BastionRig, path: Path | str) -> str:
    return f"{rig.sshd.user}@web1:{path}"


def test_allowed_pull_of_a_tree_is_identical_and_indexed(rrig, token, tmp_path):
    src = rrig.files / "pub" / "tree"
    (src / "sub").mkdir(parents=True)
    (src / "a.bin").write_bytes(os.urandom(200_000))
    (src / "sub" / "b.txt").write_text("bee\n")
    r = rsync(rrig, token, "-a", remote(rrig, f"{src}/"), f"{tmp_path}/got/")
    assert r.returncode == 0, r.err
    assert sha(tmp_path / "got" / "a.bin") == sha(src / "a.bin")
    assert (tmp_path / "got" / "sub" / "b.txt").read_text() == "bee\n"
    row = transfers(rrig, "op = 'rsync-get' AND path = ?", str(src))[-1]
    assert (row["result"], row["action"], row["rule"]) == ("ok", "allow", "up-tree")
    assert row["bytes"] >= 200_000 and row["channel_id"] is not None


def test_allowed_push_lands(rrig, token, tmp_path):
    local = tmp_path / "out"
    local.mkdir()
    (local / "app.tgz").write_bytes(os.urandom(150_000))
    dest = rrig.files / "up" / "release"
    r = rsync(rrig, token, "-a", f"{local}/", remote(rrig, f"{dest}/"))
    assert r.returncode == 0, r.err
    assert sha(dest / "app.tgz") == sha(local / "app.tgz")
    row = transfers(rrig, "op = 'rsync-put' AND path = ?", str(dest))[-1]
    assert (row["result"], row["action"], row["rule"]) == ("ok", "allow", "up-tree")
    # and with ~ and a relative path, resolved under the user's home: refused by default
    r = rsync(rrig, token, str(local / "app.tgz"), f"{rrig.sshd.user}@web1:rsync-test-nowhere")
    assert r.returncode != 0 and "<default>" in r.err
    assert not (Path.home() / "rsync-test-nowhere").exists()


def test_denied_push_into_dot_ssh_leaves_the_canary_unchanged(rrig, token, tmp_path):
    name = f"bastion-rsync-canary-{os.getpid()}"
    canary = Path.home() / ".ssh" / name
    canary.parent.mkdir(mode=0o700, exist_ok=True)
    canary.write_text("canary\n")
    try:
        evil = tmp_path / name
        evil.write_text("ssh-ed25519 AAAA attacker\n")
        r = rsync(rrig, token, str(evil), remote(rrig, "~/.ssh/"))
        assert r.returncode != 0
        assert "denied by rule no-ssh-writes" in r.err, r.err
        assert canary.read_text() == "canary\n"
        home_ssh = str(Path(os.path.realpath(Path.home() / ".ssh")))
        row = transfers(rrig, "op = 'rsync-put' AND path = ?", home_ssh)[-1]
        assert (row["result"], row["rule"]) == ("denied", "no-ssh-writes")
    finally:
        canary.unlink()


def test_denied_through_a_symlink_into_a_denied_tree(rrig, token, tmp_path):
    canary = rrig.files / "fakessh" / "authorized_keys"
    before = canary.read_bytes()
    evil = tmp_path / "authorized_keys"
    evil.write_text("ssh-ed25519 AAAA attacker\n")
    r = rsync(rrig, token, str(evil), remote(rrig, f"{rrig.files}/up/sneaky/"))
    assert r.returncode != 0
    assert "denied by rule no-ssh-writes" in r.err, r.err
    assert canary.read_bytes() == before
    row = transfers(rrig, "op = 'rsync-put' AND path = ?", str(rrig.files / "fakessh"))[-1]
    assert row["result"] == "denied"
    # a pull through a link into a denied tree is judged by what it points to
    r = rsync(rrig, token, "-a", remote(rrig, f"{rrig.files}/pub/peek/"), f"{tmp_path}/p/")
    assert r.returncode != 0 and "no-secret-reads" in r.err, r.err
    assert not (tmp_path / "p" / "key").exists()


@pytest.mark.parametrize("args, what, pull", [
    (("--rsync-path=sudo rsync",), "--rsync-path", False),
    (("-L",), "-L", True),                   # the target's sender would follow symlinks
    (("--temp-dir=/tmp",), "--temp-dir", False),
])
def test_unsafe_options_are_refused_naming_sftp(rrig, token, tmp_path, args, what, pull):
    local = tmp_path / "f"
    local.write_text("x\n")
    dest = rrig.files / "up" / f"opt-{abs(hash(what))}"
    if pull:
        r = rsync(rrig, token, "-r", *args, remote(rrig, f"{rrig.files}/pub/"),
                  f"{tmp_path}/pulled/")
        assert not (tmp_path / "pulled").exists()
    else:
        r = rsync(rrig, token, *args, str(local), remote(rrig, dest))
    assert r.returncode != 0
    assert "sftp" in r.err and "rsync through the bastion" in r.err, r.err
    assert not dest.exists()


def test_glob_characters_in_a_path_are_refused(rrig, token, tmp_path):
    r = rsync(rrig, token, remote(rrig, f"{rrig.files}/pub/*"), str(tmp_path))
    assert r.returncode != 0 and "glob characters" in r.err, r.err


def test_a_push_creates_no_fifo_or_device_in_the_tree(rrig, token, tmp_path):
    local = tmp_path / "withfifo"
    local.mkdir()
    (local / "plain.txt").write_text("plain\n")
    os.mkfifo(local / "pipe")
    dest = rrig.files / "up" / "nospecials"
    r = rsync(rrig, token, "-a", f"{local}/", remote(rrig, f"{dest}/"))
    assert r.returncode == 0, r.err                   # -a (so -D) is accepted...
    assert (dest / "plain.txt").read_text() == "plain\n"
    assert not (dest / "pipe").exists()               # ...but no special file is made
