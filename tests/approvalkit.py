"""Test helpers for approvals: approvers with an answer proof, without a real token.

The store and the broker never see a token, only the proof the approver CLI derives
from a validated one (bastion.approvals.proof.AnswerProof); tests that answer through
the library build that proof here.  Tests through the CLI use real dev-issuer tokens.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

from bastion.approvals.model import Approver
from bastion.approvals.proof import AnswerProof, AnswerRules

ROOT = Path(__file__).resolve().parent.parent
ISSUER = "https://issuer.test/tenant-1/v2.0"


def claims_of(approver: Approver, *, issuer: str = ISSUER, exp: float, iat: float) -> dict:
    """Token claims that map (Principal.from_claims) back to exactly ``approver``."""
    claims: dict = {"iss": issuer, "aud": "api://bastion", "oid": approver.subject,
                    "sub": approver.subject, "exp": exp, "iat": iat}
    if approver.tenant:
        claims["tid"] = approver.tenant
    if approver.app_id:
        claims["azp"] = approver.app_id
    if approver.name:
        claims["name"] = approver.name
    if approver.roles:
        claims["roles"] = list(approver.roles)
    if approver.groups:
        claims["groups"] = list(approver.groups)
    return claims


def proven(approver: Approver, *, now: float, issuer: str = ISSUER, lifetime: float = 86400 * 30,
           token: str = "test-token-not-a-real-jwt") -> Approver:
    """``approver`` with a proof as the CLI would store it (validated at ``now``)."""
    claims = claims_of(approver, issuer=issuer, exp=now + lifetime, iat=now - 60)
    proof = AnswerProof(claims=claims, token_sha256=hashlib.sha256(token.encode()).hexdigest(),
                        validated_at=now)
    return dataclasses.replace(approver, proof=proof, expires=now + lifetime)


def rules(approvers=("role:sre-leads",), *, window_max: int = 900, issuers=(ISSUER,),
          allow_unproven: bool = False) -> AnswerRules:
    return AnswerRules(approvers=tuple(approvers), window_max=window_max,
                       issuers=frozenset(issuers), allow_unproven=allow_unproven)


def forge(data_dir, request_id: int, who: Approver, *, approve: bool = True,
          window: float | None = None, prove: bool = True, issuer: str = ISSUER,
          connect=None, **columns) -> None:
    """Write an answer into a request's row directly, as anyone who can write the index can:
    no store, no CLI, no checks.  ``prove``: with a proof naming ``who`` as the CLI would
    store it (claims are text; nobody checks a signature here); ``columns`` override.
    ``connect``: opens the index (default: ``DATA_DIR/index.sqlite``; an e2e rig's
    ``rig.index`` for either backend)."""
    import json
    import sqlite3
    import time

    now = time.time()
    who = proven(who, now=now, issuer=issuer) if prove else who
    row = dict(status="approved" if approve else "denied", via="approver", answered=now,
               approver_subject=who.subject, approver_tenant=who.tenant,
               approver_app_id=who.app_id or None, approver_name=who.name or None,
               approver_json=json.dumps(who.as_dict(), sort_keys=True),
               approver_proof=who.proof.to_json() if who.proof else None,
               answer_reason="looks fine", window_until=now + window if window else None)
    row.update(columns)
    conn = connect() if connect is not None else \
        sqlite3.connect(Path(data_dir) / "index.sqlite", isolation_level=None, timeout=10)
    try:
        sets = ", ".join(f"{k} = ?" for k in row)
        conn.execute(f"UPDATE approvals SET {sets} WHERE id = ?", (*row.values(), request_id))
        conn.commit()
    finally:
        conn.close()
