"""The approval broker: ``bastion serve`` holds a ``review`` command until a human answers.

Usage from a session (asyncio)::

    broker = ApprovalBroker.open(data_dir, config.settings)      # at start-up
    pending = await broker.create(principal=p, target=t, login="deploy", line=line,
                                  decision=decision, session_id=sid, command_id=cid,
                                  channel="exec")                # timeout: settings default
    if pending.outcome is None:                                  # not decided at once
        tell_agent(waiting_message(pending))                     # "... request 42, up to 300 s"
    outcome = await pending.wait()                               # ApprovalOutcome
    if outcome.approved: run it
    ...
    broker.reconfigure(new_settings)                             # after a policy reload
    broker.close()                                               # at shutdown

or in one call: ``outcome = await broker.request(..., on_created=callback)``, where
``callback(pending)`` runs once the id is known, before waiting.

Semantics:

* ``create`` inserts a ``pending`` row in the index (bastion.approvals.store) and
  queues the webhook (never blocks on it).  It is decided at once when a live
  grant window covers the request (approved, ``via="window"``) or when
  ``[settings] approvers`` is empty (denied, ``via="no-approvers"``).
* ``wait`` returns when an approver answers from any process (the CLI): one
  poller task per broker reads ``approvals_clock.version`` every
  ``poll_interval`` (0.2 s) while anything waits, and only when it moved, the
  rows of the waiting requests -- so many waiting sessions cost one cheap query
  per tick.  At the deadline the request becomes ``expired`` (``via="timeout"``)
  unless an answer was committed first, which then stands.
* A cancelled ``wait`` (the agent went away) withdraws the request
  (``cancelled``).  ``close`` expires every pending request of this node
  (``via="shutdown"``) and wakes the waiters; ``open`` expires those a previous
  process left pending (``via="restart"``) -- nothing held runs after a restart --
  and overdue ones of any node.
* All SQLite work runs in one worker thread; the event loop never waits on disk.

Multi-node: requests carry ``node`` (default: the host name; ``[store] node``); a broker
expires only its own node's requests.  On a shared PostgreSQL store (bastion.store) the
same ApprovalStore runs there, and the poller waits for the ``NOTIFY`` an answer sends on
any node (bastion.store.notify) instead of sleeping ``poll_interval``: it reads the change
counter on each wake, and at least every ``NOTIFY_FALLBACK`` seconds.

Trust: the broker does not take the index's word for an answer.  Whenever it acts
on one -- a waiting request found final by the poller, at its deadline, or at
shutdown; a grant window about to approve a new request -- it judges the row with
:func:`bastion.approvals.proof.verify_answer` / ``verify_grant`` against the request
as it created it (kept in memory), the settings as they are *now* and the answer's
token proof.  A row that fails approves nothing: the waiter gets a ``refused``
outcome (the agent the normal "not approved"), an ``ERROR`` line goes to the audit
log, and the row is rewritten ``denied`` via ``refused`` with ``refused_reason``.

Not covered: the checks themselves (proof.py), the approver's side (model.py / the
CLI), agent messages and recording markers (notices.py).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import socket
import time
from pathlib import Path
from typing import Any, Callable

from bastion.logfmt import fields as log_fields
from bastion.metrics import METRICS
from bastion.approvals.model import (
    APPROVED, VIA_APPROVER, VIA_CANCELLED, VIA_NO_APPROVERS, VIA_REFUSED, VIA_RESTART,
    VIA_SHUTDOWN, VIA_TIMEOUT, ApprovalOutcome, ApprovalRecord,
)
from bastion.approvals.proof import AnswerRules, verify_answer, verify_grant
from bastion.approvals.store import ApprovalStore
from bastion.approvals.webhook import WebhookSender, payload, safe_url
from bastion.store import location as store_location
from bastion.errors import ApprovalError
from bastion.proto.sanitize import sanitize
from bastion.store.notify import FALLBACK as NOTIFY_FALLBACK, listener_for

log = logging.getLogger("bastion.approvals")
audit = logging.getLogger("bastion.audit")

POLL_INTERVAL = 0.2
CLOSE_TIMEOUT = 15.0


class PendingApproval:
    """A request the session knows the id of; ``await wait()`` for its outcome."""

    def __init__(self, broker: "ApprovalBroker", record: ApprovalRecord, timeout: float,
                 deadline: float) -> None:
        self.id = record.id
        self.record = record
        self.timeout = timeout
        self.expires_at = record.expires          # wall clock, as stored
        self.outcome: ApprovalOutcome | None = record.outcome() if record.final else None
        self._broker = broker
        self._deadline = deadline                 # loop time

    def __repr__(self) -> str:
        state = "pending" if self.outcome is None else self.outcome.via
        return f"<PendingApproval {self.id} {state}>"

    async def wait(self) -> ApprovalOutcome:
        """The outcome: an answer, the window, the timeout, or shutdown.

        Never raises but CancelledError (which withdraws the request).
        """
        if self.outcome is not None:
            return self.outcome
        broker = self._broker
        if broker._closed:
            self.outcome = ApprovalOutcome(self.id, False, None, "bastion shut down",
                                           time.time(), VIA_SHUTDOWN)
            return self.outcome
        fut = broker._watch(self.id, self.record)
        loop = asyncio.get_running_loop()
        try:
            try:
                outcome = await asyncio.wait_for(asyncio.shield(fut),
                                                 max(0.0, self._deadline - loop.time()))
            except asyncio.TimeoutError:
                why = f"timed out: nobody answered within {self.timeout:g} s"
                try:
                    # an answer committed first stands -- if it passes the broker's checks
                    outcome = await broker._settle(self.record, await broker._call(
                        broker.store.finish, self.id, VIA_TIMEOUT, why))
                except ApprovalError as exc:      # fail closed: not approved
                    log.error("approval request %s: recording the timeout failed: %s",
                              self.id, exc)
                    outcome = ApprovalOutcome(self.id, False, None, why, time.time(),
                                              VIA_TIMEOUT)
        except asyncio.CancelledError:
            self.cancel()
            raise
        finally:
            broker._unwatch(self.id, fut)
        self.outcome = outcome
        broker._log_outcome(outcome)
        METRICS.inc("bastion_approvals_total", outcome="approved" if outcome.approved
                    else (outcome.via or "not approved"))
        METRICS.inc("bastion_approval_wait_seconds_total",
                    max(0.0, outcome.answered_at - self.record.created))
        return outcome

    def cancel(self, reason: str = "the requester went away while waiting") -> None:
        """Withdraw the request (if still pending); returns at once."""
        if self.outcome is None:
            self._broker._submit(self._broker.store.finish, self.id, VIA_CANCELLED, reason)


class ApprovalBroker:
    """Creates approval requests and wakes the sessions waiting on them (see module doc)."""

    def __init__(self, store: ApprovalStore, settings: Any, *, node: str,
                 poll_interval: float = POLL_INTERVAL,
                 webhook_factory: Callable[[str], WebhookSender] = WebhookSender) -> None:
        self.store = store
        self.node = node
        self.poll_interval = poll_interval
        self.settings = settings
        self.expired_at_open: list[int] = []
        self._webhook_factory = webhook_factory
        self._webhook: WebhookSender | None = None
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="bastion-approvals")
        self._waiters: dict[int, asyncio.Future] = {}
        self._requests: dict[int, ApprovalRecord] = {}   # as created: what answers must fit
        self.rules = AnswerRules()
        self._new_waiter = False
        self._poller: asyncio.Task | None = None
        self._closed = False
        # PostgreSQL: answers wake the poller by NOTIFY instead of its interval (store.notify)
        self._listener = listener_for(store_location.current())
        self.reconfigure(settings)

    @classmethod
    def open(cls, data_dir: Path, settings: Any, *, node: str | None = None,
             poll_interval: float = POLL_INTERVAL,
             now: Callable[[], float] = time.time) -> "ApprovalBroker":
        """Open the store in ``data_dir/index.sqlite``; expire what a previous process left."""
        store = ApprovalStore.open(Path(data_dir), now=now)
        broker = cls(store, settings, node=node or socket.gethostname(),
                     poll_interval=poll_interval)
        try:
            ids = broker._executor.submit(store.expire_node, broker.node, VIA_RESTART,
                                          "bastion restarted while the request waited").result()
            broker._executor.submit(store.expire_overdue).result()
        except BaseException:
            broker.close()
            raise
        broker.expired_at_open = ids
        if ids:
            log.warning("%d approval request(s) left pending by a previous bastion process "
                        "expired: %s", len(ids), ", ".join(map(str, ids)))
        return broker

    def reconfigure(self, settings: Any) -> None:
        """New settings (after a policy reload): timeout, approvers, windows, trusted
        issuers, webhook.  Answers are judged under the settings in force when the broker
        acts on them."""
        self.settings = settings
        self.rules = AnswerRules.of(settings)
        url = getattr(settings, "approval_webhook", None)
        if self._webhook is not None and self._webhook.url != url:
            self._webhook.close(timeout=0)
            self._webhook = None
        if url and self._webhook is None:
            self._webhook = self._webhook_factory(url)
            log.info("approval webhook: %s", safe_url(url))

    # -- executor ------------------------------------------------------------------------
    async def _call(self, fn, *args):
        if self._closed:
            raise ApprovalError("the approval broker is closed")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _submit(self, fn, *args) -> None:
        if self._closed:
            return
        future = self._executor.submit(fn, *args)
        future.add_done_callback(_log_failure)

    # -- requests ------------------------------------------------------------------------
    async def create(self, *, principal: Any, target: Any, login: str, line: str,
                     decision: Any, session_id: int | None = None,
                     command_id: int | None = None, channel: str = "exec",
                     timeout: float | None = None) -> PendingApproval:
        """Create a request; it may be decided at once (see module doc).  Raises ApprovalError."""
        if timeout is None:
            timeout = float(getattr(self.settings, "approval_timeout", 300))
        if not timeout > 0:
            raise ApprovalError(f"approval timeout must be positive, got {timeout!r}")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        rules = self.rules

        def grant_check(grant: ApprovalRecord):
            verdict = verify_grant(grant, rules, now=time.time())
            if not verdict:
                audit.error("approval: the grant window of request %s was NOT applied: %s "
                            "(%s; claimed approver %s)", grant.id, verdict.reason, verdict.code,
                            sanitize(grant.approver_label or "-"))
            return verdict

        record = await self._call(lambda: self.store.create(
            node=self.node, principal=principal, target=target, login=login, line=line,
            decision=decision, session_id=session_id, command_id=command_id, channel=channel,
            timeout=timeout, grant_check=grant_check))
        if not record.final and not tuple(getattr(self.settings, "approvers", ()) or ()):
            record = await self._call(self.store.finish, record.id, VIA_NO_APPROVERS,
                                      "no approvers are configured ([settings] approvers)")
        state = "created" if not record.final else record.status + " via " + (record.via or "-")
        audit.warning("approval request %s %s principal=%s target=%s login=%s channel=%s "
                      "rule=%s", record.id, state, record.requester_subject, record.target,
                      record.login, channel, record.rule,
                      extra=log_fields("approval_request", request=record.id, state=state,
                                       principal=record.requester_subject, target=record.target,
                                       login=record.login, session=record.session_id,
                                       channel=channel, rule=record.rule))
        if not record.final and self._webhook is not None:
            self._webhook.send(payload(record))
        return PendingApproval(self, record, timeout, deadline)

    async def request(self, *, on_created: Callable[[PendingApproval], Any] | None = None,
                      **kwargs) -> ApprovalOutcome:
        """``create`` + ``on_created(pending)`` (may be a coroutine function) + ``wait``."""
        pending = await self.create(**kwargs)
        if on_created is not None:
            result = on_created(pending)
            if asyncio.iscoroutine(result):
                await result
        return await pending.wait()

    # -- judging answers -----------------------------------------------------------------
    def judge(self, request: ApprovalRecord | None, row: ApprovalRecord,
              now: float | None = None) -> tuple[ApprovalOutcome, str | None]:
        """The outcome of a final ``row``, and the refusal to record (None: none).

        ``request`` is the row as this broker created it (None: it has no record of it,
        and nothing is approved).  Rows that approve nothing pass as they are.
        """
        now = time.time() if now is None else now
        if row.status != APPROVED and row.via != VIA_APPROVER:
            return row.outcome(), None            # timeout, restart, cancelled...: not approved
        claimed = sanitize(row.approver_label or "-")[:200]
        if request is None:
            code, why, verdict = "unknown", "this bastion has no record of the request", None
        else:
            verdict = verify_answer(request, row, self.rules, now=now)
            code, why = verdict.code, verdict.reason
        if verdict:
            if not verdict.proven:
                audit.warning("approval request %s: answer by %s accepted WITHOUT token proof "
                              "([settings] approval_allow_unproven)", row.id, claimed)
            return row.outcome(), None
        reason = f"answer by {claimed} refused ({code}): {sanitize(why)}"
        audit.error("approval request %s REFUSED: %s", row.id, reason)
        return ApprovalOutcome(row.id, False, None, reason, now, VIA_REFUSED), reason

    async def _settle(self, request: ApprovalRecord | None,
                      row: ApprovalRecord) -> ApprovalOutcome:
        """``judge`` and, for a refusal, record it in the row (a failure to record is logged;
        the refusal stands)."""
        outcome, refusal = self.judge(request, row)
        if refusal is not None:
            try:
                await self._call(self.store.refuse, row.id, refusal)
            except ApprovalError as exc:
                log.error("approval request %s: recording the refusal failed: %s", row.id, exc)
        return outcome

    def _log_outcome(self, outcome: ApprovalOutcome) -> None:
        audit.warning("approval request %s %s via %s approver=%s", outcome.request_id,
                      "approved" if outcome.approved else "not approved", outcome.via,
                      outcome.approver_subject or "-",
                      extra=log_fields("approval_outcome", request=outcome.request_id,
                                       action="approved" if outcome.approved else "not approved",
                                       via=outcome.via, approver=outcome.approver_subject))

    # -- waiting -------------------------------------------------------------------------
    def _watch(self, request_id: int, request: ApprovalRecord) -> asyncio.Future:
        if self._closed:
            raise ApprovalError("the approval broker is closed")
        self._requests[request_id] = request
        fut = self._waiters.get(request_id)
        if fut is None:
            fut = asyncio.get_running_loop().create_future()
            self._waiters[request_id] = fut
        self._new_waiter = True
        if self._poller is None or self._poller.done():
            self._poller = asyncio.ensure_future(self._poll())
        return fut

    def _unwatch(self, request_id: int, fut: asyncio.Future) -> None:
        if self._waiters.get(request_id) is fut:
            del self._waiters[request_id]
            self._requests.pop(request_id, None)

    async def _poll(self) -> None:
        last: int | None = None
        while self._waiters and not self._closed:
            if self._listener is not None:
                await asyncio.get_running_loop().run_in_executor(
                    None, self._listener.wait, NOTIFY_FALLBACK)
            else:
                await asyncio.sleep(self.poll_interval)
            if not self._waiters or self._closed:
                break
            try:
                version = await self._call(self.store.version)
                if version == last and not self._new_waiter:
                    continue
                last, self._new_waiter = version, False
                records = await self._call(self.store.get_many, list(self._waiters))
            except ApprovalError as exc:
                log.error("approval poller: %s (retrying)", exc)
                continue
            for record in records:
                fut = self._waiters.get(record.id)
                if record.final and fut is not None and not fut.done():
                    outcome = await self._settle(self._requests.get(record.id), record)
                    if not fut.done():
                        fut.set_result(outcome)

    @property
    def waiting(self) -> int:
        """How many requests are being waited on right now."""
        return len(self._waiters)

    # -- shutdown ------------------------------------------------------------------------
    def close(self) -> None:
        """Expire this node's pending requests, wake their waiters, stop.  Idempotent."""
        if self._closed:
            return
        waiters = dict(self._waiters)
        records: list[ApprovalRecord] = []
        try:
            self._executor.submit(self.store.expire_node, self.node, VIA_SHUTDOWN,
                                  "bastion shut down while the request waited"
                                  ).result(CLOSE_TIMEOUT)
            if waiters:
                records = self._executor.submit(self.store.get_many, list(waiters)
                                                ).result(CLOSE_TIMEOUT)
        except Exception as exc:  # noqa: BLE001 - shutdown goes on; restart expires them
            log.error("approvals: could not expire pending requests at shutdown: %s", exc)
        self._closed = True
        if self._listener is not None:
            self._listener.close()
        if self._poller is not None:
            self._poller.cancel()
        now = time.time()
        by_id = {r.id: r for r in records}
        requests = dict(self._requests)
        for request_id, fut in waiters.items():
            record = by_id.get(request_id)
            outcome = ApprovalOutcome(request_id, False, None, "bastion shut down", now,
                                      VIA_SHUTDOWN)
            if record is not None and record.final:
                outcome, refusal = self.judge(requests.get(request_id), record, now)
                if refusal is not None:
                    try:
                        self._executor.submit(self.store.refuse, request_id, refusal
                                              ).result(CLOSE_TIMEOUT)
                    except Exception as exc:  # noqa: BLE001 - the refusal stands anyway
                        log.error("approval request %s: recording the refusal failed: %s",
                                  request_id, exc)
            _resolve(fut, outcome)
        self._executor.shutdown(wait=True)
        self.store.close()
        if self._webhook is not None:
            self._webhook.close()


def _resolve(fut: asyncio.Future, outcome: ApprovalOutcome) -> None:
    def _set() -> None:
        if not fut.done():
            fut.set_result(outcome)
    loop = fut.get_loop()
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        _set()
    else:
        try:
            loop.call_soon_threadsafe(_set)
        except RuntimeError:          # loop closed: nobody waits any more
            pass


def _log_failure(future: concurrent.futures.Future) -> None:
    exc = future.exception()
    if exc is not None:
        log.error("approvals: background update failed: %s", exc)
