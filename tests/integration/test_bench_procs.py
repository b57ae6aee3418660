"""bench.procs: per-process CPU while something runs, from /proc."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from bench import procs

BURN = "import time\nt = time.process_time()\nwhile time.process_time() - t < {s}: pass\n"


def test_a_process_that_burns_cpu_and_exits_is_counted():
    with procs.ProcSampler(interval=0.02) as sampler:
        p = subprocess.run([sys.executable, "-c", BURN.format(s=0.4)])
    assert p.returncode == 0
    rows = {pid: (name, used) for pid, name, used in sampler.used()}
    assert any(name.startswith("python") and 0.25 <= used <= 0.6
               for name, used in rows.values()), rows


def test_a_process_running_before_is_counted_from_the_start_of_sampling():
    # it says when its burn is over (its CPU in /proc can lag process_time() by a tick, so
    # waiting for /proc to show all 0.3 s could wait for ever)
    child = subprocess.Popen([sys.executable, "-c", BURN.format(s=0.3)
                              + "print('burnt', flush=True)\ntime.sleep(30)\n"],
                             stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None and child.stdout.readline() == b"burnt\n"
        assert (procs.read_stat(child.pid) or ("", 0, 0.0))[2] >= 0.2   # it did burn
        with procs.ProcSampler(interval=0.02) as sampler:
            subprocess.run([sys.executable, "-c", BURN.format(s=0.2)])
        used = {pid: u for pid, _name, u in sampler.used()}
        assert used.get(child.pid, 0.0) < 0.1     # it slept while sampled
    finally:
        child.kill()
        child.wait()


def test_the_sampling_process_itself_is_left_out():
    with procs.ProcSampler(interval=0.02) as sampler:
        t = time.process_time()
        while time.process_time() - t < 0.2:
            pass
    assert os.getpid() not in {pid for pid, _n, _u in sampler.used()}


def test_read_stat_of_this_process_and_of_a_gone_one():
    name, start, cpu = procs.read_stat(os.getpid())
    comm = open(f"/proc/{os.getpid()}/comm").read().strip()   # "python3", or "pytest"
    assert name == comm and start > 0 and cpu > 0
    gone = subprocess.Popen(["true"])
    gone.wait()                           # reaped: /proc/PID is gone
    assert procs.read_stat(gone.pid) is None


def test_busiest_rows():
    rows = [(10, "ssh", 0.5), (11, "sshd", 0.25), (12, "cat", 0.01)]
    assert procs.busiest(rows, mb=100.0, top=2) == [
        {"pid": 10, "name": "ssh", "ms_per_mb": 5.0}, {"pid": 11, "name": "sshd", "ms_per_mb": 2.5}]


def test_with_a_root_only_its_own_process_tree_is_counted():
    # an orphan (its parent exits at once) burning CPU: some other run's process, not ours
    marker = f"bench-procs-orphan-{os.getpid()}"
    orphan_src = BURN.format(s=1.5) + f"# {marker}\n"
    subprocess.run(["sh", "-c", f'{sys.executable} -c "$0" >/dev/null 2>&1 &', orphan_src],
                   check=True)
    try:
        time.sleep(0.1)
        with procs.ProcSampler(interval=0.02, root=os.getpid()) as mine, \
                procs.ProcSampler(interval=0.02) as everything:
            own = subprocess.Popen([sys.executable, "-c", BURN.format(s=0.4)])
            own.wait()
        orphans = [int(p) for p in os.listdir("/proc") if p.isdigit()
                   and marker.encode() in _cmdline(int(p))]
        assert orphans, "the orphan burner is not running"
        mine_pids = {pid for pid, _n, _u in mine.used()}
        all_pids = {pid for pid, _n, u in everything.used() if u > 0.1}
        assert own.pid in mine_pids                      # our own child is counted
        assert not mine_pids & set(orphans)              # the stranger is not
        assert set(orphans) & all_pids                   # (which it would be without a root)
    finally:
        for p in os.listdir("/proc"):
            if p.isdigit() and marker.encode() in _cmdline(int(p)):
                try:
                    os.kill(int(p), 9)
                except OSError:
                    pass


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read()
    except OSError:
        return b""
