"""An agent (or a target) that tries to stop recording for the whole node.

The recording worker applies every session's operations in one batch; one it cannot store
failed the batch, and the replay after the failure sent the same operation again, so every
session on the node was refused until a restart (docs/RELIABILITY.md).  Each test here sends
one payload through the real bastion -- the OpenSSH client where it can send it, an asyncssh
client as the attacker where it cannot -- aimed at a canary in the test's temp dir, then
checks that the same rig still records a normal command (``ssh ... echo ok`` succeeds and its
command row is indexed) and that the bastion log has no "recording failed".

Both backends: the module's rig runs once on the SQLite index and once on a private
PostgreSQL store (several holes were PostgreSQL's own: a btree index entry's size limit).
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import os
import random
import re
import shutil
import string
import subprocess
import threading
import time
from pathlib import Path

import asyncssh
import pytest
from asyncssh.packet import UInt32

from tests.e2e.harness import POLICY_RULES, BastionRig, PtyAgent, pg_store_env, wait_rows
from tests.e2e.test_asyncssh_client import _TokenClient
from tests.e2e.test_sftp import sftp

_n = itertools.count()


def _policy(files: Path) -> str:
    return f"""
[[grants]]
who = ["role:agents"]
targets = ["web1"]
channels = ["sftp"]

[[rules]]
name = "files-reads"
action = "allow"
reads = ["{files}/**"]

[[rules]]
name = "fake-target-commands"
action = "allow"
commands = ["exit-signal-odd", "exit-huge"]

[[rules]]
name = "files-writes"
action = "allow"
writes = ["{files}/up/**"]
"""


class FakeTarget:
    """A hostile target: an asyncssh server (its own thread and loop) that lets any key in
    and ends each exec as its command says -- with an exit signal whose name holds a NUL and
    5,000 more characters, or with the largest exit status."""

    def __init__(self) -> None:
        self.key = asyncssh.generate_private_key("ssh-ed25519")
        self.host_key_line = self.key.export_public_key().decode().strip()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server = None
        self.port = 0

    def start(self) -> "FakeTarget":
        self.thread.start()
        self.server = asyncio.run_coroutine_threadsafe(self._listen(), self.loop).result(30)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _listen(self):
        return await asyncssh.listen("127.0.0.1", 0, server_host_keys=[self.key],
                                     server_factory=_AnyKey, process_factory=self._run,
                                     encoding=None)

    @staticmethod
    def _run(process) -> None:
        process.stdout.write(b"target-output\n")
        if process.command == "exit-signal-odd":
            process.exit_with_signal("SEGV\x00" + "X" * 5000, True, "core\x00dumped", "en")
        else:             # asyncssh's exit() sends the status & 0xff: the request itself
            process.channel._send_request(b"exit-status", UInt32(HUGE))
            process.channel.close()

    def stop(self) -> None:
        async def close():
            self.server.close()
            await self.server.wait_closed()
        asyncio.run_coroutine_threadsafe(close(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)


class _AnyKey(asyncssh.SSHServer):
    def begin_auth(self, username):
        return True

    def public_key_auth_supported(self):
        return True

    def validate_public_key(self, username, key):
        return True


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def arig(request, tmp_path_factory, issuer):
    root = Path(os.path.realpath(tmp_path_factory.mktemp(f"abuse-{request.param}")))
    store_env = pg_store_env(f"abuse_{root.name}") if request.param == "postgresql" else {}
    r = BastionRig(root, issuer, store_env=store_env).setup()
    fake = FakeTarget().start()
    request.addfinalizer(fake.stop)
    r.extra_targets = f"""
[[targets]]
name = "webfake"
host = "127.0.0.1"
port = {fake.port}
user = "{r.sshd.user}"
key = "web1"
host_key = "{fake.host_key_line}"
"""
    r.files = root / "files"
    (r.files / "up").mkdir(parents=True)
    # opaque lines run (as `opaque = "allow"` or an approval lets them): one with a NUL must
    # still not reach the target's sshd
    rules = POLICY_RULES.replace('opaque = "review"', 'opaque = "allow"')
    assert rules != POLICY_RULES
    r.write_policy(r.policy_text(rules + _policy(r.files)))
    r.start()
    yield r
    r.close()


def _words(n: int, seed: int) -> str:
    """``n`` random letters: text a compressor cannot shrink much (an index entry's size)."""
    rnd = random.Random(seed)
    return "".join(rnd.choice(string.ascii_letters) for _ in range(n))


def recording_goes_on(rig: BastionRig, token: str) -> None:
    """The node still records: a normal command runs and its row is indexed, and the worker
    never failed."""
    mark = f"still-recorded-{next(_n)}"
    after = rig.ssh(token, f"echo {mark}")
    assert after.returncode == 0, after.err + rig.log()[-3000:]
    assert after.out == f"{mark}\n"
    assert wait_rows(rig, "SELECT id FROM commands WHERE line = ?", f"echo {mark}"), \
        rig.log()[-3000:]
    assert "recording failed" not in rig.log(), rig.log()[-3000:]
    # and what agents and targets sent reached the log inert (no NUL, no escape sequence)
    assert not re.findall(r"[\x00-\x08\x0b-\x1f\x7f]", rig.log()), \
        re.findall(r".{0,80}[\x00-\x08\x0b-\x1f\x7f].{0,20}", rig.log())[:3]


# -- sftp: paths longer than an index entry may be ------------------------------------------

def test_a_put_into_a_deep_directory_is_recorded_and_recording_goes_on(arig, token, tmp_path):
    # The target's realpath of a deep directory (each step a short `cd`, so the real OpenSSH
    # sftp sends it) is ~3,600 bytes: the transfers row's path.  PostgreSQL's btree index on
    # transfers.path refuses an entry over 2,704 bytes, which failed the batch and its replay.
    deep = arig.files / "up"
    steps = [_words(200, seed) for seed in range(18)]
    for step in steps:
        deep = deep / step
    deep.mkdir(parents=True)
    local = tmp_path / "payload"
    local.write_bytes(b"deep payload\n")
    batch = f"cd {arig.files}/up\n" + "".join(f"cd {s}\n" for s in steps) + f"put {local} landed\n"
    r = sftp(arig, token, batch)
    assert r.returncode == 0, r.err + arig.log()[-3000:]
    assert (deep / "landed").read_bytes() == b"deep payload\n"
    recording_goes_on(arig, token)
    full = str(deep / "landed")
    [row] = wait_rows(arig, "SELECT path, result, sha256 FROM transfers WHERE op = 'put' AND "
                        "path LIKE ?", f"{arig.files}/up/{steps[0]}%")
    digest = hashlib.sha256(full.encode()).hexdigest()
    assert (row["result"], row["sha256"]) == ("ok", hashlib.sha256(b"deep payload\n").hexdigest())
    assert row["path"] == f"{full[:2048]}...[{len(full) - 2048} more bytes; sha256 {digest}]"


# -- session requests OpenSSH would not send: an asyncssh client as the attacker ------------

async def _inner(rig: BastionRig, token: str, fn, *, target: str = "web1"):
    """``await fn(inner)`` with ``inner`` an asyncssh connection to ``target`` through the
    bastion, as the agent."""
    trusted = asyncssh.import_known_hosts(rig.known_hosts.read_text())
    async with asyncssh.connect("127.0.0.1", rig.port, username="agent",
                                client_factory=lambda: _TokenClient(token), known_hosts=trusted,
                                preferred_auth="keyboard-interactive", client_keys=None,
                                agent_path=None, config=None) as outer:
        async with asyncssh.connect(target, 22, tunnel=outer, username=rig.sshd.user,
                                    known_hosts=trusted, client_keys=None, agent_path=None,
                                    config=None) as inner:
            return await asyncio.wait_for(fn(inner), 60)


def attack(rig: BastionRig, token: str, fn, **kwargs):
    return asyncio.run(_inner(rig, token, fn, **kwargs))


HUGE = 2**32 - 1           # the largest uint32 an SSH request carries


def test_odd_terminal_requests_are_recorded_and_recording_goes_on(arig, token):
    # pty-req: a term type with control characters and 20,000 letters, the largest sizes;
    # then window-changes to 0x0 and the largest, a signal with a NUL, the longest break
    term = "xterm\x1b]0;title\x07" + _words(20_000, 1)

    async def fn(inner):
        proc = await inner.create_process(term_type=term, term_size=(HUGE, HUGE, HUGE, HUGE),
                                          encoding=None)
        proc.change_terminal_size(0, 0, 0, 0)
        proc.change_terminal_size(HUGE, HUGE, HUGE, HUGE)
        proc.send_signal("INT\x00" + "X" * 5000)
        proc.send_break(HUGE)
        await asyncio.sleep(1.0)
        proc.stdin.write(b"echo typed-after-odd-requests\r")
        await asyncio.sleep(1.0)
        proc.stdin.write(b"exit\r")
        return await asyncio.wait_for(proc.stdout.read(), 20)

    out = attack(arig, token, fn)
    assert b"typed-after-odd-requests" in out, out
    recording_goes_on(arig, token)
    [row] = wait_rows(arig, "SELECT term, width, height FROM channels WHERE term LIKE 'xterm%'")
    assert row["term"] == term
    assert (row["width"], row["height"]) == (HUGE, HUGE)


def test_odd_environment_requests_are_recorded_and_recording_goes_on(arig, token):
    # env: a NUL in a value, a 25,000-character name and value, 300 variables, and a
    # value that is not UTF-8 (asyncssh leaves those out of the str environment)
    env = {f"BASTION_TEST_{i}": f"v{i}" for i in range(300)}
    env.update({"BASTION_TEST_OK": "nul\x00value",
                "BASTION_TEST_" + "N" * 25_000: _words(25_000, 3),
                b"BASTION_TEST_BYTES": b"\xff\xfe"})
    marker = f"env-probe-{next(_n)}"

    async def fn(inner):
        return await inner.run(f"echo {marker}", env=env, check=False)

    result = attack(arig, token, fn)
    assert result.stdout == f"{marker}\n"
    recording_goes_on(arig, token)
    [row] = wait_rows(arig, "SELECT env FROM channels WHERE command = ?", f"echo {marker}")
    recorded = json.loads(row["env"])
    assert recorded["BASTION_TEST_OK"] == "nul\x00value"       # JSON: written \\u0000
    assert recorded["BASTION_TEST_299"] == "v299"
    assert recorded["BASTION_TEST_" + "N" * 25_000] == _words(25_000, 3)
    # at most 64 Ki characters of it are kept, the rest counted
    env = {f"BASTION_TEST_BIG{i}": _words(20_000, 10 + i) for i in range(10)}
    marker = f"env-probe-{next(_n)}"
    assert attack(arig, token, fn).stdout == f"{marker}\n"
    [row] = wait_rows(arig, "SELECT env FROM channels WHERE command = ?", f"echo {marker}")
    recorded = json.loads(row["env"])
    assert [k for k in recorded if k.startswith("BASTION_TEST_BIG")] == \
        [f"BASTION_TEST_BIG{i}" for i in range(3)]
    assert recorded["(not recorded)"] == ("7 more variable(s), 140119 characters: over the "
                                          "65536-character limit")


def test_odd_subsystems_and_forwarding_requests_are_refused_and_recording_goes_on(arig, token):
    async def fn(inner):
        refused = []
        for name in ("sftp\x00x", "s" * 20_000, "netconf"):
            try:
                await inner.create_session(asyncssh.SSHClientSession, subsystem=name)
            except asyncssh.ChannelOpenError as exc:
                refused.append(exc)
        return refused

    assert len(attack(arig, token, fn)) == 3
    # X11 and agent forwarding requests from the real client: refused, the command runs
    r = arig.ssh(token, "echo forwarding-asked", args=("-X", "-A"),
                 env={"DISPLAY": "127.0.0.1:99", "SSH_AUTH_SOCK": str(arig.root / "no-agent")})
    assert r.returncode == 0 and r.out == "forwarding-asked\n", r.err
    recording_goes_on(arig, token)


def test_a_nul_for_the_target_ends_no_other_agents_session(arig, token):
    # Upstream connections are shared by every agent's sessions to a target, and sshd reads a
    # terminal type, an environment variable, a signal name and a command as C strings: a
    # NUL in one made it drop the whole connection, ending another agent's running command.
    # The bastion now refuses such a pty request, drops such a variable and signal, and
    # refuses such a command before it reaches the target.
    victim = arig.ssh_popen(token, "sleep 3; echo victim-survived")
    assert wait_rows(arig, "SELECT id FROM commands WHERE line = 'sleep 3; echo victim-survived'")
    pty_refused = []

    async def fn(inner):
        try:
            await inner.create_process(term_type="xterm\x00evil", encoding=None)
        except asyncssh.ChannelOpenError as exc:
            pty_refused.append(exc.reason)
        env = await inner.run("env", env={"BASTION_TEST_OK": "a\x00b"}, check=False)
        nul = await inner.run("echo a\x00b", check=False)
        proc = await inner.create_process("sleep 1; echo slept", encoding=None)
        proc.send_signal("TE\x00RM")
        await proc.wait_closed()
        return env, nul, await proc.stdout.read()

    env, nul, slept = attack(arig, token, fn)
    assert pty_refused and "PTY" in pty_refused[0]
    assert env.exit_status == 0 and "BASTION_TEST_OK" not in env.stdout
    assert nul.exit_status == 255 and "NUL byte" in nul.stderr, (nul.stdout, nul.stderr)
    assert slept == b"slept\n"
    out, err = victim.communicate(timeout=60)
    assert victim.returncode == 0 and out == b"victim-survived\n", (out, err)
    recording_goes_on(arig, token)


# -- an interactive shell: lines with odd bytes ------------------------------------------------

def test_shell_lines_with_odd_bytes_are_recorded_and_recording_goes_on(arig, token):
    # typed on the real client's raw terminal: a NUL, bytes that are not UTF-8, escape
    # sequences, a line past the line editor's 64 KiB
    agent = PtyAgent(arig, token)
    try:
        agent.wait_ready()
        for line in (b"echo nul\x00typed", b"echo bad-\xff\xfe-utf8",
                     b"echo esc-\x1b]0;title\x07-\x1b[2J-seq", b"echo " + b"L" * 70_000):
            agent.send(line + b"\r")
            agent.send(b"\x03")               # whatever became of it, a fresh line
        agent.send(b"echo shell-$((20+3))-ok\r")
        agent.read_until(b"shell-23-ok", timeout=30)
        agent.send(b"exit\r")
        agent.wait()
    finally:
        agent.close()
    recording_goes_on(arig, token)
    assert wait_rows(arig, "SELECT line FROM commands WHERE line = 'echo shell-$((20+3))-ok'")



# -- a hostile target: what it answers is recorded too ---------------------------------------

def test_a_target_ending_with_odd_exit_results_is_recorded_and_recording_goes_on(arig, token):
    async def fn(inner):
        return (await inner.run("exit-signal-odd", check=False),
                await inner.run("exit-huge", check=False))

    signalled, huge = attack(arig, token, fn, target="webfake")
    assert signalled.stdout == "target-output\n" and signalled.exit_signal is not None
    assert huge.stdout == "target-output\n"
    assert huge.exit_status == HUGE & 0xFF          # asyncssh sends an agent the low byte
    recording_goes_on(arig, token)
    rows = {r["command"]: r for r in wait_rows(
        arig, "SELECT command, exit_status, exit_signal FROM channels WHERE command IN "
              "('exit-signal-odd', 'exit-huge') AND status = 'closed'", want=2)}
    assert rows["exit-signal-odd"]["exit_signal"] == "SEGV\u2400" + "X" * 5000
    assert rows["exit-huge"]["exit_status"] == HUGE & 0xFF     # asyncssh keeps the low byte


# -- file transfers: odd names through sftp and rsync -----------------------------------------

def test_odd_sftp_operations_are_recorded_and_recording_goes_on(arig, token):
    # what OpenSSH's sftp cannot send: a NUL in a name, bytes that are not UTF-8, a symlink
    # whose text is 100,000 bytes, a 50,000-byte path, the largest size in a setstat
    up = str(arig.files / "up").encode()
    (arig.files / "up" / "victim.txt").write_text("unchanged\n")
    errors = []

    async def fn(inner):
        async with inner.start_sftp_client() as sftp:
            # (the NUL last: the target's sftp-server ends its session on it)
            for call in (lambda: sftp.mkdir(up + b"/bad-\xff\xfe"),
                         lambda: sftp.symlink(b"/" + b"t" * 100_000, up + b"/link"),
                         lambda: sftp.remove(up + b"/" + b"p" * 50_000),
                         lambda: sftp.setstat(up + b"/victim.txt",
                                              asyncssh.SFTPAttrs(size=2**64 - 1)),
                         lambda: sftp.realpath(b"/" + b"r/" * 20_000),
                         lambda: sftp.rename(up + b"/victim.txt", up + b"/a\x00b")):
                try:
                    await call()
                except (asyncssh.SFTPError, OSError) as exc:
                    errors.append(exc)
        return errors

    attack(arig, token, fn)
    assert (arig.files / "up" / "victim.txt").read_text() == "unchanged\n"
    recording_goes_on(arig, token)
    rows = {r["op"]: r for r in wait_rows(arig, "SELECT op, result FROM transfers WHERE op <> "
                                            "'put' AND path LIKE ?", f"{arig.files}/up/%",
                                      want=5)}
    assert set(rows) == {"mkdir", "symlink", "remove", "setstat", "rename"}, rows
    # the NUL made the target's sftp-server end the session with the rename unanswered: it
    # is recorded all the same (it was allowed and sent; it used to have no row)
    assert rows["rename"]["result"] == ("error: the target closed the sftp session; whether "
                                        "it ran is unknown")
    [link] = wait_rows(arig, "SELECT path2 FROM transfers WHERE op = 'symlink'")
    assert link["path2"] == "/" + "t" * 2047 + f"...[{100_001 - 2048} more bytes; sha256 " \
        + hashlib.sha256(b"/" + b"t" * 100_000).hexdigest() + "]"


@pytest.mark.skipif(shutil.which("rsync") is None, reason="rsync is not installed")
def test_rsync_with_long_paths_is_refused_recorded_and_recording_goes_on(arig, token, tmp_path):
    local = tmp_path / "pushed"
    local.write_text("rsync payload\n")

    def push(dest: str) -> subprocess.CompletedProcess:
        argv = ["rsync", "-e", f"ssh -F {arig.ssh_config}", str(local),
                f"{arig.sshd.user}@web1:{dest}"]
        return subprocess.run(argv, env=arig.agent_env(token), capture_output=True,
                              timeout=120, stdin=subprocess.DEVNULL, start_new_session=True)

    # ~3,000 bytes the target resolves (a tree the agent may not write): its row's path is cut
    far = f"{arig.files}/elsewhere/" + "/".join(_words(200, 100 + i) for i in range(14))
    p = push(far)
    assert p.returncode != 0 and b"denied by rule <default>" in p.stderr, p.stderr
    recording_goes_on(arig, token)
    [row] = wait_rows(arig, "SELECT path, result FROM transfers WHERE op = 'rsync-put' AND path "
                        "LIKE ?", f"{arig.files}/elsewhere/%")
    assert row["result"] == "denied"
    assert row["path"].startswith(far[:2048] + f"...[{len(far) - 2048} more bytes; sha256 ")
    # over the target's PATH_MAX: its sftp-server cannot resolve it (it was an internal error)
    p = push(f"{arig.files}/elsewhere/" + "/".join(_words(200, i) for i in range(25)))
    assert p.returncode != 0 and b"could not resolve its paths" in p.stderr, p.stderr
    assert b"internal error" not in p.stderr
    recording_goes_on(arig, token)
    assert "internal error" not in arig.log()
