"""The scaling benchmark's rigs: one bastion on SQLite, one on PostgreSQL, limits for hundreds of agents.

Both are :class:`bench.rig.BenchRig` (dev issuer, target sshd, OpenSSH jump host, ``bastion
serve``); the PostgreSQL one is given ``BASTION_STORE_URL`` / ``BASTION_STORE_PASSWORD_FILE``
for a database on a private cluster (:mod:`tests.pgcluster`, fsync on), as an operator
would.  What is raised for a login storm of hundreds of agents, in the rig's own
configuration only (the product's defaults stay as they are):

* the bastion's ``[settings]``: ``max_startups`` (the cap on unauthenticated connections; its
  default of 100 drops the rest of a storm at once) and ``max_startups_per_source`` (every
  agent of the benchmark comes from 127.0.0.1; a fleet comes from many addresses), and
  ``login_grace_time`` (two shared cores doing hundreds of key exchanges and token checks
  at once take longer than the default 30 s for the last ones);
* OpenSSH's ``MaxStartups`` on the jump host and the target (bench/rig.py already does);
* RLIMIT_NOFILE of this process, inherited by the bastion (:func:`bench.rig.raise_fd_limit`).

Also here: how many of a run's commands the index holds, and CPU/RSS of a process tree
(the bastion's workers, the PostgreSQL server).  Not covered: measuring (bench/scaling.py).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from bench.rig import BenchRig, descendants
from tests.e2e.harness import POLICY_RULES

_TICKS = os.sysconf("SC_CLK_TCK")
# The rig's limits for a storm of up to STORM agents at once (per worker, as the bastion counts).
STORM = 1000
RIG_SETTINGS = (f"max_startups = {STORM}\nmax_startups_per_source = {STORM}\n"
                "login_grace_time = 300\n")


@dataclass
class ScaleRig(BenchRig):
    """A BenchRig whose policy takes a login storm (see the module docstring)."""

    label: str = "sqlite"

    def policy_text(self, rules: str = POLICY_RULES) -> str:
        assert "[settings]\n" in rules, "the storm limits go into the policy's [settings]"
        return super().policy_text(rules.replace("[settings]\n", "[settings]\n" + RIG_SETTINGS, 1))

    def restart(self, workers: int) -> "ScaleRig":
        """``bastion serve`` again on the same port and data dir, with ``workers`` processes."""
        self.stop()
        self.workers = workers
        before = self.log().count("bastion listening on")
        self.start()
        deadline = time.monotonic() + 60        # with workers, the port opens before the last one
        while self.log().count("bastion listening on") <= before:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"bastion --workers {workers} did not start: {self.log()[-2000:]}")
            time.sleep(0.1)
        return self

    def indexed(self, tag: str) -> dict:
        """Commands of this run in the index: rows whose line is ``echo TAG...``, and how many
        distinct lines among them (each marker is unique, so both must equal what was run)."""
        conn = self.index()
        try:
            row = conn.execute("SELECT count(*), count(DISTINCT line) FROM commands "
                               "WHERE line LIKE ?", (f"echo {tag}a%",)).fetchone()
        finally:
            conn.close()
        return {"rows": int(row[0]), "distinct": int(row[1])}


def postmaster_pid(cluster) -> int | None:
    """The PostgreSQL server's main process (its backends are its children)."""
    try:
        return int((Path(cluster.data) / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def tree_cpu(pid: int | None) -> float | None:
    """CPU seconds so far of a process and its live descendants, each with the CPU of the
    children it has reaped (a PostgreSQL backend that ended is in the server's; a live one is
    counted once, in its own).  None if the process is gone."""
    if pid is None or not Path(f"/proc/{pid}").exists():
        return None
    total = 0.0
    for one in [pid, *descendants(pid)]:
        try:
            fields = Path(f"/proc/{one}/stat").read_text().rpartition(") ")[2].split()
            total += sum(int(f) for f in fields[11:15]) / _TICKS
        except (OSError, ValueError, IndexError):
            pass
    return round(total, 2)


def make_rigs(root: Path, issuer, cluster, db: str = "bench_scale") -> dict[str, ScaleRig]:
    """Two started rigs under ``root``: ``sqlite`` (the default index) and ``postgresql``
    (database ``db`` on ``cluster``).  On failure whatever started is closed again."""
    cluster.create_db(db)
    rigs: dict[str, ScaleRig] = {}
    try:
        for label, store in (("sqlite", {}), ("postgresql", cluster.store_env(db, node="bench-a"))):
            rig = ScaleRig(root / label, issuer, store_env=store, label=label,
                           client_name=f"bench-agent-{label}")
            rigs[label] = rig
            rig.setup().start()
    except BaseException:
        for rig in rigs.values():
            rig.close()
        raise
    return rigs
