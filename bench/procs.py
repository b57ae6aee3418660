"""CPU per process during a transfer, from /proc: which process a path's rate hangs on.

A path through several processes can go no faster than its busiest one allows
once each has a core of its own: ``1000 / (its CPU ms per MB)`` MB/s.  On the
benchmark machine every process shares two cores, so that ceiling is not what
the run shows; it says how the paths would compare on a machine with cores to
spare.  (A process with several threads counts as one here, which overstates its
busiest thread: for ``bastion serve`` that is the event loop, plus a little for
the recording pump and reader threads.)

:class:`ProcSampler` reads ``/proc/PID/stat`` of every process every
``interval`` seconds while a transfer runs and keeps each process's last
reading.  A process that exits between two readings loses at most one
interval of CPU; those present at the start are counted from their reading
then, not from zero.  A reading of every process takes about 1.5 ms here, so
sampling adds about 3 % of a core to the machine's CPU, on every path alike.

``root``: count only the run's own processes -- ``root`` and its descendants (by
parent pid, at each reading; a process once seen in the tree stays counted if it is
re-parented).  Without it every process on the machine is read, so on a machine
shared with other work a busy neighbour (another benchmark, a test run) shows up as
"the busiest process" of a path it has nothing to do with.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


def _read(pid: int) -> tuple[str, int, float, int] | None:
    """(command name, start time in ticks, CPU seconds used so far, parent pid); None if gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    name, _, rest = raw.partition(" (")[2].rpartition(") ")
    fields = rest.split()
    try:
        return (name, int(fields[19]), (int(fields[11]) + int(fields[12])) / _TICKS,
                int(fields[1]))
    except (IndexError, ValueError):
        return None


def read_stat(pid: int) -> tuple[str, int, float] | None:
    """(command name, start time in ticks, CPU seconds used so far) of ``pid``; None if gone."""
    stat = _read(pid)
    return None if stat is None else stat[:3]


def read_all(exclude: set[int] = frozenset(), root: int | None = None,
             known: set[tuple[int, int]] | None = None
             ) -> dict[tuple[int, int], tuple[str, float]]:
    """{(pid, start time): (command name, CPU seconds used so far)} of every process readable now.

    The start time tells a reused pid from the process that had it; the name can
    change (kernel workers rename themselves), so it does not.  With ``root``: only
    ``root`` and its descendants, and the processes in ``known`` (which this call
    adds the ones it finds to).
    """
    stats: dict[int, tuple[str, int, float, int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        stat = _read(int(entry))
        if stat is not None:
            stats[int(entry)] = stat
    keep = set(stats)
    if root is not None:
        kids: dict[int, list[int]] = {}
        for pid, (_n, _s, _c, ppid) in stats.items():
            kids.setdefault(ppid, []).append(pid)
        keep, todo = set(), [root]
        while todo:
            pid = todo.pop()
            if pid not in keep:
                keep.add(pid)
                todo += kids.get(pid, ())
        if known is not None:
            keep |= {pid for pid, st in stats.items() if (pid, st[1]) in known}
            known.update((pid, stats[pid][1]) for pid in keep if pid in stats)
    return {(pid, st[1]): (st[0], st[2]) for pid, st in stats.items()
            if pid in keep and pid not in exclude}


class ProcSampler:
    """Sample every process's CPU while it runs (``with ProcSampler() as s: ...; s.used()``)."""

    def __init__(self, interval: float = 0.05, exclude: set[int] | None = None,
                 root: int | None = None) -> None:
        self.interval = interval
        self.exclude = {os.getpid()} if exclude is None else exclude
        self.root = root
        self._known: set[tuple[int, int]] = set()
        self._start: dict[tuple[int, int], tuple[str, float]] = {}
        self._last: dict[tuple[int, int], tuple[str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-procs", daemon=True)

    def __enter__(self) -> "ProcSampler":
        self._start = read_all(self.exclude, self.root, self._known)
        self._last = dict(self._start)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _sample(self) -> None:
        self._last.update(read_all(self.exclude, self.root, self._known))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def used(self) -> list[tuple[int, str, float]]:
        """(pid, name, CPU seconds used while sampling), busiest first, idle ones left out."""
        rows = []
        for key, (name, cpu) in self._last.items():
            start = self._start.get(key)
            used = cpu - (start[1] if start else 0.0)
            if used > 0:
                rows.append((key[0], name, used))
        return sorted(rows, key=lambda r: -r[2])


def busiest(rows: list[tuple[int, str, float]], mb: float, top: int = 6) -> list[dict]:
    """The ``top`` busiest processes as {"pid", "name", "ms_per_mb"}."""
    return [{"pid": pid, "name": name, "ms_per_mb": round(1000 * used / mb, 2)}
            for pid, name, used in rows[:top]]
