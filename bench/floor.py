"""The per-byte work a recording cannot skip, each step alone: CPU milliseconds per MB.

Whatever the process layout, every recorded byte is scanned for secrets, encoded
into asciicast JSON, hashed for the index's chain and written to a file.  Each
step is measured here on its own, in this process, with the product's own code
(``Masker`` with the preferred engine, ``asciicast.StreamEncoder``, SHA-256,
``os.write`` of 256 KiB buffers like the recording worker's) over the same
32 KiB chunks a channel delivers.  The sum is a floor: a recording bastion needs
at least this much CPU per MB on top of relaying.

``bench.overhead`` uses it for a bound: when a run keeps every core busy,
throughput is (cores / machine CPU per MB), so the bastion with recording on can
reach at most ``ProxyJump's machine CPU / (the relay's machine CPU + floor)`` of
ProxyJump's rate, however little the rest of the recording path costs.

Each step alone reads its whole input from memory; the recording worker runs them one
chunk at a time, each on what the step before it just left in the cache.  So
:func:`pipeline` also measures the worker's own path as it runs (``Sink.data``: mask,
encode, buffer, SHA-256 and ``write`` of a real file, closed and fsync'ed), with and
without masking, and :func:`trigger_costs` what each masking trigger costs the
Hyperscan scan (alone, and what the scan saves without it).

    python -m bench.floor [--size MB] [--triggers]   # log-like text and zeros
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path

from bastion.proto import asciicast
from bastion.proto.masker import BUILTIN, Masker
from bastion.recording.sink import Sink
from bastion.recording.writer import BUFFER_BYTES as WRITE_BUFFER

CHUNK = 32 * 1024


def _cpu_ms_per_mb(step, chunks: list[bytes], size: int) -> float:
    t0 = time.process_time()
    step(chunks)
    return round(1000 * (time.process_time() - t0) / (size / 1e6), 3)


def _mask(chunks: list[bytes]) -> None:
    masker = Masker(BUILTIN)
    for c in chunks:
        masker.feed(c)
    masker.flush()


def _encode(chunks: list[bytes], keep: list | None = None) -> None:
    enc = asciicast.StreamEncoder(asciicast.STDOUT)
    for i, c in enumerate(chunks):
        lines = enc.encode(i * 1e-3, c)
        if keep is not None:
            keep += lines
    lines = enc.flush(len(chunks) * 1e-3)
    if keep is not None:
        keep += lines


def _hash(chunks: list[bytes]) -> None:
    h = hashlib.sha256()
    for c in chunks:
        h.update(c)
    h.hexdigest()


def _writer(directory: Path):
    def write(chunks: list[bytes]) -> None:
        path = directory / f"floor-{os.getpid()}.tmp"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
        try:
            buf = bytearray()
            for c in chunks:
                buf += c
                if len(buf) >= WRITE_BUFFER:
                    os.write(fd, buf)
                    buf.clear()
            if buf:
                os.write(fd, buf)
        finally:
            os.close(fd)
            path.unlink(missing_ok=True)
    return write


def measure(data: bytes, directory: Path, reps: int = 3) -> dict:
    """Median CPU ms per MB of each step over ``data`` in 32 KiB chunks, and their sum.

    Masking and encoding take the chunks; hashing and writing take the encoded
    lines (what the recording file holds), all per MB of ``data``.
    """
    chunks = [data[i:i + CHUNK] for i in range(0, len(data), CHUNK)]
    lines: list[bytes] = []
    _encode(chunks, lines)
    steps = {"mask": (_mask, chunks), "encode": (_encode, chunks), "hash": (_hash, lines),
             "write": (_writer(directory), lines)}
    runs: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(reps):
        for name, (step, items) in steps.items():
            runs[name].append(_cpu_ms_per_mb(step, items, len(data)))
    out = {name: sorted(v)[len(v) // 2] for name, v in runs.items()}
    out["total"] = round(sum(out.values()), 3)
    return out


def pipeline(data: bytes, directory: Path, reps: int = 3) -> dict:
    """Median CPU ms per MB of the recording worker's path for ``data`` in 32 KiB chunks:
    one ``Sink`` (a real file: header, events, close with fsync), ``masked`` with the
    built-in detectors and ``unmasked``."""
    chunks = [data[i:i + CHUNK] for i in range(0, len(data), CHUNK)]
    runs: dict[str, list[float]] = {"masked": [], "unmasked": []}
    for _ in range(reps):
        for name, detectors in (("masked", tuple(BUILTIN)), ("unmasked", None)):
            path = directory / f"floor-{os.getpid()}.cast"
            t0 = time.process_time()
            sink = Sink.create(1, path, asciicast.header_line(width=80, height=24, timestamp=0),
                               1 << 62, lambda event: None, detectors)
            for i, c in enumerate(chunks):
                sink.data(asciicast.STDOUT, i * 1e-3, c)
            sink.close(len(chunks) * 1e-3)
            runs[name].append(round(1000 * (time.process_time() - t0) / (len(data) / 1e6), 3))
            path.unlink()
    return {name: sorted(v)[len(v) // 2] for name, v in runs.items()}


def trigger_costs(data: bytes, reps: int = 3) -> list[dict] | None:
    """What each built-in trigger costs the Hyperscan scan of ``data`` (32 KiB chunks), in
    CPU ms per MB: ``alone`` (a database of that trigger only) and ``saved`` (the scan of
    every trigger minus the scan without it); first row ``all``.  None without Hyperscan."""
    try:
        import hyperscan
    except ImportError:
        return None
    chunks = [data[i:i + CHUNK] for i in range(0, len(data), CHUNK)]

    def scan_ms(exprs: list[bytes]) -> float:
        db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
        db.compile(expressions=exprs, ids=list(range(len(exprs))), elements=len(exprs),
                   flags=[0] * len(exprs))
        scratch = hyperscan.Scratch(db)
        best = None
        for _ in range(reps):
            t0 = time.process_time()
            for c in chunks:
                db.scan(c, match_event_handler=lambda *hit: None, scratch=scratch)
            ms = 1000 * (time.process_time() - t0) / (len(data) / 1e6)
            best = ms if best is None else min(best, ms)
        return round(best or 0.0, 3)

    named = [(f"{i} {d.name}", d.trigger) for i, d in enumerate(BUILTIN) if d.trigger is not None]
    whole = scan_ms([t for _, t in named])
    rows = [{"trigger": "all", "alone": whole, "saved": whole}]
    for name, trigger in named:
        others = [t for _, t in named if t is not trigger]
        rows.append({"trigger": name, "alone": scan_ms([trigger]),
                     "saved": round(whole - scan_ms(others), 3)})
    return rows


def bound(jump_machine: float, bare_machine: float, floor_total: float) -> float | None:
    """Highest bastion/ProxyJump ratio a recording bastion can reach on saturated cores."""
    if jump_machine <= 0 or bare_machine + floor_total <= 0:
        return None
    return jump_machine / (bare_machine + floor_total)


def main(argv: list[str] | None = None) -> int:
    from bench.bulk import make_text_file
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 epilog="Example: python -m bench.floor --size 50")
    ap.add_argument("--size", type=int, default=100, help="MB of each input (default 100)")
    ap.add_argument("--triggers", action="store_true",
                    help="also what each masking trigger costs the scan of the text")
    args = ap.parse_args(argv)
    size = args.size * 1_000_000
    with tempfile.TemporaryDirectory(prefix="bastion-floor-") as tmp:
        directory = Path(tmp)
        text = make_text_file(directory / "text.log", size).read_bytes()
        (directory / "text.log").unlink()
        zero = bytes(size)
        result: dict = {"size_bytes": size, "text": measure(text, directory),
                        "zero": measure(zero, directory),
                        "pipeline": {"text": pipeline(text, directory),
                                     "zero": pipeline(zero, directory)}}
        if args.triggers:
            result["triggers"] = trigger_costs(text)
    for kind in ("text", "zero"):
        r, p = result[kind], result["pipeline"][kind]
        print(f"{kind}: " + ", ".join(f"{k} {v:.2f}" for k, v in r.items()) + " ms CPU/MB; "
              f"the worker's path: masked {p['masked']:.2f}, unmasked {p['unmasked']:.2f}")
    for row in result.get("triggers") or ():
        print(f"  trigger {row['trigger']}: alone {row['alone']:.2f}, saved without it "
              f"{row['saved']:.2f} ms CPU/MB")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
