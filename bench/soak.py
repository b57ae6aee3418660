"""``python -m bench.soak``: many agents, kill -9 and a full disk; nothing an agent saw goes unrecorded.

    python -m bench.soak                      # 10 minutes, 50 agents, kill -9 every 2 min, a disk-full minute
    python -m bench.soak --quick              # 8 agents, 22 s, one kill, a 4 s disk-full period (the CI test)
    python -m bench.soak --minutes 3 --agents 20 --kill-every 60 --disk-full-at 90 --disk-full-for 30

Starts on 127.0.0.1 only (:mod:`bench.rig`): the dev issuer, a target sshd and ``bastion
serve`` with its data dir on a tmpfs of its own (so "disk full" is a real ENOSPC of that
file system, as in tests/reliability/test_recording_faults.py).  Then N agents, each a
loop of real OpenSSH ``ssh`` exec commands through the bastion (``ProxyJump``, the token
answered by ``bastion-askpass``) from its own loopback address (127.0.0.X, so the
per-source pre-auth cap applies per agent as in production).  Most agents keep one
ControlMaster connection and open one exec channel per command; every eighth opens a
fresh connection (a full login) for every command.  Each command prints numbered lines
tagged with its own nonce (``seq -f 'a3k17 %g'``): a short burst, a burst with a pause
(so channels are open when the bastion dies), or a longer stream.  Agents tolerate every
refusal: a failed command or login is retried after a random 0.5-2 s.

Meanwhile the driver ``kill -9``s the bastion and its recording worker together every
``--kill-every`` seconds and restarts ``bastion serve`` at once on the same data dir and
port, and fills the tmpfs to the last byte for ``--disk-full-for`` seconds.

At the end (the bastion stopped with SIGTERM) every command's received stdout is compared
with the stdout stream of its channel's recording (found by the exact command text, which
holds the nonce): the recording must start with the same bytes, and what the agent saw
beyond it ("lost") must be 0, except for channels open at a ``kill -9``, where
docs/RECORDINGS.md allows the masker's undecided hold-back (<= 1,024 visible bytes + 3 of a
cut UTF-8 character).  A command that exited 0 must have exactly its expected output and a
sealed ``closed`` row.  Then ``bastion verify`` must pass.  Prints a summary and one JSON
line (``SOAK_JSON {...}``); exit status 0 when everything held, 1 when something did not,
2 when the rig could not start.

Every eighth agent (i % 8 == 3) runs ``ssh -tt`` shells instead (mediated by the
bastion), 3-12 commands each, one after the prompt of the other.  How the received bytes
are judged: bench/soak_verdict.py.

Not covered: stderr (the bastion's own messages go there and are not part of the
recording; the commands print nothing else on it), the agents' input stream.  No figure
here is compared with a time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bastion.demo.sshd import wait_for_port
from bastion.errors import BastionError
from bench.rig import BenchRig
from bench.soak_verdict import KILL_BOUND, analyse, output_lines, summary, verdict
from tests.e2e.harness import BASTION

COMMAND_TIMEOUT_S = 120
MASTER_TIMEOUT_S = 60
FRESH_EVERY = 8             # agent i with i % FRESH_EVERY == FRESH_EVERY - 1 logs in per command
SHELL_AGENT = 3             # agent i with i % FRESH_EVERY == SHELL_AGENT runs ssh -tt shells
PROMPT = b"$ "
RECOVERY_WAIT_S = 120       # past the end, for the first success after the last fault


@dataclass
class Command:
    agent: int
    nonce: str
    text: str
    expected: bytes
    via: str                       # "master", "fresh" or "shell"
    shell: str = ""                # shells: which shell session (its commands share a channel)
    open_until: float = 0.0        # shells: when the shell (its channel) ended
    t0: float = 0.0
    t1: float = 0.0
    rc: int | None = None
    out: bytes = b""
    err: bytes = b""


@dataclass
class Soak:
    minutes: float = 10.0
    agents: int = 50
    kill_every: float = 120.0
    first_kill_at: float = 0.0     # 0: at kill_every
    disk_full_at: float = 270.0
    disk_full_for: float = 60.0
    tmpfs_mb: int = 512
    seed: int = 16
    json_out: Path | None = None
    keep: bool = False             # keep the work dir (and a copy of the data dir) for a post-mortem
    commands: list[Command] = field(default_factory=list)
    logins_failed: int = 0
    kills: list[dict[str, Any]] = field(default_factory=list)
    disk: dict[str, Any] = field(default_factory=dict)
    t_start: float = 0.0
    stop: bool = False
    succeeded: asyncio.Event = field(default_factory=asyncio.Event)   # set by each success

    # -- the commands ----------------------------------------------------------------
    def make_command(self, rng: random.Random, agent: int, k: int, via: str) -> Command:
        nonce = f"a{agent}k{k}"
        roll = rng.random()
        eol = "\r\n" if via == "shell" else "\n"          # a pty's ONLCR

        def lines(tag: str, n: int) -> bytes:
            return b"".join(f"{nonce} {tag}{i}{eol}".encode() for i in range(1, n + 1))
        if roll < 0.65:
            n = rng.randint(5, 200)
            text = f"seq -f '{nonce} %g' 1 {n}"
            expected = lines("", n)
        elif roll < 0.95:
            n, m = rng.randint(20, 300), rng.randint(20, 300)
            pause = rng.choice(("0.3", "1", "2", "4"))
            text = (f"sh -c \"seq -f '{nonce} a%g' 1 {n}; sleep {pause}; "
                    f"seq -f '{nonce} b%g' 1 {m}\"")
            expected = lines("a", n) + lines("b", m)
        else:
            n = rng.randint(2000, 15000)
            text = f"seq -f '{nonce} %g' 1 {n}"
            expected = lines("", n)
        return Command(agent, nonce, text, expected, via)

    # -- one agent -------------------------------------------------------------------
    async def agent(self, rig: "SoakRig", i: int, ctl: Path) -> None:
        rng = random.Random(self.seed * 1000 + i)
        config = rig.agent_config(i)
        env = rig.client_env()
        fresh = i % FRESH_EVERY == FRESH_EVERY - 1
        if i % FRESH_EVERY == SHELL_AGENT:
            await self.shell_agent(rng, i, config, env)
            return
        sock = str(ctl / f"m{i}")
        master: asyncio.subprocess.Process | None = None
        k = 0
        await asyncio.sleep(rng.random() * 3)           # not all 50 logins in one instant
        try:
            while not self.stop:
                if not fresh and (master is None or master.returncode is not None):
                    master = await self.open_master(config, env, sock)
                    if master is None:
                        self.logins_failed += 1
                        await asyncio.sleep(rng.uniform(0.5, 2))
                        continue
                k += 1
                cmd = self.make_command(rng, i, k, "fresh" if fresh else "master")
                args = ["-F", str(config)]
                if not fresh:
                    args += ["-S", sock, "-o", "ControlMaster=no"]
                await self.run(cmd, ["ssh", *args, "web1", cmd.text], env)
                if cmd.rc != 0:
                    await asyncio.sleep(rng.uniform(0.5, 2))
        finally:
            if master is not None and master.returncode is None:
                master.kill()
                await master.wait()

    async def shell_agent(self, rng: random.Random, i: int, config: Path, env: dict[str, str]) -> None:
        """``ssh -tt`` shells (mediated by the bastion), 3-12 commands each, one after the other."""
        k = n = 0
        await asyncio.sleep(rng.random() * 3)
        while not self.stop:
            n += 1
            p = await asyncio.create_subprocess_exec(
                "ssh", "-F", str(config), "-tt", "web1", env=env, stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
                start_new_session=True)
            assert p.stdin is not None
            term = Terminal(p)
            sent: list[Command] = []
            try:
                if not await term.until(PROMPT, 0, MASTER_TIMEOUT_S):
                    self.logins_failed += 1
                else:
                    for _ in range(rng.randint(3, 12)):
                        if self.stop:
                            break
                        k += 1
                        cmd = self.make_command(rng, i, k, "shell")
                        cmd.shell = f"a{i}s{n}"
                        cmd.t0 = time.monotonic()
                        self.commands.append(cmd)
                        sent.append(cmd)
                        mark = len(term.buf)
                        p.stdin.write(cmd.text.encode() + b"\r")
                        last = cmd.expected[cmd.expected.rindex(b"\n", 0, -1) + 1:]
                        got = await term.until(last, mark, COMMAND_TIMEOUT_S)
                        got = got and await term.until(PROMPT, got, COMMAND_TIMEOUT_S)
                        cmd.t1 = time.monotonic()
                        cmd.rc = 0 if got else 255
                        if got:
                            self.succeeded.set()
                        if not got:
                            break
                    if p.returncode is None and not term.eof:
                        p.stdin.write(b"exit\r")
                        await term.until(b"\0never", len(term.buf), 30)
            except (BrokenPipeError, ConnectionResetError):
                pass
            finally:
                try:
                    await asyncio.wait_for(p.wait(), 5)
                except asyncio.TimeoutError:
                    p.kill()
                    await p.wait()
                term.close()
            for cmd in sent:              # the command's output lines, as the agent received them
                cmd.open_until = time.monotonic()
                cmd.out = b"".join(re.findall(output_lines(cmd.nonce), term.buf))
                if cmd.rc is None:
                    cmd.t1, cmd.rc = time.monotonic(), 255
                if cmd.rc == 0 and cmd.out != cmd.expected:
                    cmd.rc = 1
            if not sent or sent[-1].rc != 0:
                await asyncio.sleep(rng.uniform(0.5, 2))

    async def open_master(self, config: Path, env: dict[str, str], sock: str
                          ) -> asyncio.subprocess.Process | None:
        if _exists(sock):
            os.unlink(sock)
        master = await asyncio.create_subprocess_exec(
            "ssh", "-F", str(config), "-M", "-S", sock, "-N", "-o", "ControlPersist=no", "web1",
            env=env, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + MASTER_TIMEOUT_S
        while not _exists(sock):
            if master.returncode is not None or time.monotonic() > deadline or self.stop:
                if master.returncode is None:
                    master.kill()
                await master.wait()
                return None
            await asyncio.sleep(0.05)
        return master

    async def run(self, cmd: Command, argv: list[str], env: dict[str, str]) -> None:
        cmd.t0 = time.monotonic()
        p = await asyncio.create_subprocess_exec(
            *argv, env=env, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, start_new_session=True)
        self.commands.append(cmd)
        try:
            cmd.out, cmd.err = await asyncio.wait_for(p.communicate(), COMMAND_TIMEOUT_S)
        except asyncio.TimeoutError:
            p.kill()
            await p.wait()
            cmd.err += b"\nsoak: timed out"
        except BaseException:
            if p.returncode is None:
                p.kill()
            raise
        cmd.rc = p.returncode
        cmd.t1 = time.monotonic()
        if cmd.rc == 0:
            self.succeeded.set()

    # -- the faults ------------------------------------------------------------------
    async def faults(self, rig: "SoakRig", tmpfs: Path | None) -> None:
        duration = self.minutes * 60
        events = []
        t = self.first_kill_at or self.kill_every
        while self.kill_every > 0 and t < duration - 5:
            events.append((t, "kill"))
            t += self.kill_every
        if tmpfs is not None and self.disk_full_for > 0 and self.disk_full_at < duration:
            events += [(self.disk_full_at, "fill"),
                       (min(self.disk_full_at + self.disk_full_for, duration), "free")]
        filler = None
        restarting: asyncio.Task[None] | None = None
        for at, what in sorted(events):
            await asyncio.sleep(max(0.0, self.t_start + at - time.monotonic()))
            now = time.monotonic()
            if what == "kill":
                if restarting is not None:
                    await restarting
                pids, killed = await asyncio.to_thread(rig.kill9)
                log(f"soak: kill -9 at {killed - self.t_start:.0f} s (pids {pids})")
                # restarted as a service manager would, while the other faults go on
                restarting = asyncio.create_task(self.restart(rig, killed, pids))
            elif what == "fill" and tmpfs is not None:
                filler = await asyncio.to_thread(Filler, tmpfs)
                full = time.monotonic()            # from here on not one byte is free
                self.disk.update(t_fill=full, at_s=round(full - self.t_start, 1),
                                 filling_s=round(full - now, 1))
                log(f"soak: data dir file system full at {now - self.t_start:.0f} s")
            elif what == "free" and filler is not None:
                await asyncio.to_thread(filler.free)
                self.disk.update(t_free=time.monotonic())
                log(f"soak: disk freed at {time.monotonic() - self.t_start:.0f} s")
                self.disk["status_ok_s"] = await asyncio.to_thread(rig.until_status_ok)
        await asyncio.sleep(max(0.0, self.t_start + duration - time.monotonic()))
        if restarting is not None:
            await restarting
        # a fault late in the run: go on (bounded) until a command started after it succeeds
        last = max([k["t"] for k in self.kills] + [self.disk.get("t_free", 0.0)])
        deadline = time.monotonic() + RECOVERY_WAIT_S
        while not any(c.t0 >= last and c.rc == 0 and c.out == c.expected for c in self.commands):
            self.succeeded.clear()
            try:
                await asyncio.wait_for(self.succeeded.wait(), deadline - time.monotonic())
            except asyncio.TimeoutError:
                break

    async def restart(self, rig: "SoakRig", t_kill: float, pids: list[int]) -> None:
        failed_starts = await asyncio.to_thread(rig.restart)
        back = time.monotonic() - t_kill
        self.kills.append({"at_s": round(t_kill - self.t_start, 1), "t": t_kill, "pids": pids,
                           "failed_starts": failed_starts, "listening_s": back})
        log(f"soak: bastion listening again {back:.2f} s after the kill "
            f"({failed_starts} failed starts)")

    async def main(self, rig: "SoakRig", tmpfs: Path | None) -> None:
        ctl = Path(tempfile.mkdtemp(prefix="soak-ctl-", dir="/tmp"))
        try:
            self.t_start = time.monotonic()
            agents = [asyncio.create_task(self.agent(rig, i, ctl)) for i in range(self.agents)]
            await self.faults(rig, tmpfs)
            self.stop = True
            log("soak: stopping the agents (each finishes its command)")
            done, pending = await asyncio.wait(agents, timeout=COMMAND_TIMEOUT_S + 30)
            for task in pending:
                task.cancel()
            await asyncio.gather(*agents, return_exceptions=True)
        finally:
            shutil.rmtree(ctl, ignore_errors=True)


class Terminal:
    """What an ``ssh -tt`` process printed so far, read by a task of its own."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.buf = b""
        self.eof = False
        self.more = asyncio.Event()
        self.task = asyncio.create_task(self._read(proc))

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        while chunk := await proc.stdout.read(1 << 16):
            self.buf += chunk
            self.more.set()
        self.eof = True
        self.more.set()

    async def until(self, needle: bytes, start: int, within: float) -> int:
        """The offset just past ``needle`` found at or after ``start``; 0 at EOF or after
        ``within`` seconds."""
        deadline = time.monotonic() + within
        while (at := self.buf.find(needle, start)) < 0:
            left = deadline - time.monotonic()
            if self.eof or left <= 0:
                return 0
            self.more.clear()
            try:
                await asyncio.wait_for(self.more.wait(), left)
            except asyncio.TimeoutError:
                return 0
        return at + len(needle)

    def close(self) -> None:
        self.task.cancel()


class SoakRig(BenchRig):
    """The bench rig, restartable after ``kill -9``, with one ssh_config per agent."""

    def agent_config(self, i: int) -> Path:
        path = self.root / f"ssh_config.agent{i}"
        if not path.exists():
            text = self.render_bench_config("")
            # the bastion hop leaves from this agent's own loopback address
            head = "Host bastion\n  HostName 127.0.0.1\n"
            text = text.replace(head, f"{head}  BindAddress {agent_address(i)}\n")
            assert "BindAddress" in text
            path.write_text(text)
        return path

    def worker_pids(self) -> list[int]:
        assert self.proc is not None
        out = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if (int(stat.rsplit(")", 1)[1].split()[1]) == self.proc.pid
                    and b"bastion.recording.worker" in cmdline):
                out.append(int(entry.name))
        return out

    def kill9(self) -> tuple[list[int], float]:
        """The recording worker (its own process group) and ``bastion serve``, together.

        Returns their pids and the moment both were sent SIGKILL (finding the worker in
        /proc takes a while on a loaded machine: the kill happens after that)."""
        workers = self.worker_pids()
        assert self.proc is not None
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
        os.kill(self.proc.pid, signal.SIGKILL)
        killed = time.monotonic()
        self.proc.wait(30)
        for pid in workers:                 # reaped by init once its parent is gone
            deadline = time.monotonic() + 30
            while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
                try:
                    if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                        break
                except OSError:
                    break
                time.sleep(0.02)
        return [self.proc.pid, *workers], killed

    def restart(self, timeout: float = 180.0) -> int:
        """``bastion serve`` again, same data dir, port, keys and policy (the log appended).

        As a service manager would (``Restart=always``, ``RestartSec=1``): a start that
        fails (``bastion serve`` refuses to start on a data dir it cannot write, e.g.
        while the disk is full) is tried again a second later.  Returns the failed starts.
        """
        failed = 0
        deadline = time.monotonic() + timeout
        while True:
            with open(self.log_path, "ab") as logf:
                self.proc = subprocess.Popen(
                    [BASTION, "serve", "--listen", f"127.0.0.1:{self.port}",
                     "--log-level", self.log_level],
                    env=self.env, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                    start_new_session=True)
            try:
                wait_for_port(self.port, timeout=60, proc=self.proc)
                return failed
            except BastionError as exc:
                failed += 1
                if time.monotonic() > deadline:
                    raise RuntimeError(f"bastion serve did not come back after kill -9: {exc}\n"
                                       f"{self.log()[-2000:]}") from exc
                time.sleep(1)

    def until_status_ok(self, timeout: float = 120.0) -> float | None:
        """Seconds until ``bastion status`` says it records again (exit 0), or None."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if self.cli("status", check=False).returncode == 0:
                return time.monotonic() - t0
            time.sleep(0.5)
        return None


def _exists(path: str) -> bool:
    """A control socket's existence (one stat: too quick to need a thread)."""
    return os.path.exists(path)


def agent_address(i: int) -> str:
    return f"127.0.{10 + i // 250}.{1 + i % 250}"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def mount_tmpfs(mnt: Path, size_mb: int) -> str | None:
    """Mount a tmpfs of ``size_mb`` at ``mnt``; None, or why it could not."""
    mnt.mkdir(parents=True, exist_ok=True)
    why = "mount failed"
    for attempt in range(3):                # (seen once to fail with other test processes
        if attempt:                         #  mounting at the same moment: tried again)
            time.sleep(1.0)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0700",
                            "bastion-soak", str(mnt)], capture_output=True, timeout=30)
        if r.returncode == 0:
            return None
        why = r.stderr.decode(errors="replace").strip() or why
    return why


class Filler:
    """Keeps a file system full: a file grown to the last byte, topped up every 0.1 s.

    Topping up matters: space the bastion frees by itself while the disk is full (its
    reserve, an index checkpoint shrinking the WAL) would otherwise end the "disk full"
    period early.
    """

    def __init__(self, mnt: Path) -> None:
        self.path = mnt / "filler"
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self.done = threading.Event()
        self.written = self.top_up()
        self.thread = threading.Thread(target=self._keep, daemon=True)
        self.thread.start()

    def top_up(self) -> int:
        n = 0
        for size in (1 << 20, 1 << 12, 1):
            block = b"\0" * size
            while True:
                try:
                    n += os.write(self.fd, block)
                except OSError:
                    break
        return n

    def _keep(self) -> None:
        while not self.done.wait(0.1):
            self.written += self.top_up()

    def free(self) -> None:
        self.done.set()
        self.thread.join()
        os.close(self.fd)
        self.path.unlink()


# --------------------------------------------------------------------------- running it

def run_soak(soak: Soak, workdir: Path) -> dict[str, Any]:
    """Set up, run, stop, judge.  ``workdir`` is removed by the caller."""
    from bastion.identity.devissuer import DevIssuer
    mnt = workdir / "tmpfs"
    why = mount_tmpfs(mnt, soak.tmpfs_mb)
    tmpfs = None if why else mnt
    if why:
        soak.disk["skipped"] = f"not run: cannot mount a tmpfs here ({why})"
    issuer = rig = None
    try:
        issuer = DevIssuer(workdir / "issuer").start()
        rig = SoakRig(workdir / "rig", issuer)
        if tmpfs is not None:
            rig.data_dir = tmpfs / "data"
        rig.setup().start()
        asyncio.run(soak.main(rig, tmpfs))
        rig.stop()                                  # SIGTERM: sessions closed, worker done
        r = analyse(soak, rig)
        v = rig.cli("verify", check=False)
        said = (v.out.strip() or v.err.strip()).splitlines()
        r["verify"] = {"rc": v.returncode, "out": said[-1] if said else ""}
        r.update(agents=soak.agents, minutes=soak.minutes, kill_bound=KILL_BOUND)
        r["failures"] = verdict(r)
        if soak.keep:
            shutil.copytree(rig.data_dir, workdir / "data-kept", symlinks=True)
            r["kept"] = str(workdir)
        return r
    finally:
        if rig is not None:
            rig.close()
        if issuer is not None:
            issuer.stop()
        if tmpfs is not None:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=30)


def quick() -> Soak:
    """What ``--quick`` and tests/reliability/test_soak_quick.py run: 8 agents for 22 s, one
    kill at 5 s, the disk full from 12 s to 16 s."""
    return Soak(minutes=22 / 60, agents=8, kill_every=60, first_kill_at=5, disk_full_at=12,
                disk_full_for=4, tmpfs_mb=64)


def parse_args(argv: list[str] | None) -> Soak:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak", description=__doc__.split("\n\n")[0],
        epilog="Example: python -m bench.soak --minutes 3 --agents 20 --kill-every 60 "
               "--disk-full-at 90 --disk-full-for 30")
    parser.add_argument("--quick", action="store_true",
                        help="8 agents, 22 s, one kill at 5 s, disk full at 12 s for 4 s")
    parser.add_argument("--minutes", type=float)
    parser.add_argument("--agents", type=int)
    parser.add_argument("--kill-every", type=float, help="seconds between kill -9s (0: none)")
    parser.add_argument("--first-kill-at", type=float, help="seconds (default: --kill-every)")
    parser.add_argument("--disk-full-at", type=float, help="seconds after the start")
    parser.add_argument("--disk-full-for", type=float, help="seconds (0: no disk-full period)")
    parser.add_argument("--tmpfs-mb", type=int, help="size of the data dir's tmpfs")
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument("--json-out", type=Path, help="also write the result here")
    parser.add_argument("--keep", action="store_true",
                        help="keep the work dir (logs, configs, a copy of the data dir)")
    a = parser.parse_args(argv)
    soak = quick() if a.quick else Soak()
    for name in ("minutes", "agents", "kill_every", "first_kill_at", "disk_full_at",
                 "disk_full_for", "tmpfs_mb"):
        if getattr(a, name) is not None:
            setattr(soak, name, getattr(a, name))
    soak.seed = a.seed
    soak.json_out = a.json_out
    soak.keep = a.keep
    return soak


def main(argv: list[str] | None = None) -> int:
    soak = parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)      # 50 agents' pipes
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
    workdir = Path(tempfile.mkdtemp(prefix="bastion-soak-"))
    try:
        try:
            r = run_soak(soak, workdir)
        except (RuntimeError, OSError) as exc:
            log(f"soak: the rig could not start or run: {exc}")
            return 2
    finally:
        if not soak.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print(summary(r))
    r["problems"] = r["problems"][:50]
    line = json.dumps(r, sort_keys=True)
    print("SOAK_JSON " + line, flush=True)
    if soak.json_out:
        soak.json_out.write_text(line + "\n")
    return 0 if not r["failures"] else 1


if __name__ == "__main__":
    sys.exit(main())
