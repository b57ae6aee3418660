"""The broker's own check of answers (bastion.approvals.proof): the verification table.

Each case starts from one valid answer and changes one thing, as someone who can write
the index could; the verdict names the first check that fails.  Pure: no IO, no clock.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

import pytest

from bastion.approvals.model import ApprovalRecord, Approver
from bastion.approvals.proof import (
    CLOCK_SKEW, AnswerProof, AnswerRules, approver_of_row, token_sha256, verify_answer,
    verify_grant,
)
from bastion.config import parse_config
from bastion.config.settings import Settings
from bastion.errors import ConfigError
from bastion.identity.principal import Principal
from bastion.secret import Secret
from tests.approvalkit import ISSUER, claims_of

T0 = 1_800_000_000.0
ANSWERED = T0 + 30
NOW = T0 + 31
ALICE = Approver(subject="alice-oid", tenant="t1", app_id="cli-app", name="Alice",
                 roles=("sre-leads",), groups=("g-ops",))
RULES = AnswerRules(approvers=("role:sre-leads",), window_max=900, issuers=frozenset({ISSUER}))

REQUEST = ApprovalRecord(
    id=7, node="n1", created=T0, expires=T0 + 300, status="pending", via=None, session_id=3,
    command_id=9, channel="exec", requester_subject="agent-oid", requester_tenant="t1",
    requester_app_id="agent-app", requester_name="deploy-bot", target="web1", login="deploy",
    line="systemctl restart nginx", commands=[{"argv": ["systemctl", "restart", "nginx"]}],
    rule="restarts", decision_reason="restarts need review")


def proof_json(who: Approver = ALICE, **change) -> str:
    claims = claims_of(who, exp=T0 + 3600, iat=T0 - 60)
    claims.update(change.pop("claims", {}))
    for k in [k for k, v in claims.items() if v is None]:
        del claims[k]
    data = {"v": 1, "claims": claims, "token_sha256": "ab" * 32, "validated_at": T0 + 20,
            "subject_claim": None}
    data.update(change)
    return json.dumps(data)


def answer(who: Approver = ALICE, *, proof: str | None = "default", **change) -> ApprovalRecord:
    row = dataclasses.replace(
        REQUEST, status="approved", via="approver", answered=ANSWERED,
        approver_subject=who.subject, approver_tenant=who.tenant, approver_app_id=who.app_id,
        approver_name=who.name, approver_json=json.dumps(who.as_dict()),
        approver_proof=proof_json(who) if proof == "default" else proof,
        answer_reason="change ticket 12")
    return dataclasses.replace(row, **change)


MALLORY = Approver(subject="mallory-oid", tenant="t1", name="Mallory", roles=("agents",))
REQUESTER = Approver(subject="agent-oid", tenant="t1", app_id="other-app", name="deploy-bot",
                     roles=("sre-leads",))

CASES = [
    # (id, row, rules, code)
    ("valid approval", answer(), RULES, "ok"),
    ("valid denial", answer(status="denied"), RULES, "ok"),
    ("valid window at the cap", answer(window_until=ANSWERED + 900), RULES, "ok"),
    ("valid, answered within the clock skew of now", answer(answered=NOW + CLOCK_SKEW), RULES,
     "ok"),
    ("valid unproven, allowed", answer(proof=None), dataclasses.replace(
        RULES, allow_unproven=True), "ok"),
    # the request as the broker created it
    ("deadline moved", answer(expires=T0 + 86400), RULES, "altered"),
    ("line changed", answer(line="systemctl restart db"), RULES, "altered"),
    ("requester changed", answer(requester_subject="someone"), RULES, "altered"),
    ("target changed", answer(target="db1"), RULES, "altered"),
    ("rule changed", answer(rule="anything"), RULES, "altered"),
    # only an approver's answer decides a waiting request
    ("approved via window", answer(via="window", granted_by=3), RULES, "not-an-answer"),
    ("approved via timeout", answer(via="timeout"), RULES, "not-an-answer"),
    ("approved with granted_by", answer(granted_by=3), RULES, "not-an-answer"),
    ("unknown status", answer(status="granted"), RULES, "not-an-answer"),
    # when
    ("no answer time", answer(answered=None), RULES, "answered-late"),
    ("answered before the request", answer(answered=T0 - 60), RULES, "answered-early"),
    ("answered at the deadline", answer(answered=T0 + 300), RULES, "answered-late"),
    ("answered in the future", answer(answered=NOW + CLOCK_SKEW + 1), RULES,
     "answered-in-future"),
    ("no reason", answer(answer_reason=" "), RULES, "no-reason"),
    ("reason over the limit", answer(answer_reason="x" * 1001), RULES, "no-reason"),
    # who
    ("approver_json missing", answer(approver_json=None), RULES, "approver-mismatch"),
    ("approver_json not JSON", answer(approver_json="{"), RULES, "approver-mismatch"),
    ("columns name another approver", answer(approver_subject="carol-oid"), RULES,
     "approver-mismatch"),
    ("roles not strings", answer(approver_json=json.dumps({"subject": "alice-oid",
                                                          "tenant": "t1", "roles": [1]})),
     RULES, "approver-mismatch"),
    # proof
    ("no proof", answer(proof=None), RULES, "unproven"),
    ("proof not JSON", answer(proof="not json"), RULES, "bad-proof"),
    ("proof of another version", answer(proof=proof_json(v=2)), RULES, "bad-proof"),
    ("proof with the token instead of a hash", answer(proof=proof_json(token_sha256="eyJ0.x.y")),
     RULES, "bad-proof"),
    ("proof without validation time", answer(proof=proof_json(validated_at=None)), RULES,
     "bad-proof"),
    ("proof without a subject", answer(proof=proof_json(claims={"oid": None, "sub": None})),
     RULES, "bad-proof"),
    ("proof from another issuer", answer(proof=proof_json(claims={"iss": "https://evil/"})),
     RULES, "untrusted-issuer"),
    ("proof without an issuer", answer(proof=proof_json(claims={"iss": None})), RULES,
     "untrusted-issuer"),
    ("no trusted issuer configured", answer(), dataclasses.replace(RULES, issuers=frozenset()),
     "untrusted-issuer"),
    ("proof of another person", answer(proof=proof_json(MALLORY)), RULES, "proof-mismatch"),
    ("row claims a role the token lacks", answer(dataclasses.replace(ALICE, roles=(
        "sre-leads", "admins")), proof=proof_json(ALICE)), RULES, "proof-mismatch"),
    ("proof of another tenant", answer(proof=proof_json(claims={"tid": "t2"})), RULES,
     "proof-mismatch"),
    ("token expired before the answer", answer(proof=proof_json(claims={"exp": ANSWERED})),
     RULES, "token-expired"),
    ("token without exp", answer(proof=proof_json(claims={"exp": None})), RULES,
     "token-expired"),
    ("token valid only after the answer", answer(proof=proof_json(claims={
        "nbf": ANSWERED + CLOCK_SKEW + 1})), RULES, "token-not-yet-valid"),
    ("token issued after the answer", answer(proof=proof_json(claims={
        "iat": ANSWERED + CLOCK_SKEW + 1})), RULES, "token-not-yet-valid"),
    ("validated after the answer", answer(proof=proof_json(validated_at=ANSWERED + 60)), RULES,
     "validated-late"),
    # the settings in force now
    ("no approvers configured", answer(), dataclasses.replace(RULES, approvers=()),
     "no-approvers"),
    ("not an approver (unproven, allowed)", answer(MALLORY, proof=None),
     dataclasses.replace(RULES, allow_unproven=True), "not-an-approver"),
    ("not an approver (proven)", answer(MALLORY), RULES, "not-an-approver"),
    ("approver removed since", answer(), dataclasses.replace(
        RULES, approvers=("role:someone-else",)), "not-an-approver"),
    ("requester approves own request", answer(REQUESTER), RULES, "four-eyes"),
    ("requester approves own request, unproven", answer(REQUESTER, proof=None),
     dataclasses.replace(RULES, allow_unproven=True), "four-eyes"),
    # grant windows
    ("window on a denial", answer(status="denied", window_until=ANSWERED + 60), RULES,
     "window-on-denial"),
    ("window for an opaque line", answer(rule="<opaque>", window_until=ANSWERED + 60), RULES,
     "altered"),
    ("window too long", answer(window_until=ANSWERED + 86400), RULES, "window-too-long"),
    ("window in the past", answer(window_until=ANSWERED - 1), RULES, "window-too-long"),
    ("windows disabled since", answer(window_until=ANSWERED + 60), dataclasses.replace(
        RULES, window_max=0), "windows-disabled"),
]


@pytest.mark.parametrize("row, rules, code", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_verification_table(row, rules, code):
    verdict = verify_answer(REQUEST, row, rules, now=NOW)
    assert verdict.code == code, verdict
    assert bool(verdict) is (code == "ok")
    if code != "ok":
        assert verdict.reason                    # every refusal says why


def test_window_for_a_rule_that_never_gets_one():
    opaque = dataclasses.replace(REQUEST, rule="<opaque>")
    row = dataclasses.replace(answer(window_until=ANSWERED + 60), rule="<opaque>")
    assert verify_answer(opaque, row, RULES, now=NOW).code == "window-rule"
    assert verify_answer(opaque, dataclasses.replace(row, window_until=None), RULES,
                         now=NOW).ok


def test_proven_flag():
    assert verify_answer(REQUEST, answer(), RULES, now=NOW).proven is True
    lax = dataclasses.replace(RULES, allow_unproven=True)
    assert verify_answer(REQUEST, answer(proof=None), lax, now=NOW).proven is False


def test_a_pending_row_is_no_answer():
    assert verify_answer(REQUEST, REQUEST, RULES, now=NOW).code == "pending"


# -- grant windows ---------------------------------------------------------------------

GRANT = answer(window_until=ANSWERED + 600)


@pytest.mark.parametrize("grant, now, code", [
    (GRANT, NOW + 100, "ok"),
    (dataclasses.replace(GRANT, revoked=NOW, revoked_by="Carol"), NOW + 100, "window-over"),
    (GRANT, ANSWERED + 600, "window-over"),
    (dataclasses.replace(GRANT, window_until=None), NOW, "window-over"),
    (dataclasses.replace(GRANT, via="window", granted_by=1), NOW, "not-an-answer"),
    (dataclasses.replace(GRANT, status="denied"), NOW, "not-an-answer"),
    (dataclasses.replace(GRANT, window_until=ANSWERED + 86400), NOW, "window-too-long"),
    (dataclasses.replace(GRANT, approver_proof=None), NOW, "unproven"),
    (answer(MALLORY, window_until=ANSWERED + 600), NOW, "not-an-approver"),
    (answer(REQUESTER, window_until=ANSWERED + 600), NOW, "four-eyes"),
    # a window outlives the request's own deadline, the answer must not
    (GRANT, REQUEST.expires + 100, "ok"),
    (dataclasses.replace(GRANT, answered=REQUEST.expires, window_until=REQUEST.expires + 600),
     REQUEST.expires + 100, "answered-late"),
], ids=["live", "revoked", "over", "no window", "via window", "a denial", "too long",
        "unproven", "not an approver", "four-eyes", "after the request's deadline",
        "answered late"])
def test_grant_table(grant, now, code):
    assert verify_grant(grant, RULES, now=now).code == code


# -- the proof itself --------------------------------------------------------------------

def test_proof_from_a_validated_principal_keeps_claims_not_the_token():
    token = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLW5vdC1yZWFs"
    claims = claims_of(ALICE, exp=T0 + 3600, iat=T0)
    claims.update(email="alice@example.com", ver="2.0", nonce="n-123")
    principal = Principal.from_claims(claims)
    proof = AnswerProof.of(principal, Secret(token), validated_at=T0 + 1)
    assert proof.token_sha256 == hashlib.sha256(token.encode()).hexdigest() \
        == token_sha256(" " + token + "\n")
    assert set(proof.claims) == {"iss", "aud", "oid", "sub", "exp", "iat", "tid", "azp", "name",
                                 "roles", "groups"}
    text = proof.to_json()
    assert token not in text and token.split(".")[2] not in text and "alice@" not in text
    again = AnswerProof.from_json(text)
    assert again == proof and again.identity() == ALICE and again.expires == T0 + 3600
    assert again.issuer == ISSUER
    assert token not in repr(proof)


def test_proof_keeps_a_configured_subject_claim():
    claims = claims_of(ALICE, exp=T0 + 3600, iat=T0)
    claims["upn"] = "alice@corp"
    principal = Principal.from_claims(claims, subject_claim="upn")
    proof = AnswerProof.from_json(AnswerProof.of(principal, "t.o.k", validated_at=T0,
                                                 subject_claim="upn").to_json())
    assert proof.claims["upn"] == "alice@corp" and proof.identity().subject == "alice@corp"


def test_approver_of_row():
    assert approver_of_row(answer()) == ALICE
    with pytest.raises(ValueError, match="different people"):
        approver_of_row(answer(approver_name="Eve"))


def test_rules_from_settings_and_config():
    rules = AnswerRules.of(Settings(approvers=("role:x",), approval_window_max=60,
                                    approval_issuers=("https://i/",)))
    assert rules == AnswerRules(("role:x",), 60, frozenset({"https://i/"}), False)
    assert AnswerRules.of(object()) == AnswerRules()         # nothing known: nothing passes
    base = '''
[oidc]
issuer = "ISSUER"
audience = "api://bastion"
ALLOW_V1
[settings]
approvers = ["role:sre-leads"]
UNPROVEN
'''

    def config(issuer, unproven="", v1=""):
        return parse_config(base.replace("ISSUER", issuer).replace("UNPROVEN", unproven)
                            .replace("ALLOW_V1", v1))

    entra = "https://login.microsoftonline.com/tenant-1/v2.0"
    assert config(entra).settings.approval_issuers == (entra,)
    assert config(entra, v1="allow_v1 = true").settings.approval_issuers == (
        entra, "https://sts.windows.net/tenant-1/")
    assert config(entra).settings.approval_allow_unproven is False
    with pytest.raises(ConfigError) as info:
        config(entra, "approval_allow_unproven = true")
    assert any("only for a dev issuer" in p.message for p in info.value.problems)
    dev = config("https://127.0.0.1:8443/tenant/v2.0", "approval_allow_unproven = true")
    assert dev.settings.approval_allow_unproven is True
    assert parse_config('[settings]\napprovers = ["role:x"]\n').settings.approval_issuers == ()
