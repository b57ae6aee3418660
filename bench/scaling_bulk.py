"""The bulk section of ``python -m bench.scaling``: ProxyJump and the bastion on each backend, in one run.

The same transfers as ``python -m bench --only bulk`` (bench/bulk.py: ``zero``, ``text``,
``upload``; client default ciphers and AES-128-GCM on every hop; the streaming rate) through
ProxyJump (the SQLite rig's OpenSSH jump host) and the bastion on the SQLite index and on
PostgreSQL (the scaling rigs, recording and masking on, ``--workers 1``: one session is one
worker's), taking turns in a rotating order so drift hits every path alike.  Per row: the
median MB/s of each path and c/b of each backend (bastion / ProxyJump, the issue's aims:
0.70 with default ciphers, 0.55 with AES-GCM).  Not covered: ``direct`` (bench --only bulk).
"""

from __future__ import annotations

from typing import Callable

from bench import bulk
from bench.rig import CIPHER_MODES
from bench.scalerig import ScaleRig
from bench.stats import median, ratio

AIMS = {"default": 0.70, "aes128-gcm": 0.55}


def measure(rigs: dict[str, ScaleRig], size: int, reps: int,
            log: Callable[[str], None] = print) -> dict:
    paths = [("jump", rigs["sqlite"], "jump")] + [(f"bastion/{label}", rig, "bastion")
                                                  for label, rig in rigs.items()]
    samples, failures = bulk.transfers(paths, size, reps, log)   # type: ignore[arg-type]
    rates = {key: [r["mb_s"] for r in runs] for key, runs in samples.items()}
    return summarize(rates, failures, [name for name, _, _ in paths], size=size, reps=reps)


def summarize(samples: dict[str, list[float]], failures: dict[str, str], names: list[str], *,
              size: int, reps: int) -> dict:
    rows = []
    for kind in bulk.KINDS:
        for mode in CIPHER_MODES:
            row: dict = {"kind": kind, "cipher": mode, "aim_c_b": AIMS.get(mode)}
            for name in names:
                runs = samples.get(f"{kind}/{mode}/{name}")
                row[name] = ({"mb_s": median(runs), "runs": runs} if runs else
                             {"na": failures.get(f"{kind}/{mode}/{name}", "not run")})
            jump = row["jump"].get("mb_s")
            for name in names[1:]:
                row[f"c_b/{name.split('/', 1)[1]}"] = ratio(row[name].get("mb_s"), jump)
            rows.append(row)
    return {"size_bytes": size, "reps": reps, "paths": names, "failed": len(failures),
            "unit": "MB/s (10^6 bytes), streaming rate, median", "rows": rows}
