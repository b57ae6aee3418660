"""Approval requests in SQLite: the ``approvals`` table of ``DATA_DIR/index.sqlite``.

Shared by ``bastion serve`` (the broker creates requests, expires them, waits for
answers) and the approver CLI (another process: lists, answers, revokes).  The
table and its change counter ``approvals_clock`` come from migration 2 of
:mod:`bastion.recording.schema` (WAL, busy timeout: both processes share the file).

Nothing read back from this table is trusted by ``bastion serve`` on its own: the
broker judges every answer and every grant window with bastion.approvals.proof
when it acts on it (``refuse`` records a refusal).

Every state change is one ``BEGIN IMMEDIATE`` transaction whose UPDATE carries
its own guard (``WHERE status = 'pending' AND expires > now`` and, for answers,
``AND requester_subject != approver``), so of two answers racing for one request
exactly one is applied and the other is refused; a timeout racing an answer
loses to an answer committed first (and the broker then reports that answer).
Every status change bumps ``approvals_clock.version`` (a trigger): a waiting
broker polls that one row instead of each request.

This class is synchronous: the broker calls it from one worker thread, never
from the event loop.  Methods raise :class:`ApprovalError` with what to do.

Multi-node seam: this class is the only code that speaks SQL about approvals.
A shared database (one approvals table for several bastion nodes) needs another
implementation of the same methods; ``node`` already tells which bastion process
owns a pending request, so a restarting node expires only its own.

Not covered: who may answer (model.py), waiting (broker.py).
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any, Callable, Iterable

from bastion.approvals.model import (
    APPROVED, CANCELLED, DENIED, EXPIRED, PENDING, VIA_APPROVER, VIA_REFUSED, VIA_WINDOW,
    Approver,
    ApprovalRecord, check_answer, check_reason, decision_fields, principal_columns,
    window_allowed,
)
from bastion.errors import ApprovalError, RecordingError
from bastion.policy.selectors import any_principal_matches
from bastion.proto.sanitize import sanitize
from bastion.recording import schema, storable
from bastion.store import location as store_location

_FINAL_BY_VIA = {"timeout": EXPIRED, "restart": EXPIRED, "shutdown": EXPIRED,
                 "node-gone": EXPIRED, "cancelled": CANCELLED, "no-approvers": DENIED}


def _target_name(target: Any) -> str:
    return str(getattr(target, "name", target))


class ApprovalStore:
    """Reads and writes approval rows on one SQLite connection (see module doc)."""

    def __init__(self, conn: sqlite3.Connection, *, now: Callable[[], float] = time.time) -> None:
        self.conn = conn
        self._now = now

    @classmethod
    def open(cls, data_dir: Path, *, create: bool = True,
             now: Callable[[], float] = time.time) -> "ApprovalStore":
        """Open the index read-write (migrating it).  ``create=False`` refuses a missing index."""
        path = schema.index_path(Path(data_dir))
        if not create and not path.exists() and not store_location.current().postgres:
            raise ApprovalError(f"no session index at {path}: nothing to approve there",
                                hint="pass the --data-dir that `bastion serve` uses "
                                     "(or set BASTION_DATA_DIR)")
        try:
            conn = schema.connect(Path(data_dir))
        except RecordingError as exc:
            raise ApprovalError(str(exc), hint=exc.hint) from exc
        return cls(conn, now=now)

    def close(self) -> None:
        self.conn.close()

    # -- plumbing ----------------------------------------------------------------------
    def _tx(self, fn: Callable[[], Any]) -> Any:
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise ApprovalError(f"the approvals index is busy or not writable: {exc}",
                                hint="retry; check the data dir's permissions and free space") \
                from exc
        try:
            result = fn()
            self.conn.execute("COMMIT")
            return result
        except BaseException as exc:
            try:
                self.conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            if isinstance(exc, sqlite3.Error):
                raise ApprovalError(f"writing approvals failed: {exc}",
                                    hint="check the data dir's permissions and free space") \
                    from exc
            raise

    def _query(self, sql: str, params: Iterable = ()) -> list[ApprovalRecord]:
        try:
            return [ApprovalRecord.from_row(dict(r)) for r in self.conn.execute(sql, tuple(params))]
        except sqlite3.Error as exc:
            raise ApprovalError(f"reading approvals failed: {exc}") from exc

    def _write(self, sql: str, params: Iterable = ()) -> int:
        try:
            return self.conn.execute(sql, storable.values(tuple(params))).rowcount
        except sqlite3.Error as exc:
            raise ApprovalError(f"writing approvals failed: {exc}",
                                hint="check the data dir's permissions and free space") from exc

    # -- reading -----------------------------------------------------------------------
    def version(self) -> int:
        """The change counter: it moves whenever any request changes status."""
        try:
            return int(self.conn.execute(
                "SELECT version FROM approvals_clock WHERE id = 1").fetchone()[0])
        except sqlite3.Error as exc:
            raise ApprovalError(f"reading approvals failed: {exc}") from exc

    def get(self, request_id: int) -> ApprovalRecord:
        rows = self._query("SELECT * FROM approvals WHERE id = ?", (int(request_id),))
        if not rows:
            raise ApprovalError(f"no approval request {request_id}",
                                hint="list them with `bastion approvals list --all`")
        return rows[0]

    def get_many(self, ids: Iterable[int]) -> list[ApprovalRecord]:
        ids = [int(i) for i in ids]
        if not ids:
            return []
        marks = ",".join("?" * len(ids))
        return self._query(f"SELECT * FROM approvals WHERE id IN ({marks})", ids)

    def list(self, *, all_statuses: bool = False, limit: int = 100,
             since: float | None = None) -> list[ApprovalRecord]:
        """Pending requests (oldest first); with ``all_statuses`` all of them (newest first)."""
        if not all_statuses:
            return self._query("SELECT * FROM approvals WHERE status = 'pending' AND expires > ? "
                               "ORDER BY id LIMIT ?", (self._now(), int(limit)))
        where, params = "", []
        if since is not None:
            where, params = "WHERE COALESCE(answered, created) >= ?", [since]
        return self._query(f"SELECT * FROM approvals {where} ORDER BY id DESC LIMIT ?",
                           params + [int(limit)])

    # -- requests (broker side) --------------------------------------------------------
    def create(self, *, node: str, principal: Any, target: Any, login: str, line: str,
               decision: Any, session_id: int | None, command_id: int | None, channel: str,
               timeout: float,
               grant_check: Callable[[ApprovalRecord], Any] | None = None) -> ApprovalRecord:
        """Insert a request: ``pending``, or at once ``approved`` through a live grant window.

        ``grant_check(grant)`` judges each candidate window (newest end first) inside the
        transaction and returns a :class:`bastion.approvals.proof.Verdict`; the first
        that passes approves the request, each that fails gets ``refused`` /
        ``refused_reason`` (once).  Without ``grant_check`` no window applies (deny by
        default).  The returned row is read inside the same transaction.
        """
        now = self._now()
        rule, reason, commands = decision_fields(decision)
        cols = principal_columns(principal)
        row = dict(cols, node=node, created=now, expires=now + float(timeout), status=PENDING,
                   session_id=session_id, command_id=command_id, channel=channel,
                   target=_target_name(target), login=login or "", line=line,
                   commands=json.dumps(commands, ensure_ascii=False, default=str),
                   rule=rule, decision_reason=reason)
        row = storable.values(row)       # NUL or non-UTF-8 bytes an agent sent (storable.py)

        def work() -> ApprovalRecord:
            grant = self._live_window(row, now, grant_check) if grant_check else None
            if grant is not None:
                row.update(status=APPROVED, via=VIA_WINDOW, answered=now,
                           approver_subject=grant.approver_subject,
                           approver_tenant=grant.approver_tenant,
                           approver_app_id=grant.approver_app_id,
                           approver_name=grant.approver_name, granted_by=grant.id,
                           window_until=grant.window_until,
                           answer_reason=f"within the grant window of request {grant.id}")
            names = ", ".join(row)
            marks = ", ".join("?" * len(row))
            cur = self.conn.execute(f"INSERT INTO approvals ({names}) VALUES ({marks})",
                                    tuple(row.values()))
            return self.get(int(cur.lastrowid))

        return self._tx(work)

    MAX_GRANTS = 16     # candidate windows judged per request (a flood of forged rows stops here)

    def _live_window(self, row: dict, now: float,
                     grant_check: Callable[[ApprovalRecord], Any]) -> ApprovalRecord | None:
        if not window_allowed(row["rule"]):
            return None
        found = self._query(
            "SELECT * FROM approvals WHERE status = 'approved' AND via = 'approver' "
            "AND window_until > ? AND revoked IS NULL AND requester_subject = ? "
            "AND requester_tenant = ? AND rule = ? AND target = ? AND login = ? "
            "ORDER BY window_until DESC, id DESC LIMIT ?",
            (now, row["requester_subject"], row["requester_tenant"], row["rule"], row["target"],
             row["login"], self.MAX_GRANTS))
        for grant in found:
            verdict = grant_check(grant)
            if verdict:
                return grant
            self._write("UPDATE approvals SET refused = ?, refused_reason = ? "
                        "WHERE id = ? AND refused IS NULL",
                        (now, f"grant window refused: {verdict.reason}", grant.id))
        return None

    def finish(self, request_id: int, via: str, reason: str) -> ApprovalRecord:
        """End a pending request without an approver (timeout, restart, shutdown, cancel).

        Returns the final row: if an answer was committed first, that answer stands.
        """
        status = _FINAL_BY_VIA[via]
        now = self._now()
        self._tx(lambda: self._write(
            "UPDATE approvals SET status = ?, via = ?, answered = ?, answer_reason = ? "
            "WHERE id = ? AND status = 'pending'", (status, via, now, reason, int(request_id))))
        return self.get(request_id)

    def expire_node(self, node: str, via: str, reason: str) -> list[int]:
        """End every pending request owned by ``node`` (at restart / shutdown); their ids."""
        status = _FINAL_BY_VIA[via]
        now = self._now()

        def work() -> list[int]:
            ids = [r[0] for r in self.conn.execute(
                "SELECT id FROM approvals WHERE status = 'pending' AND node = ?", (node,))]
            self._write("UPDATE approvals SET status = ?, via = ?, answered = ?, answer_reason = ? "
                        "WHERE status = 'pending' AND node = ?", (status, via, now, reason, node))
            return ids

        return self._tx(work)

    def expire_overdue(self) -> list[int]:
        """End pending requests of any node whose deadline passed (orphans of a node that
        went away for good); nobody could answer them any more anyway."""
        now = self._now()

        def work() -> list[int]:
            ids = [r[0] for r in self.conn.execute(
                "SELECT id FROM approvals WHERE status = 'pending' AND expires <= ?", (now,))]
            self._write("UPDATE approvals SET status = 'expired', via = 'timeout', answered = ?, "
                        "answer_reason = 'nobody answered in time' "
                        "WHERE status = 'pending' AND expires <= ?", (now, now))
            return ids

        return self._tx(work)

    # -- answers (approver side) -------------------------------------------------------
    def answer(self, request_id: int, approver: Approver, *, approve: bool, reason: str,
               approvers, window: int = 0, window_max: int = 0) -> ApprovalRecord:
        """Approve or deny a pending request, once.  Raises ApprovalError saying why not.

        ``approver.proof`` (the validated token, bastion.approvals.proof) is stored with
        the answer; without one the answer is *unproven* and ``bastion serve`` refuses
        it unless ``[settings] approval_allow_unproven`` (dev issuers only).
        """
        reason = check_reason(reason)
        now = self._now()
        proof = approver.proof
        if proof is not None and not (proof.expires or 0) > now:
            raise ApprovalError("your token has expired since it was checked",
                                hint="run `bastion login` again (or renew BASTION_TOKEN)")

        def work() -> None:
            record = self.get(request_id)
            check_answer(record, approver, approvers=approvers, now=now, approve=approve,
                         window=window, window_max=window_max)
            changed = self._write(
                "UPDATE approvals SET status = ?, via = ?, answered = ?, approver_subject = ?, "
                "approver_tenant = ?, approver_app_id = ?, approver_name = ?, approver_json = ?, "
                "approver_proof = ?, answer_reason = ?, window_until = ? "
                "WHERE id = ? AND status = 'pending' AND expires > ? AND requester_subject != ?",
                (APPROVED if approve else DENIED, VIA_APPROVER, now, approver.subject,
                 approver.tenant, approver.app_id or None, approver.name or None,
                 json.dumps(approver.as_dict(), ensure_ascii=False, sort_keys=True),
                 proof.to_json() if proof is not None else None, reason,
                 (now + window) if (approve and window) else None,
                 int(request_id), now, approver.subject))
            if changed != 1:                    # the guard held where the check above did not
                raise ApprovalError(f"request {request_id} could not be answered: it is no "
                                    "longer pending")

        self._tx(work)
        return self.get(request_id)

    def refuse(self, request_id: int, reason: str) -> ApprovalRecord:
        """The broker refused to act on this row's answer: ``denied`` via ``refused``.

        The claimed approver, proof and reason stay in the row as evidence; ``refused``
        and ``refused_reason`` say when and why.  Unconditional: a row the broker judged
        is final whatever is written into it afterwards.
        """
        now = self._now()
        self._tx(lambda: self._write(
            "UPDATE approvals SET status = ?, via = ?, refused = ?, refused_reason = ? "
            "WHERE id = ?", (DENIED, VIA_REFUSED, now, reason, int(request_id))))
        return self.get(request_id)

    def revoke(self, request_id: int, approver: Approver, *, approvers) -> ApprovalRecord:
        """End the grant window of an approved request now (any approver may)."""
        if not any_principal_matches(tuple(approvers), approver):
            raise ApprovalError(f"{sanitize(approver.label)} is not an approver",
                                hint="log in as an approver (`bastion login`)")
        now = self._now()

        def work() -> None:
            record = self.get(request_id)
            if record.window_until is None or record.via != VIA_APPROVER:
                raise ApprovalError(f"request {request_id} opened no grant window")
            if record.revoked is not None or record.window_until <= now:
                raise ApprovalError(f"the grant window of request {request_id} is already over")
            self._write("UPDATE approvals SET revoked = ?, revoked_by = ?, window_until = ? "
                        "WHERE id = ? AND revoked IS NULL", (now, approver.label, now,
                                                             int(request_id)))

        self._tx(work)
        return self.get(request_id)


__all__ = ["ApprovalStore"]
