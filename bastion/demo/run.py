"""``bastion demo``: every piece on loopback, then a short scripted agent.

Starts the dev issuer (https on 127.0.0.1), registers an agent client with the
role ``agents``, generates the vault key ``demo`` and a real OpenSSH ``sshd`` on
127.0.0.1 that trusts it, writes ``demo/policy.toml`` from the example policy,
and runs the bastion in this process.  Then it gets a token through msal (client
credentials against the dev issuer, like ``bastion token``), prints what an agent
pastes, and runs the real ``ssh`` client for an allowed, a denied and a held
command.  Everything lives in the demo directory; the vault passphrase is random
and kept in ``demo/vault-passphrase`` (0600).
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

from rich.console import Console
from rich.text import Text

from bastion.demo.policy import demo_policy
from bastion.demo.sshd import LocalSshd
from bastion.errors import BastionError
from bastion.proto.sanitize import sanitize
from bastion.vault import atomic_write

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
        self.known_hosts = self.root / "known_hosts"
        self.ssh_config = self.root / "ssh_config"
        self.scratch = self.root / "scratch"


def _askpass_path() -> str:
    here = Path(sys.executable).parent / "bastion-askpass"
    return str(here) if here.exists() else (shutil.which("bastion-askpass") or "bastion-askpass")


def prepare(paths: DemoPaths, issuer) -> tuple[LocalSshd, object]:
    """Vault key, sshd, agent client and policy; returns (sshd, agent client)."""
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
    paths.policy.write_text(demo_policy(
        issuer=issuer.issuer, tenant=issuer.tenant_id, ca_bundle=str(issuer.ca_path),
        sshd_port=sshd.port, user=sshd.user, host_key=sshd.host_key_line))
    (paths.scratch / "canary.txt").write_text("the denied command would have deleted this\n")
    return sshd, client


def ssh_config_text(paths: DemoPaths, port: int, user: str) -> str:
    """What `bastion ssh-config` prints for this bastion and the demo target."""
    from bastion.ssh.agentconfig import render_ssh_config
    return render_ssh_config(f"127.0.0.1:{port}", [("demo", user)],
                             known_hosts=str(paths.known_hosts))


def agent_env(paths: DemoPaths) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SSH_", "BASTION_TOKEN"))}
    env.update(SSH_ASKPASS=_askpass_path(), SSH_ASKPASS_REQUIRE="force",
               BASTION_TOKEN_FILE=str(paths.token))
    env.pop("DISPLAY", None)
    return env


async def run_agent(paths: DemoPaths, user: str) -> list[tuple[str, int]]:
    """The scripted agent: an allowed, a denied and a held command, with the real ssh client."""
    steps = [
        ("allowed", "uname -sr; echo \"hello from $(hostname)\""),
        ("denied", f"ls {paths.scratch}; rm -rf {paths.scratch}"),
        ("held for review", "systemctl restart nginx"),
    ]
    results = []
    for label, command in steps:
        console.print(f"\n[bold]agent[/] ({label}) $ ssh -F {paths.ssh_config} {user}@demo "
                      f"[cyan]{command!r}[/]", soft_wrap=True)
        proc = await asyncio.create_subprocess_exec(
            "ssh", "-F", str(paths.ssh_config), f"{user}@demo", command,
            env=agent_env(paths), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, start_new_session=True)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        for data, style in ((out, "green"), (err, "red")):
            for line in data.decode(errors="replace").splitlines():
                console.print(Text("  │ ", style=style) + Text(sanitize(line)), soft_wrap=True)
        console.print(f"  [dim]exit status {proc.returncode}[/]")
        results.append((label, proc.returncode))
    return results


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
        sshd, client = prepare(paths, issuer)
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
        expected = {"allowed": 0, "denied": 126, "held for review": 125}
        ok = all(expected[label] == code for label, code in results)
        if not (paths.scratch / "canary.txt").exists():
            ok = False
        console.print()
        if not ok:
            console.print("[bold red]the demo did not behave as expected; see the output above[/]")
            return 1
        console.print("[bold green]demo ok:[/] allowed ran, denied never reached the host, "
                      "review was held.")
        if once:
            return 0
        console.print("The bastion keeps running: try your own commands. Ctrl-C stops it.")
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
