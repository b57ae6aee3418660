"""Connection set-up latency: wall time of ``ssh HOST true`` per path, interleaved.

Each run is a fresh ssh client process (no ControlMaster): (a) one handshake to
the target, (b) a handshake to the jump host plus one to the target through it,
(c) a handshake to the bastion (three keyboard-interactive rounds for a 2.5 KB
token, each answered by a fresh ``bastion-askpass`` process) plus the inner
handshake the bastion terminates itself; the bastion's upstream connection comes
from its pool.  The cost of one ``bastion-askpass`` process is measured too, since
it is a client-side share of (c).

Two modes: the client defaults (OpenSSH 9.x negotiates sntrup761x25519-sha512 with
an OpenSSH sshd, which costs this machine tens of ms per handshake, but
curve25519-sha256 with the bastion, whose asyncssh does not offer sntrup761), and
every hop on curve25519-sha256, so the key exchange is the same on all paths.

Not covered: DNS, real networks (loopback only).
"""

from __future__ import annotations

import subprocess
import time

from bench.rig import PATHS, BenchRig
from bench.stats import ratio, rotated, summary
from tests.e2e.harness import ASKPASS

FULL_RUNS = 30
QUICK_RUNS = 3
# client defaults first (the headline figure), then every hop on curve25519-sha256
MODES = ("default", "curve25519")


def time_setup(rig: BenchRig, path: str, mode: str = "default") -> float:
    """Seconds for one fresh ``ssh HOST true`` through ``path``; RuntimeError if it fails."""
    t0 = time.perf_counter()
    p = subprocess.run(rig.argv(path, "true", mode=mode), env=rig.client_env(),
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=60,
                       start_new_session=True)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        err = p.stderr.decode(errors="replace").strip().splitlines()
        raise RuntimeError(f"exit {p.returncode}: {err[-1] if err else 'no message'}")
    return dt


def askpass_cost(rig: BenchRig, runs: int) -> dict:
    """Wall time of one ``bastion-askpass`` round (a Python process start), in ms."""
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([ASKPASS, "OIDC token: "], env=rig.client_env(), capture_output=True,
                       timeout=30)
        times.append(time.perf_counter() - t0)
    return summary(times, scale=1000, digits=1)


def run(rig: BenchRig, *, quick: bool = False, runs: int | None = None,
        paths: tuple[str, ...] = PATHS, modes: tuple[str, ...] = MODES, log=print) -> dict:
    runs = runs or (QUICK_RUNS if quick else FULL_RUNS)
    keys = [(mode, path) for mode in modes for path in paths]
    times: dict[tuple, list[float]] = {k: [] for k in keys}
    failures: dict[tuple, str] = {}
    for i in range(runs):
        for key in rotated(keys, i):
            if key in failures:
                continue
            try:
                times[key].append(time_setup(rig, key[1], key[0]))
            except (RuntimeError, subprocess.SubprocessError, OSError) as exc:
                failures[key] = str(exc)[:300]
                log(f"  setup {key[0]}/{key[1]}: n/a ({failures[key]})")
        if (i + 1) % 10 == 0:
            log(f"  setup {i + 1}/{runs} runs")
    out: dict = {"runs": runs, "unit": "ms", "modes": {}}
    for mode in modes:
        entry: dict = {"paths": {}}
        for path in paths:
            key = (mode, path)
            entry["paths"][path] = ({"na": failures[key]} if key in failures
                                    else summary(times[key], scale=1000, digits=1))
        b, c = entry["paths"].get("jump", {}), entry["paths"].get("bastion", {})
        entry["ratio_c_b_median"] = ratio(c.get("median"), b.get("median"))
        entry["ratio_c_b_p95"] = ratio(c.get("p95"), b.get("p95"))
        out["modes"][mode] = entry
    out.update(out["modes"][modes[0]])          # the client defaults, at the top level
    out["askpass_round_ms"] = askpass_cost(rig, min(runs, 10))
    return out
