"""The benchmark rig: three paths to the same loopback sshd, set up once per run.

(a) ``direct``  : ssh straight to the target sshd (public key);
(b) ``jump``    : ssh through a second OpenSSH sshd acting as a plain jump host
                  (``ProxyJump``, ``AllowTcpForwarding yes``), public key on both hops;
(c) ``bastion`` : ssh -J through ``bastion serve`` (OIDC token over keyboard-interactive,
                  answered by ``bastion-askpass``), which terminates the inner connection
                  and relays to the same target sshd with its vault key.

Everything is reused from :class:`tests.e2e.harness.BastionRig` (dev issuer, vault,
policy, the ``bastion serve`` subprocess); this subclass adds the client key and
jump host the OpenSSH paths need, starts the bastion at log level ``info`` (the e2e
rig uses ``debug``, which no production bastion runs with), and writes one
ssh_config per mode (cipher, key exchange) so the choice reaches *every* hop
(``-c`` on the command line does not reach a ``-J`` hop).

Not covered here: measuring anything (see the sibling modules).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bastion.demo.sshd import LocalSshd, free_port, wait_for_port
from bench.procs import read_stat
from tests.e2e.harness import BastionRig

PATHS = ("direct", "jump", "bastion")
# ssh_config variants, each applied to every hop: client defaults; AES-128-GCM; and the
# classic curve25519 key exchange (OpenSSH 9.x defaults to sntrup761x25519, which the
# bastion's asyncssh does not offer, so (c) negotiates curve25519-sha256 by default).
CONFIG_MODES = {"default": "", "aes128-gcm": "Ciphers aes128-gcm@openssh.com",
                "curve25519": "KexAlgorithms curve25519-sha256"}
CIPHER_MODES = ("default", "aes128-gcm")
TOKEN_BYTES = 2500          # Entra access tokens are 1.5-3 KB: three askpass rounds
# A jump host and target that take 200 agents connecting at once: the LocalSshd
# default (MaxStartups 100:30:200) drops unauthenticated connections at random past 100.
MAX_STARTUPS = "1000:30:1000"
# bash sources ~/.bashrc for commands run by sshd unless SHLVL says it is nested; this
# machine's root ~/.bashrc runs `pyenv init` (several processes and a lock that 50
# concurrent commands queue on for seconds), which would drown what the paths cost.
# Applies to the one target sshd, so to all three paths alike.
TARGET_SSHD_EXTRA = "SetEnv SHLVL=1\n"


def relax_sshd(sshd: LocalSshd) -> None:
    """Raise sshd's MaxStartups in its config file and have it re-read it (SIGHUP re-execs it)."""
    config = sshd.workdir / "sshd_config"
    text = config.read_text()
    new = re.sub(r"(?m)^MaxStartups .*$", f"MaxStartups {MAX_STARTUPS}", text)
    if new == text:
        return
    config.write_text(new)
    log = sshd.workdir / "sshd.log"
    before = log.read_text(errors="replace").count("Received SIGHUP")
    sshd.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while log.read_text(errors="replace").count("Received SIGHUP") == before:
        if time.monotonic() > deadline:
            raise RuntimeError(f"sshd on port {sshd.port} did not restart on SIGHUP")
        time.sleep(0.05)
    # sshd closes and re-opens its listener while it re-execs itself
    time.sleep(0.2)
    wait_for_port(sshd.port, timeout=10, proc=sshd.proc)


@dataclass
class BenchRig(BastionRig):
    """A :class:`BastionRig` plus a client key, a plain OpenSSH jump host and per-mode ssh configs."""

    jump: LocalSshd | None = None
    token: str = ""
    log_level: str = "info"
    client_name: str = "bench-agent"      # the agent's client at the issuer: one per rig
    client_key: Path = field(init=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.client_key = self.root / "bench_id_ed25519"
        self.openssh_known_hosts = self.root / "openssh_known_hosts"

    # -- set-up ------------------------------------------------------------------
    def setup(self) -> "BenchRig":
        self.root.mkdir(parents=True, exist_ok=True)
        self.canary_dir.mkdir(exist_ok=True)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "bench-client",
                        "-f", str(self.client_key)], check=True)
        client_pub = (self.root / "bench_id_ed25519.pub").read_text().strip()
        vault_pub = self.cli("keys", "generate", "web1").out.strip().splitlines()[-1]
        self.sshd = LocalSshd(self.root / "sshd", [vault_pub, client_pub],
                              extra_config=TARGET_SSHD_EXTRA).start()
        self.jump = LocalSshd(self.root / "jump", [client_pub], allow_tcp_forwarding=True).start()
        for sshd in (self.sshd, self.jump):
            relax_sshd(sshd)
        self.openssh_known_hosts.write_text(
            f"[127.0.0.1]:{self.sshd.port} {self.sshd.host_key_line}\n"
            f"[127.0.0.1]:{self.jump.port} {self.jump.host_key_line}\n")
        self.write_policy()
        self.port = free_port()
        return self

    def start(self) -> "BenchRig":
        try:
            super().start()
        except AssertionError as exc:       # the harness speaks pytest; the bench does not
            raise RuntimeError(str(exc)) from exc
        for mode, option in CONFIG_MODES.items():
            self.config_path(mode).write_text(self.render_bench_config(option))
        if not self.token:       # a restart (bench/scalerig.py) keeps the agent and its token
            self.token = self.issuer.mint(
                client=self.issuer.add_client(self.client_name, roles=["agents"]),
                pad_to=TOKEN_BYTES, lifetime=6 * 3600)
        return self

    def close(self) -> None:
        super().close()
        if self.jump:
            self.jump.stop()

    def config_path(self, mode: str) -> Path:
        return self.root / f"ssh_config.{mode}"

    def render_bench_config(self, option: str = "") -> str:
        """One ssh_config for all three paths; ``option`` (if any) applies to every hop."""
        head = f"Host *\n  {option}\n\n" if option else ""
        common = ("  GlobalKnownHostsFile /dev/null\n"
                  "  StrictHostKeyChecking yes\n"
                  "  IdentityAgent none\n"
                  "  ConnectTimeout 30\n"
                  "  ServerAliveInterval 0\n"
                  "  LogLevel ERROR\n")
        openssh = (f"  User {self.sshd.user}\n"
                   f"  IdentityFile {self.client_key}\n  IdentitiesOnly yes\n"
                   "  PreferredAuthentications publickey\n"
                   f"  UserKnownHostsFile {self.openssh_known_hosts}\n" + common)
        bastion = (f"  UserKnownHostsFile {self.known_hosts}\n  IdentityFile none\n" + common)
        return (head +
                f"Host direct\n  HostName 127.0.0.1\n  Port {self.sshd.port}\n" + openssh +
                f"\nHost jumphost\n  HostName 127.0.0.1\n  Port {self.jump.port}\n" + openssh +
                f"\nHost jumped\n  HostName 127.0.0.1\n  Port {self.sshd.port}\n"
                "  ProxyJump jumphost\n" + openssh +
                f"\nHost bastion\n  HostName 127.0.0.1\n  Port {self.port}\n  User agent\n"
                "  PreferredAuthentications keyboard-interactive\n"
                "  PubkeyAuthentication no\n  PasswordAuthentication no\n" + bastion +
                f"\nHost web1\n  User {self.sshd.user}\n  ProxyJump bastion\n"
                "  PubkeyAuthentication no\n  PasswordAuthentication no\n"
                "  KbdInteractiveAuthentication no\n" + bastion)

    # -- the clients -------------------------------------------------------------
    def client_env(self) -> dict:
        """Environment for every ssh client of every path (the token only matters to (c))."""
        env = self.agent_env(self.token)
        env.setdefault("TERM", "xterm")
        return env

    def argv(self, path: str, command: str | None = None, *, mode: str = "default",
             args: tuple = ()) -> list[str]:
        host = {"direct": "direct", "jump": "jumped", "bastion": "web1"}[path]
        argv = ["ssh", "-F", str(self.config_path(mode)), *args, host]
        if command is not None:
            argv.append(command)
        return argv

    def run(self, path: str, command: str, *, mode: str = "default", timeout: float = 60,
            input: bytes = b"") -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(path, command, mode=mode), env=self.client_env(),
                              input=input, capture_output=True, timeout=timeout,
                              start_new_session=True)

    def check_paths(self) -> dict[str, str | None]:
        """``{path: None}`` when ``echo`` works through it, else the reason it does not."""
        out = {}
        for path in PATHS:
            try:
                p = self.run(path, "echo bench-ok", timeout=60)
            except subprocess.TimeoutExpired:
                out[path] = "timed out running `echo bench-ok`"
                continue
            if p.returncode == 0 and p.stdout.strip() == b"bench-ok":
                out[path] = None
            else:
                err = p.stderr.decode(errors="replace").strip().splitlines()
                out[path] = f"exit {p.returncode}: {err[-1] if err else 'no message'}"
        return out

    # -- the bastion process -----------------------------------------------------
    def bastion_usage(self) -> dict:
        """RSS now and at peak (MB) and CPU seconds so far of the ``bastion serve`` process."""
        return proc_usage(self.proc.pid) if self.proc else {}


def proc_usage(pid: int) -> dict:
    """RSS/HWM in MB and user+system CPU seconds of a process and its descendants, from /proc.

    For ``bastion serve`` these are its recording worker (and with ``--workers N`` the N
    workers and their recording workers): the bastion's footprint is all of them.
    """
    usage = _one_proc_usage(pid)
    for child in descendants(pid):
        extra = _one_proc_usage(child)
        for key, value in extra.items():
            if value is not None and usage.get(key) is not None:
                usage[key] += value
    return usage


def _children(pid: int) -> list[int]:
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    kids: list[int] = []
    for tid in tasks:
        try:
            kids += [int(c) for c in Path(f"/proc/{pid}/task/{tid}/children").read_text().split()]
        except (OSError, ValueError):
            pass
    return kids


def descendants(pid: int) -> list[int]:
    out: list[int] = []
    todo = _children(pid)
    while todo:
        child = todo.pop()
        out.append(child)
        todo += _children(child)
    return out


def raise_fd_limit() -> None:
    """Soft RLIMIT_NOFILE up to the hard limit (at most 65536): hundreds of agents are
    thousands of pipes and sockets in the bench process and the bastion (which inherits it)."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))


def _one_proc_usage(pid: int) -> dict:
    out: dict = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0].lower()] = int(line.split()[1]) / 1024
    except (OSError, IndexError, ValueError):
        pass
    stat = read_stat(pid)
    if stat is not None:
        out["cpu_s"] = stat[2]
    return {"rss_mb": out.get("vmrss"), "hwm_mb": out.get("vmhwm"), "cpu_s": out.get("cpu_s")}


def make_rig() -> tuple[BenchRig, object, Path]:
    """Start the dev issuer and the rig in a fresh temp dir; the caller closes both, removes the dir."""
    from bastion.identity.devissuer import DevIssuer
    tmp = Path(tempfile.mkdtemp(prefix="bastion-bench-"))
    issuer = None
    rig = None
    try:
        issuer = DevIssuer(tmp / "issuer").start()
        rig = BenchRig(tmp / "rig", issuer)
        rig.setup().start()
    except BaseException:
        if rig is not None:
            rig.close()
        if issuer is not None:
            issuer.stop()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return rig, issuer, tmp


def close_rig(rig: BenchRig, issuer, tmp: Path, servers: dict) -> None:
    """Undo make_rig and the extra ``bastion serve`` processes started beside it (``servers``:
    name -> (Popen, ...)): SIGTERM to all, then wait (SIGKILL after 20 s)."""
    for proc, *_ in servers.values():
        proc.send_signal(signal.SIGTERM)
    for proc, *_ in servers.values():
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    rig.close()
    issuer.stop()
    shutil.rmtree(tmp, ignore_errors=True)
