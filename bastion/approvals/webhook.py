"""The approval webhook: a JSON POST when a request is created, so a chat bot can ping approvers.

``[settings] approval_webhook = "https://..."`` (http only to a loopback host).
:class:`WebhookSender` runs one daemon thread with a bounded queue: ``send()``
never blocks and never raises; a full queue drops the event (logged).  Each
event is tried up to ``1 + len(delays)`` times (default waits 1, 4, 15 s between
tries), each try with a 5 s timeout; a 2xx answer is success, 408/429/5xx and
network errors are retried, any other status is given up at once.  Redirects
are not followed.

The body (see :func:`payload`) carries the request id, requester, target,
channel, the command line and the simple commands *sanitised* (escape sequences
made visible: a bot that echoes them cannot be made to hide part of a line), the
rule and the deadline, and the command an approver runs to answer.  It never
carries a token or a principal's full claims.  The URL itself may hold a secret
(chat webhooks often do): logs name only its scheme and host.

Not covered: authenticating the POST to the receiver (no signature header yet).
"""

from __future__ import annotations

import collections
import datetime as _dt
import json
import logging
import threading
import urllib.error
import urllib.request
from typing import Any, Sequence
from urllib.parse import urlsplit

from bastion.approvals.model import ApprovalRecord
from bastion.proto.sanitize import sanitize

log = logging.getLogger("bastion.approvals.webhook")

DEFAULT_DELAYS = (1.0, 4.0, 15.0)
DEFAULT_TIMEOUT = 5.0
CAPACITY = 256
USER_AGENT = "bastion-approvals/1"


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return _dt.datetime.fromtimestamp(ts, _dt.timezone.utc).isoformat(timespec="seconds") \
        .replace("+00:00", "Z")


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return sanitize(value)
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def payload(record: ApprovalRecord) -> dict:
    """The JSON body announcing a new request (every string sanitised)."""
    body = {
        "event": "approval.requested",
        "request": {
            "id": record.id,
            "created": _iso(record.created),
            "expires": _iso(record.expires),
            "timeout_seconds": round(record.expires - record.created),
            "requester": {"subject": record.requester_subject, "name": record.requester_name,
                          "app_id": record.requester_app_id, "tenant": record.requester_tenant},
            "target": record.target, "login": record.login, "channel": record.channel,
            "session_id": record.session_id,
            "line": record.line,
            "commands": record.commands,
            "rule": record.rule,
            "reason": record.decision_reason,
            "node": record.node,
        },
        "answer": {"approve": f"bastion approvals approve {record.id} --reason '...'",
                   "deny": f"bastion approvals deny {record.id} --reason '...'"},
    }
    return _clean(body)


def safe_url(url: str) -> str:
    """``scheme://host[:port]`` of a URL: what logs may show of it."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: D401
        return None                       # a 3xx becomes an HTTPError: not followed


class WebhookSender:
    """Delivers webhook events from a background thread (see module doc)."""

    def __init__(self, url: str, *, delays: Sequence[float] = DEFAULT_DELAYS,
                 timeout: float = DEFAULT_TIMEOUT, capacity: int = CAPACITY) -> None:
        self.url = url
        self.delays = tuple(delays)
        self.timeout = timeout
        self.capacity = capacity
        self.sent = 0
        self.failed = 0
        self.dropped = 0
        self._queue: collections.deque = collections.deque()
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._opener = urllib.request.build_opener(_NoRedirect)

    def __repr__(self) -> str:
        return f"WebhookSender({safe_url(self.url)})"

    def send(self, body: dict) -> bool:
        """Queue one event; False (and logged) when the queue is full or the sender closed."""
        data = json.dumps(body, ensure_ascii=True, sort_keys=True).encode()
        with self._cond:
            if self._stop.is_set():
                return False
            if len(self._queue) >= self.capacity:
                self.dropped += 1
                log.warning("approval webhook %s: queue full, event dropped", safe_url(self.url))
                return False
            self._queue.append(data)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="bastion-approval-webhook",
                                                daemon=True)
                self._thread.start()
            self._cond.notify()
        return True

    def close(self, timeout: float = 2.0) -> None:
        """Stop the thread (events still queued are given up, logged)."""
        with self._cond:
            self._stop.set()
            left = len(self._queue)
            self._queue.clear()
            self._cond.notify()
        if left:
            log.warning("approval webhook %s: %d event(s) not delivered at shutdown", safe_url(
                self.url), left)
        if self._thread is not None:
            self._thread.join(timeout)

    # -- thread --------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stop.is_set():
                    self._cond.wait()
                if self._stop.is_set():
                    return
                data = self._queue.popleft()
            try:
                self._deliver(data)
            except Exception:  # noqa: BLE001 - the thread must survive a bug
                log.exception("approval webhook: delivery failed unexpectedly")

    def _deliver(self, data: bytes) -> None:
        where = safe_url(self.url)
        attempts = 1 + len(self.delays)
        for attempt in range(attempts):
            retry, why = self._post(data)
            if not why:
                self.sent += 1
                return
            if not retry or attempt == attempts - 1:
                self.failed += 1
                log.warning("approval webhook %s: giving up after %d attempt(s): %s", where,
                            attempt + 1, why)
                return
            log.info("approval webhook %s: attempt %d failed (%s), retrying", where,
                     attempt + 1, why)
            if self._stop.wait(self.delays[attempt]):
                return

    def _post(self, data: bytes) -> tuple[bool, str | None]:
        """One try: ``(retry?, error or None)``."""
        request = urllib.request.Request(self.url, data=data, method="POST", headers={
            "Content-Type": "application/json", "User-Agent": USER_AGENT})
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                response.read(64 * 1024)
                status = response.status
        except urllib.error.HTTPError as exc:
            status = exc.code
            exc.close()
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            return True, f"{type(exc).__name__}: {reason}"
        if 200 <= status < 300:
            return False, None
        return status in (408, 429) or status >= 500, f"HTTP {status}"
