"""Bulk throughput: exec stdout and stdin upload through (a) direct, (b) ProxyJump, (c) the bastion.

Three kinds of transfer, each in two cipher modes (client defaults; AES-128-GCM on
every hop), each repeated and interleaved across the paths:

* ``zero``   : ``head -c SIZE /dev/zero`` on the target, stdout to the client;
* ``text``   : ``cat FILE`` of a log-like text file generated in the rig's temp dir
               (the target is this machine, so that is the target's disk, page-cached);
* ``upload`` : SIZE bytes of that text on the client's stdin into ``wc -c`` on the target
               (``wc`` prints the count, so a short transfer is caught).

The rate is the *streaming* rate, so connection set-up (measured separately in
:mod:`bench.setup_latency`) does not dilute it: for downloads, the bytes after the
first chunk over the time from the first chunk to EOF; for uploads, the bytes after
the first 1 MB write (which returns only once ssh is reading: the pipe holds 64 KB)
over the time from that write to ``wc``'s count arriving.  The wall rate (launch to
end) is kept in the JSON too.  MB = 10**6 bytes.

Not covered: scp/sftp (the bastion refuses subsystems for now), compression.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from bench.rig import CIPHER_MODES, PATHS, BenchRig
from bench.stats import median, ratio, rotated

FULL_SIZE = 200_000_000
QUICK_SIZE = 2_000_000
KINDS = ("zero", "text", "upload")


class TransferFailed(Exception):
    pass


def make_text_file(path: Path, size: int) -> Path:
    """A log-like text file of exactly ``size`` bytes (lines of varying content)."""
    line_no = 0
    written = 0
    with open(path, "wb") as fh:
        while written < size:
            block = []
            for _ in range(4096):
                i = line_no
                block.append(f"2024-05-{1 + i % 28:02d}T{i % 24:02d}:{i % 60:02d}:{(i * 7) % 60:02d}Z "
                             f"web1 nginx[{1000 + i % 977}]: 10.{i % 256}.{(i >> 8) % 256}.{i % 7} "
                             f"\"GET /api/v1/items/{i % 100003}?page={i % 17} HTTP/1.1\" "
                             f"{(200, 200, 200, 304, 404)[i % 5]} {i % 65536} {i % 313}ms\n")
                line_no += 1
            data = "".join(block).encode()[: size - written]
            fh.write(data)
            written += len(data)
    return path


def _watchdog(proc: subprocess.Popen, timeout: float) -> threading.Timer:
    """Kill ``proc`` after ``timeout`` seconds, so a hung transfer cannot hang the run."""
    timer = threading.Timer(timeout, lambda: proc.poll() is None and proc.kill())
    timer.daemon = True
    timer.start()
    return timer


def _download(rig: BenchRig, path: str, command: str, mode: str, size: int,
              timeout: float) -> dict:
    return fetch(rig.argv(path, command, mode=mode), rig.client_env(), size, timeout)


def fetch(argv: list[str], env: dict, size: int, timeout: float) -> dict:
    """Run the ssh ``argv``, read all of its stdout, check it is ``size`` bytes; its rates."""
    err = tempfile.TemporaryFile()
    t_launch = time.perf_counter()
    proc = subprocess.Popen(argv, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err,
                            start_new_session=True)
    dog = _watchdog(proc, timeout)
    fd = proc.stdout.fileno()
    total = first_len = 0
    t_first = t_end = None
    deadline = t_launch + timeout
    try:
        while True:
            chunk = os.read(fd, 1 << 20)
            now = time.perf_counter()
            if not chunk:
                t_end = now
                break
            if t_first is None:
                t_first, first_len = now, len(chunk)
            total += len(chunk)
            if now > deadline:
                raise TransferFailed(f"timed out after {timeout:g}s ({total} bytes)")
        rc = proc.wait(timeout=max(1.0, deadline - time.perf_counter()))
    finally:
        dog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    err.seek(0)
    message = err.read().decode(errors="replace").strip()
    err.close()
    if rc != 0 or total != size:
        last = message.splitlines()[-1] if message else "no message"
        raise TransferFailed(f"exit {rc}, {total} of {size} bytes: {last}")
    return _rates(size, first_len, t_launch, t_first, t_end)


def _upload(rig: BenchRig, path: str, data: memoryview, mode: str, timeout: float) -> dict:
    size = len(data)
    # more than the 64 KB a pipe holds, so the first write returns only once ssh reads
    step = max(256 * 1024, min(1 << 20, size // 2))
    err = tempfile.TemporaryFile()
    t_launch = time.perf_counter()
    proc = subprocess.Popen(rig.argv(path, "wc -c", mode=mode), env=rig.client_env(),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                            start_new_session=True, bufsize=0)
    t_first = None
    dog = _watchdog(proc, timeout)
    try:
        for off in range(0, size, step):
            view = data[off:off + step]
            while view:
                view = view[proc.stdin.write(view):]
            if t_first is None:
                t_first = time.perf_counter()
        proc.stdin.close()
        out = proc.stdout.readline()        # wc's count: every byte has reached the target
        t_end = time.perf_counter()
        out += proc.stdout.read()
        rc = proc.wait(timeout=timeout)
    except (BrokenPipeError, subprocess.TimeoutExpired) as exc:
        proc.kill()
        proc.wait()
        err.seek(0)
        raise TransferFailed(f"{type(exc).__name__}: {err.read().decode(errors='replace')[-300:]}")
    finally:
        dog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    err.seek(0)
    message = err.read().decode(errors="replace").strip()
    err.close()
    if rc != 0 or out.strip() != str(size).encode():
        last = message.splitlines()[-1] if message else "no message"
        raise TransferFailed(f"exit {rc}, target counted {out.strip()[:40]!r} of {size}: {last}")
    return _rates(size, min(step, size), t_launch, t_first, t_end)


def _rates(size: int, first_len: int, t_launch: float, t_first: float, t_end: float) -> dict:
    stream_s = max(t_end - t_first, 1e-9)
    return {"mb_s": round((size - first_len) / stream_s / 1e6, 2),
            "wall_mb_s": round(size / max(t_end - t_launch, 1e-9) / 1e6, 2),
            "seconds": round(t_end - t_launch, 3)}


def run(rig: BenchRig, *, quick: bool = False, size: int | None = None, reps: int | None = None,
        paths: tuple[str, ...] = PATHS, log=print) -> dict:
    size = size or (QUICK_SIZE if quick else FULL_SIZE)
    reps = reps or (1 if quick else 5)
    samples, failures = transfers([(path, rig, path) for path in paths], size, reps, log)
    return summarize(samples, failures, size=size, reps=reps, paths=paths)


def transfers(paths: list[tuple[str, BenchRig, str]], size: int, reps: int,
              log=print, cpu: dict | None = None) -> tuple[dict, dict]:
    """Every kind in every cipher mode through each ``(name, rig, path)``, ``reps`` times,
    the paths taking turns in a rotating order: ``{"KIND/MODE/NAME": [rates...]}`` and
    ``{"KIND/MODE/NAME": why}`` for a path that failed (not tried again).

    ``cpu`` (optional): per path name, a function returning ``{label: CPU seconds so far}``
    of the processes to account (a bastion, a database server); each transfer of that path
    then also carries ``cpu_ms_per_mb`` ``{label: ms}``, read before it and
    :data:`CPU_SETTLE` s after it (what a worker still writes)."""
    text = make_text_file(paths[0][1].root / "bulk-text.log", size)
    upload = memoryview(text.read_bytes())
    timeout = 60 + size / 5e6
    commands = {"zero": f"head -c {size} /dev/zero", "text": f"cat {text}"}
    samples: dict = {}
    failures: dict = {}
    try:
        for rep in range(reps):
            for kind in KINDS:
                for mode in CIPHER_MODES:
                    for name, rig, path in rotated(paths, rep + KINDS.index(kind)):
                        key = f"{kind}/{mode}/{name}"
                        if key in failures:
                            continue
                        counters = (cpu or {}).get(name)
                        before = counters() if counters else None
                        try:
                            if kind == "upload":
                                r = _upload(rig, path, upload, mode, timeout)
                            else:
                                r = _download(rig, path, commands[kind], mode, size, timeout)
                        except (TransferFailed, OSError, subprocess.SubprocessError) as exc:
                            failures[key] = str(exc)[:300]
                            log(f"  bulk {key}: n/a ({failures[key]})")
                            continue
                        if counters:
                            time.sleep(CPU_SETTLE)
                            r["cpu_ms_per_mb"] = cpu_per_mb(before, counters(), size)
                        samples.setdefault(key, []).append(r)
                        log(f"  bulk {key} rep {rep + 1}/{reps}: {r['mb_s']} MB/s")
    finally:
        upload.release()
        text.unlink(missing_ok=True)
    return samples, failures


CPU_SETTLE = 0.3


def cpu_per_mb(before: dict, after: dict, size: int) -> dict:
    """``{label: ms of CPU per MB}`` between two readings (None where either is missing)."""
    return {label: (None if before.get(label) is None or after.get(label) is None else
                    round(1000 * (after[label] - before[label]) / (size / 1e6), 2))
            for label in after}


def summarize(samples: dict, failures: dict, *, size: int, reps: int, paths) -> dict:
    rows = []
    for kind in KINDS:
        for mode in CIPHER_MODES:
            row: dict = {"kind": kind, "cipher": mode}
            for path in paths:
                key = f"{kind}/{mode}/{path}"
                runs = samples.get(key, [])
                if runs:
                    row[path] = {"mb_s": median([r["mb_s"] for r in runs]),
                                 "wall_mb_s": median([r["wall_mb_s"] for r in runs]),
                                 "runs": [r["mb_s"] for r in runs]}
                else:
                    row[path] = {"na": failures.get(key, "not run")}
            b = row.get("jump", {}).get("mb_s")
            c = row.get("bastion", {}).get("mb_s")
            a = row.get("direct", {}).get("mb_s")
            row["ratio_c_b"] = ratio(c, b)
            row["ratio_c_a"] = ratio(c, a)
            rows.append(row)
    return {"size_bytes": size, "reps": reps, "unit": "MB/s (10^6 bytes), streaming rate, median",
            "rows": rows}
