"""What a held session tells the agent and writes into its recording.  Pure text.

For the SSH session code::

    pending = await broker.create(...)
    record_request(channel_recording, pending)            # marker "approval request 42: ..."
    if pending.outcome is None:
        write_stderr(waiting_message(pending))            # "bastion: waiting for approval, ..."
    outcome = await pending.wait()
    record_outcome(channel_recording, outcome, command_id)  # marker; approver on the command row
    if not outcome.approved:
        write_stderr(outcome_message(outcome)); exit EXIT_NOT_APPROVED (125)

A refused answer (``via="refused"``, see bastion.approvals.proof) tells the agent only
that the answer could not be verified; the marker says whose answer was refused and why.

Every string is one line, sanitised (approver names and reasons come from
people and tokens, lines from agents).  ``record_*`` call the
:class:`bastion.recording.ChannelRecording` API (``marker``,
``command_approver``) and let its RecordingError through (the caller ends the
channel, as for any recording failure).

Not covered: the waiting itself (broker.py).
"""

from __future__ import annotations

import datetime as _dt
from typing import Any

from bastion.approvals.model import (
    VIA_APPROVER, VIA_CANCELLED, VIA_NO_APPROVERS, VIA_NODE_GONE, VIA_REFUSED, VIA_RESTART,
    VIA_SHUTDOWN, VIA_TIMEOUT, VIA_WINDOW, ApprovalOutcome,
)
from bastion.proto.sanitize import sanitize

LIMIT = 300


def _one_line(text: str | None) -> str:
    s = sanitize(text or "")
    return s if len(s) <= LIMIT else s[:LIMIT] + "…"


def _until(ts: float | None) -> str:
    if ts is None:
        return "?"
    return _dt.datetime.fromtimestamp(ts, _dt.timezone.utc).strftime("%H:%M:%S UTC")


def waiting_message(pending: Any) -> str:
    """``bastion: waiting for approval, request 42, up to 300 s``."""
    return (f"bastion: waiting for approval, request {pending.id}, "
            f"up to {round(pending.timeout)} s")


def outcome_message(outcome: ApprovalOutcome) -> str:
    """The line the agent gets once a request is decided."""
    rid = outcome.request_id
    who = _one_line(outcome.approver) if outcome.approver else "an approver"
    reason = _one_line(outcome.reason)
    if outcome.approved:
        if outcome.via == VIA_WINDOW:
            return (f"bastion: approved (request {rid}) within the grant window of request "
                    f"{outcome.granted_by} by {who}, until {_until(outcome.window_until)}")
        return f"bastion: approved by {who} (request {rid}): {reason}"
    if outcome.via == VIA_APPROVER:
        return f"bastion: denied by {who} (request {rid}): {reason}; it was not run"
    why = {
        VIA_TIMEOUT: "nobody answered in time",
        VIA_RESTART: "the bastion restarted",
        VIA_SHUTDOWN: "the bastion is shutting down",
        VIA_CANCELLED: "the request was withdrawn",
        VIA_NO_APPROVERS: "no approvers are configured",
        VIA_REFUSED: "the answer could not be verified by the bastion",
        VIA_NODE_GONE: "the bastion node holding it stopped answering",
    }.get(outcome.via, reason)
    return f"bastion: not approved (request {rid}): {why}; it was not run"


def request_marker(pending: Any) -> str:
    if pending.outcome is not None:
        return f"approval request {pending.id}: {pending.outcome.via}"
    return f"approval request {pending.id}: waiting up to {round(pending.timeout)} s"


def outcome_marker(outcome: ApprovalOutcome) -> str:
    state = "approved" if outcome.approved else "not approved"
    who = f" by {_one_line(outcome.approver)}" if outcome.approver else ""
    return (f"approval request {outcome.request_id}: {state}{who} via {outcome.via}: "
            f"{_one_line(outcome.reason)}")


def record_request(rec: Any, pending: Any) -> None:
    """A marker in the channel's recording when the request is created."""
    rec.marker(request_marker(pending))


def record_outcome(rec: Any, outcome: ApprovalOutcome, command_id: int | None = None) -> None:
    """A marker with the outcome; for an approved command, its approver on the command row."""
    rec.marker(outcome_marker(outcome))
    if outcome.approved and command_id is not None and outcome.approver:
        label = outcome.approver + (f" (request {outcome.request_id}"
                                    + (f", window of {outcome.granted_by})"
                                       if outcome.via == VIA_WINDOW else ")"))
        rec.command_approver(command_id, label)
