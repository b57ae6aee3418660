"""``bastion demo``: every piece on loopback, then a short scripted agent.

Starts the dev issuer (https on 127.0.0.1), registers an agent client with the
role ``agents``, generates the vault key ``demo`` and a real OpenSSH ``sshd`` on
127.0.0.1 that trusts it, writes ``demo/policy.toml`` from the example policy,
and runs the bastion in this process.  Then it gets a token through msal (client
credentials against the dev issuer, like ``bastion token``), prints what an agent
pastes, and plays the three roles with the real tools: the agent (the real ``ssh``
client: an allowed, a denied and two held commands), the approver (``bastion
approvals approve/deny`` with an approver token: one held command approved, one
denied) and the reviewer (``bastion sessions list``).  It prints the lines a person
pastes into other terminals to take each role.  Everything lives in the demo
directory; the vault passphrase is random and kept in ``demo/vault-passphrase`` (0600).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.text import Text

from bastion.demo.policy import demo_policy
from bastion.demo.sshd import LocalSshd
from bastion.errors import BastionError
from bastion.proto.sanitize import sanitize
from bastion.vault.files import atomic_write

console = Console(highlight=False)


@dataclass
class DemoPaths:
    root: Path

    def __post_init__(self) -> None:
        self.root = self.root.resolve()
        self.issuer = self.root / "issuer"
        self.keys = self.root / "keys"
        self.data = self.root / "data"
        self.sshd = self.root / "sshd"
        self.policy = self.root / "policy.toml"
        self.passphrase = self.root / "vault-passphrase"
        self.token = self.root / "agent.token"
        self.approver_token = self.root / "approver.token"
        self.known_hosts = self.root / "known_hosts"
        self.ssh_config = self.root / "ssh_config"
        self.scratch = self.root / "scratch"


def _askpass_path() -> str:
    here = Path(sys.executable).parent / "bastion-askpass"
    return str(here) if here.exists() else (shutil.which("bastion-askpass") or "bastion-askpass")


def _bastion_exe() -> str:
    here = Path(sys.executable).parent / "bastion"
    return str(here) if here.exists() else (shutil.which("bastion") or "bastion")


def prepare(paths: DemoPaths, issuer: Any) -> tuple[LocalSshd, Any, Any]:
    """Vault key, sshd, agent and approver clients, policy; returns (sshd, agent, approver)."""
    from bastion.secret import Secret
    from bastion.vault import Vault

    for d in (paths.root, paths.scratch):
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not paths.passphrase.exists():
        atomic_write(paths.passphrase, (secrets.token_urlsafe(24) + "\n").encode())
    os.environ["BASTION_VAULT_PASSPHRASE_FILE"] = str(paths.passphrase)
    os.environ.pop("BASTION_VAULT_PASSPHRASE", None)
    vault = Vault(paths.keys, Secret(paths.passphrase.read_text().strip()))
    if not vault.key_path("demo").exists():
        vault.generate("demo")
    sshd = LocalSshd(paths.sshd, [vault.public_line("demo")]).start()
    client = issuer.clients.by_name("demo-agent")
    if client is None or client.secret_file is None:
        client = issuer.add_client("demo-agent", roles=["agents"])
    approver = issuer.clients.by_name("demo-approver")
    if approver is None or approver.secret_file is None:
        approver = issuer.add_client("demo-approver", roles=["approvers"])
    paths.policy.write_text(demo_policy(
        issuer=issuer.issuer, tenant=issuer.tenant_id, ca_bundle=str(issuer.ca_path),
        sshd_port=sshd.port, user=sshd.user, host_key=sshd.host_key_line))
    (paths.scratch / "canary.txt").write_text("the denied command would have deleted this\n")
    return sshd, client, approver


def ssh_config_text(paths: DemoPaths, port: int, user: str) -> str:
    """What `bastion ssh-config` prints for this bastion and the demo target."""
    from bastion.ssh.agentconfig import render_ssh_config
    return render_ssh_config(f"127.0.0.1:{port}", [("demo", user)],
                             known_hosts=str(paths.known_hosts))


def agent_env(paths: DemoPaths) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SSH_", "BASTION_TOKEN"))}
    env.update(SSH_ASKPASS=_askpass_path(), SSH_ASKPASS_REQUIRE="force",
               BASTION_TOKEN_FILE=str(paths.token))
    env.pop("DISPLAY", None)
    return env


def _show(data: bytes, style: str) -> None:
    for line in data.decode(errors="replace").splitlines():
        console.print(Text("  │ ", style=style) + Text(sanitize(line)), soft_wrap=True)


async def _run(argv: list[str], env: dict[str, str] | None = None, *,
               out_style: str = "green") -> int:
    """Run a tool of one of the roles, showing its output line by line as it comes."""
    proc = await asyncio.create_subprocess_exec(
        *argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, start_new_session=True)

    async def pump(stream: asyncio.StreamReader | None, style: str) -> None:
        while stream is not None and (line := await stream.readline()):
            _show(line, style)

    try:
        await asyncio.wait_for(asyncio.gather(pump(proc.stdout, out_style),
                                              pump(proc.stderr, "red"), proc.wait()), 60)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
    return proc.returncode if proc.returncode is not None else -1


def _reviewer_flags(paths: DemoPaths) -> list[str]:
    return ["--data-dir", str(paths.data)]


def _approver_flags(paths: DemoPaths) -> list[str]:
    return ["--data-dir", str(paths.data), "--policy", str(paths.policy),
            "--token-file", str(paths.approver_token)]


async def answer_next(paths: DemoPaths, approve: bool, reason: str) -> int:
    """The approver's part: wait for the next pending request and answer it with the real
    ``bastion approvals`` command; returns its exit status."""
    from bastion.approvals.store import ApprovalStore
    from bastion.recording import schema
    pending = []
    for _ in range(300):                        # the held command appears within a second
        store = ApprovalStore(schema.connect(paths.data, readonly=True))
        try:
            pending = store.list()
        finally:
            store.close()
        if pending:
            break
        await asyncio.sleep(0.1)
    if not pending:
        console.print("  [red]approver: no request arrived[/]")
        return 1
    request = pending[0]
    verb = "approve" if approve else "deny"
    argv = [_bastion_exe(), "approvals", verb, str(request.id), "--reason", reason,
            *_approver_flags(paths)]
    console.print(f"\n[bold]approver[/] $ bastion approvals {verb} {request.id} "
                  f"--reason {reason!r} ...", soft_wrap=True)
    return await _run(argv, out_style="cyan")


async def run_agent(paths: DemoPaths, user: str) -> list[tuple[str, int]]:
    """The scripted agent, with the real ssh client: an allowed and a denied command, then
    two held ones that the approver answers (one approved, one denied)."""
    steps: list[tuple[str, str, bool | None]] = [
        ("allowed", "uname -sr; echo \"hello from $(hostname)\"", None),
        ("denied", f"ls {paths.scratch}; rm -rf {paths.scratch}", None),
        ("held, then approved", "echo uptime | sh", True),
        ("held, then denied", "systemctl restart nginx", False),
    ]
    results = []
    for label, command, approve in steps:
        console.print(f"\n[bold]agent[/] ({label}) $ ssh -F {paths.ssh_config} {user}@demo "
                      f"[cyan]{command!r}[/]", soft_wrap=True)
        agent = asyncio.ensure_future(_run(["ssh", "-F", str(paths.ssh_config), f"{user}@demo",
                                            command], env=agent_env(paths)))
        if approve is not None:
            reason = ("demo: a harmless pipe into sh" if approve
                      else "demo: no restarts during the demo")
            results.append((f"{label} (approver)", await answer_next(paths, approve, reason)))
        code = await agent
        console.print(f"  [dim]exit status {code}[/]")
        results.append((label, code))
    return results


async def run_reviewer(paths: DemoPaths) -> int:
    """The reviewer's part: the sessions the agent just made, from the index."""
    argv = [_bastion_exe(), "sessions", "list", "--limit", "5", *_reviewer_flags(paths)]
    console.print("\n[bold]reviewer[/] $ bastion sessions list --limit 5 "
                  f"--data-dir {paths.data}", soft_wrap=True)
    return await _run(argv, env={**os.environ, "COLUMNS": "100"}, out_style="white")


async def demo_main(paths: DemoPaths, host: str, port: int, once: bool) -> int:
    from bastion.identity.acquire import AcquireOptions, acquire_token
    from bastion.identity.devissuer import DevIssuer
    from bastion.services import Services
    from bastion.ssh.server import start_listener

    issuer = DevIssuer(paths.issuer, port=DevIssuer.saved_port(paths.issuer) or 0)
    try:
        issuer.start()
    except OSError:
        issuer = DevIssuer(paths.issuer, port=0).start()
    sshd = None
    services = None
    acceptor = None
    try:
        sshd, client, approver = prepare(paths, issuer)
        services = Services.build(paths.policy, paths.data, paths.keys)
        acceptor = await start_listener(services, host, port)
        port = acceptor.get_port()
        paths.known_hosts.write_text(services.hostkeys.known_hosts_lines())
        paths.ssh_config.write_text(ssh_config_text(paths, port, sshd.user))
        opts = AcquireOptions(client_id=client.client_id, authority=issuer.authority,
                              client_secret_file=str(client.secret_file),
                              ca_bundle=str(issuer.ca_path), cache="off")
        token = await asyncio.to_thread(acquire_token, opts)
        atomic_write(paths.token, (token.reveal() + "\n").encode(), overwrite=True)
        approver_opts = AcquireOptions(client_id=approver.client_id, authority=issuer.authority,
                                       client_secret_file=str(approver.secret_file),
                                       ca_bundle=str(issuer.ca_path), cache="off")
        approver_token = await asyncio.to_thread(acquire_token, approver_opts)
        atomic_write(paths.approver_token, (approver_token.reveal() + "\n").encode(),
                     overwrite=True)

        console.rule("[bold]bastion demo")
        console.print(f"dev issuer   {issuer.issuer}  (CA {issuer.ca_path})")
        console.print(f"bastion      127.0.0.1:{port}  policy {paths.policy}")
        console.print(f"demo target  {sshd.user}@demo → sshd on 127.0.0.1:{sshd.port}, "
                      "key 'demo' from the vault")
        console.print("\n[bold]An agent token[/] (client credentials through msal; "
                      f"also in {paths.token}):")
        console.print(token.reveal(), soft_wrap=True, markup=False)
        console.print("\n[bold]Paste these to act as the agent:[/]")
        console.print(f"  export SSH_ASKPASS={_askpass_path()} SSH_ASKPASS_REQUIRE=force "
                      f"BASTION_TOKEN_FILE={paths.token}", markup=False, soft_wrap=True)
        console.print(f"  ssh -F {paths.ssh_config} -J bastion {sshd.user}@demo 'uptime'",
                      markup=False, soft_wrap=True)
        console.print(f"  (the config's `bastion` is agent@127.0.0.1:{port}, with the CA line "
                      f"in {paths.known_hosts}; -o options would not reach the -J hop)",
                      markup=False, soft_wrap=True)
        console.print(f"  bastion token --client-id {client.client_id} --authority "
                      f"{issuer.authority} --client-secret-file {client.secret_file} "
                      f"--scope api://bastion/.default --ca-bundle {issuer.ca_path}",
                      markup=False, soft_wrap=True)

        results = await run_agent(paths, sshd.user)
        results.append(("reviewer", await run_reviewer(paths)))
        expected = {"allowed": 0, "denied": 126, "held, then approved (approver)": 0,
                    "held, then approved": 0, "held, then denied (approver)": 0,
                    "held, then denied": 125, "reviewer": 0}
        ok = all(expected[label] == code for label, code in results)
        if not (paths.scratch / "canary.txt").exists():
            ok = False
        console.print()
        if not ok:
            console.print("[bold red]the demo did not behave as expected; see the output above[/]")
            return 1
        console.print("[bold green]demo ok:[/] allowed ran, denied never reached the host, "
                      "the held ones waited for the approver: one approved and run, one "
                      "denied.")
        exe = _bastion_exe()
        console.print("\n[bold]Take a role in another terminal[/] (while the demo runs):")
        console.print("  approver:  " + " ".join([exe, "approvals", "watch",
                                                 *_approver_flags(paths)]),
                      markup=False, soft_wrap=True)
        console.print("  reviewer:  " + " ".join([exe, "sessions", "list",
                                                 *_reviewer_flags(paths)]),
                      markup=False, soft_wrap=True)
        console.print("             " + " ".join([exe, "sessions", "play", "ID",
                                                 *_reviewer_flags(paths)]),
                      markup=False, soft_wrap=True)
        console.print("  (or export BASTION_DATA_DIR=" + str(paths.data) + " BASTION_POLICY="
                      + str(paths.policy) + " and leave out the flags)",
                      markup=False, soft_wrap=True)
        if once:
            return 0
        console.print("The bastion keeps running: try your own commands (a held one waits "
                      "for the approver's terminal). Ctrl-C stops it.")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        import signal
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        return 0
    finally:
        if acceptor is not None:
            acceptor.close()
        if services is not None:
            await services.close()
        if sshd is not None:
            sshd.stop()
        issuer.stop()


def run_demo(directory: Path, listen: str, once: bool) -> int:
    from bastion.ssh.agentconfig import parse_listen
    host, port = parse_listen(listen)
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise BastionError("the demo listens on loopback only", hint="use --listen 127.0.0.1:PORT")
    return asyncio.run(demo_main(DemoPaths(directory), host, port, once))
