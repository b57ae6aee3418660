"""sftp and scp end to end: the real OpenSSH ``sftp -b`` and ``scp`` through ``-J``, a real
``bastion serve`` serving SFTP itself, the real sshd's internal-sftp behind it.

Every operation is decided by path before it reaches the target (docs/TRANSFERS.md);
the files live in this module's temporary directory, with canaries for the denied ones.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.harness import POLICY_RULES, BastionRig, Result

_batches = itertools.count()


def _policy(files: Path) -> str:
    return f"""
[[grants]]
who = ["role:agents"]
targets = ["web1"]
channels = ["sftp"]

[[rules]]
name = "pub-reads"
action = "allow"
reads = ["{files}/pub/**", "{files}/up/**"]

[[rules]]
name = "upload-writes"
action = "allow"
writes = ["{files}/up/**"]

[[rules]]
name = "no-secret-reads"
action = "deny"
reads = ["{files}/secret/**"]

[[rules]]
name = "no-ssh-writes"
action = "deny"
writes = ["{files}/fakessh/**", "~/.ssh/**"]
"""


@pytest.fixture(scope="module")
def srig(tmp_path_factory, issuer):
    root = Path(os.path.realpath(tmp_path_factory.mktemp("sftprig")))
    r = BastionRig(root, issuer).setup()
    files = root / "files"
    for d in ("pub", "up", "secret", "fakessh", "other"):
        (files / d).mkdir(parents=True)
    (files / "secret" / "key").write_text("the secret\n")
    (files / "fakessh" / "authorized_keys").write_text("ssh-ed25519 AAAA canary\n")
    os.symlink(files / "secret" / "key", files / "pub" / "leak")
    r.files = files
    r.extra_targets = f"""
[[targets]]
name = "web2"
host = "127.0.0.1"
port = {r.sshd.port}
user = "{r.sshd.user}"
key = "web1"
host_key = "{r.sshd.host_key_line}"
"""
    r.write_policy(r.policy_text(POLICY_RULES + _policy(files)))
    r.start()
    yield r
    r.close()


def sftp(rig: BastionRig, token: str, batch: str, *, target: str = "web1") -> Result:
    path = rig.root / f"batch-{next(_batches)}"
    path.write_text(batch)
    argv = ["sftp", "-F", str(rig.ssh_config), "-b", str(path), f"{rig.sshd.user}@{target}"]
    p = subprocess.run(argv, env=rig.agent_env(token), capture_output=True, timeout=120,
                       stdin=subprocess.DEVNULL, start_new_session=True)
    return Result(p.returncode, p.stdout, p.stderr)


def scp(rig: BastionRig, token: str, *args: str) -> Result:
    argv = ["scp", "-F", str(rig.ssh_config), *args]
    p = subprocess.run(argv, env=rig.agent_env(token), capture_output=True, timeout=120,
                       stdin=subprocess.DEVNULL, start_new_session=True)
    return Result(p.returncode, p.stdout, p.stderr)


def transfers(rig: BastionRig, where: str, *params: object, count: int = 1) -> list[dict]:
    """Rows of the transfers table matching ``where``, waiting for the recording worker."""
    deadline = time.monotonic() + 15
    while True:
        conn = rig.index()
        try:
            rows = [dict(r) for r in conn.execute(
                f"SELECT * FROM transfers WHERE {where} ORDER BY id", params)]
        except sqlite3.OperationalError:
            rows = []
        finally:
            conn.close()
        if len(rows) >= count or time.monotonic() > deadline:
            return rows
        time.sleep(0.1)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_allowed_get_is_byte_identical_and_indexed_with_its_hash(srig, token, tmp_path):
    src = srig.files / "pub" / "data.bin"
    src.write_bytes(os.urandom(300_000))
    r = sftp(srig, token, f"get {src} {tmp_path}/got\n")
    assert r.returncode == 0, r.err
    assert sha(tmp_path / "got") == sha(src)
    rows = transfers(srig, "op = 'get' AND path = ?", str(src))
    assert rows, srig.log()[-3000:]
    row = rows[-1]
    assert (row["result"], row["action"], row["rule"]) == ("ok", "allow", "pub-reads")
    assert row["bytes"] == 300_000 and row["sha256"] == sha(src)
    assert row["channel_id"] is not None and row["duration"] is not None


def test_allowed_put_lands_and_is_indexed_with_its_hash(srig, token, tmp_path):
    local = tmp_path / "payload"
    local.write_bytes(os.urandom(200_000))
    dest = srig.files / "up" / "payload"
    r = sftp(srig, token, f"put {local} {dest}\n")
    assert r.returncode == 0, r.err
    assert sha(dest) == sha(local)
    row = transfers(srig, "op = 'put' AND path = ?", str(dest))[-1]
    assert (row["result"], row["rule"], row["sha256"]) == ("ok", "upload-writes", sha(local))


def test_denied_write_leaves_the_canary_unchanged(srig, token, tmp_path):
    canary = srig.files / "fakessh" / "authorized_keys"
    before = canary.read_bytes()
    evil = tmp_path / "evil"
    evil.write_text("ssh-ed25519 AAAA attacker\n")
    r = sftp(srig, token, f"put {evil} {canary}\n")
    assert r.returncode != 0
    assert "Permission denied" in r.err
    assert "denied by rule no-ssh-writes" in r.err
    assert canary.read_bytes() == before
    row = transfers(srig, "op = 'put' AND path = ?", str(canary))[-1]
    assert (row["result"], row["action"], row["rule"]) == ("denied", "deny", "no-ssh-writes")
    assert row["reason"]
    for batch in (f"rm {canary}\n", f"chmod 777 {canary}\n",
                  f"rename {canary} {srig.files}/up/stolen\n"):
        r = sftp(srig, token, batch)
        assert r.returncode != 0 and "no-ssh-writes" in r.err, (batch, r.err)
    assert canary.read_bytes() == before and oct(canary.stat().st_mode & 0o777) != "0o777"


def test_a_symlink_into_a_denied_tree_is_judged_by_its_target(srig, token, tmp_path):
    r = sftp(srig, token, f"get {srig.files}/pub/leak {tmp_path}/leaked\n")
    assert r.returncode != 0
    assert "denied by rule no-secret-reads" in r.err
    assert not (tmp_path / "leaked").exists()
    row = transfers(srig, "rule = 'no-secret-reads' AND path = ?",
                    str(srig.files / "secret" / "key"))[-1]
    assert row["result"] == "denied"
    r = sftp(srig, token, f"ls {srig.files}/secret\n")
    assert r.returncode != 0 and "no-secret-reads" in r.err
    # what does not exist in a denied tree is refused too, not reported missing
    r = sftp(srig, token, f"get {srig.files}/secret/no-such-file {tmp_path}/x\n")
    assert r.returncode != 0 and "no-secret-reads" in r.err


def test_rename_across_trees_is_refused(srig, token):
    src = srig.files / "up" / "movable"
    src.write_text("move me\n")
    for dest, rule in ((srig.files / "fakessh" / "moved", "no-ssh-writes"),
                       (srig.files / "other" / "moved", "<default>")):
        r = sftp(srig, token, f"rename {src} {dest}\n")
        assert r.returncode != 0, r.err
        assert f"denied by rule {rule}" in r.err
        assert src.read_text() == "move me\n" and not dest.exists()
    r = sftp(srig, token, f"rename {src} {srig.files}/up/moved\n")
    assert r.returncode == 0, r.err
    assert (srig.files / "up" / "moved").read_text() == "move me\n"
    row = transfers(srig, "op = 'rename' AND result = 'ok' AND path = ?", str(src))[-1]
    assert row["path2"] == str(srig.files / "up" / "moved")


def test_listing_mkdir_and_remove_are_decided_and_indexed(srig, token):
    (srig.files / "pub" / "listed.txt").write_text("x\n")
    r = sftp(srig, token, f"ls {srig.files}/pub\nmkdir {srig.files}/up/newdir\n"
                          f"rmdir {srig.files}/up/newdir\n")
    assert r.returncode == 0, r.err
    assert "listed.txt" in r.out
    assert not (srig.files / "up" / "newdir").exists()
    for op in ("list", "mkdir", "rmdir"):
        assert transfers(srig, "op = ? AND result LIKE 'ok%'", op), op
    r = sftp(srig, token, f"mkdir {srig.files}/other/nope\n")
    assert r.returncode != 0 and "<default>" in r.err
    assert not (srig.files / "other" / "nope").exists()


def test_a_20_mb_file_is_byte_identical_both_ways(srig, token, tmp_path):
    big = tmp_path / "big"
    big.write_bytes(os.urandom(20 * 1024 * 1024))
    up = srig.files / "up" / "big"
    r = sftp(srig, token, f"put {big} {up}\nget {up} {tmp_path}/big-back\n")
    assert r.returncode == 0, r.err
    assert sha(up) == sha(big) == sha(tmp_path / "big-back")
    put = transfers(srig, "op = 'put' AND path = ?", str(up))[-1]
    get = transfers(srig, "op = 'get' AND path = ?", str(up))[-1]
    assert put["bytes"] == get["bytes"] == 20 * 1024 * 1024
    assert put["sha256"] == get["sha256"] == sha(big)
    conn = srig.index()
    try:                                    # the channel's byte counters count the file data
        deadline = time.monotonic() + 15
        while True:
            counted = conn.execute("SELECT bytes_in, bytes_out FROM channels WHERE id = ?",
                                   (put["channel_id"],)).fetchone()
            if counted[0] >= 20 * 1024 * 1024 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    finally:
        conn.close()
    assert counted == (20 * 1024 * 1024, 20 * 1024 * 1024)


def test_modern_scp_goes_through_the_same_decisions(srig, token, tmp_path):
    local = tmp_path / "scp-in"
    local.write_bytes(os.urandom(50_000))
    login = f"{srig.sshd.user}@web1"
    r = scp(srig, token, str(local), f"{login}:{srig.files}/up/scp-in")
    assert r.returncode == 0, r.err
    assert sha(srig.files / "up" / "scp-in") == sha(local)
    r = scp(srig, token, f"{login}:{srig.files}/up/scp-in", str(tmp_path / "scp-back"))
    assert r.returncode == 0, r.err
    assert sha(tmp_path / "scp-back") == sha(local)
    canary = srig.files / "fakessh" / "authorized_keys"
    before = canary.read_bytes()
    r = scp(srig, token, str(local), f"{login}:{canary}")
    assert r.returncode != 0 and "no-ssh-writes" in r.err
    assert canary.read_bytes() == before
    row = transfers(srig, "op = 'get' AND path = ?", str(srig.files / "up" / "scp-in"))[-1]
    assert row["sha256"] == sha(local)


def test_legacy_scp_is_refused_naming_the_alternative(srig, token, tmp_path):
    local = tmp_path / "legacy"
    local.write_text("legacy\n")
    r = scp(srig, token, "-O", str(local), f"{srig.sshd.user}@web1:{srig.files}/up/legacy")
    assert r.returncode != 0
    assert "scp without -O" in r.err and "sftp" in r.err
    assert not (srig.files / "up" / "legacy").exists()


def test_sftp_needs_a_grant_naming_it(srig, token, tmp_path):
    r = sftp(srig, token, f"get {srig.files}/pub/leak {tmp_path}/x\n", target="web2")
    assert r.returncode != 0
    assert 'channels = ["sftp"]' in r.err and "web2" in r.err
    assert srig.ssh(token, "true", target="web2").returncode == 0   # exec still is granted


def test_sessions_show_lists_the_transfers(srig, token, tmp_path):
    local = tmp_path / "shown"
    local.write_bytes(os.urandom(1000))
    dest = srig.files / "up" / "shown"
    assert sftp(srig, token, f"put {local} {dest}\n").returncode == 0
    row = transfers(srig, "op = 'put' AND path = ?", str(dest))[-1]
    out = srig.cli("sessions", "show", str(row["session_id"])).out
    assert "transfers" in out and "upload-writes" in out and sha(local)[:12] in out
    shown = json.loads(srig.cli("sessions", "show", str(row["session_id"]), "--json").out)
    assert [(t["op"], t["path"], t["sha256"]) for t in shown["transfers"]] == [
        ("put", str(dest), sha(local))]
    assert "ok" in srig.cli("verify").out.lower()           # the rows are in the hash chain
    secret = token.encode()
    assert secret not in srig.log().encode()
    for f in srig.data_dir.rglob("*"):
        if f.is_file():
            assert secret not in f.read_bytes(), f


def test_a_symlink_made_over_sftp_is_decided_where_it_is_made_and_read_where_it_points(
        srig, token, tmp_path):
    link = srig.files / "up" / "made-link"
    r = sftp(srig, token, f"symlink {srig.files}/secret/key {link}\n")
    assert r.returncode == 0, r.err
    assert os.readlink(link) == str(srig.files / "secret" / "key")   # argument order kept
    r = sftp(srig, token, f"get {link} {tmp_path}/through-link\n")
    assert r.returncode != 0 and "no-secret-reads" in r.err
    assert not (tmp_path / "through-link").exists()
    r = sftp(srig, token, f"symlink /etc/hostname {srig.files}/fakessh/ln\n")
    assert r.returncode != 0 and "no-ssh-writes" in r.err
    assert not os.path.lexists(srig.files / "fakessh" / "ln")
    os.symlink(srig.files / "fakessh" / "missing", srig.files / "up" / "dangling")
    local = tmp_path / "via-dangling"
    local.write_text("x\n")
    r = sftp(srig, token, f"put {local} {srig.files}/up/dangling\n")
    # OpenSSH resolves a dangling link to where it points: judged there
    assert r.returncode != 0 and "denied by rule no-ssh-writes" in r.err
    assert not (srig.files / "fakessh" / "missing").exists()


def test_an_interrupted_get_and_put_resume(srig, token, tmp_path):
    src = srig.files / "pub" / "resumable"
    src.write_bytes(os.urandom(1_000_000))
    part = tmp_path / "resumed"
    part.write_bytes(src.read_bytes()[:300_000])          # what an interrupted get left
    r = sftp(srig, token, f"reget {src} {part}\n")
    assert r.returncode == 0, r.err
    assert sha(part) == sha(src)
    dest = srig.files / "up" / "resumed"
    dest.write_bytes(src.read_bytes()[:400_000])          # what an interrupted put left
    r = sftp(srig, token, f"reput {part} {dest}\n")
    assert r.returncode == 0, r.err
    assert sha(dest) == sha(src)
    get = transfers(srig, "op = 'get' AND path = ?", str(src))[-1]
    put = transfers(srig, "op = 'put' AND path = ?", str(dest))[-1]
    assert (get["bytes"], put["bytes"]) == (700_000, 600_000)
    assert get["sha256"] is None and put["sha256"] is None      # not whole files


def test_transfers_search_finds_operations_by_hash_path_and_refusal(srig, token, tmp_path):
    src = srig.files / "pub" / "findme.bin"
    src.write_bytes(os.urandom(50_000))
    assert sftp(srig, token, f"get {src} {tmp_path}/x\n").returncode == 0
    canary = srig.files / "fakessh" / "authorized_keys"
    evil = tmp_path / "evil"
    evil.write_text("nope\n")
    assert sftp(srig, token, f"put {evil} {canary}\n").returncode != 0

    def search(*args: str) -> list[dict]:
        r = srig.cli("transfers", "search", *args, "--json")
        return json.loads(r.out)

    by_hash = search("--sha256", sha(src)[:12])
    assert [(t["op"], t["path"]) for t in by_hash] == [("get", str(src))]
    assert by_hash[0]["sha256"] == sha(src) and by_hash[0]["time"].endswith("Z")
    assert {t["path"] for t in search(f"{srig.files}/pub/find*")} == {str(src)}
    refused = search("--refused", str(canary))
    assert refused and all(t["action"] == "deny" and t["rule"] == "no-ssh-writes"
                           for t in refused)
    assert srig.cli("transfers", "search", "--sha256", "xyz", check=False).returncode == 1
    table = srig.cli("transfers", "search", "--sha256", sha(src)[:12]).out
    assert str(src) in table and "pub-reads" in table


def test_a_read_longer_than_the_advertised_limit_is_answered_short(srig, token):
    # An agent may ask for up to 4 GiB in one READ; the bastion answers at most READ_MAX
    # (what its limits@openssh.com says; SFTP allows short reads), so one request cannot
    # make it hold more (bastion.ssh.sftppipe).  sshd's internal-sftp answers at most
    # 255 KiB itself; what is pinned here is a short, correct answer rather than an error.
    # asyncssh's client, unlike OpenSSH's, sends such a read as asked.
    import asyncio

    import asyncssh
    from asyncssh import FXF_READ, SFTPAttrs

    from bastion.ssh.sftppipe import READ_MAX
    from tests.e2e.test_asyncssh_client import _TokenClient
    big = srig.files / "pub" / "long-read.bin"
    content = os.urandom(READ_MAX + 2 * 1024 * 1024)
    big.write_bytes(content)

    async def run() -> bytes:
        trusted = asyncssh.import_known_hosts(srig.known_hosts.read_text())
        async with asyncssh.connect("127.0.0.1", srig.port, username="agent",
                                    client_factory=lambda: _TokenClient(token),
                                    known_hosts=trusted, client_keys=None, agent_path=None,
                                    preferred_auth="keyboard-interactive", config=None) as outer:
            async with asyncssh.connect("web1", 22, tunnel=outer, username=srig.sshd.user,
                                        known_hosts=trusted, client_keys=None, agent_path=None,
                                        config=None) as inner:
                async with inner.start_sftp_client() as client:
                    handler = client._handler            # one raw READ, not split by asyncssh
                    handle = await handler.open(str(big).encode(), FXF_READ, SFTPAttrs())
                    data, _ = await handler.read(handle, 0, len(content))
                    await handler.close(handle)
                    return data
    data = asyncio.run(run())
    assert 0 < len(data) <= READ_MAX
    assert data == content[:len(data)]


def test_a_path_that_is_not_utf8_is_recorded_and_recording_goes_on(srig, token, tmp_path):
    # sftp paths are bytes: a name with byte 0xff reaches the bastion as a lone surrogate
    # (surrogateescape), which neither index driver can encode.  It used to fail the
    # recording worker's batch and every replay of it: one file name stopped recording for
    # every session on the node, even when the operation itself was denied.
    local = tmp_path / "payload"
    local.write_bytes(b"not utf-8 named\n")
    up = str(srig.files / "up").encode()
    canary = srig.files / "fakessh" / "authorized_keys"
    before = canary.read_bytes()
    batch = tmp_path / "batch"
    batch.write_bytes(b"put " + str(local).encode() + b" " + up + b"/bad\xffname\n")
    denied = tmp_path / "denied-batch"
    denied.write_bytes(b"put " + str(local).encode() + b" " + str(canary).encode() + b"\xff\n")
    for path, ok in ((batch, True), (denied, False)):
        argv = ["sftp", "-F", str(srig.ssh_config), "-b", str(path), f"{srig.sshd.user}@web1"]
        p = subprocess.run(argv, env=srig.agent_env(token), capture_output=True, timeout=120,
                           stdin=subprocess.DEVNULL, start_new_session=True)
        assert (p.returncode == 0) == ok, p.stderr
        if not ok:       # told why, with the byte shown (it once failed to encode, and hung)
            assert b"denied by rule no-ssh-writes" in p.stderr, p.stderr
            assert b"authorized_keys\\xff" in p.stderr, p.stderr
    assert (srig.files / "up").joinpath(os.fsdecode(b"bad\xffname")).read_bytes() == \
        local.read_bytes()
    assert canary.read_bytes() == before
    [row] = transfers(srig, "op = 'put' AND path = ?", f"{srig.files}/up/bad\\xffname")
    assert (row["result"], row["rule"]) == ("ok", "upload-writes")
    [row] = transfers(srig, "op = 'put' AND path = ?", f"{canary}\\xff")
    assert (row["result"], row["rule"]) == ("denied", "no-ssh-writes")
    r = sftp(srig, token, f"put {local} {srig.files}/up/after-it\n")    # recorded as ever
    assert r.returncode == 0, r.err + srig.log()[-3000:]
    assert transfers(srig, "op = 'put' AND path = ?", f"{srig.files}/up/after-it")
    assert "recording failed" not in srig.log()
