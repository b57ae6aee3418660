"""An agent (or a target) that tries to stop recording for the whole node.

The recording worker applies every session's operations in one batch; one it cannot store
failed the batch, and the replay after the failure sent the same operation again, so every
session on the node was refused until a restart (docs/RELIABILITY.md).  Each test here sends
one payload through the real bastion -- the OpenSSH client where it can send it, an asyncssh
client as the attacker where it cannot -- aimed at a canary in the test's temp dir, then
checks that the same rig still records a normal command (``ssh ... echo ok`` succeeds and its
command row is indexed) and that the bastion log has no "recording failed".

Both backends: the module's rig runs once on the SQLite index and once on a private
PostgreSQL store (several holes were PostgreSQL's own: a btree index entry's size limit).
"""

from __future__ import annotations

import hashlib
import itertools
import os
import random
import string
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.harness import POLICY_RULES, BastionRig, Result, pg_store_env

_n = itertools.count()


def _policy(files: Path) -> str:
    return f"""
[[grants]]
who = ["role:agents"]
targets = ["web1"]
channels = ["sftp"]

[[rules]]
name = "files-reads"
action = "allow"
reads = ["{files}/**"]

[[rules]]
name = "files-writes"
action = "allow"
writes = ["{files}/up/**"]
"""


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def arig(request, tmp_path_factory, issuer):
    root = Path(os.path.realpath(tmp_path_factory.mktemp(f"abuse-{request.param}")))
    store_env = pg_store_env(f"abuse_{root.name}") if request.param == "postgresql" else {}
    r = BastionRig(root, issuer, store_env=store_env).setup()
    r.files = root / "files"
    (r.files / "up").mkdir(parents=True)
    r.write_policy(r.policy_text(POLICY_RULES + _policy(r.files)))
    r.start()
    yield r
    r.close()


def _words(n: int, seed: int) -> str:
    """``n`` random letters: text a compressor cannot shrink much (an index entry's size)."""
    rnd = random.Random(seed)
    return "".join(rnd.choice(string.ascii_letters) for _ in range(n))


def _rows(rig: BastionRig, sql: str, *params: object, want: int = 1) -> list[dict]:
    """Rows of ``sql`` once there are ``want`` of them (the recording worker writes them)."""
    deadline = time.monotonic() + 15
    while True:
        conn = rig.index()
        try:
            rows = [dict(r) for r in conn.execute(sql, params)]
        finally:
            conn.close()
        if len(rows) >= want or time.monotonic() > deadline:
            return rows
        time.sleep(0.1)


def recording_goes_on(rig: BastionRig, token: str) -> None:
    """The node still records: a normal command runs and its row is indexed, and the worker
    never failed."""
    mark = f"still-recorded-{next(_n)}"
    after = rig.ssh(token, f"echo {mark}")
    assert after.returncode == 0, after.err + rig.log()[-3000:]
    assert after.out == f"{mark}\n"
    assert _rows(rig, "SELECT id FROM commands WHERE line = ?", f"echo {mark}"), \
        rig.log()[-3000:]
    assert "recording failed" not in rig.log(), rig.log()[-3000:]


def sftp(rig: BastionRig, token: str, batch: str) -> Result:
    path = rig.root / f"batch-{next(_n)}"
    path.write_text(batch)
    argv = ["sftp", "-F", str(rig.ssh_config), "-b", str(path), f"{rig.sshd.user}@web1"]
    p = subprocess.run(argv, env=rig.agent_env(token), capture_output=True, timeout=120,
                       stdin=subprocess.DEVNULL, start_new_session=True)
    return Result(p.returncode, p.stdout, p.stderr)


# -- sftp: paths longer than an index entry may be ------------------------------------------

def test_a_put_into_a_deep_directory_is_recorded_and_recording_goes_on(arig, token, tmp_path):
    # The target's realpath of a deep directory (each step a short `cd`, so the real OpenSSH
    # sftp sends it) is ~3,600 bytes: the transfers row's path.  PostgreSQL's btree index on
    # transfers.path refuses an entry over 2,704 bytes, which failed the batch and its replay.
    deep = arig.files / "up"
    steps = [_words(200, seed) for seed in range(18)]
    for step in steps:
        deep = deep / step
    deep.mkdir(parents=True)
    local = tmp_path / "payload"
    local.write_bytes(b"deep payload\n")
    batch = f"cd {arig.files}/up\n" + "".join(f"cd {s}\n" for s in steps) + f"put {local} landed\n"
    r = sftp(arig, token, batch)
    assert r.returncode == 0, r.err + arig.log()[-3000:]
    assert (deep / "landed").read_bytes() == b"deep payload\n"
    recording_goes_on(arig, token)
    full = str(deep / "landed")
    [row] = _rows(arig, "SELECT path, result, sha256 FROM transfers WHERE op = 'put' AND "
                        "path LIKE ?", f"{arig.files}/up/{steps[0]}%")
    digest = hashlib.sha256(full.encode()).hexdigest()
    assert (row["result"], row["sha256"]) == ("ok", hashlib.sha256(b"deep payload\n").hexdigest())
    assert row["path"] == f"{full[:2048]}...[{len(full) - 2048} more bytes; sha256 {digest}]"
