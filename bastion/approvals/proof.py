"""Proof carried by an answer, and the broker's own check of every answer.  Pure: no IO, no clock.

The approvals table is written by another process (the approver CLI), so ``bastion
serve`` does not take a row's word for anything.  At the moment it acts on an answer
(a waiting request turned final, or a grant window about to approve a new request),
the broker calls :func:`verify_answer` / :func:`verify_grant` with the request as *it*
created it, the row as it reads it now, the *current* settings (:class:`AnswerRules`)
and the time.  Anything that fails is refused: the command does not run.

:class:`AnswerProof` is what the approver CLI stores with an answer
(``approvals.approver_proof``): the claims of the token it validated that name the
approver (``iss``, ``sub``/``oid``, ``tid``, ``azp``/``appid``, ``aud``, ``exp``/``iat``
/``nbf``, roles, groups, display names), the subject claim the bastion maps with, when
the CLI validated the token, and the token's SHA-256 -- never the token itself.

The checks, in order (the first that fails is the verdict; codes in brackets):

* the request row is as the broker created it: requester, target, login, line, rule,
  created, expires, ... [``altered``];
* only an approver's answer approves a waiting request (``via = "approver"``), and it
  names no ``granted_by`` [``not-an-answer``];
* it was answered after the request was created, before it expired, not in the future
  [``answered-late``, ``answered-early``, ``answered-in-future``]; it has a reason
  [``no-reason``];
* the approver columns agree with ``approver_json`` [``approver-mismatch``];
* a proof is present [``unproven``, unless ``[settings] approval_allow_unproven``]; it
  parses [``bad-proof``]; its issuer is one this bastion trusts (the ``[oidc]`` issuer)
  [``untrusted-issuer``]; its claims, mapped as the validator maps them, name exactly
  the approver of the row (subject, tenant, app id, name, roles, groups)
  [``proof-mismatch``]; the token had not expired at the answer, was not issued or
  valid only after it, and was validated before it [``token-expired``,
  ``token-not-yet-valid``, ``validated-late``];
* the approver matches ``[settings] approvers`` as they are now [``no-approvers``,
  ``not-an-approver``];
* four-eyes: the approver is not the requester [``four-eyes``];
* a grant window: only on an approval, only for a real rule, at most
  ``approval_window_max`` as it is now [``window-on-denial``, ``window-rule``,
  ``windows-disabled``, ``window-too-long``].

Limits (see docs/APPROVALS.md): the proof is the claims of a validated token, not a
signature the broker can check again (that would need the token, which is never
stored).  A row forged by someone who can write the index *and* who copies a real
approver's claims exactly passes; everything else -- the wrong approver, the requester,
an oversized or disabled window, a late answer, an altered request, no proof -- does not.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from bastion.approvals.model import (
    APPROVED, DENIED, MAX_REASON, PENDING, VIA_APPROVER, ApprovalRecord, Approver,
    window_allowed,
)
from bastion.identity.principal import Principal
from bastion.policy.selectors import any_principal_matches

CLOCK_SKEW = 5.0          # seconds two processes on one host may disagree about "now"
WINDOW_SLACK = 0.001      # float rounding of ``now + window``
PROOF_VERSION = 1
PROOF_CLAIMS = ("iss", "sub", "oid", "tid", "azp", "appid", "aud", "exp", "iat", "nbf",
                "roles", "groups", "name", "preferred_username", "app_displayname", "idtyp")
_HEX64 = re.compile(r"[0-9a-f]{64}")

# the request as the broker created it: none of these may change afterwards
REQUEST_FIELDS = ("node", "created", "expires", "session_id", "command_id", "channel",
                  "requester_subject", "requester_tenant", "requester_app_id", "requester_name",
                  "target", "login", "line", "commands", "rule", "decision_reason")


def token_sha256(token: str) -> str:
    """The hex SHA-256 of a token (as sent, without surrounding white space)."""
    return hashlib.sha256(token.strip().encode("ascii", "replace")).hexdigest()


def _json_safe(value: Any) -> Any:
    if isinstance(value, (str, bool)) or value is None:
        return value
    if isinstance(value, (int, float)):
        return value if math.isfinite(value) else None
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return str(value)


@dataclass(frozen=True)
class AnswerProof:
    """The validated token behind an answer, as stored (never the token; see module doc)."""

    claims: Mapping[str, Any]
    token_sha256: str
    validated_at: float
    subject_claim: str | None = None
    version: int = PROOF_VERSION

    @classmethod
    def of(cls, principal: Principal, token: Any, *, validated_at: float,
           subject_claim: str | None = None) -> "AnswerProof":
        """From a Principal that ``TokenValidator`` returned for ``token`` (str or Secret)."""
        raw = token.reveal() if hasattr(token, "reveal") else str(token)
        names = PROOF_CLAIMS + ((subject_claim,) if subject_claim else ())
        claims = {k: _json_safe(principal.claims[k]) for k in names if k in principal.claims}
        return cls(claims=claims, token_sha256=token_sha256(raw),
                   validated_at=float(validated_at), subject_claim=subject_claim)

    @property
    def issuer(self) -> str | None:
        iss = self.claims.get("iss")
        return iss if isinstance(iss, str) else None

    @property
    def expires(self) -> float | None:
        return _number(self.claims.get("exp"))

    def identity(self) -> Approver:
        """The approver the claims name, mapped as the token validator maps them.

        Raises ValueError when the claims name no subject.
        """
        try:
            p = Principal.from_claims(dict(self.claims), subject_claim=self.subject_claim)
        except KeyError as exc:
            raise ValueError(f"the proof's claims have no {exc.args[0]}") from None
        return Approver(subject=p.subject, tenant=p.tenant, app_id=p.app_id, name=p.name,
                        roles=p.roles, groups=p.groups, expires=self.expires)

    def to_json(self) -> str:
        return json.dumps({"v": self.version, "claims": dict(self.claims),
                           "token_sha256": self.token_sha256, "validated_at": self.validated_at,
                           "subject_claim": self.subject_claim},
                          ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "AnswerProof":
        """Parse a stored proof; ValueError (saying what is wrong) if it is not one."""
        try:
            data = json.loads(text)
        except (TypeError, ValueError):
            raise ValueError("the proof is not JSON") from None
        if not isinstance(data, dict) or data.get("v") != PROOF_VERSION:
            raise ValueError("the proof has an unknown format")
        claims, digest = data.get("claims"), data.get("token_sha256")
        validated, subject_claim = _number(data.get("validated_at")), data.get("subject_claim")
        if not isinstance(claims, dict):
            raise ValueError("the proof carries no claims")
        if not isinstance(digest, str) or not _HEX64.fullmatch(digest):
            raise ValueError("the proof's token hash is not a SHA-256")
        if validated is None:
            raise ValueError("the proof does not say when the token was validated")
        if subject_claim is not None and (not isinstance(subject_claim, str)
                                          or not subject_claim):
            raise ValueError("the proof's subject claim is not a name")
        return cls(claims=claims, token_sha256=digest, validated_at=validated,
                   subject_claim=subject_claim)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


@dataclass(frozen=True)
class AnswerRules:
    """What answers are checked against: the *current* settings (see :meth:`of`)."""

    approvers: tuple[str, ...] = ()
    window_max: int = 0
    issuers: frozenset = field(default_factory=frozenset)
    allow_unproven: bool = False

    @classmethod
    def of(cls, settings: Any) -> "AnswerRules":
        """From :class:`bastion.config.Settings` (duck typed; absent fields deny)."""
        return cls(approvers=tuple(getattr(settings, "approvers", ()) or ()),
                   window_max=int(getattr(settings, "approval_window_max", 0) or 0),
                   issuers=frozenset(getattr(settings, "approval_issuers", ()) or ()),
                   allow_unproven=bool(getattr(settings, "approval_allow_unproven", False)))


@dataclass(frozen=True)
class Verdict:
    """The broker's judgement of one answer: ``ok``, else ``code`` and ``reason`` say why."""

    ok: bool
    code: str = "ok"
    reason: str = ""
    proven: bool = False          # an AnswerProof was checked (False: accepted unproven)

    def __bool__(self) -> bool:
        return self.ok


def _no(code: str, reason: str) -> Verdict:
    return Verdict(False, code, reason)


def approver_of_row(row: ApprovalRecord) -> Approver:
    """The approver ``approver_json`` names; ValueError if absent, malformed or at odds with
    the approver columns of the same row."""
    try:
        data = json.loads(row.approver_json or "")
    except ValueError:
        raise ValueError("the answer has no readable approver_json") from None
    if not isinstance(data, dict) or not isinstance(data.get("subject"), str) \
            or not data["subject"]:
        raise ValueError("approver_json names no subject")

    def strs(key: str) -> tuple[str, ...]:
        value = data.get(key) or []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"approver_json {key} is not a list of strings")
        return tuple(value)

    who = Approver(subject=data["subject"], tenant=str(data.get("tenant") or ""),
                   app_id=str(data.get("app_id") or ""), name=str(data.get("name") or ""),
                   roles=strs("roles"), groups=strs("groups"))
    columns = (row.approver_subject or "", row.approver_tenant or "", row.approver_app_id or "",
               row.approver_name or "")
    if columns != (who.subject, who.tenant, who.app_id, who.name):
        raise ValueError("the approver columns and approver_json name different people")
    return who


def _same_identity(a: Approver, b: Approver) -> bool:
    return (a.subject, a.tenant, a.app_id, a.name, tuple(a.roles), tuple(a.groups)) == \
        (b.subject, b.tenant, b.app_id, b.name, tuple(b.roles), tuple(b.groups))


def verify_answer(request: ApprovalRecord, row: ApprovalRecord, rules: AnswerRules, *,
                  now: float) -> Verdict:
    """May the broker act on ``row``, the answer to ``request`` (as the broker created it)?

    For rows an approver answered (``via = "approver"``) or that say ``approved``; any
    other final row approves nothing and needs no verdict.  See the module doc.
    """
    if row.status == PENDING:
        return _no("pending", "the request is still pending")
    for name in REQUEST_FIELDS:
        if getattr(row, name) != getattr(request, name):
            return _no("altered", f"the request row was altered in the index ({name})")
    if row.via != VIA_APPROVER or row.status not in (APPROVED, DENIED) \
            or row.granted_by is not None:
        return _no("not-an-answer", f"status {row.status} via {row.via}: only an approver's "
                                    "answer decides a waiting request")
    answered = _number(row.answered)
    if answered is None:
        return _no("answered-late", "the answer has no time")
    if answered < request.created - CLOCK_SKEW:
        return _no("answered-early", "the answer is older than the request")
    if answered >= request.expires:
        return _no("answered-late", "the answer came after the request had expired")
    if answered > now + CLOCK_SKEW:
        return _no("answered-in-future", "the answer is dated in the future")
    reason = (row.answer_reason or "").strip()
    if not reason or len(reason) > MAX_REASON:
        return _no("no-reason", "the answer has no reason (or one over the limit)")
    try:
        who = approver_of_row(row)
    except ValueError as exc:
        return _no("approver-mismatch", str(exc))
    proven = False
    if row.approver_proof is None:
        if not rules.allow_unproven:
            return _no("unproven", "the answer carries no token proof (not given through the "
                                   "approver CLI; [settings] approval_allow_unproven is off)")
    else:
        try:
            proof = AnswerProof.from_json(row.approver_proof)
            claimed = proof.identity()
        except ValueError as exc:
            return _no("bad-proof", str(exc))
        if proof.issuer is None or proof.issuer not in rules.issuers:
            return _no("untrusted-issuer", "the proof's token comes from an issuer this bastion "
                                           "does not trust")
        if not _same_identity(claimed, who):
            return _no("proof-mismatch", "the proof's claims name another approver than the "
                                         "answer")
        exp = proof.expires
        if exp is None or exp <= answered:
            return _no("token-expired", "the approver's token had expired when the answer "
                                        "was given")
        for claim in ("nbf", "iat"):
            value = proof.claims.get(claim)
            if value is not None and (_number(value) is None
                                      or _number(value) > answered + CLOCK_SKEW):
                return _no("token-not-yet-valid", f"the approver's token was not yet valid "
                                                  f"when the answer was given ({claim})")
        if proof.validated_at > answered + CLOCK_SKEW:
            return _no("validated-late", "the token was validated after the answer")
        proven = True
    if not rules.approvers:
        return _no("no-approvers", "no approvers are configured ([settings] approvers)")
    if not any_principal_matches(rules.approvers, who):
        return _no("not-an-approver", "the approver matches none of [settings] approvers")
    if who.subject == request.requester_subject:
        return _no("four-eyes", "the approver is the requester (four-eyes)")
    if row.window_until is not None:
        if row.status != APPROVED:
            return _no("window-on-denial", "a grant window on a denial")
        if not window_allowed(request.rule):
            return _no("window-rule", f"no grant window for rule {request.rule or '<none>'}")
        if rules.window_max <= 0:
            return _no("windows-disabled", "grant windows are disabled "
                                           "([settings] approval_window_max)")
        length = float(row.window_until) - answered
        if not length > 0 or length > rules.window_max + WINDOW_SLACK:
            return _no("window-too-long", f"a grant window of {length:.0f} s, more than the "
                                          f"{rules.window_max} s allowed")
    return Verdict(True, proven=proven)


def verify_grant(grant: ApprovalRecord, rules: AnswerRules, *, now: float) -> Verdict:
    """May ``grant`` (an approved answer with a window) approve a new request now?

    The grant is checked as an answer to itself (nothing in memory remembers how it was
    created), under the current rules, and must have a live, unrevoked window.
    """
    if grant.status != APPROVED or grant.via != VIA_APPROVER:
        return _no("not-an-answer", "only an approver's own answer opens a grant window")
    if grant.window_until is None or grant.revoked is not None or grant.window_until <= now:
        return _no("window-over", "the grant window is over")
    return verify_answer(grant, grant, rules, now=now)


__all__ = ["AnswerProof", "AnswerRules", "Verdict", "verify_answer", "verify_grant",
           "approver_of_row", "token_sha256", "CLOCK_SKEW"]
