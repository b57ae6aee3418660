"""The API's routes (docs/API.md): who may call what is decided here, on the server.

Every ``/api/v1`` request carries ``Authorization: Bearer <access token>`` from the same
issuer as the agents' (validated by the same :class:`TokenValidator`: signature, issuer,
audience, expiry, tenant).  Roles come from policy.toml, read at each request (a reload
takes effect at once): ``[settings] approvers`` answer held commands (four-eyes and the
window cap are the store's checks, as for the CLI); ``[settings] reviewers`` read sessions,
limited to ``reviewer_targets`` when set (bastion.api.scope: out of scope is 404 on every
route); ``admins`` terminate and verify.  Agents get nothing here.  ``/healthz`` and
``/metrics`` need no token.  ``/ui`` is the web viewer's (``Api(services, ui=WebUi)``).

Not covered: HTTP framing (``bastion.api.http``), TLS (``bastion.api.tls``), serving recorded
output (the live stream, the recording file: ``bastion.api.recordings``).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import Any, Callable

from bastion.api import recordings
from bastion.api.http import Handler, Request, Response, error, json_response
from bastion.api.scope import ReviewScope
from bastion.errors import ApprovalError, BastionError, RecordingError, TokenRejected
from bastion.logfmt import fields as log_fields
from bastion.metrics import METRICS
from bastion.secret import Secret

log = logging.getLogger("bastion.api")
audit = logging.getLogger("bastion.audit")

_REQUEST = re.compile(r"/api/v1/approvals/(\d+)/(approve|deny)")
_SESSION = re.compile(r"/api/v1/sessions/(\d+)")
_LIVE = re.compile(r"/api/v1/sessions/(\d+)/live")
_TERMINATE = re.compile(r"/api/v1/sessions/(\d+)/terminate")
_RECORDING = re.compile(r"/api/v1/sessions/(\d+)/channels/(\d+)/recording")


class Api:
    """The request handler for one ``bastion serve`` (its Services)."""

    def __init__(self, services: Any, ui: Callable[["Api"], Handler] | None = None) -> None:
        self.services = services
        self.ui = ui(self) if ui is not None else None     # the web viewer (bastion.web)

    async def __call__(self, req: Request) -> Response:
        path = req.path.rstrip("/") or "/"
        if self.ui is not None and (path == "/ui" or path.startswith("/ui/")):
            return await self.ui(req)
        if path == "/healthz" and req.method == "GET":
            return self._health()
        if path == "/readyz" and req.method == "GET":
            return await self._ready()
        if path == "/metrics" and req.method == "GET":
            from bastion.api.metricsview import metrics_response
            return await metrics_response(self.services)
        if not path.startswith("/api/v1/"):
            return error(404, f"no such endpoint: {req.method} {path}",
                         hint="see docs/API.md")
        who = await self._authenticate(req)
        if isinstance(who, Response):
            return who
        if path == "/api/v1/whoami" and req.method == "GET":
            return json_response(200, self._whoami(who))
        if path == "/api/v1/approvals" and req.method == "GET":
            return await self._approvals(req, who)
        m = _REQUEST.fullmatch(path)
        if m and req.method == "POST":
            return await self._answer(req, who, int(m.group(1)), m.group(2) == "approve")
        if path == "/api/v1/sessions" and req.method == "GET":
            return await self._sessions(req, who)
        if path == "/api/v1/commands" and req.method == "GET":
            return await self._commands(req, who)
        if path == "/api/v1/verify" and req.method == "GET":
            return await self._verify(req, who)
        m = _SESSION.fullmatch(path)
        if m and req.method == "GET":
            return await self._session(req, who, int(m.group(1)))
        m = _LIVE.fullmatch(path)
        if m and req.method == "GET":
            return await recordings.live(self, req, who, int(m.group(1)))
        m = _TERMINATE.fullmatch(path)
        if m and req.method == "POST":
            return self._terminate(req, who, int(m.group(1)))
        m = _RECORDING.fullmatch(path)
        if m and req.method == "GET":
            return await recordings.recording(self, req, who, int(m.group(1)),
                                              int(m.group(2)))
        return error(404, f"no such endpoint: {req.method} {path}", hint="see docs/API.md")

    # -- identity --------------------------------------------------------------------
    async def _authenticate(self, req: Request) -> Any:
        header = req.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            return self._refuse(401, "no bearer token", req,
                                hint="send Authorization: Bearer <token> (bastion login)")
        token = Secret(value.strip())
        try:
            principal = await self.services.validator.validate(token.reveal())
        except TokenRejected as exc:
            return self._refuse(401, f"token rejected: {exc.reason}", req,
                                hint="get a fresh token (bastion login)")
        except BastionError as exc:
            return self._refuse(503, f"cannot check tokens now: {exc}", req)
        return _Caller(principal, token)

    def _refuse(self, status: int, why: str, req: Request, hint: str | None = None) -> Response:
        METRICS.inc("bastion_api_requests_total", result=str(status))
        audit.warning("api refused %s %s from %s: %s", req.method, req.path, req.client, why,
                      extra=log_fields("api_refused", client=req.client, reason=why,
                                       status=status))
        resp = error(status, why, hint)
        if status == 401:
            resp.headers.append((b"www-authenticate", b'Bearer realm="bastion"'))
        return resp

    def _roles(self, who: "_Caller") -> dict[str, bool]:
        from bastion.policy.selectors import any_principal_matches
        settings = self.services.config.settings
        return {"approver": any_principal_matches(tuple(settings.approvers), who.principal),
                "reviewer": any_principal_matches(tuple(settings.reviewers), who.principal),
                "admin": any_principal_matches(tuple(settings.admins), who.principal)}

    def _whoami(self, who: "_Caller") -> dict[str, Any]:
        p = who.principal
        return {"subject": p.subject, "name": p.name, "app_id": p.app_id,
                "roles": list(p.roles), "bastion_roles": self._roles(who),
                "approval_window_max": self.services.config.settings.approval_window_max}

    def _forbidden(self, who: "_Caller", role: str, req: Request) -> Response:
        return self._refuse(403, f"{who.principal.label} is not in [settings] {role}s", req,
                            hint=f"ask an administrator to add you to [settings] {role}s")

    # -- approvals -------------------------------------------------------------------
    async def _approvals(self, req: Request, who: "_Caller") -> Response:
        if not self._roles(who)["approver"]:
            return self._forbidden(who, "approver", req)
        from bastion.approvals.store import ApprovalStore
        from bastion.recording import schema
        all_statuses = req.arg("all") in ("1", "true", "yes")

        def work() -> list[dict[str, Any]]:
            store = ApprovalStore(schema.connect(self.services.data_dir, readonly=True))
            try:
                return [_approval(r) for r in store.list(all_statuses=all_statuses)]
            finally:
                store.close()
        return json_response(200, {"approvals": await asyncio.to_thread(work)})

    async def _answer(self, req: Request, who: "_Caller", request_id: int,
                      approve: bool) -> Response:
        if not self._roles(who)["approver"]:
            return self._forbidden(who, "approver", req)
        try:
            body = req.json()
        except ValueError as exc:
            return error(400, f"the body must be JSON: {exc}")
        reason = body.get("reason")
        window = body.get("window")
        if not isinstance(reason, str) or not reason.strip():
            return error(400, "a reason is required", hint='{"reason": "ticket OPS-12"}')
        if window is not None and not isinstance(window, str):
            return error(400, "window must be a duration such as \"15m\"")
        from bastion.approvals.approver import answer
        from bastion.approvals.model import Approver
        from bastion.approvals.proof import AnswerProof
        from bastion.approvals.store import ApprovalStore
        config = self.services.config
        oidc = config.oidc
        proof = AnswerProof.of(who.principal, who.token, validated_at=time.time(),
                               subject_claim=oidc.subject_claim if oidc else "oid")
        approver = Approver.of(who.principal, proof=proof)

        def work() -> Any:
            store = ApprovalStore.open(self.services.data_dir, create=False)
            try:
                return answer(store, config, approver, request_id, approve=approve,
                              reason=reason, window=window)
            finally:
                store.close()
        try:
            record = await asyncio.to_thread(work)
        except ApprovalError as exc:
            return self._refuse(409 if "already" in str(exc) else 403, str(exc), req,
                                hint=exc.hint)
        METRICS.inc("bastion_api_requests_total", result="200")
        return json_response(200, _approval(record))

    # -- sessions --------------------------------------------------------------------
    async def _sessions(self, req: Request, who: "_Caller") -> Response:
        if not self._roles(who)["reviewer"]:
            return self._forbidden(who, "reviewer", req)
        from bastion.recording import query
        window = _window(req, 100)
        if isinstance(window, Response):
            return window
        limit, since, until = window

        scope = ReviewScope.of(self.services.config)

        def work() -> list[dict[str, Any]]:
            db = query.open_index(self.services.data_dir)
            return [query.public(r) for r in query.list_sessions(
                db, principal=req.arg("principal"), target=req.arg("target"), since=since,
                until=until, status=req.arg("status"),
                denied=req.arg("denied") in ("1", "true", "yes"), limit=min(limit, 1000),
                target_in=scope.names(query.session_targets(db)), node=req.arg("node"))]
        try:
            return json_response(200, {"sessions": await asyncio.to_thread(work)})
        except RecordingError as exc:
            return error(400, str(exc), exc.hint)

    async def _commands(self, req: Request, who: "_Caller") -> Response:
        """Full-text search over command lines (the CLI's `commands search`)."""
        if not self._roles(who)["reviewer"]:
            return self._forbidden(who, "reviewer", req)
        from bastion.recording import query
        text = req.arg("q")
        if not text:
            return error(400, "q is required: the words to find",
                         hint="/api/v1/commands?q=systemctl+restart")
        window = _window(req, 50)
        if isinstance(window, Response):
            return window
        limit, since, until = window

        scope = ReviewScope.of(self.services.config)

        def work() -> list[dict[str, Any]]:
            db = query.open_index(self.services.data_dir)
            return [query.public(r) for r in query.search_commands(
                db, text, principal=req.arg("principal"),
                target=req.arg("target"), action=req.arg("action"), since=since, until=until,
                limit=min(limit, 1000), raw=req.arg("raw") in ("1", "true", "yes"),
                target_in=scope.names(query.session_targets(db)))]
        try:
            return json_response(200, {"commands": await asyncio.to_thread(work)})
        except RecordingError as exc:
            return error(400, str(exc), exc.hint)

    async def _verify(self, req: Request, who: "_Caller") -> Response:
        """``bastion verify``: the index's hash chain and every closed recording's SHA-256
        (``files=0``: the chain only).  The report names any session, so it is for admins
        and for reviewers whose scope is not limited by ``reviewer_targets``."""
        roles = self._roles(who)
        if not (roles["admin"] or (roles["reviewer"]
                                   and not ReviewScope.of(self.services.config).limited)):
            return self._refuse(403, f"{who.principal.label} may not verify the whole index", req,
                                hint="verify is for [settings] admins, and reviewers not "
                                     "limited by reviewer_targets")
        from bastion.recording import verify as verifier
        files = req.arg("files") not in ("0", "false", "no")
        report = await asyncio.to_thread(verifier.verify_index, self.services.data_dir,
                                         check_files=files)
        audit.info("api verify by %s: %s", who.principal.subject, "ok" if report.ok else "FAILED",
                   extra=log_fields("api_verify", principal=who.principal.subject, ok=report.ok))
        return json_response(200, report.to_dict())

    async def _readable(self, req: Request, who: "_Caller",
                        session_id: int) -> dict[str, Any] | Response:
        """The session (query.get_session) if ``who`` is a reviewer whose scope has it;
        a session out of scope is answered like an unknown one."""
        if not self._roles(who)["reviewer"]:
            return self._forbidden(who, "reviewer", req)
        from bastion.recording import query

        def work() -> dict[str, Any]:
            return query.get_session(query.open_index(self.services.data_dir), session_id)
        try:
            session = await asyncio.to_thread(work)
        except RecordingError as exc:
            return error(404, str(exc), exc.hint)
        if not ReviewScope.of(self.services.config).allows(session.get("target")):
            return self._refuse(404, f"no session {session_id} in the index", req,
                                hint="[settings] reviewer_targets limits what reviewers see")
        return session

    async def _session(self, req: Request, who: "_Caller", session_id: int) -> Response:
        from bastion.recording import query
        session = await self._readable(req, who, session_id)
        if isinstance(session, Response):
            return session
        return json_response(200, query.public(session))

    def _terminate(self, req: Request, who: "_Caller", session_id: int) -> Response:
        if not self._roles(who)["admin"]:
            return self._forbidden(who, "admin", req)
        try:
            reason = req.json().get("reason")
        except ValueError as exc:
            return error(400, f"the body must be JSON: {exc}")
        if not isinstance(reason, str) or not reason.strip():
            return error(400, "a reason is required", hint='{"reason": "incident INC-7"}')
        label = str(who.principal.label)
        if not self.services.terminate(session_id, label, reason.strip()):
            return error(404, f"session {session_id} is not open on this bastion",
                         hint="`bastion sessions list --status active` shows the open ones")
        METRICS.inc("bastion_sessions_terminated_total")
        return json_response(200, {"session": session_id, "terminated": True, "by": label})

    # -- health and metrics ----------------------------------------------------------
    async def _ready(self) -> Response:
        """Ready for agents: recording works, the index answers, the issuer's keys are held."""
        from bastion.recording import schema
        recorder = self.services.recorder
        checks: dict[str, str] = {}
        state = recorder.state if recorder is not None else "none"
        checks["recording"] = "ok" if state == "ok" else state

        def index() -> str:
            try:
                conn = schema.connect(self.services.data_dir, readonly=True)
                try:
                    conn.execute("SELECT 1 FROM sessions LIMIT 1").fetchall()
                finally:
                    conn.close()
                return "ok"
            except Exception as exc:  # noqa: BLE001 - any failure is "not ready"
                return f"failed: {type(exc).__name__}"
        checks["index"] = await asyncio.to_thread(index)
        validator = self.services.validator
        kids = getattr(getattr(validator, "keys", None), "kids", ())
        checks["issuer"] = "ok" if kids else "no signing keys fetched yet"
        ready = all(v == "ok" for v in checks.values())
        return json_response(200 if ready else 503, {"ready": ready, "checks": checks})

    def _health(self) -> Response:
        recorder = self.services.recorder
        state = recorder.state if recorder is not None else "none"
        ok = state == "ok"
        return json_response(200 if ok else 503, {"status": "ok" if ok else "degraded",
                                                  "recording": state})


def _window(req: Request, default_limit: int) -> tuple[int, float | None, float | None] | Response:
    """``limit``, ``since``, ``until`` of a listing request (the CLI's forms: 7d, 12h, ISO)."""
    from bastion.recording import query
    try:
        limit = int(req.arg("limit") or default_limit)
        now = time.time()
        since_arg, until_arg = req.arg("since"), req.arg("until")
        since = query.parse_time(since_arg, now=now) if since_arg else None
        until = query.parse_time(until_arg, now=now) if until_arg else None
    except (ValueError, RecordingError) as exc:
        return error(400, f"bad query: {exc}")
    return limit, since, until


class _Caller:
    def __init__(self, principal: Any, token: "Secret[str]") -> None:
        self.principal = principal
        self.token = token

    def __repr__(self) -> str:
        return f"<caller {self.principal.subject}>"


def _approval(record: Any) -> dict[str, Any]:
    from bastion.recording.query import iso
    data: dict[str, Any] = record.to_dict()
    times = {}
    for key in ("created", "expires", "answered", "window_until", "revoked", "refused"):
        times[key] = data.get(key)
        data[key] = iso(data.get(key))
    data["times"] = times                   # the same, as epoch seconds
    return data
