"""Where the approvals CLI reads and answers requests: the data dir, or the API.

``open_source(server, server_ca, data_dir, policy, token_file)``: with ``--server URL`` the
bastion's HTTPS API (bastion.api.client: every check is the server's), else the local
index (the CLI checks the token, the store checks roles and four-eyes, as before).  Both
give :class:`ApprovalRecord` objects, so the views are the same.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from bastion.approvals.model import ApprovalRecord
from bastion.errors import ApprovalError, BastionError


class LocalSource:
    """The data dir beside ``bastion serve`` (the index is shared, WAL)."""

    def __init__(self, data_dir: Path, policy: Path, token_file: Optional[Path],
                 *, answering: bool = True) -> None:
        from bastion.approvals.store import ApprovalStore
        from bastion.recording import schema
        self.data_dir, self.policy, self.token_file = data_dir, policy, token_file
        self.config: Any = None
        self.approver: Any = None
        if answering:
            from bastion.approvals.approver import authenticate, load_token
            from bastion.config import load_config
            self.config = load_config(policy)
            self.approver = authenticate(self.config, load_token(token_file))
            self.store = ApprovalStore.open(data_dir, create=False)
        else:
            try:
                self.store = ApprovalStore(schema.connect(data_dir, readonly=True))
            except BastionError as exc:
                raise ApprovalError(str(exc), hint=exc.hint) from None

    @property
    def me(self) -> str:
        return str(self.approver.label) if self.approver is not None else "?"

    def check_approver(self) -> None:
        from bastion.approvals.approver import is_approver
        from bastion.proto.sanitize import sanitize
        if not is_approver(self.config, self.approver):
            raise ApprovalError(f"{sanitize(self.approver.label)} is not an approver "
                                f"([settings] approvers: "
                                f"{', '.join(self.config.settings.approvers) or 'none'})",
                                hint="log in as an approver (`bastion login`)")

    def window_allowed(self) -> bool:
        return bool(self.config.settings.approval_window_max > 0)

    def list(self, all_statuses: bool = False, limit: int = 100,
             since: float | None = None) -> list[ApprovalRecord]:
        return list(self.store.list(all_statuses=all_statuses, limit=limit, since=since))

    def get(self, request_id: int) -> ApprovalRecord:
        return self.store.get(request_id)

    def answer(self, request_id: int, approve: bool, reason: str,
               window: str | None = None) -> ApprovalRecord:
        from bastion.approvals.approver import answer, authenticate, load_token
        self.approver = authenticate(self.config, load_token(self.token_file))  # per answer
        return answer(self.store, self.config, self.approver, request_id, approve=approve,
                      reason=reason, window=window)

    def revoke(self, request_id: int) -> ApprovalRecord:
        return self.store.revoke(request_id, self.approver,
                                 approvers=self.config.settings.approvers)

    def close(self) -> None:
        self.store.close()


class RemoteSource:
    """The bastion's API: list, answer and check roles there."""

    def __init__(self, server: str, server_ca: Optional[Path],
                 token_file: Optional[Path]) -> None:
        from bastion.api.client import ApiClient
        from bastion.approvals.approver import load_token
        self.client = ApiClient(server, load_token(token_file), server_ca)
        self._me: dict[str, Any] | None = None

    def _whoami(self) -> dict[str, Any]:
        if self._me is None:
            self._me = self.client.whoami()
        return self._me

    @property
    def me(self) -> str:
        me = self._whoami()
        return str(me.get("name") or me.get("subject") or "?")

    def check_approver(self) -> None:
        if not self._whoami().get("bastion_roles", {}).get("approver"):
            raise ApprovalError(f"{self.me} is not an approver on that bastion",
                                hint="log in as an approver (`bastion login`)")

    def window_allowed(self) -> bool:
        return bool(self._whoami().get("approval_window_max", 0))

    def list(self, all_statuses: bool = False, limit: int = 100,
             since: float | None = None) -> list[ApprovalRecord]:
        records = [record_of(d) for d in self.client.approvals(all_statuses)]
        if since is not None:
            records = [r for r in records if (r.answered or r.created) >= since]
        return records[:limit]

    def get(self, request_id: int) -> ApprovalRecord:
        for record in self.list(all_statuses=True, limit=10_000):
            if record.id == request_id:
                return record
        raise ApprovalError(f"no approval request {request_id}")

    def answer(self, request_id: int, approve: bool, reason: str,
               window: str | None = None) -> ApprovalRecord:
        return record_of(self.client.answer(request_id, approve, reason, window))

    def revoke(self, request_id: int) -> ApprovalRecord:
        raise ApprovalError("revoking a grant window through the API is not there yet",
                            hint="run `bastion approvals revoke` on the bastion host")

    def close(self) -> None:
        pass


def record_of(data: dict[str, Any]) -> ApprovalRecord:
    """An ApprovalRecord from the API's JSON (its ``times`` hold the epoch seconds)."""
    row = {**data, **(data.get("times") or {})}
    row["commands"] = json.dumps(data.get("commands") or [])
    return ApprovalRecord.from_row(row)


def open_source(server: Optional[str], server_ca: Optional[Path], data_dir: Path,
                policy: Path, token_file: Optional[Path], *,
                answering: bool = True) -> LocalSource | RemoteSource:
    if server:
        return RemoteSource(server, server_ca, token_file)
    return LocalSource(data_dir, policy, token_file, answering=answering)
