"""What recording and masking cost on the data path: the same bastion with them on and off.

``bastion serve`` cannot run a session unrecorded, by design, so this benchmark
builds the bastion's services in this process three ways and serves each on its
own loopback port:

* ``full``: the real recorder and masking (what ``bastion serve`` runs);
* ``no-mask``: the real recorder, maskers that pass bytes through;
* ``bare``: neither (a recorder that writes nothing): the relay alone.

The agent is the real OpenSSH client (``ssh -J`` with bastion-askpass), the target
the rig's sshd; transfers alternate between the variants.  Prints MB/s and the
ratios the issues aim at (recording: full/bare >= 0.85; masking: full/no-mask >= 0.8).

    python -m bench.overhead [--quick] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bastion.identity.devissuer import DevIssuer
from bastion.services import Services
from bastion.ssh.masking import ChannelMasks
from bastion.ssh.server import start_listener
from tests.e2e.harness import BastionRig


class _NullChannel:
    id = 0
    def __init__(self): self.closed = False
    async def opened(self, timeout=10.0): return None
    def output(self, data, *, stderr=False): pass
    def input(self, data): pass
    def resize(self, w, h): pass
    def marker(self, label): pass
    def command(self, line, decision, *, approver=None): return 0
    def command_result(self, cid, status): pass
    def command_approver(self, cid, approver): pass
    def close(self, **kw): self.closed = True
    def over_high_water(self): return False
    async def drain(self): return None


class _NullSession:
    id = 0
    def open_channel(self, kind, **kw): return _NullChannel()
    def close(self, **kw): pass


class NullRecorder:
    """Records nothing.  For this benchmark only; never wired into ``bastion serve``."""
    def start_session(self, **kw): return _NullSession()
    def refused(self, **kw): pass
    def close(self): pass


class _PassMasks(ChannelMasks):
    def feed(self, stream, data): return data
    def flush(self): return []


async def _serve(variant: str, rig: BastionRig, root: Path):
    os.environ["BASTION_VAULT_PASSPHRASE"] = rig.env["BASTION_VAULT_PASSPHRASE"]
    services = Services.build(rig.policy_path, root / variant, rig.keys_dir)
    if variant == "bare":
        services.recorder.close()
        services.recorder = NullRecorder()
    if variant in ("bare", "no-mask"):
        services.channel_masks = lambda ctx, kind: _PassMasks(())
    acceptor = await start_listener(services, "127.0.0.1", 0)
    return services, acceptor


async def _transfer(rig: BastionRig, port: int, token: str, command: str) -> float:
    config = rig.root / f"ssh_config.{port}"
    if not config.exists():
        config.write_text(rig.render_ssh_config().replace(f"Port {rig.port}", f"Port {port}"))
    env = rig.agent_env(token)
    proc = await asyncio.create_subprocess_exec(
        "ssh", "-F", str(config), f"{rig.sshd.user}@web1", command, env=env,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, start_new_session=True)
    t0 = time.perf_counter()
    total = 0
    while True:
        chunk = await proc.stdout.read(1 << 20)
        if not chunk:
            break
        total += len(chunk)
    await proc.wait()
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError((await proc.stderr.read()).decode(errors="replace")[-300:])
    return total / dt / 1e6


async def main_async(quick: bool) -> dict:
    size = 20_000_000 if quick else 200_000_000
    reps = 1 if quick else 3
    tmp = Path(tempfile.mkdtemp(prefix="bastion-overhead-"))
    issuer = DevIssuer(tmp / "issuer").start()
    rig = BastionRig(tmp / "rig", issuer).setup()
    token = issuer.mint(client=issuer.add_client("overhead-agent", roles=["agents"]))
    text = tmp / "text.log"
    line = b"2026-11-28T12:00:00Z INFO web1 nginx[1234]: GET /api/v1/items?id=42 200 0.003s\n"
    text.write_bytes(line * (size // len(line)))
    commands = {"zero": f"head -c {size} /dev/zero", "text": f"cat {text}"}
    variants = ("full", "no-mask", "bare")
    servers = {}
    try:
        for v in variants:
            servers[v] = await _serve(v, rig, tmp)
        rig.port = servers["full"][1].get_port()
        rig.known_hosts.write_text("".join(services.hostkeys.known_hosts_lines()   # one CA each
                                           for services, _ in servers.values()))
        results: dict = {k: {v: [] for v in variants} for k in commands}
        for _ in range(reps):
            for kind, command in commands.items():
                for v in variants:
                    port = servers[v][1].get_port()
                    results[kind][v].append(await _transfer(rig, port, token, command))
        out = {}
        for kind in commands:
            med = {v: statistics.median(results[kind][v]) for v in variants}
            out[kind] = {"mb_per_s": med,
                         "recording_ratio_no_mask_over_bare": med["no-mask"] / med["bare"],
                         "masking_ratio_full_over_no_mask": med["full"] / med["no-mask"],
                         "full_over_bare": med["full"] / med["bare"]}
        return out
    finally:
        for services, acceptor in servers.values():
            acceptor.close()
            await services.close()
        rig.sshd.stop()
        issuer.stop()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    out = asyncio.run(main_async(args.quick))
    for kind, r in out.items():
        m = r["mb_per_s"]
        print(f"{kind}: full {m['full']:.1f} MB/s, no-mask {m['no-mask']:.1f}, bare {m['bare']:.1f}; "
              f"recording cost ratio {r['recording_ratio_no_mask_over_bare']:.2f} (aim >= 0.85), "
              f"masking ratio {r['masking_ratio_full_over_no_mask']:.2f} (aim >= 0.8)")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
