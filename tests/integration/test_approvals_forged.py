"""Forged answers written straight into the SQLite index while the broker waits: refused.

Someone who can write ``index.sqlite`` skips the approver CLI and its checks; the broker
judges the row itself when it acts on it (bastion.approvals.proof).  Each forgery is
written through a separate SQLite connection, as another process would.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time

import pytest

from bastion.approvals import ApprovalBroker, ApprovalStore, Approver
from bastion.config.settings import Settings
from bastion.identity.principal import Principal
from bastion.policy import Action, Decision
from tests.approvalkit import ISSUER, forge

SETTINGS = Settings(approvers=("role:sre-leads",), approval_timeout=300, approval_window_max=900,
                    approval_issuers=(ISSUER,))
AGENT = Principal(subject="agent-oid", tenant="t1", app_id="agent-app", name="deploy-bot",
                  roles=("agents",))
REVIEW = Decision(Action.REVIEW, "restarts", "systemctl restart needs approval")
ALICE = Approver(subject="alice-oid", tenant="t1", name="Alice", roles=("sre-leads",))
MALLORY = Approver(subject="mallory-oid", tenant="t1", name="Mallory", roles=("agents",))
SELF = Approver(subject="agent-oid", tenant="t1", app_id="other-app", name="deploy-bot",
                roles=("sre-leads",))


def create(broker, **kw):
    args = dict(principal=AGENT, target="web1", login="deploy", line="systemctl restart nginx",
                decision=REVIEW, session_id=7, command_id=9, channel="exec")
    args.update(kw)
    return broker.create(**args)


@pytest.fixture
async def broker(tmp_path):
    b = ApprovalBroker.open(tmp_path, SETTINGS, node="test-node", poll_interval=0.05)
    yield b
    b.close()


FORGERIES = {
    "wrong approver": (dict(who=MALLORY), "not-an-approver"),
    "requester as approver": (dict(who=SELF), "four-eyes"),
    "oversized window": (dict(who=ALICE, window=86400), "window-too-long"),
    "no proof": (dict(who=ALICE, prove=False), "unproven"),
    "proof from another issuer": (dict(who=ALICE, approver_proof=json.dumps(
        {"v": 1, "claims": {"iss": "https://evil.example/", "oid": "alice-oid",
                            "tid": "t1", "name": "Alice", "roles": ["sre-leads"],
                            "exp": time.time() + 3600},
         "token_sha256": "0" * 64, "validated_at": time.time() - 1})), "untrusted-issuer"),
    "approved via a window": (dict(who=ALICE, via="window", granted_by=1), "not-an-answer"),
    "deadline pushed out": (dict(who=ALICE, expires=time.time() + 86400), "altered"),
}


@pytest.mark.parametrize("forgery", list(FORGERIES))
async def test_forged_answer_is_refused(broker, tmp_path, caplog, forgery):
    kwargs, code = FORGERIES[forgery]
    pending = await create(broker)
    waiter = asyncio.ensure_future(pending.wait())
    with caplog.at_level(logging.WARNING, logger="bastion.audit"):
        forge(tmp_path, pending.id, **kwargs)
        outcome = await waiter
    assert (outcome.approved, outcome.via, outcome.approver) == (False, "refused", None)
    assert f"({code})" in outcome.reason
    row = ApprovalStore.open(tmp_path).get(pending.id)
    assert (row.status, row.via) == ("denied", "refused")
    assert row.refused is not None and f"({code})" in row.refused_reason
    assert row.approver_subject == kwargs["who"].subject          # the evidence stays
    refusals = [r for r in caplog.records if "REFUSED" in r.getMessage()]
    assert len(refusals) == 1 and refusals[0].levelno == logging.ERROR
    assert f"request {pending.id} REFUSED" in refusals[0].getMessage()
    assert code in refusals[0].getMessage()


async def test_a_real_answer_still_passes(broker, tmp_path):
    pending = await create(broker)
    waiter = asyncio.ensure_future(pending.wait())
    forge(tmp_path, pending.id, ALICE, window=600)   # what the CLI writes, byte for byte
    outcome = await waiter
    assert (outcome.approved, outcome.via, outcome.approver) == (True, "approver",
                                                                 "Alice (alice-oid)")
    again = await create(broker)                      # and its window applies
    assert again.outcome is not None and again.outcome.via == "window"


async def test_a_forged_denial_denies(broker, tmp_path):
    pending = await create(broker)
    waiter = asyncio.ensure_future(pending.wait())
    forge(tmp_path, pending.id, MALLORY, approve=False)
    outcome = await waiter
    assert outcome.approved is False and outcome.via == "refused"


async def test_unproven_answers_pass_only_when_the_settings_allow(tmp_path, caplog):
    lax = dataclasses.replace(SETTINGS, approval_allow_unproven=True)
    broker = ApprovalBroker.open(tmp_path, lax, node="n", poll_interval=0.05)
    try:
        pending = await create(broker)
        waiter = asyncio.ensure_future(pending.wait())
        with caplog.at_level(logging.WARNING, logger="bastion.audit"):
            forge(tmp_path, pending.id, ALICE, prove=False)
            outcome = await waiter
        assert outcome.approved is True
        assert any("WITHOUT token proof" in r.getMessage() for r in caplog.records)
        # everything else is still checked
        second = await create(broker, line="systemctl restart db")
        waiter = asyncio.ensure_future(second.wait())
        forge(tmp_path, second.id, SELF, prove=False)
        assert (await waiter).via == "refused"
    finally:
        broker.close()


async def test_a_forgery_found_at_the_deadline_is_refused(tmp_path):
    """The poller never ticks (one hour): the forged row is read by the timeout path."""
    broker = ApprovalBroker.open(tmp_path, SETTINGS, node="n", poll_interval=3600)
    try:
        pending = await create(broker, timeout=0.5)
        forge(tmp_path, pending.id, MALLORY)
        outcome = await pending.wait()
        assert (outcome.approved, outcome.via) == (False, "refused")
        assert ApprovalStore.open(tmp_path).get(pending.id).via == "refused"
    finally:
        broker.close()


async def test_a_forgery_found_at_shutdown_is_refused(tmp_path):
    broker = ApprovalBroker.open(tmp_path, SETTINGS, node="n", poll_interval=3600)
    pending = await create(broker)
    waiter = asyncio.ensure_future(pending.wait())
    await asyncio.sleep(0)
    forge(tmp_path, pending.id, MALLORY)
    broker.close()
    outcome = await waiter
    assert (outcome.approved, outcome.via) == (False, "refused")
    assert ApprovalStore.open(tmp_path).get(pending.id).via == "refused"


async def test_an_approver_removed_by_a_reload_no_longer_approves(tmp_path):
    broker = ApprovalBroker.open(tmp_path, SETTINGS, node="n", poll_interval=3600)
    try:
        pending = await create(broker, timeout=0.5)
        forge(tmp_path, pending.id, ALICE)
        broker.reconfigure(dataclasses.replace(SETTINGS, approvers=("role:new-leads",)))
        outcome = await pending.wait()
        assert (outcome.approved, outcome.via) == (False, "refused")
        assert "not-an-approver" in outcome.reason
    finally:
        broker.close()


async def test_forged_grant_window_does_not_approve_new_requests(broker, tmp_path, caplog):
    pending = await create(broker)
    waiter = asyncio.ensure_future(pending.wait())
    forge(tmp_path, pending.id, ALICE, window=300)
    assert (await waiter).approved                     # a real approval with a window
    forge(tmp_path, pending.id, ALICE, window=86400)   # then someone stretches it
    with caplog.at_level(logging.WARNING, logger="bastion.audit"):
        again = await create(broker)
    assert again.outcome is None                       # held for a human again
    assert any("NOT applied" in r.getMessage() and "window-too-long" in r.getMessage()
               for r in caplog.records)
    assert "grant window refused" in ApprovalStore.open(tmp_path).get(pending.id).refused_reason
    again.cancel()


def test_judge_refuses_a_request_it_never_created(tmp_path):
    broker = ApprovalBroker.open(tmp_path, SETTINGS, node="n")
    try:
        record = broker.store.create(node="n", principal=AGENT, target="web1", login="deploy",
                                     line="x", decision=REVIEW, session_id=None,
                                     command_id=None, channel="exec", timeout=60)
        forge(tmp_path, record.id, ALICE)
        outcome, refusal = broker.judge(None, broker.store.get(record.id))
        assert outcome.approved is False and "(unknown)" in refusal
    finally:
        broker.close()
