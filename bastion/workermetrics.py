"""``/metrics`` of ``bastion serve --workers N``: the counters of every worker, summed.

Each worker counts in its own process (bastion.metrics.METRICS).  To show the host's totals
whichever worker answers a scrape, each worker publishes its counters two ways, both in
``DATA_DIR/metrics/`` (0700; files 0600; only the bastion's user can read or ask):

* **live**, on a Unix socket ``metrics/wN.sock``: the answer is the worker's snapshot taken
  on its event loop at that moment (so a scrape right after a command counts it);
* **last known**, in ``metrics/wN.json``: written (temp file + rename, so a reader or a
  successor sees an old or a new snapshot, never half of one) every
  :data:`PERSIST_EVERY` seconds, at a clean stop, and **before every live answer**.

The worker answering ``/metrics`` takes its own snapshot, asks every other worker's socket
(:data:`ASK_TIMEOUT`), and for a worker that does not answer (killed, being restarted, its
loop stuck) uses that worker's file; then :func:`bastion.metrics.merge` sums them.

Counters never go backwards, within a run of ``bastion serve``:

* a value is shown by a scrape only after it is in the worker's file ("persist, then
  show"; if the file cannot be written, the worker answers with the last snapshot that
  was written), so the file of a worker that died holds at least everything any scrape saw
  from it;
* a restarted worker starts by adding its predecessor's file to its (zero) counters, so it
  goes on from those totals; until it answers, its file stands in for it.

Staleness: a dead worker's share is its file, frozen; what it counted after its last write
(at most :data:`PERSIST_EVERY` seconds, and never anything a scrape showed) is lost, so the
sum can undercount, never overcount or go down.  ``bastion_metrics_stale_workers`` says how
many workers were read from their file in this scrape.  The parent clears the directory
when ``bastion serve`` starts: a new run starts its counters at 0, as any restarted
Prometheus target does (``rate()`` sees the reset).  The files are written without fsync: they
must survive a process's death (the page cache does), not the host's (a host crash
restarts ``bastion serve``, which starts from 0 anyway).

Gauges (sessions open, queues...) are read from every worker's status socket instead
(bastion.recording.status.merge_workers).  Not covered: rendering (bastion.api.metricsview).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import os
import secrets
import stat
import threading
from pathlib import Path
from typing import Any

from bastion.metrics import METRICS, Metrics, Snapshot, merge
from bastion.private import DIR_MODE, make_private_dirs, open_private_file

log = logging.getLogger("bastion.metrics")

DIR_NAME = "metrics"
PERSIST_EVERY = 5.0            # s between writes of a worker's file when nobody scrapes
ASK_TIMEOUT = 2.0              # s the answering worker waits for another worker's snapshot
TAKE_TIMEOUT = 1.0             # s a worker's socket waits for its own loop (then: its file's)


def metrics_dir(data_dir: Path) -> Path:
    return Path(data_dir) / DIR_NAME


def snapshot_path(data_dir: Path, worker: int) -> Path:
    return metrics_dir(data_dir) / f"w{worker}.json"


def socket_name(worker: int) -> str:
    """Relative to the data dir (bastion.recording.status takes it so)."""
    return f"{DIR_NAME}/w{worker}.sock"


def clear(data_dir: Path) -> None:
    """In the parent, at start (it holds the data dir's lock, no worker runs yet): forget a
    previous run's snapshots, so this run's counters start at 0."""
    where = metrics_dir(data_dir)
    try:
        if not stat.S_ISDIR(os.lstat(where).st_mode):
            where.unlink()                 # a file or a symlink there is not ours: never followed
    except FileNotFoundError:
        pass
    make_private_dirs(where)
    os.chmod(where, DIR_MODE)
    for entry in where.iterdir():
        if not stat.S_ISDIR(os.lstat(entry).st_mode):
            entry.unlink(missing_ok=True)


def write_snapshot(path: Path, snap: Snapshot) -> None:
    """``snap`` into ``path`` (0600) through a temp file and a rename."""
    body = json.dumps(snap.to_json(), separators=(",", ":")).encode()
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = open_private_file(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(body)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_snapshot(path: Path) -> Snapshot | None:
    """The snapshot in ``path``; None when there is none.  ValueError: not a snapshot."""
    try:
        fd = open_private_file(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as fh:
        raw = fh.read()
    try:
        return Snapshot.from_json(json.loads(raw))
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from None


class Share:
    """One worker's side: takes over its predecessor's totals, answers on its socket, keeps
    its file current.  ``start`` on the worker's event loop, before it accepts agents."""

    def __init__(self, data_dir: Path, worker: int, metrics: Metrics = METRICS) -> None:
        self.data_dir, self.worker, self.metrics = Path(data_dir), worker, metrics
        self.path = snapshot_path(data_dir, worker)
        self._lock = threading.Lock()
        self._taken = 0                  # snapshots taken (on the loop), in order
        self._written = (0, Snapshot())  # (its number, the newest snapshot in the file)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: Any = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        from bastion.recording.status import StatusServer
        self._loop = asyncio.get_running_loop()
        make_private_dirs(metrics_dir(self.data_dir))
        self._take_over()
        self._server = StatusServer(self.data_dir, self._answer, socket_name(self.worker))
        self._task = asyncio.ensure_future(self._persist_often())

    def _take_over(self) -> None:
        for tmp in self.path.parent.glob(f".{self.path.name}.*.tmp"):   # a write cut by a kill
            tmp.unlink(missing_ok=True)
        try:
            before = read_snapshot(self.path)
        except (OSError, ValueError) as exc:
            log.error("worker %d: cannot read its predecessor's metrics in %s (%s): its "
                      "counters start again at 0 (Prometheus sees a reset)", self.worker,
                      self.path, exc)
            return
        if before is None:
            return
        skipped = self.metrics.load(before)
        if skipped:
            log.warning("worker %d: histograms %s of its predecessor have other buckets: "
                        "started again at 0", self.worker, ", ".join(skipped))
        log.info("worker %d: counting on from its predecessor's metrics", self.worker)

    def _take(self) -> tuple[int, Snapshot]:
        """On the loop: the counters now, numbered."""
        self._taken += 1
        return self._taken, self.metrics.snapshot()

    def _persist(self, taken: tuple[int, Snapshot]) -> Snapshot:
        """Write ``taken`` unless a newer one is written already; the newest one written
        (what may be shown).  Any thread."""
        with self._lock:
            if taken[0] > self._written[0]:
                try:
                    write_snapshot(self.path, taken[1])
                    self._written = taken
                except OSError as exc:
                    log.warning("worker %d: cannot write %s: %s (showing its last written "
                                "counters)", self.worker, self.path, exc)
            return self._written[1]

    async def current(self) -> Snapshot:
        """On the loop: this worker's counters as they may be shown (written first)."""
        return await asyncio.to_thread(self._persist, self._take())

    def _answer(self) -> dict[str, Any]:
        """The socket's answer (status thread): a snapshot taken on the loop, written."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return self._written[1].to_json()
        fut: concurrent.futures.Future[tuple[int, Snapshot]] = concurrent.futures.Future()

        def take() -> None:
            if not fut.cancelled():
                fut.set_result(self._take())
        loop.call_soon_threadsafe(take)
        try:
            taken = fut.result(TAKE_TIMEOUT)
        except concurrent.futures.TimeoutError:
            fut.cancel()
            return self._written[1].to_json()     # the loop is stuck: the written one
        return self._persist(taken).to_json()

    async def _persist_often(self) -> None:
        while True:
            await asyncio.sleep(PERSIST_EVERY)
            try:
                await self.current()
            except Exception:  # noqa: BLE001 - a metrics write must not end the worker
                log.exception("worker %d: writing its metrics failed", self.worker)

    async def close(self) -> None:
        """At a clean stop: the last snapshot written, the socket closed."""
        if self._task is not None:
            self._task.cancel()
        if self._server is not None:
            await asyncio.to_thread(self._server.close)
            self._server = None
        await self.current()


def _ask(data_dir: Path, worker: int) -> Snapshot | None:
    """Worker ``worker``'s live snapshot, or None when it does not answer."""
    from bastion.recording.status import read_status
    try:
        answer = read_status(data_dir, timeout=ASK_TIMEOUT, name=socket_name(worker))
        return None if answer is None else Snapshot.from_json(answer)
    except (OSError, ValueError) as exc:
        log.debug("worker %d's metrics socket: %s", worker, exc)
        return None


def _other_workers(data_dir: Path, own: int) -> list[int]:
    found = set()
    for entry in metrics_dir(data_dir).glob("w*"):
        stem = entry.name[1:].split(".", 1)[0]
        if stem.isdigit() and int(stem) != own:
            found.add(int(stem))
    return sorted(found)


def _other(data_dir: Path, worker: int) -> tuple[Snapshot | None, bool]:
    """(worker's snapshot, whether it came from its file rather than live)."""
    live = _ask(data_dir, worker)
    if live is not None:
        return live, False
    try:
        return read_snapshot(snapshot_path(data_dir, worker)), True
    except (OSError, ValueError) as exc:
        log.warning("worker %d's metrics file %s: %s (left out of /metrics)", worker,
                    snapshot_path(data_dir, worker), exc)
        return None, True


async def collect(share: Share) -> tuple[Snapshot, int]:
    """On the answering worker's loop: (the counters of all workers summed, how many
    workers were read from their file because they did not answer)."""
    own = await share.current()
    others = _other_workers(share.data_dir, share.worker)
    results = await asyncio.gather(*(asyncio.to_thread(_other, share.data_dir, w)
                                     for w in others))
    snaps = [own] + [snap for snap, _ in results if snap is not None]
    total, skipped = merge(snaps)
    if skipped:
        log.warning("/metrics: histograms %s differ in buckets between workers: some "
                    "workers' series left out", ", ".join(sorted(set(skipped))))
    return total, sum(stale for _, stale in results)


def read_statuses(data_dir: Path) -> dict[int, dict[str, Any] | None]:
    """Every worker's status-socket answer by index, None for one that does not answer in
    time (stopped, stuck) as for one that is gone: the gauges' input
    (bastion.recording.status.merge_workers)."""
    from bastion.recording.status import read_status
    found: dict[int, dict[str, Any] | None] = {}
    for path in sorted(Path(data_dir).glob("status.w*.sock")):
        index = path.name[len("status.w"):-len(".sock")]
        if not index.isdigit():
            continue
        try:
            found[int(index)] = read_status(data_dir, timeout=ASK_TIMEOUT, name=path.name)
        except (OSError, ValueError) as exc:      # a timeout is an OSError
            log.debug("worker %s's status socket: %s", index, exc)
            found[int(index)] = None
    return found


_ACTIVE: Share | None = None


def active() -> Share | None:
    """This worker's Share (None in a single ``bastion serve`` process)."""
    return _ACTIVE


async def start(data_dir: Path, worker: int) -> Share:
    global _ACTIVE
    share = Share(data_dir, worker)
    share.start()
    _ACTIVE = share
    return share


async def stop() -> None:
    global _ACTIVE
    share, _ACTIVE = _ACTIVE, None
    if share is not None:
        await share.close()
