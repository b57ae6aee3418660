"""Holding a command for a human: the session side of just-in-time approval.

Used by :class:`bastion.ssh.session.InnerSession`.  An exec command or a shell
line whose decision is ``review`` is announced to the agent ("held for review by
rule R", "waiting for approval, request N, up to T s"), recorded as a request
marker, and held until :class:`bastion.approvals.ApprovalBroker` returns an
outcome.  Only an approved command continues; anything else (denied, timed out,
restart, shutdown, withdrawn) runs nothing.  The agent's input is paused while a
shell line waits.  The broker and the approver CLI are in :mod:`bastion.approvals`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable

from bastion.ssh.masking import masked_decision
from bastion.ssh.relay import printable

log = logging.getLogger("bastion.session")


async def ask_approval(ctx, rec, tell: Callable[[str], None], line: str, decision,
                       command_id: int | None, channel: str):
    """Hold ``line`` for a human; returns the ApprovalOutcome (never runs anything itself).

    ``rec``: the channel's recording (request and outcome markers); ``tell``: shows a line to
    the agent and records it; ``channel``: "exec" or "shell", as the approvers see it.
    Cancelling the call withdraws the request (also while it is being stored)."""
    from bastion.approvals.notices import record_outcome, record_request, waiting_message
    from bastion.errors import ApprovalError
    services = ctx.services
    masked = masked_decision(decision, services.detectors)
    tell(f"bastion: held for review by rule {decision.rule or '<none>'}: "
         f"{printable(services.mask(decision.reason))}")
    creating = asyncio.ensure_future(services.broker.create(
        principal=ctx.principal, target=ctx.target,
        login=ctx.login or ctx.target.user, line=services.mask(line),
        decision=masked, session_id=ctx.recording.id if ctx.recording else None,
        command_id=command_id, channel=channel,
        timeout=float(services.config.settings.approval_timeout)))
    try:
        pending = await asyncio.shield(creating)
    except asyncio.CancelledError:
        # withdrawn (^C, or the agent left) while the request was being stored: once it
        # exists, withdraw it too, so that no approver answers a request nobody waits for
        creating.add_done_callback(_withdraw_created)
        raise
    except ApprovalError as exc:
        from bastion.approvals.model import ApprovalOutcome
        log.error("session %s: approval request failed: %s", ctx.where, exc)
        return ApprovalOutcome(request_id=0, approved=False, approver=None,
                               reason=f"the approval request failed: {exc}",
                               answered_at=time.time(), via="error")
    record_request(rec, pending)
    if pending.outcome is None:
        tell(waiting_message(pending))
    outcome = await pending.wait()
    record_outcome(rec, outcome, command_id)
    if outcome.approved and pending.outcome is None:
        from bastion.approvals.notices import outcome_message
        tell(outcome_message(outcome))
    return outcome


def _withdraw_created(creating: "asyncio.Future") -> None:
    if creating.cancelled() or creating.exception() is not None:
        return
    creating.result().cancel("the requester withdrew it while it was being created")
