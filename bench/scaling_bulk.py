"""The bulk sections of ``python -m bench.scaling``: every bulk figure of issue 20's item 5, in one run.

* :func:`measure`: the same transfers as ``python -m bench --only bulk`` (bench/bulk.py:
  ``zero``, ``text``, ``upload``; client default ciphers and AES-128-GCM on every hop; the
  streaming rate) through ProxyJump (the SQLite rig's OpenSSH jump host), the bastion on the
  SQLite index and on PostgreSQL (the scaling rigs, recording and masking on, ``--workers
  1``: one session is one worker's), and the relay alone (:class:`RelayPath`: bench.overhead's
  ``bare`` bastion, neither recording nor masking), taking turns in a rotating order so drift
  hits every path alike.  Per row: the median MB/s of each path, c/b of each backend
  (bastion / ProxyJump) and of the relay, and the median CPU per MB of each bastion (its
  process and workers) and of the PostgreSQL server (sizing: what a recorded MB costs each).
* :func:`parallel`: P downloads at once (bench.workers_bulk's rounds: zeros, default
  ciphers, the aggregate rate from the first launch to the last byte) through ProxyJump and
  each backend's bastion running ``--workers 2``.
* :func:`aims`: each of the item's aims beside what this run measured (pure).

Not covered: ``direct`` (bench --only bulk); CPU per process inside the bastion (serve and
its worker apart: bench.overhead, bench.ab_bulk).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from bench import bulk
from bench.rig import CIPHER_MODES, BenchRig
from bench.scalerig import ScaleRig, tree_cpu
from bench.stats import median, ratio, rotated

AIMS = {"default": 0.70, "aes128-gcm": 0.55}
FULL_PATH_AIM = 0.62          # bench.overhead's full path (zeros, text; default ciphers)
RELAY_AIM = 1.0               # the relay alone, the same transfers
PARALLEL_AIM = 0.6            # P sessions at once, --workers 2, against ProxyJump's aggregate
PARALLEL_WORKERS = 2
RELAY = "relay"               # the path name of the relay alone


@dataclass
class RelayPath:
    """The relay alone: bench.overhead's ``bare`` bastion (``python -m bench.overhead --serve
    bare``: the rig's policy, keys and target, a recorder that writes nothing, no masking) on
    its own port, reached by the rig's client as the bastion is.  Start with :meth:`start`,
    stop with :meth:`stop`."""

    rig: BenchRig
    root: Path
    proc: Any = None
    port: int = 0

    def start(self) -> "RelayPath":
        from bench.overhead import _start_variant
        self.root.mkdir(parents=True, exist_ok=True)
        self.proc, self.port, known_hosts = _start_variant("bare", self.rig, self.root)
        with self.rig.known_hosts.open("a") as fh:        # the host key on its own port
            fh.write(known_hosts)
        for mode in CIPHER_MODES:
            config = self.rig.config_path(mode).read_text()
            self.config_path(mode).write_text(
                config.replace(f"Port {self.rig.port}\n", f"Port {self.port}\n"))
        return self

    def config_path(self, mode: str) -> Path:
        return self.root / f"ssh_config.{mode}"

    def argv(self, path: str, command: str | None = None, *, mode: str = "default",
             args: tuple = ()) -> list[str]:
        assert path == "bastion", path
        return ["ssh", "-F", str(self.config_path(mode)), *args, "web1",
                *(() if command is None else (command,))]

    def client_env(self) -> dict:
        return self.rig.client_env()

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def measure(rigs: dict[str, ScaleRig], size: int, reps: int,
            log: Callable[[str], None] = print, relay: RelayPath | None = None,
            pg_pid: int | None = None) -> dict:
    paths = [("jump", rigs["sqlite"], "jump")] + [(f"bastion/{label}", rig, "bastion")
                                                  for label, rig in rigs.items()]
    if relay is not None:
        paths.append((RELAY, relay, "bastion"))
    cpu = {name: _counters(rig, pg_pid if rig.store_env else None)
           for name, rig, _ in paths[1:] if isinstance(rig, ScaleRig)}
    if relay is not None:
        cpu[RELAY] = lambda: {"bastion": tree_cpu(relay.proc.pid)}
    samples, failures = bulk.transfers(paths, size, reps, log, cpu)   # type: ignore[arg-type]
    rates = {key: [r["mb_s"] for r in runs] for key, runs in samples.items()}
    cpus = {key: [r["cpu_ms_per_mb"] for r in runs if "cpu_ms_per_mb" in r]
            for key, runs in samples.items()}
    return summarize(rates, failures, [name for name, _, _ in paths], size=size, reps=reps,
                     cpu=cpus)


def _counters(rig: ScaleRig, pg_pid: int | None) -> Callable[[], dict]:
    """CPU seconds so far of the rig's bastion (``bastion serve`` and its workers) and, for
    a rig on PostgreSQL, of the database server (all its backends)."""
    def read() -> dict:
        out = {"bastion": tree_cpu(rig.proc.pid if rig.proc else None)}
        if pg_pid is not None:
            out["postgresql"] = tree_cpu(pg_pid)
        return out
    return read


def summarize(samples: dict[str, list[float]], failures: dict[str, str], names: list[str], *,
              size: int, reps: int, cpu: dict[str, list[dict]] | None = None) -> dict:
    rows = []
    for kind in bulk.KINDS:
        for mode in CIPHER_MODES:
            row: dict = {"kind": kind, "cipher": mode, "aim_c_b": AIMS.get(mode)}
            for name in names:
                runs = samples.get(f"{kind}/{mode}/{name}")
                row[name] = ({"mb_s": median(runs), "runs": runs} if runs else
                             {"na": failures.get(f"{kind}/{mode}/{name}", "not run")})
                readings = (cpu or {}).get(f"{kind}/{mode}/{name}")
                if runs and readings:
                    row[name]["cpu_ms_per_mb"] = {
                        label: _round(median([c[label] for c in readings
                                              if c.get(label) is not None]))
                        for label in readings[0]}
            jump = row["jump"].get("mb_s")
            for name in names[1:]:
                key = "relay/jump" if name == RELAY else f"c_b/{name.split('/', 1)[1]}"
                row[key] = ratio(row[name].get("mb_s"), jump)
            rows.append(row)
    return {"size_bytes": size, "reps": reps, "paths": names, "failed": len(failures),
            "unit": "MB/s (10^6 bytes), streaming rate, median", "rows": rows}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def parallel(rigs: dict[str, ScaleRig], sessions: int, size: int, rounds: int,
             log: Callable[[str], None] = print) -> dict:
    """``sessions`` downloads of ``size`` bytes of zeros at once, ``rounds`` times per path:
    ProxyJump, then each backend's bastion restarted with ``--workers 2`` if it runs another
    count.  A path whose round fails is not tried again (``na``: why)."""
    from bench.workers_bulk import _round
    for rig in rigs.values():
        if rig.workers != PARALLEL_WORKERS:
            rig.restart(PARALLEL_WORKERS)
    paths = [("jump", rigs["sqlite"], "jump")] + [(f"bastion/{label}", rig, "bastion")
                                                  for label, rig in rigs.items()]
    runs: dict[str, list[float]] = {name: [] for name, _, _ in paths}
    failures: dict[str, str] = {}
    for i in range(rounds):
        for name, rig, path in rotated(paths, i):
            if name in failures:
                continue
            try:
                runs[name].append(round(_round(rig, path, sessions, size), 2))
            except (bulk.TransferFailed, OSError, subprocess.SubprocessError) as exc:
                failures[name] = str(exc)[:300]
                log(f"  parallel {name}: n/a ({failures[name]})")
                continue
            log(f"  parallel {name} round {i + 1}/{rounds}: {runs[name][-1]} MB/s")
    out: dict = {"sessions": sessions, "size_bytes": size, "rounds": rounds,
                 "workers": PARALLEL_WORKERS, "failed": len(failures), "aim": PARALLEL_AIM,
                 "unit": "MB/s (10^6 bytes), all sessions' bytes over first launch to last "
                         "byte, median",
                 "paths": {name: ({"mb_s": median(r), "runs": r} if r else
                                  {"na": failures.get(name, "not run")})
                           for name, r in runs.items()}}
    jump = out["paths"]["jump"].get("mb_s")
    for name in runs:
        if name != "jump":
            out[f"x_jump/{name.split('/', 1)[1]}"] = ratio(out["paths"][name].get("mb_s"), jump)
    return out


def aims(bulk_section: dict | None, parallel_section: dict | None) -> list[dict]:
    """Each aim of the item beside what was measured: ``{"aim", "target", "measured": {label:
    value}, "met"}`` (met: every value measured reaches the target; None when none was)."""
    out: list[dict] = []

    def add(name: str, target: float, measured: dict[str, float | None]) -> None:
        values = [v for v in measured.values() if v is not None]
        out.append({"aim": name, "target": target, "measured": measured,
                    "met": (all(v >= target for v in values) if values else None)})

    rows = (bulk_section or {}).get("rows") or []
    backends = [n.split("/", 1)[1] for n in (bulk_section or {}).get("paths", [])
                if n.startswith("bastion/")]
    for backend in backends:
        for mode, target in AIMS.items():
            add(f"bulk c/b, {backend}, {mode} ciphers", target,
                {r["kind"]: r.get(f"c_b/{backend}") for r in rows if r["cipher"] == mode})
        add(f"full path / ProxyJump, {backend}", FULL_PATH_AIM,
            {r["kind"]: r.get(f"c_b/{backend}") for r in rows
             if r["cipher"] == "default" and r["kind"] in ("zero", "text")})
    if any("relay/jump" in r for r in rows):
        add("relay alone / ProxyJump", RELAY_AIM,
            {r["kind"]: r.get("relay/jump") for r in rows
             if r["cipher"] == "default" and r["kind"] in ("zero", "text")})
    par = parallel_section or {}
    if "paths" in par:
        add(f"{par['sessions']} parallel sessions, --workers {par['workers']} / ProxyJump",
            PARALLEL_AIM, {k.split("/", 1)[1]: v for k, v in par.items()
                           if k.startswith("x_jump/")})
    return out
