"""Found by the soak (bench/soak.py): a channel closing just as the disk fills lost what the
masker had held back -- bytes the agent had already seen.

Closing a recording writes the streams' last, held-back bytes (docs/RECORDINGS.md: up to
1,024 visible bytes, shown to the agent before they are decided) and the exit marker.  When
that write failed with ENOSPC, ``Sink.close`` dropped its buffer with the file, after the
writer had already let go of the sink, so the failing worker's write-out (which first
frees the reserve) never saw it.  The bound for a full disk is nothing: the tail must be in
the recording.  Real files on a real tmpfs, the real recording worker.
"""

from __future__ import annotations

import subprocess

import pytest

from bastion.identity.principal import Principal
from bastion.proto.masker import BUILTIN
from bastion.recording import Recorder, player
from bastion.recording.verify import verify_index
from bench.soak import Filler

AGENT = Principal(subject="oid-agent", app_id="app-1", name="deploy-bot", roles=("agents",))


@pytest.fixture
def tmpfs(tmp_path):
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m,mode=0700", "bastion-close",
                        str(mnt)], capture_output=True, timeout=30)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=30)


def test_the_held_back_tail_is_recorded_when_closing_hits_a_full_disk(tmpfs, monkeypatch):
    # the index is SQLite in the tmpfs, whatever this process's environment says: in the
    # PostgreSQL pass the in-process tier's bastion (tests/inproc/conftest.py, session-scoped)
    # leaves its store's BASTION_* variables set in the pytest-xdist worker that ran it, and
    # on that store verify found the rig's sessions, whose recordings are not in this data
    # dir (the two CI failures this test's message below was added for)
    for key in ("BASTION_STORE_URL", "BASTION_STORE_PASSWORD_FILE", "BASTION_NODE"):
        monkeypatch.delenv(key, raising=False)
    data = tmpfs / "data"
    rec = Recorder.open(data, backoff=(3600, 3600))
    try:
        s = rec.start_session(principal=AGENT, client="c", target="t", login="l")
        ch = s.open_channel("exec", command="seq", mask=BUILTIN)     # as `bastion serve` does
        # tmpfs hands out whole pages: the tail must need a new one to meet ENOSPC, so the
        # file is grown (one acknowledged line at a time) to just short of a page boundary
        shown = b""
        for i in range(2000):
            line = b"line %d of plain text\n" % i
            ch.output(line)
            shown += line
            rec.flush()                 # acknowledged: the agent may see all of it now
            if i > 40 and 4096 - ch.path.stat().st_size % 4096 < 100:
                break
        else:
            pytest.fail("the recording never came near a page boundary")
        filler = Filler(tmpfs)          # not one byte free from here on
        try:
            ch.close(exit_status=0)     # writes the held-back tail: ENOSPC
            assert rec.wait_state("failed") == "failed"
        finally:
            filler.free()
        rec.retry_now()
        assert rec.wait_state("ok") == "ok"
        s.close()
        rec.flush()
        _, events = player.load(ch.path)
        recorded = player.stream_bytes(events, "stdout")
    finally:
        rec.close()
    assert recorded == shown, f"{len(shown) - len(recorded)} B shown but not recorded"
    report = verify_index(data)
    # (failed twice in CI's parallel runs and not reproduced since: say what verify found
    # and how the file ends, for the next time)
    assert report.ok, (f"verify: {[p.message for p in report.problems]}; the file "
                       f"({ch.path.stat().st_size} B) ends with "
                       f"{ch.path.read_bytes()[-400:]!r}")
