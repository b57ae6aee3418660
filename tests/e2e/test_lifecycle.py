"""Policy reload (SIGHUP, file change, invalid file kept out) and clean shutdown."""

from __future__ import annotations

import json
import signal
import time

import pytest

from tests.e2e.harness import POLICY_RULES, BastionRig


@pytest.fixture
def life_rig(tmp_path_factory, issuer):
    r = BastionRig(tmp_path_factory.mktemp("life"), issuer).setup().start()
    yield r
    r.close()


def _without_echo() -> str:
    return POLICY_RULES.replace('commands = ["echo", ', 'commands = [')


def _policy(rig) -> dict:
    """The policy in force as `bastion status` shows it."""
    return json.loads(rig.cli("status", "--json").out)["serve"]["policy"]


def _digest(rig) -> str:
    """The digest `bastion policy check` gives the rig's policy file."""
    return json.loads(rig.cli("policy", "check", "--json").out)["digest"]


def test_sighup_reloads_the_policy(life_rig, token):
    assert life_rig.ssh(token, "echo before").returncode == 0
    first = _policy(life_rig)
    assert first["digest"] == _digest(life_rig) and first["refused"] is None
    assert first["path"] == str(life_rig.policy_path)
    life_rig.write_policy(life_rig.policy_text(_without_echo()))
    life_rig.proc.send_signal(signal.SIGHUP)
    life_rig.wait_log("policy reloaded")
    r = life_rig.ssh(token, "echo after")
    assert r.returncode == 126
    assert "<default>" in r.err
    now = _policy(life_rig)
    assert now["digest"] == _digest(life_rig) != first["digest"]
    assert now["loaded"] > first["loaded"]


def test_a_changed_file_is_reloaded_without_a_signal(life_rig, token):
    life_rig.write_policy(life_rig.policy_text(_without_echo()))
    life_rig.wait_log("policy reloaded", timeout=15)
    assert life_rig.ssh(token, "echo after").returncode == 126


def test_an_invalid_policy_is_refused_and_the_previous_one_kept(life_rig, token):
    kept = _digest(life_rig)
    life_rig.write_policy(life_rig.policy_text(POLICY_RULES.replace('action = "deny"',
                                                                    'action = "maybe"', 1)))
    life_rig.proc.send_signal(signal.SIGHUP)
    log = life_rig.wait_log("previous policy kept")
    assert "maybe" in log
    assert life_rig.ssh(token, "echo still-allowed").out == "still-allowed\n"
    r = life_rig.ssh(token, f"rm -rf {life_rig.canary_dir}")
    assert r.returncode == 126                 # the old deny rule still holds
    # `bastion status` says the reload was refused, why, and which policy is still in force
    refused = _policy(life_rig)
    assert refused["digest"] == kept and "maybe" in refused["refused"]
    human = life_rig.cli("status").out
    assert "reload refused" in human and "the policy above stays in force" in human
    life_rig.write_policy()                    # fixed: the next reload clears it
    life_rig.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 15
    while _policy(life_rig)["refused"] is not None and time.monotonic() < deadline:
        time.sleep(0.1)
    fixed = _policy(life_rig)
    assert fixed["refused"] is None and fixed["digest"] == _digest(life_rig) == kept
    assert "reload refused" not in life_rig.cli("status").out


def test_sigterm_tells_sessions_closes_recordings_and_exits(life_rig, token):
    proc = life_rig.ssh_popen(token, "echo started; sleep 30")
    assert proc.stdout.readline() == b"started\n"
    t0 = time.monotonic()
    assert life_rig.stop(signal.SIGTERM) == 0
    assert time.monotonic() - t0 < 14            # it did not wait for the 30 s command
    out, err = proc.communicate(timeout=15)
    assert b"shutting down" in err
    log = life_rig.log()
    assert "bastion stopped" in log
    rows = json.loads(life_rig.cli("sessions", "list", "--json").out)
    assert rows and all(r["status"] != "active" for r in rows)
    assert life_rig.cli("verify").returncode == 0
