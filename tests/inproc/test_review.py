"""Commands held for review on the exec path of bastion/ssh/ (ssh/held.py): approved, denied,
refused, expired and withdrawn, as the agent sees them and as the index keeps them.

Each held command touches a file in the test's own temp dir: only an approved one may
create it.  Approvers answer through the library the approver CLI calls (a real token from
the dev issuer, validated), or write a forged answer straight into the index.
"""

from __future__ import annotations

import asyncio

import pytest

from bastion.approvals.model import Approver
from bastion.errors import ApprovalError
from bastion.secret import Secret
from tests.approvalkit import forge
from tests.inproc.rig import WAITING, agent, wait_for


def _answer(bastion, approver_token, request_id, *, approve, reason):
    from bastion.approvals.approver import answer, authenticate
    from bastion.approvals.store import ApprovalStore
    config = bastion.services.config
    approver = authenticate(config, Secret(approver_token))
    store = ApprovalStore.open(bastion.data_dir, create=False)
    try:
        return answer(store, config, approver, request_id, approve=approve, reason=reason)
    finally:
        store.close()


async def _held(bastion, token, user, command, on_waiting):
    """Run ``command``; once it is announced as waiting, ``await on_waiting(request id)``."""
    async with agent(bastion, token, user) as (_outer, inner):
        proc = await inner.create_process(command)
        found = await wait_for(proc.stderr, WAITING)
        await on_waiting(int(found.group(1)))
        result = await asyncio.wait_for(proc.wait(check=False), 30)
        return int(found.group(1)), found.group(0), result


def _hold(bastion, rig, token, command, on_waiting):
    return asyncio.run(_held(bastion, token, rig.sshd.user, command, on_waiting))


def test_an_approved_command_runs_once_answered(bastion, rig, token, approver_token, tmp_path):
    marker = tmp_path / "approved"
    command = f"touch {marker}"

    async def approve(request_id):
        assert not marker.exists()                        # held: nothing ran yet
        await asyncio.to_thread(_answer, bastion, approver_token, request_id, approve=True,
                                reason="ticket 42")
    rid, waiting, result = _hold(bastion, rig, token, command, approve)
    assert result.exit_status == 0
    assert marker.exists()
    assert waiting == f"waiting for approval, request {rid}, up to 60 s"
    row = bastion.command(command)
    assert (row["action"], row["rule"], row["exit_status"]) == (
        "review", "touch-needs-review", 0)
    assert "inproc-sre-lead" in row["approver"]
    approval = bastion.approval(rid)
    assert (approval["status"], approval["via"], approval["answer_reason"]) == (
        "approved", "approver", "ticket 42")
    markers = bastion.markers(bastion.channel(command))
    assert any(f"request {rid}" in m for m in markers), markers


def test_a_denied_command_does_not_run(bastion, rig, token, approver_token, tmp_path):
    marker = tmp_path / "denied"
    command = f"touch {marker}"

    async def deny(request_id):
        await asyncio.to_thread(_answer, bastion, approver_token, request_id, approve=False,
                                reason="not during the freeze")
    rid, _, result = _hold(bastion, rig, token, command, deny)
    assert result.exit_status == 125
    assert "not during the freeze" in result.stderr
    assert not marker.exists()
    assert bastion.approval(rid)["status"] == "denied"
    assert bastion.channel(command)["exit_status"] == 125
    assert bastion.command(command)["approver"] is None


def test_a_forged_answer_is_refused_and_nothing_runs(bastion, rig, token, tmp_path):
    marker = tmp_path / "forged"
    command = f"touch {marker}"

    async def forge_approval(request_id):
        # an answer written into the index by someone who can write it, without a token
        forge(bastion.data_dir, request_id, Approver(subject="mallory", roles=("sre-leads",)),
              prove=False, connect=rig.index)
    rid, _, result = _hold(bastion, rig, token, command, forge_approval)
    assert result.exit_status == 125
    assert "the answer could not be verified by the bastion" in result.stderr
    assert not marker.exists()
    approval = bastion.approval(rid)
    assert (approval["status"], approval["via"]) == ("denied", "refused")
    assert "(unproven)" in approval["refused_reason"]
    assert bastion.channel(command)["exit_status"] == 125


def test_an_unanswered_request_expires(bastion, rig, token, tmp_path):
    marker = tmp_path / "expired"
    command = f"touch {marker}"
    policy = rig.policy_path.read_text()
    rig.write_policy(policy.replace("approval_timeout = 60", "approval_timeout = 1"))
    try:
        assert bastion.call(bastion.services.reload)

        async def wait(request_id):
            pass
        rid, waiting, result = _hold(bastion, rig, token, command, wait)
    finally:
        rig.write_policy(policy)
        assert bastion.call(bastion.services.reload)
    assert waiting.endswith("up to 1 s")
    assert result.exit_status == 125
    assert not marker.exists()
    approval = bastion.approval(rid)
    assert (approval["status"], approval["via"]) == ("expired", "timeout")
    assert bastion.channel(command)["exit_status"] == 125


def test_leaving_withdraws_the_request(bastion, rig, token, approver_token, tmp_path):
    marker = tmp_path / "withdrawn"
    command = f"touch {marker}"

    async def leave():
        async with agent(bastion, token, rig.sshd.user) as (outer, inner):
            proc = await inner.create_process(command)
            found = await wait_for(proc.stderr, WAITING)
            outer.abort()                                 # the agent's connection is gone
            return int(found.group(1))
    rid = asyncio.run(leave())
    approval = bastion.approval(rid, settled=True)
    assert (approval["status"], approval["via"]) == ("cancelled", "cancelled")
    with pytest.raises(ApprovalError, match="already cancelled"):
        _answer(bastion, approver_token, rid, approve=True, reason="too late")
    assert not marker.exists()
    assert bastion.approval(rid)["status"] == "cancelled"
    channel = bastion.channel(command)                    # closed without an exit status
    assert (channel["status"], channel["exit_status"]) == ("closed", None)
    assert channel["ended"] is not None
    row = bastion.command(command)
    assert (row["action"], row["approver"], row["exit_status"]) == ("review", None, None)
