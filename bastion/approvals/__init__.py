"""Just-in-time approvals: a ``review`` command waits for a human who answers in a terminal.

Modules:

* ``model``     requests and outcomes as data; who may answer (pure)
* ``store``     the ``approvals`` table in ``DATA_DIR/index.sqlite`` (shared by processes)
* ``broker``    :class:`ApprovalBroker`, what ``bastion serve`` holds commands with (asyncio)
* ``notices``   what the agent reads and the recording gets (pure text)
* ``webhook``   the optional POST when a request is created (a thread, retries)
* ``approver``  the approver side: token sources, ``bastion login``, answering
* ``view``      rich tables for ``bastion approvals list`` / ``watch``

See docs/APPROVALS.md.
"""

from bastion.approvals.broker import ApprovalBroker, PendingApproval
from bastion.approvals.model import ApprovalOutcome, ApprovalRecord, Approver
from bastion.approvals.notices import (outcome_message, record_outcome, record_request,
                                       waiting_message)
from bastion.approvals.store import ApprovalStore

__all__ = ["ApprovalBroker", "PendingApproval", "ApprovalOutcome", "ApprovalRecord", "Approver",
           "ApprovalStore", "waiting_message", "outcome_message", "record_request",
           "record_outcome"]
