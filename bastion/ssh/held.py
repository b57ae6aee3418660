"""Holding a command for a human: the session side of just-in-time approval.

Mixed into :class:`bastion.ssh.session.InnerSession`.  An exec command or a shell
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

from bastion.ssh.masking import masked_decision
from bastion.ssh.relay import printable

log = logging.getLogger("bastion.session")

EXIT_BASTION_ERROR = 255


class ReviewMixin:
    def _tell(self, message: str) -> None:
        """A line for the agent (stderr for exec, the terminal for a shell), recorded too."""
        nl = "\r\n" if self.term_type else "\n"
        text = ((nl if self.kind == "shell" else "") + message + nl).encode("utf-8", "replace")
        self._recorded(self.rec.output, self.ctx.services.mask(text.decode()).encode(),
                       stderr=self.kind != "shell")
        if self._closed or self.chan is None:
            return
        if self.kind == "shell":
            self.chan.write(text)
        else:
            self.chan.write_stderr(text)

    async def _ask_approval(self, line: str, decision, command_id: int | None):
        """Hold ``line`` for a human; returns the ApprovalOutcome (never runs anything itself)."""
        from bastion.approvals.notices import record_outcome, record_request, waiting_message
        from bastion.errors import ApprovalError
        services = self.ctx.services
        masked = masked_decision(decision, services.detectors)
        self._tell(f"bastion: held for review by rule {decision.rule or '<none>'}: "
                   f"{printable(services.mask(decision.reason))}")
        creating = asyncio.ensure_future(services.broker.create(
            principal=self.ctx.principal, target=self.ctx.target,
            login=self.ctx.login or self.ctx.target.user, line=services.mask(line),
            decision=masked, session_id=self.ctx.recording.id if self.ctx.recording else None,
            command_id=command_id, channel=self.kind,
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
            log.error("session %s: approval request failed: %s", self.ctx.where, exc)
            return ApprovalOutcome(request_id=0, approved=False, approver=None,
                                   reason=f"the approval request failed: {exc}",
                                   answered_at=time.time(), via="error")
        record_request(self.rec, pending)
        if pending.outcome is None:
            self._tell(waiting_message(pending))
        outcome = await pending.wait()
        record_outcome(self.rec, outcome, command_id)
        if outcome.approved and pending.outcome is None:
            from bastion.approvals.notices import outcome_message
            self._tell(outcome_message(outcome))
        return outcome


def _withdraw_created(creating: "asyncio.Future") -> None:
    if creating.cancelled() or creating.exception() is not None:
        return
    creating.result().cancel("the requester withdrew it while it was being created")
