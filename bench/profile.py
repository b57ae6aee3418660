"""Profile the ``bastion serve`` process with py-spy while a section runs (``--profile``).

``py-spy record --format raw`` writes collapsed stacks (``frame;frame;... count``);
:func:`summarize` turns them into the functions with the most samples on top of
the stack (self) and anywhere in it (total).  py-spy is an optional tool:
``.venv/bin/pip install py-spy``; without it the profile is reported n/a.

Not covered: profiling the OpenSSH processes (use ``perf`` for those).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path


def pyspy() -> str | None:
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


class Profiler:
    def __init__(self, pid: int, out: Path, rate: int = 200) -> None:
        self.pid, self.out, self.rate = pid, out, rate
        self.proc: subprocess.Popen | None = None
        self.error: str | None = None

    def __enter__(self) -> "Profiler":
        exe = pyspy()
        if exe is None:
            self.error = "py-spy is not installed (.venv/bin/pip install py-spy)"
            return self
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [exe, "record", "-p", str(self.pid), "-o", str(self.out), "-f", "raw",
             "-r", str(self.rate), "--nonblocking"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        return self

    def __exit__(self, *exc) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            _, err = self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        if not self.out.exists():
            self.error = f"py-spy wrote nothing: {err.decode(errors='replace').strip()[-300:]}"

    def result(self, top: int = 15) -> dict:
        if self.error:
            return {"na": self.error}
        return {"file": str(self.out), **summarize(self.out, top)}


def _frame(frame: str) -> str:
    # py-spy raw frames look like "function (path/to/file.py:123)"; keep function and file name
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    file = where.rsplit("/", 1)[-1].split(":")[0] if where else ""
    return f"{name} ({file})" if file else name


def summarize(path: Path, top: int = 15) -> dict:
    """Top functions of the event-loop thread (self and total) and of the other threads (self).

    Collapsed stacks of all threads are merged by py-spy; a stack through
    ``BaseEventLoop._run_once`` belongs to the event loop, the rest to helper threads
    (the recording writer, executors).  Frames in nearly every loop stack (the loop
    itself, the CLI entry) are left out of the totals: they say nothing.
    """
    loop_self: Counter = Counter()
    loop_total: Counter = Counter()
    other_self: Counter = Counter()
    loop = other = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [_frame(f) for f in stack.split(";") if f]
        if not frames:
            continue
        if any(f.startswith("BaseEventLoop._run_once") for f in frames):
            loop += n
            loop_self[frames[-1]] += n
            for f in set(frames):
                loop_total[f] += n
        else:
            other += n
            other_self[frames[-1]] += n
    samples = loop + other

    def pct(counter: Counter) -> list:
        return [[name, round(100 * c / samples, 1)] for name, c in counter.most_common(top)]

    branches = Counter({f: c for f, c in loop_total.items() if c < 0.9 * loop})
    return {"samples": samples,
            "event_loop_pct": round(100 * loop / samples, 1) if samples else None,
            "loop_top_self_pct": pct(loop_self) if samples else [],
            "loop_top_total_pct": pct(branches) if samples else [],
            "other_threads_top_self_pct": pct(other_self) if samples else []}
