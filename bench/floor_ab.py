"""The masker and asciicast encoder of two revisions in one process, alternating: CPU ms per MB.

On a machine shared with other work, two separate runs compare two moments.  Here both
revisions' ``bastion/proto/masker.py`` and ``bastion/proto/asciicast.py`` are loaded side
by side (``--base``'s files as modules of their own, with this checkout's detectors and
trigger engines), run in turn over the same 32 KiB chunks, and their outputs compared
chunk by chunk: a difference is an error, since a recording's bytes and sealed SHA-256
depend on them.  Inputs: bench.bulk's log-like text and terminal-like text (colour
escapes, CRLF, tabs, BEL, UTF-8).

    python -m bench.floor_ab --base /tmp/main-tree [--size MB] [--runs N] [--out FILE]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

HERE = Path(__file__).resolve().parents[1]
CHUNK = 32 * 1024


class Differs(AssertionError):
    """The two revisions wrote different bytes for the same input."""


def load(tree: Path, tag: str) -> dict[str, ModuleType]:
    """``tree``'s masker and asciicast modules, under names of their own."""
    mods = {}
    for name in ("masker", "asciicast"):
        mod_name = f"_floor_ab_{tag}_{name}"
        spec = importlib.util.spec_from_file_location(mod_name, tree / "bastion/proto" / f"{name}.py")
        if spec is None or spec.loader is None:
            raise FileNotFoundError(f"{tree}: no bastion/proto/{name}.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[mod_name] = mod          # (dataclasses look their module up)
        spec.loader.exec_module(mod)
        mods[name] = mod
    return mods


def terminal_text(size: int, seed: int = 7) -> bytes:
    """``size`` bytes like coloured terminal output (``ls --color``), the same every time."""
    rng = random.Random(seed)
    words = [b"total", b"drwxr-xr-x", b"root", b"\x1b[01;34mbin\x1b[0m", b"\x1b[01;32mrun.sh\x1b[0m",
             b"\tcol", b"12345", b'"quoted"', "café".encode(), b"\x07"]
    out = bytearray()
    while len(out) < size:
        out += b" ".join(rng.choice(words) for _ in range(rng.randint(3, 12))) + b"\r\n"
    return bytes(out[:size])


def _mask(mods: dict, chunks: list[bytes]) -> list[bytes]:
    masker = mods["masker"].Masker(mods["masker"].BUILTIN)
    return [masker.feed(c) for c in chunks] + [masker.flush()]


def _encode(mods: dict, chunks: list[bytes]) -> list[bytes]:
    enc = mods["asciicast"].StreamEncoder("o")
    out = [line for i, c in enumerate(chunks) for line in enc.encode(i * 1e-3, c)]
    return out + enc.flush(len(chunks) * 1e-3)


def compare(base: dict, this: dict, inputs: dict[str, bytes], runs: int) -> dict:
    """Median CPU ms per MB of each step, per input, base and this, ``runs`` each alternating."""
    result: dict = {}
    for kind, data in inputs.items():
        chunks = [data[i:i + CHUNK] for i in range(0, len(data), CHUNK)]
        for step, fn in (("mask", _mask), ("encode", _encode)):
            times: dict[str, list[float]] = {"base": [], "this": []}
            for run in range(runs + 1):              # (the first pair warms up: not counted)
                outs = {}
                for name in (("base", "this") if run % 2 else ("this", "base")):
                    mods = base if name == "base" else this
                    t0 = time.process_time()
                    outs[name] = fn(mods, chunks)
                    if run:
                        times[name].append(1000 * (time.process_time() - t0) / (len(data) / 1e6))
                if outs["base"] != outs["this"]:
                    raise Differs(f"{step} of the {kind} input: the two revisions differ")
            result[f"{kind}/{step}"] = {name: round(statistics.median(v), 3)
                                        for name, v in times.items()}
    return result


def main(argv: list[str] | None = None) -> int:
    from bench.bulk import make_text_file
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 epilog="Example: git archive main | tar -x -C /tmp/main-tree; "
                                        "python -m bench.floor_ab --base /tmp/main-tree")
    ap.add_argument("--base", type=Path, required=True, help="a tree of the other revision")
    ap.add_argument("--size", type=int, default=4, help="MB of each input (default 4)")
    ap.add_argument("--runs", type=int, default=21, help="runs of each revision (default 21)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    size = args.size * 1_000_000
    with tempfile.TemporaryDirectory(prefix="bastion-floor-ab-") as tmp:
        text = make_text_file(Path(tmp) / "text.log", size).read_bytes()
    load_before = os.getloadavg()[0]
    result = compare(load(args.base, "base"), load(HERE, "this"),
                     {"text": text, "terminal": terminal_text(size)}, args.runs)
    out = {"size_bytes": size, "runs": args.runs, "load1": [round(load_before, 2),
                                                             round(os.getloadavg()[0], 2)],
           "ms_cpu_per_mb": result}
    for key, r in result.items():
        print(f"{key:16} base {r['base']:7.3f}  this {r['this']:7.3f} ms CPU/MB")
    if args.out:
        args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
