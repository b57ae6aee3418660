"""Approval requests as data, and the rules of who may answer them.  Pure: no IO, no clock.

A request is held in one of these statuses; every status but ``pending`` is final:

=============  =====================================================================
``pending``    waiting for an approver, until ``expires``
``approved``   an approver said yes (``via="approver"``), or a grant window of an
               earlier approval covered it (``via="window"``)
``denied``     an approver said no (``via="approver"``), or no approver is
               configured (``via="no-approvers"``)
``expired``    nobody answered in time (``via="timeout"``), or the bastion
               restarted / shut down while it waited (``via="restart"`` /
               ``"shutdown"``), or its node stopped answering and a peer closed the
               session holding it (``via="node-gone"``, a PostgreSQL store's leases)
``cancelled``  the requester went away while waiting (``via="cancelled"``)
=============  =====================================================================

A row the broker refused to act on (its answer failed :mod:`bastion.approvals.proof`)
is rewritten ``denied`` with ``via="refused"``; the claimed approver stays in the row
as evidence and ``refused`` / ``refused_reason`` say when and why.

:func:`check_answer` is the whole decision on whether an approver may answer a
request (approver selectors, four-eyes, state, expiry, grant window bounds); the
store applies it again atomically in SQL so a race cannot slip past it.

Not covered: storage (store.py), waiting (broker.py), what the agent sees
(notices.py), token validation (bastion.identity).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Sequence

from bastion.errors import ApprovalError
from bastion.policy.selectors import any_principal_matches
from bastion.proto.sanitize import sanitize

PENDING, APPROVED, DENIED, EXPIRED, CANCELLED = "pending", "approved", "denied", "expired", \
    "cancelled"
STATUSES = (PENDING, APPROVED, DENIED, EXPIRED, CANCELLED)
VIA_APPROVER, VIA_WINDOW, VIA_TIMEOUT, VIA_RESTART, VIA_SHUTDOWN, VIA_CANCELLED, \
    VIA_NO_APPROVERS, VIA_REFUSED, VIA_NODE_GONE = "approver", "window", "timeout", "restart", \
    "shutdown", "cancelled", "no-approvers", "refused", "node-gone"
MAX_REASON = 1000                     # characters of an answer's reason

_DURATION = re.compile(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


@dataclass(frozen=True)
class ApprovalOutcome:
    """How a request ended, as the waiting session learns it."""

    request_id: int
    approved: bool
    approver: str | None          # the approver's label ("Alice (oid)"), None without one
    reason: str
    answered_at: float
    via: str                      # approver | window | timeout | restart | shutdown | cancelled |
    #                               no-approvers | refused (the broker refused the answer)
    approver_subject: str | None = None
    window_until: float | None = None
    granted_by: int | None = None  # for via="window": the request whose approval opened it


@dataclass(frozen=True)
class ApprovalRecord:
    """One row of the ``approvals`` table (raw agent text: sanitise before display)."""

    id: int
    node: str
    created: float
    expires: float
    status: str
    via: str | None
    session_id: int | None
    command_id: int | None
    channel: str | None
    requester_subject: str
    requester_tenant: str
    requester_app_id: str | None
    requester_name: str | None
    target: str
    login: str
    line: str
    commands: list = field(default_factory=list)
    rule: str | None = None
    decision_reason: str | None = None
    answered: float | None = None
    approver_subject: str | None = None
    approver_tenant: str | None = None
    approver_app_id: str | None = None
    approver_name: str | None = None
    approver_json: str | None = None
    approver_proof: str | None = None      # JSON of a proof.AnswerProof; None: unproven
    answer_reason: str | None = None
    window_until: float | None = None
    granted_by: int | None = None
    revoked: float | None = None
    revoked_by: str | None = None
    refused: float | None = None           # when the broker refused this row's answer
    refused_reason: str | None = None

    @classmethod
    def from_row(cls, row: dict) -> "ApprovalRecord":
        data = dict(row)
        try:
            commands = json.loads(data.get("commands") or "[]")
        except ValueError:
            commands = []
        names = cls.__dataclass_fields__
        values = {k: v for k, v in data.items() if k in names}
        values["commands"] = commands if isinstance(commands, list) else []
        values["requester_tenant"] = values.get("requester_tenant") or ""
        values["login"] = values.get("login") or ""
        return cls(**values)

    @property
    def requester_label(self) -> str:
        name = self.requester_name
        return f"{name} ({self.requester_subject})" if name else self.requester_subject

    @property
    def approver_label(self) -> str | None:
        if not self.approver_subject:
            return None
        name = self.approver_name
        return f"{name} ({self.approver_subject})" if name else self.approver_subject

    @property
    def final(self) -> bool:
        return self.status != PENDING

    def outcome(self) -> ApprovalOutcome:
        """The outcome of a final record (raises ValueError on a pending one)."""
        if not self.final:
            raise ValueError(f"request {self.id} is still pending")
        if self.via == VIA_REFUSED:           # the claimed approver is evidence, not an answer
            return ApprovalOutcome(
                request_id=self.id, approved=False, approver=None,
                reason=self.refused_reason or "the answer failed the bastion's checks",
                answered_at=self.refused or self.answered or self.expires, via=VIA_REFUSED)
        return ApprovalOutcome(
            request_id=self.id, approved=self.status == APPROVED, approver=self.approver_label,
            reason=self.answer_reason or self.status, answered_at=self.answered or self.expires,
            via=self.via or self.status, approver_subject=self.approver_subject,
            window_until=self.window_until, granted_by=self.granted_by)

    def to_dict(self) -> dict:
        data = {k: getattr(self, k) for k in self.__dataclass_fields__}
        data["requester"] = self.requester_label
        data["approver"] = self.approver_label
        return data


@dataclass(frozen=True)
class Approver:
    """The parts of a validated approver Principal the checks and the index need."""

    subject: str
    tenant: str = ""
    app_id: str = ""
    name: str = ""
    roles: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    expires: float | None = field(default=None, compare=False)   # the token's exp
    # the validated token behind it (bastion.approvals.proof.AnswerProof); None: unproven
    proof: Any = field(default=None, compare=False, repr=False)

    @classmethod
    def of(cls, principal: Any, *, proof: Any = None) -> "Approver":
        claims = getattr(principal, "claims", None) or {}
        exp = claims.get("exp")
        return cls(subject=principal.subject, tenant=getattr(principal, "tenant", "") or "",
                   app_id=getattr(principal, "app_id", "") or "",
                   name=getattr(principal, "name", "") or "",
                   roles=tuple(getattr(principal, "roles", ()) or ()),
                   groups=tuple(getattr(principal, "groups", ()) or ()),
                   expires=float(exp) if isinstance(exp, (int, float)) else None, proof=proof)

    @property
    def label(self) -> str:
        return f"{self.name} ({self.subject})" if self.name else self.subject

    def as_dict(self) -> dict:
        return {"subject": self.subject, "tenant": self.tenant, "app_id": self.app_id,
                "name": self.name, "roles": list(self.roles), "groups": list(self.groups)}


def parse_window(text: str | None) -> int:
    """``15m`` / ``1h`` / ``1h30m`` / ``90s`` / ``900`` -> seconds; ``None``/``""`` -> 0."""
    if text is None or not str(text).strip():
        return 0
    value = str(text).strip()
    if value.isdigit():
        return int(value)
    m = _DURATION.fullmatch(value)
    if m is None:
        raise ApprovalError(f"not a duration: {text!r}", hint="use e.g. 15m, 1h, 1h30m or 90s")
    hours, minutes, seconds = (int(g or 0) for g in m.groups())
    return hours * 3600 + minutes * 60 + seconds


def window_allowed(rule: str | None) -> bool:
    """Grant windows only for real rules: never for ``<opaque>``, ``<error>`` or no rule."""
    return bool(rule) and not rule.startswith("<")


def same_person(record: ApprovalRecord, approver: Approver) -> bool:
    """Four-eyes: the subject decides (oid/sub), whatever app id the token came through.

    Tenants are ignored on purpose: an equal subject from another tenant is refused too
    (fail closed; a subject is unique per issuer and a bastion has one issuer).
    """
    return record.requester_subject == approver.subject


def check_reason(reason: str | None) -> str:
    text = (reason or "").strip()
    if not text:
        raise ApprovalError("a reason is required", hint="pass --reason 'why'")
    if len(text) > MAX_REASON:
        raise ApprovalError(f"the reason is longer than {MAX_REASON} characters")
    return text


def check_answer(record: ApprovalRecord, approver: Approver, *, approvers: Sequence[str],
                 now: float, approve: bool, window: int = 0, window_max: int = 0) -> None:
    """Raise ApprovalError if ``approver`` may not answer ``record`` this way; else return.

    ``approvers`` is ``[settings] approvers`` (an empty list lets nobody answer).
    """
    if not any_principal_matches(tuple(approvers), approver):
        if not approvers:
            raise ApprovalError("no approvers are configured: nobody may answer requests",
                                hint="set [settings] approvers = [\"role:...\"] in policy.toml")
        raise ApprovalError(f"{sanitize(approver.label)} is not an approver: the token matches "
                            f"none of [settings] approvers ({', '.join(approvers)})",
                            hint="log in as an approver (`bastion login`)")
    if same_person(record, approver):
        raise ApprovalError(f"request {record.id} is your own: a requester can never answer "
                            "their own request (four-eyes), through any app id",
                            hint="ask another approver")
    check_state(record, now)
    if window:
        if not approve:
            raise ApprovalError("--window only goes with approve")
        if window < 0:
            raise ApprovalError("a grant window cannot be negative")
        if window_max <= 0:
            raise ApprovalError("grant windows are disabled by policy",
                                hint="set [settings] approval_window_max = \"15m\" to allow them")
        if window > window_max:
            raise ApprovalError(f"a grant window of {window} s exceeds the policy's maximum of "
                                f"{window_max} s ([settings] approval_window_max)")
        if not window_allowed(record.rule):
            raise ApprovalError(f"no grant window for rule {record.rule or '<none>'}: it would "
                                "approve lines nobody has seen", hint="approve without --window")


def check_state(record: ApprovalRecord, now: float) -> None:
    """Raise ApprovalError unless the request is pending and not past its deadline."""
    if record.status != PENDING:
        who = f" by {sanitize(record.approver_label)}" if record.approver_label else ""
        raise ApprovalError(f"request {record.id} is already {record.status}{who} "
                            f"({record.via or '-'}); answers are final")
    if record.expires <= now:
        raise ApprovalError(f"request {record.id} has expired (nobody answered in time)")


def decision_fields(decision: Any) -> tuple[str | None, str | None, list]:
    """``(rule, reason, commands)`` of a policy Decision (duck typed, like the recorder)."""
    data: dict = {}
    if hasattr(decision, "to_dict"):
        try:
            data = dict(decision.to_dict())
        except Exception:  # noqa: BLE001 - a broken to_dict must not lose the request
            data = {}
    rule = data.get("rule", getattr(decision, "rule", None))
    reason = data.get("reason", getattr(decision, "reason", None))
    commands = data.get("commands")
    if commands is None:
        commands = [c.to_dict() if hasattr(c, "to_dict") else str(c)
                    for c in getattr(decision, "commands", ()) or ()]
    return (str(rule) if rule is not None else None,
            str(reason) if reason is not None else None,
            list(commands) if isinstance(commands, (list, tuple)) else [])


def principal_columns(principal: Any) -> dict:
    """The requester columns of a new request, from a Principal (duck typed)."""
    as_dict = principal.as_dict() if hasattr(principal, "as_dict") else \
        {"subject": str(getattr(principal, "subject", principal))}
    return {
        "requester_subject": str(getattr(principal, "subject", as_dict.get("subject"))),
        "requester_tenant": str(getattr(principal, "tenant", "") or ""),
        "requester_app_id": str(getattr(principal, "app_id", "") or "") or None,
        "requester_name": str(getattr(principal, "name", "") or "") or None,
        "requester_json": json.dumps(as_dict, ensure_ascii=False, sort_keys=True),
    }


def command_summary(command: Any) -> str:
    """One simple command the parser found, as one line (raw: sanitise before display)."""
    if isinstance(command, dict):
        argv = command.get("argv") or command.get("command") or command.get("words")
        if isinstance(argv, (list, tuple)) and argv:
            text = " ".join(str(a) for a in argv)
        else:
            text = str(command.get("name") or command.get("line") or json.dumps(command))
        extra = [str(command[k]) for k in ("action", "rule") if command.get(k)]
        if command.get("via"):
            extra.append(f"via {command['via']}")
        if command.get("opaque"):
            extra.append(f"opaque: {command.get('why') or 'cannot be read exactly'}")
        return text + (f"  [{' · '.join(extra)}]" if extra else "")
    return str(command)
