"""Secret masker benchmark: MB/s on one core with every built-in detector on.

    .venv/bin/python -m bench.bench_masker            # 64 MB of ordinary output per figure
    .venv/bin/python -m bench.bench_masker --quick    # 8 MB, for CI

Prints figures; never fails on time.  What it measures (MB = 10**6 bytes):

1. *ordinary* output (the corpus in tests/unit/mask_corpus/ordinary: ls, ps,
   git log, dmesg, JSON logs, df, ip addr, ... repeated), fed in chunks of 4, 16
   and 64 KiB (an SSH channel delivers up to 32 KiB per packet), with each
   trigger engine available here (hyperscan, re2, re);
2. *secret-dense* output (the secrets corpus repeated: a secret every ~100
   bytes), 16 KiB chunks -- the slow path, where the precise patterns run;
3. the false-positive rate over the ordinary corpus and the detection rate over
   the secrets corpus;
4. what that means end to end: the fraction of a data path's throughput kept
   when masking is added, for a path of 100 and of 400 MB/s (the masker and the
   data path share one core: kept = 1 / (1 + path / masker)).

The aim (issue 6) is >= 150 MB/s on ordinary output; the ratio to it is printed.
Rates are bytes per second of this process's CPU time (``time.process_time``),
best of 3 runs: the figure one core gives, even on a shared machine.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from bastion.proto.masker import Masker, available_engines, mask_bytes

CORPUS = Path(__file__).resolve().parent.parent / "tests" / "unit" / "mask_corpus"
AIM = 150.0
CHUNKS = (4096, 16384, 65536)


def corpus(kind: str) -> list[Path]:
    return sorted(p for p in (CORPUS / kind).iterdir() if p.suffix != ".secrets")


def build(kind: str, size: int) -> bytes:
    unit = b"".join(p.read_bytes() for p in corpus(kind))
    return (unit * (size // len(unit) + 1))[:size]


def rate(data: bytes, chunk: int, engine: str, runs: int = 3) -> float:
    """Best MB/s (CPU time) of ``runs`` passes of ``data`` through a fresh Masker."""
    pieces = [data[i:i + chunk] for i in range(0, len(data), chunk)]
    best = 0.0
    for _ in range(runs):
        t0 = time.process_time()
        m = Masker(engine=engine)
        out = [m.feed(p) for p in pieces]
        out.append(m.flush())
        dt = max(time.process_time() - t0, 1e-9)
        best = max(best, len(data) / dt / 1e6)
        del out
    return best


def rates_over_corpus() -> tuple[int, int, int, int]:
    """(secrets caught, secrets total, ordinary files changed, ordinary files)."""
    caught = total = 0
    for case in corpus("secrets"):
        out = mask_bytes(case.read_bytes())
        secrets = [s for s in (case.parent / (case.name + ".secrets")).read_bytes().splitlines() if s]
        total += len(secrets)
        caught += sum(s not in out for s in secrets)
    ordinary = corpus("ordinary")
    changed = sum(mask_bytes(p.read_bytes()) != p.read_bytes() for p in ordinary)
    return caught, total, changed, len(ordinary)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 MB per figure, for CI")
    parser.add_argument("--size", type=int, help="bytes per figure")
    args = parser.parse_args(argv)
    size = args.size or (8_000_000 if args.quick else 64_000_000)
    engines = available_engines()
    ordinary, dense = build("ordinary", size), build("secrets", max(size // 8, 1_000_000))
    print(f"bench_masker: {size / 1e6:.0f} MB of ordinary output per figure, engines {', '.join(engines)}, "
          f"one core, best of 3")
    for chunk in CHUNKS:
        print(f"  ordinary output, {chunk // 1024:2d} KiB chunks:")
        for engine in engines:
            data = ordinary if engine != "re" else ordinary[: max(size // 16, 500_000)]
            r = rate(data, chunk, engine, runs=3 if engine != "re" else 1)
            print(f"      {engine:10s} {r:8,.0f} MB/s  ({r / AIM:.2f}x the {AIM:.0f} MB/s aim)")
    fast = engines[0]
    r_dense = rate(dense, 16384, fast)
    print(f"  secret-dense, 16 KiB chunks, {fast}: {r_dense:8,.0f} MB/s "
          f"({mask_bytes(dense).count(b'[MASKED:'):,} masks in {len(dense) / 1e6:.1f} MB)")
    caught, total, changed, files = rates_over_corpus()
    print(f"  detection over the secrets corpus: {caught}/{total} secrets masked ({100 * caught / total:.1f} %)")
    print(f"  false positives over the ordinary corpus: {changed}/{files} files changed "
          f"({100 * changed / files:.1f} %)")
    r16 = rate(ordinary, 16384, fast)
    for path in (100.0, 400.0):
        print(f"  a {path:.0f} MB/s data path keeps {1 / (1 + path / r16):.2f} of its throughput with masking "
              f"({fast}, 16 KiB chunks)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
