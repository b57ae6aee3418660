"""The approvals table on a real SQLite index: answers once, races, restarts, grant windows."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

import pytest

from bastion.approvals.model import Approver
from bastion.approvals.proof import AnswerProof, verify_grant
from bastion.approvals.store import ApprovalStore
from bastion.errors import ApprovalError
from bastion.identity.principal import Principal
from bastion.policy import Action, Decision
from bastion.recording import Recorder, query, schema
from bastion.recording import verify as verifier
from tests.approvalkit import proven, rules

START = 1_800_000_000.0
APPROVERS = ("role:sre-leads",)
RULES = rules(APPROVERS, window_max=900)
AGENT = Principal(subject="agent-oid", tenant="t1", app_id="agent-app", name="deploy-bot",
                  roles=("agents",))
ALICE = proven(Approver(subject="alice-oid", tenant="t1", name="Alice", roles=("sre-leads",)),
               now=START, token="alice-token-not-a-real-jwt")
CAROL = proven(Approver(subject="carol-oid", tenant="t1", name="Carol", roles=("sre-leads",)),
               now=START)
REVIEW = Decision(Action.REVIEW, "restarts", "systemctl restart needs approval")


class Clock:
    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request):
    """Each store test on both backends: SQLite in tmp_path, or a fresh PostgreSQL database."""
    if request.param == "postgresql":
        request.getfixturevalue("pg_store")
    return request.param


@pytest.fixture
def store(tmp_path, clock, backend):
    s = ApprovalStore.open(tmp_path, now=clock)
    yield s
    s.close()


def new(store, *, principal=AGENT, target="web1", login="deploy", decision=REVIEW,
        timeout=300.0, node="n1", line="systemctl restart nginx", grant_rules=RULES):
    """A request as the broker creates it: grant windows judged under ``grant_rules``."""
    return store.create(node=node, principal=principal, target=target, login=login, line=line,
                        decision=decision, session_id=None, command_id=None, channel="exec",
                        timeout=timeout,
                        grant_check=lambda g: verify_grant(g, grant_rules, now=store._now()))


def test_request_row_holds_who_what_where(store, clock):
    r = new(store)
    assert (r.status, r.requester_subject, r.requester_app_id, r.target, r.login, r.rule) == (
        "pending", "agent-oid", "agent-app", "web1", "deploy", "restarts")
    assert r.created == clock.now and r.expires == clock.now + 300
    row = store.conn.execute("SELECT requester_json FROM approvals WHERE id = ?",
                             (r.id,)).fetchone()
    assert json.loads(row[0])["roles"] == ["agents"]


def test_answer_once_then_final(store, clock):
    r = new(store)
    clock.now += 5
    done = store.answer(r.id, ALICE, approve=True, reason="ticket 9", approvers=APPROVERS)
    assert (done.status, done.via, done.approver_subject, done.answer_reason, done.answered) == (
        "approved", "approver", "alice-oid", "ticket 9", clock.now)
    before = store.conn.execute("SELECT * FROM approvals WHERE id = ?", (r.id,)).fetchone()
    with pytest.raises(ApprovalError, match="already approved by Alice"):
        store.answer(r.id, CAROL, approve=False, reason="no", approvers=APPROVERS)
    with pytest.raises(ApprovalError, match="already approved"):
        store.answer(r.id, ALICE, approve=True, reason="again", approvers=APPROVERS)
    after = store.conn.execute("SELECT * FROM approvals WHERE id = ?", (r.id,)).fetchone()
    assert tuple(before) == tuple(after)
    # a timeout racing the answer loses: the answer stands
    assert store.finish(r.id, "timeout", "timed out").status == "approved"


def test_refusals_leave_the_request_pending(store):
    r = new(store)
    bob = Approver(subject="bob-oid", roles=("agents",))
    me = Approver(subject="agent-oid", app_id="another-app", roles=("sre-leads",))
    for who, words in ((bob, "not an approver"), (me, "your own")):
        with pytest.raises(ApprovalError, match=words):
            store.answer(r.id, who, approve=True, reason="x", approvers=APPROVERS)
    with pytest.raises(ApprovalError, match="reason is required"):
        store.answer(r.id, ALICE, approve=True, reason=" ", approvers=APPROVERS)
    with pytest.raises(ApprovalError, match="no approval request 999"):
        store.answer(999, ALICE, approve=True, reason="x", approvers=APPROVERS)
    assert store.get(r.id).status == "pending"


def test_deadline_is_enforced_by_the_store(store, clock):
    r = new(store, timeout=60)
    clock.now += 60
    with pytest.raises(ApprovalError, match="expired"):
        store.answer(r.id, ALICE, approve=True, reason="late", approvers=APPROVERS)
    assert store.list() == []                     # no longer listed as pending
    assert store.finish(r.id, "timeout", "timed out").status == "expired"


RACE = """
import sys
from bastion.approvals.model import Approver
from bastion.approvals.proof import AnswerProof, verify_grant
from bastion.approvals.store import ApprovalStore
from bastion.errors import ApprovalError
store = ApprovalStore.open(sys.argv[1], create=False)
who = Approver(subject=sys.argv[3], roles=("sre-leads",))
sys.stdin.readline()                           # start together
try:
    store.answer(int(sys.argv[2]), who, approve=sys.argv[3].endswith("0"), reason="race",
                 approvers=("role:sre-leads",))
    print("won")
except ApprovalError as exc:
    print("lost", exc)
"""


def test_racing_answers_from_processes_one_wins(tmp_path, backend):
    store = ApprovalStore.open(tmp_path)
    r = new(store)
    procs = [subprocess.Popen([sys.executable, "-c", RACE, str(tmp_path), str(r.id),
                               f"approver-{i}"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(4)]
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    results = [p.communicate(timeout=60) for p in procs]
    outs = [out.strip() for out, _err in results]
    assert sum(o == "won" for o in outs) == 1, results
    assert all(o == "won" or "already" in o for o in outs), outs
    winner = outs.index("won")
    final = store.get(r.id)
    assert final.approver_subject == f"approver-{winner}"
    assert final.status == ("approved" if winner == 0 else "denied")
    store.close()


def test_expire_node_only_touches_its_own_pending(store):
    mine, other = new(store, node="n1"), new(store, node="n2")
    answered = new(store, node="n1")
    store.answer(answered.id, ALICE, approve=False, reason="no", approvers=APPROVERS)
    assert store.expire_node("n1", "restart", "bastion restarted") == [mine.id]
    assert (store.get(mine.id).status, store.get(mine.id).via) == ("expired", "restart")
    assert store.get(other.id).status == "pending"
    assert store.get(answered.id).status == "denied"


def test_overdue_orphans_of_any_node_expire(store, clock):
    overdue, live = new(store, node="gone", timeout=10), new(store, node="gone", timeout=100)
    clock.now += 10
    assert store.expire_overdue() == [overdue.id]
    assert (store.get(overdue.id).status, store.get(overdue.id).via) == ("expired", "timeout")
    assert store.get(live.id).status == "pending"


def test_every_status_change_moves_the_clock(store):
    v0 = store.version()
    r = new(store)
    assert store.version() == v0                  # creating is not an answer
    store.answer(r.id, ALICE, approve=True, reason="ok", approvers=APPROVERS)
    assert store.version() == v0 + 1
    r2 = new(store)
    store.finish(r2.id, "cancelled", "went away")
    assert store.version() == v0 + 2


# -- grant windows -----------------------------------------------------------------------

def test_window_covers_same_rule_principal_target_login_only(store, clock):
    first = new(store)
    store.answer(first.id, ALICE, approve=True, reason="maintenance", approvers=APPROVERS,
                 window=900, window_max=900)
    clock.now += 60
    covered = new(store)
    assert (covered.status, covered.via, covered.granted_by, covered.approver_subject) == (
        "approved", "window", first.id, "alice-oid")
    other_rule = Decision(Action.REVIEW, "deletes", "rm needs approval")
    not_covered = [
        new(store, target="web2"), new(store, login="root"), new(store, decision=other_rule),
        new(store, principal=Principal(subject="other-agent", tenant="t1")),
        new(store, principal=Principal(subject="agent-oid", tenant="t2")),
    ]
    assert [r.status for r in not_covered] == ["pending"] * 5
    clock.now += 900
    assert new(store).status == "pending"         # the window is over


def test_window_approvals_do_not_extend_the_window(store, clock):
    first = new(store)
    store.answer(first.id, ALICE, approve=True, reason="ok", approvers=APPROVERS,
                 window=100, window_max=900)
    clock.now += 99
    assert new(store).via == "window"
    clock.now += 2
    assert new(store).status == "pending"


def test_revoke_ends_the_window(store, clock):
    first = new(store)
    store.answer(first.id, ALICE, approve=True, reason="ok", approvers=APPROVERS,
                 window=900, window_max=900)
    with pytest.raises(ApprovalError, match="not an approver"):
        store.revoke(first.id, Approver(subject="bob"), approvers=APPROVERS)
    revoked = store.revoke(first.id, CAROL, approvers=APPROVERS)
    assert revoked.revoked == clock.now and revoked.revoked_by == "Carol (carol-oid)"
    assert new(store).status == "pending"
    with pytest.raises(ApprovalError, match="already over"):
        store.revoke(first.id, CAROL, approvers=APPROVERS)


def test_no_window_for_opaque_lines(store):
    opaque = Decision(Action.REVIEW, "<opaque>", "cannot be read exactly")
    r = new(store, decision=opaque)
    with pytest.raises(ApprovalError, match="no grant window"):
        store.answer(r.id, ALICE, approve=True, reason="ok", approvers=APPROVERS, window=60,
                     window_max=900)
    store.answer(r.id, ALICE, approve=True, reason="ok", approvers=APPROVERS)
    assert new(store, decision=opaque).status == "pending"


def test_no_window_applies_without_a_grant_check(store, clock):
    """store.create applies grant windows only when the caller judges them (deny by default)."""
    first = new(store)
    store.answer(first.id, ALICE, approve=True, reason="ok", approvers=APPROVERS,
                 window=900, window_max=900)
    plain = store.create(node="n1", principal=AGENT, target="web1", login="deploy",
                         line="systemctl restart nginx", decision=REVIEW, session_id=None,
                         command_id=None, channel="exec", timeout=300)
    assert plain.status == "pending"
    assert new(store).via == "window"


def _forge(store, request_id: int, **columns) -> None:
    """What anyone who can write the index can do: change a row behind the store's back."""
    sets = ", ".join(f"{k} = ?" for k in columns)
    store.conn.execute(f"UPDATE approvals SET {sets} WHERE id = ?",
                       (*columns.values(), request_id))


def test_forged_grant_windows_are_refused_and_marked(store, clock):
    genuine = new(store)
    store.answer(genuine.id, ALICE, approve=True, reason="ok", approvers=APPROVERS,
                 window=300, window_max=900)
    forged = new(store)
    assert forged.via == "window"                 # covered by the genuine window...
    # ...so make a row of its own: approved by Alice with a window of a day
    other = new(store, target="web2")
    store.answer(other.id, ALICE, approve=True, reason="ok", approvers=APPROVERS,
                 window=600, window_max=900)
    _forge(store, other.id, target="web1", window_until=clock.now + 86400)
    clock.now += 10
    covered = new(store)
    assert (covered.status, covered.via, covered.granted_by) == ("approved", "window",
                                                                 genuine.id)
    marked = store.get(other.id)
    assert marked.refused == clock.now and marked.status == "approved"   # its own run stands
    assert "grant window of 86" in marked.refused_reason
    assert "more than the 900 s allowed" in marked.refused_reason
    assert store.get(genuine.id).refused is None
    # with the genuine window revoked, nothing covers the next request
    store.revoke(genuine.id, CAROL, approvers=APPROVERS)
    assert new(store).status == "pending"


def test_windows_follow_the_rules_in_force_now(store, clock):
    first = new(store)
    store.answer(first.id, ALICE, approve=True, reason="ok", approvers=APPROVERS,
                 window=900, window_max=900)
    assert new(store, grant_rules=rules(APPROVERS, window_max=600)).status == "pending"
    assert new(store, grant_rules=rules(APPROVERS, window_max=0)).status == "pending"
    assert new(store, grant_rules=rules(("role:someone-else",))).status == "pending"
    assert new(store, grant_rules=rules(APPROVERS, issuers=("https://other/",))).status \
        == "pending"
    assert new(store).via == "window"


def test_answers_store_their_proof_never_the_token(store, clock):
    r = new(store)
    store.answer(r.id, ALICE, approve=True, reason="ok", approvers=APPROVERS)
    row = store.get(r.id)
    proof = AnswerProof.from_json(row.approver_proof)
    assert proof.identity() == Approver(subject="alice-oid", tenant="t1", name="Alice",
                                        roles=("sre-leads",))
    assert proof.token_sha256 == ALICE.proof.token_sha256 and proof.validated_at == START
    dump = "\n".join(store.conn.iterdump())
    assert "alice-token-not-a-real-jwt" not in dump


def test_an_expired_token_cannot_answer(store, clock):
    r = new(store, timeout=10 * 86400)
    short = proven(Approver(subject="dan-oid", tenant="t1", roles=("sre-leads",)), now=clock.now,
                   lifetime=60)
    clock.now += 60
    with pytest.raises(ApprovalError, match="token has expired"):
        store.answer(r.id, short, approve=True, reason="ok", approvers=APPROVERS)
    assert store.get(r.id).status == "pending"


def test_refuse_rewrites_the_row_and_keeps_the_evidence(store, clock):
    r = new(store)
    store.answer(r.id, ALICE, approve=True, reason="ok", approvers=APPROVERS)
    v = store.version()
    clock.now += 1
    refused = store.refuse(r.id, "answer by Alice refused (not-an-approver): ...")
    assert (refused.status, refused.via, refused.refused) == ("denied", "refused", clock.now)
    assert refused.approver_subject == "alice-oid" and refused.approver_proof
    outcome = refused.outcome()
    assert (outcome.approved, outcome.via, outcome.approver) == (False, "refused", None)
    assert "not-an-approver" in outcome.reason
    assert store.version() == v + 1               # waiting brokers see the change


# -- the index ---------------------------------------------------------------------------

def test_migration_from_schema_1_keeps_the_chain(tmp_path):
    """An index written before approvals existed: migrated, and `verify` still passes."""
    conn = sqlite3.connect(tmp_path / schema.INDEX_NAME, isolation_level=None)
    conn.executescript(f"BEGIN;\n{schema._MIGRATIONS[0]}\nPRAGMA user_version = 1;\nCOMMIT;")
    conn.close()
    old_schema, schema.SCHEMA_VERSION = schema.SCHEMA_VERSION, 1
    try:
        rec = Recorder.open(tmp_path)
        s = rec.start_session(principal=AGENT, client="192.0.2.1:1", target="web1",
                              login="deploy")
        ch = s.open_channel("exec", command="uptime")
        ch.command("uptime", Decision(Action.ALLOW, "ro", "reads"))
        ch.close(exit_status=0)
        s.close()
        rec.close()
    finally:
        schema.SCHEMA_VERSION = old_schema
    conn = schema.connect(tmp_path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == schema.SCHEMA_VERSION
    assert conn.execute("SELECT version FROM approvals_clock").fetchone()[0] == 0
    columns = {r[1] for r in conn.execute("PRAGMA table_info(approvals)")}
    assert {"approver_proof", "refused", "refused_reason"} <= columns
    conn.close()
    report = verifier.verify_index(tmp_path)
    assert report.ok and report.rows == 3, report.problems


def test_approver_lands_on_the_chained_command_row(tmp_path):
    rec = Recorder.open(tmp_path)
    s = rec.start_session(principal=AGENT, client="192.0.2.1:1", target="web1", login="deploy")
    ch = s.open_channel("exec", command="systemctl restart nginx")
    cid = ch.command("systemctl restart nginx", REVIEW)
    ch.marker("approval request 1: waiting up to 300 s")
    ch.command_approver(cid, "Alice (alice-oid) (request 1)")
    ch.command_result(cid, 0)
    ch.command_approver(cid, "too late")          # the row is sealed: ignored, not applied
    ch.close(exit_status=0)
    s.close()
    rec.close()
    command = query.get_command(query.open_index(tmp_path), cid)
    assert (command["action"], command["approver"]) == ("review",
                                                        "Alice (alice-oid) (request 1)")
    assert verifier.verify_index(tmp_path).ok
    cast = next((tmp_path / "recordings").rglob("*.cast")).read_text()
    assert "approval request 1: waiting up to 300 s" in cast
