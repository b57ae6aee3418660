"""Issue 16, "Done when": the soak harness (bench/soak.py) in its quick form, as a regression test.

8 real OpenSSH agents (one of them in ``ssh -tt`` shells, one logging in per command) loop
commands through a real ``bastion serve`` to a real sshd for 22 s; the bastion and its
recording worker are killed with ``kill -9`` once and restarted on the same data dir and
port, and the data dir's tmpfs is filled to the last byte for 4 s.  Then every byte any agent received must be in its channel's recording
(beyond the hold-back docs/RECORDINGS.md allows for channels open at the kill: nothing),
every command that exited 0 must have its exact output and a sealed row, the bastion must
have served commands again after the kill and after the disk was freed, and ``bastion
verify`` must pass.  No time is asserted; the figures are printed.

The full soak (10 minutes, 50 agents, a kill every 2 minutes, a disk-full minute) is
``python -m bench.soak``; its figures are in docs/RELIABILITY.md.
"""

from __future__ import annotations

import pytest

from bench.soak import KILL_BOUND, quick, run_soak, summary


def test_quick_soak_loses_no_byte_an_agent_saw_and_verify_passes(tmp_path):
    r = run_soak(quick(), tmp_path)
    print("\n" + summary(r))
    assert r["failures"] == [], summary(r)
    # the same, item by item, so a failure names what broke
    assert r["lost_beyond_bound"] == 0 and r["worst_lost_elsewhere"] == 0
    assert r["worst_lost_at_kill"] <= KILL_BOUND
    assert r["not_a_prefix"] == 0 and r["unmatched"] == 0
    assert r["wrong_output"] == 0 and r["ok_not_sealed"] == 0
    assert r["verify"]["rc"] == 0, r["verify"]
    assert r["succeeded"] > 0 and r["restarts"] == 1
    assert r["kills"][0]["first_ok_s"] is not None          # served again after the kill
    if isinstance(r["disk_full"], str):                     # no tmpfs here: the rest still ran
        pytest.skip(f"the kill -9 part passed; disk full {r['disk_full']}")
    assert r["disk_full"]["first_ok_s"] is not None          # and after the disk was freed
    assert r["disk_full"]["succeeded"] == 0 or r["disk_full"]["refused"] > 0
    assert not r["bastion_log"]["token_in_log"] and not r["token_in_index"]
