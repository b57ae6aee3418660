"""``serve --workers``: a worker that fails at every start is given up on (a start limit).

Real processes under the real supervising parent (bastion.cli.workers.Parent): worker 1
listens (writes its ready byte) and runs until SIGTERM; worker 2 starts once, crashes, and
from then on exits before listening every time (the test arranges it with a marker file).
The parent must stop starting it after START_LIMIT_BURST failed starts, stop worker 1
cleanly, and return 1 with a message naming worker 2 and its last exit.
"""

from __future__ import annotations

import logging
import signal
import sys
import textwrap
from pathlib import Path

from bastion.cli import workers

WORKER = textwrap.dedent("""
    import os, signal, sys, time
    from pathlib import Path
    index = int(os.environ["BASTION_WORKER"].split(":")[0])
    marker = Path(sys.argv[1])
    log = Path(sys.argv[2])
    if index == 2 and marker.exists():
        with log.open("a") as f:
            f.write("w2 refused\\n")
        sys.exit(3)                     # cannot start: exits before listening
    os.write(int(os.environ["BASTION_WORKER_READY_FD"]), b"1")
    if index == 2:
        marker.write_text("crashed once")
        sys.exit(2)                     # crashes after it listened once
    stopped = []
    signal.signal(signal.SIGTERM, lambda *a: stopped.append(1))
    while not stopped:
        time.sleep(0.05)
    with log.open("a") as f:
        f.write("w1 stopped cleanly\\n")
""")


def test_a_worker_failing_every_start_is_given_up_on(tmp_path: Path, caplog) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    marker, log = tmp_path / "marker", tmp_path / "log"
    parent = workers.Parent(2, "127.0.0.1", 0, tmp_path / "policy.toml", tmp_path)
    for w in parent.workers:
        w.argv = [sys.executable, str(script), str(marker), str(log)]
    old = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    try:
        with caplog.at_level(logging.INFO, logger="bastion.serve"):
            code = parent.run()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    assert code == 1
    lines = log.read_text().splitlines()
    assert lines.count("w2 refused") == workers.START_LIMIT_BURST
    assert lines[-1] == "w1 stopped cleanly"
    assert parent.workers[0].proc.returncode == 0
    text = caplog.text
    assert (f"worker 2 failed to start {workers.START_LIMIT_BURST} times within 60 s"
            in text)
    assert "exited with status 3 before listening" in text
    assert "giving up" in text
