"""The broker in an event loop, answered from other processes through real SQLite."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bastion.approvals import ApprovalBroker, ApprovalStore, Approver
from bastion.approvals.webhook import WebhookSender
from bastion.config.settings import Settings
from bastion.errors import ApprovalError
from bastion.identity.principal import Principal
from bastion.policy import Action, Decision
from tests.approvalkit import ISSUER, ROOT, proven

SETTINGS = Settings(approvers=("role:sre-leads",), approval_timeout=300, approval_window_max=900,
                    approval_issuers=(ISSUER,))
AGENT = Principal(subject="agent-oid", tenant="t1", app_id="agent-app", name="deploy-bot",
                  roles=("agents",))
REVIEW = Decision(Action.REVIEW, "restarts", "systemctl restart needs approval")

ANSWER = f"""
import sys, time
sys.path.insert(0, {str(ROOT)!r})
from bastion.approvals.model import Approver
from bastion.approvals.store import ApprovalStore
from tests.approvalkit import proven
store = ApprovalStore.open(sys.argv[1], create=False)
alice = proven(Approver(subject="alice-oid", name="Alice", roles=("sre-leads",)),
               now=time.time())
for rid in sys.argv[3:]:
    store.answer(int(rid), alice, approve=sys.argv[2] == "approve",
                 reason="from another process", approvers=("role:sre-leads",))
"""


def answer_in_process(data_dir, verdict: str, *ids: int) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", ANSWER, str(data_dir), verdict,
                           *map(str, ids)], capture_output=True, text=True, timeout=60)


async def answer_async(data_dir, verdict: str, *ids: int) -> float:
    """Answer from another process without blocking the loop; the time it exited.

    The answer carries a proof (tests.approvalkit), as the approver CLI's answers do.
    """
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", ANSWER, str(data_dir),
                                                verdict, *map(str, ids),
                                                stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return time.monotonic()


def create(broker, **kw):
    args = dict(principal=AGENT, target="web1", login="deploy", line="systemctl restart nginx",
                decision=REVIEW, session_id=7, command_id=9, channel="exec")
    args.update(kw)
    return broker.create(**args)


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request):
    """SQLite (the broker polls) or PostgreSQL (it waits for NOTIFY)."""
    if request.param == "postgresql":
        request.getfixturevalue("pg_store")
    return request.param


@pytest.fixture
async def broker(tmp_path, backend):
    b = ApprovalBroker.open(tmp_path, SETTINGS, node="test-node")
    assert (b._listener is not None) == (backend == "postgresql")
    yield b
    b.close()


async def test_answer_from_another_process_wakes_the_waiter(broker, tmp_path):
    pending = await create(broker)
    assert pending.outcome is None and pending.id > 0     # the id is known before waiting
    waiter = asyncio.ensure_future(pending.wait())
    exited = await answer_async(tmp_path, "approve", pending.id)
    outcome = await waiter
    print(f"\nanswer reached the waiter {1000 * (time.monotonic() - exited):.0f} ms after the "
          "answering process exited")
    assert (outcome.request_id, outcome.approved, outcome.via, outcome.approver,
            outcome.reason) == (pending.id, True, "approver", "Alice (alice-oid)",
                                "from another process")


async def test_deny_from_another_process(broker, tmp_path):
    pending = await create(broker)
    waiter = asyncio.ensure_future(pending.wait())
    await answer_async(tmp_path, "deny", pending.id)
    outcome = await waiter
    assert outcome.approved is False and outcome.via == "approver"


class CountingStore(ApprovalStore):
    def __init__(self, conn):
        super().__init__(conn)
        self.calls = {"version": 0, "get_many": 0}
        self.sizes: list[int] = []

    def version(self):
        self.calls["version"] += 1
        return super().version()

    def get_many(self, ids):
        self.calls["get_many"] += 1
        self.sizes.append(len(ids))
        return super().get_many(ids)


async def test_many_waiters_share_one_cheap_poll(tmp_path):
    store = CountingStore(ApprovalStore.open(tmp_path).conn)
    broker = ApprovalBroker(store, SETTINGS, node="n", poll_interval=0.05)
    try:
        pendings = [await create(broker, line=f"systemctl restart app{i}") for i in range(40)]
        waiters = [asyncio.ensure_future(p.wait()) for p in pendings]
        while store.calls["version"] < 6:         # several quiet ticks
            await asyncio.sleep(0.05)
        assert broker.waiting == 40
        assert store.calls["get_many"] == 1       # rows are read only when something moved
        assert store.sizes == [40]                # ... all waiting requests in one query
        await answer_async(tmp_path, "approve", *(p.id for p in pendings[:20]))
        await answer_async(tmp_path, "deny", *(p.id for p in pendings[20:]))
        outcomes = await asyncio.gather(*waiters)
        assert [o.approved for o in outcomes] == [True] * 20 + [False] * 20
        assert [o.request_id for o in outcomes] == [p.id for p in pendings]
        # one query per tick that saw a change, each for every request still waiting
        assert store.sizes == sorted(store.sizes, reverse=True) and len(store.sizes) < 40
        assert broker.waiting == 0
    finally:
        broker.close()


async def test_timeout_denies_and_is_final(broker, tmp_path):
    pending = await create(broker, timeout=0.3)
    outcome = await pending.wait()
    assert (outcome.approved, outcome.via) == (False, "timeout")
    assert "0.3 s" in outcome.reason
    late = answer_in_process(tmp_path, "approve", pending.id)
    assert late.returncode != 0 and "already expired" in late.stderr
    assert broker.store.get(pending.id).status == "expired"


async def test_cancelled_wait_withdraws_the_request(broker):
    pending = await create(broker)
    waiter = asyncio.ensure_future(pending.wait())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    for _ in range(200):
        record = await broker._call(broker.store.get, pending.id)
        if record.final:
            break
        await asyncio.sleep(0.02)
    assert (record.status, record.via) == ("cancelled", "cancelled")


async def test_close_wakes_waiters_and_expires_requests(tmp_path):
    broker = ApprovalBroker.open(tmp_path, SETTINGS, node="n")
    pending = await create(broker)
    waiter = asyncio.ensure_future(pending.wait())
    await asyncio.sleep(0)
    broker.close()
    outcome = await waiter
    assert (outcome.approved, outcome.via) == (False, "shutdown")
    store = ApprovalStore.open(tmp_path)
    assert (store.get(pending.id).status, store.get(pending.id).via) == ("expired", "shutdown")
    with pytest.raises(ApprovalError, match="closed"):
        await create(broker)


HOLD = """
import asyncio, sys
from bastion.approvals import ApprovalBroker
from bastion.config.settings import Settings
from bastion.identity.principal import Principal
from bastion.policy import Action, Decision
async def main():
    broker = ApprovalBroker.open(sys.argv[1], Settings(approvers=("role:x",)), node="test-node")
    p = await broker.create(principal=Principal(subject="agent-oid"), target="web1",
                            login="deploy", line="systemctl restart nginx",
                            decision=Decision(Action.REVIEW, "restarts", "r"), channel="exec")
    print(p.id, flush=True)
    await p.wait()
asyncio.run(main())
"""


async def test_restart_expires_what_a_killed_process_held(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE,
                            text=True)
    try:
        request_id = int(proc.stdout.readline())
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert ApprovalStore.open(tmp_path).get(request_id).status == "pending"
    broker = ApprovalBroker.open(tmp_path, SETTINGS, node="test-node")
    try:
        assert broker.expired_at_open == [request_id]
        record = broker.store.get(request_id)
        assert (record.status, record.via) == ("expired", "restart")
    finally:
        broker.close()
    late = answer_in_process(tmp_path, "approve", request_id)
    assert late.returncode != 0 and "already expired" in late.stderr


async def test_no_approvers_configured_denies_at_once(tmp_path):
    broker = ApprovalBroker.open(tmp_path, Settings(approvers=()), node="n")
    try:
        pending = await create(broker)
        assert pending.outcome is not None and pending.outcome.via == "no-approvers"
        assert (await pending.wait()).approved is False
    finally:
        broker.close()


async def test_grant_window_approves_at_once(broker):
    first = await create(broker)
    broker.store.answer(first.id, proven(Approver(subject="alice-oid", roles=("sre-leads",)),
                                         now=time.time()),
                        approve=True, reason="maintenance", approvers=SETTINGS.approvers,
                        window=600, window_max=900)
    assert (await first.wait()).approved
    again = await create(broker)
    assert again.outcome is not None
    assert (again.outcome.approved, again.outcome.via, again.outcome.granted_by) == (
        True, "window", first.id)


# -- webhook -----------------------------------------------------------------------------

class Hook:
    """A loopback HTTP receiver: answers the statuses in ``plan``, then 200."""

    def __init__(self, plan=(), hold: threading.Event | None = None) -> None:
        self.plan = list(plan)
        self.hold = hold
        self.bodies: list[dict] = []
        self.headers: list[dict] = []
        self.got = threading.Event()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                data = self.rfile.read(int(self.headers["Content-Length"]))
                if hook.hold is not None:
                    hook.hold.wait(30)
                hook.bodies.append(json.loads(data))
                hook.headers.append(dict(self.headers))
                status = hook.plan.pop(0) if hook.plan else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()
                if status == 200:
                    hook.got.set()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook/s3cr3t-path"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


async def test_webhook_posts_with_retries(tmp_path, caplog):
    hook = Hook(plan=[500, 503])
    settings = Settings(approvers=("role:sre-leads",), approval_webhook=hook.url)
    store = ApprovalStore.open(tmp_path)
    broker = ApprovalBroker(store, settings, node="n",
                            webhook_factory=lambda url: WebhookSender(url, delays=(0.01, 0.01)))
    try:
        pending = await create(broker, line="systemctl restart nginx \x1b[8mhidden")
        assert await asyncio.get_running_loop().run_in_executor(None, hook.got.wait, 30)
    finally:
        broker.close()
        hook.close()
    assert len(hook.bodies) == 3 and hook.bodies[0] == hook.bodies[2]
    body = hook.bodies[-1]
    assert body["event"] == "approval.requested" and body["request"]["id"] == pending.id
    assert body["request"]["line"] == "systemctl restart nginx ␛[8mhidden"
    assert body["request"]["requester"] == {"subject": "agent-oid", "name": "deploy-bot",
                                            "app_id": "agent-app", "tenant": "t1"}
    assert hook.headers[-1]["Content-Type"] == "application/json"
    assert "s3cr3t-path" not in caplog.text


async def test_webhook_never_blocks_the_request(tmp_path):
    release = threading.Event()
    hook = Hook(hold=release)
    settings = Settings(approvers=("role:sre-leads",), approval_webhook=hook.url)
    broker = ApprovalBroker.open(tmp_path, settings, node="n")
    try:
        pending = await create(broker)            # returns while the receiver still hangs
        assert pending.id > 0 and not hook.got.is_set() and hook.bodies == []
    finally:
        release.set()
        broker.close()
        hook.close()


def test_webhook_gives_up_on_client_errors_and_unreachable_hosts():
    hook = Hook(plan=[404])
    sender = WebhookSender(hook.url, delays=(0.01, 0.01))
    sender.send({"n": 1})
    for _ in range(500):
        if sender.failed:
            break
        time.sleep(0.01)
    assert (sender.failed, sender.sent, len(hook.bodies)) == (1, 0, 1)   # 404: no retry
    hook.close()
    dead = WebhookSender(hook.url, delays=(0.01, 0.01))
    dead.send({"n": 2})
    for _ in range(500):
        if dead.failed:
            break
        time.sleep(0.01)
    assert dead.failed == 1
    sender.close()
    dead.close()
