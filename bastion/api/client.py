"""The CLI's side of the API: ``--server URL`` (``BASTION_SERVER``) instead of the data dir.

HTTPS only.  The server's certificate is checked against ``--server-ca FILE``
(``BASTION_SERVER_CA``: the self-signed ``DATA_DIR/api/cert.pem``, or the CA that issued a
real one) or the system's CAs.  The token is the approver's/reviewer's own (``bastion login``,
``BASTION_TOKEN``, ``BASTION_TOKEN_FILE``), sent as a bearer token and never printed.
Errors become :class:`BastionError` with the server's message and hint.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Iterator

from bastion.errors import BastionError
from bastion.secret import Secret

TIMEOUT = 30.0
LIVE_TIMEOUT = 60.0          # the server sends a keepalive every 15 s


class ApiClient:
    def __init__(self, url: str, token: "Secret[str]", ca_file: Path | None = None) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "https" or not parts.netloc:
            raise BastionError(f"--server must be an https:// URL, got {url!r}",
                               hint="e.g. --server https://bastion.example.com:8443")
        self.base = f"https://{parts.netloc}"
        self.token = token
        self.context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)

    def _open(self, method: str, path: str, body: dict[str, Any] | None = None,
              query: dict[str, Any] | None = None, accept: str = "application/json",
              timeout: float = TIMEOUT) -> Any:
        """The response (an open http.client.HTTPResponse); errors as BastionError with the
        server's message and hint."""
        url = self.base + path
        if query:
            url += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method=method, headers={
            "Authorization": f"Bearer {self.token.reveal()}",
            "Content-Type": "application/json", "Accept": accept})
        try:
            return urllib.request.urlopen(req, timeout=timeout, context=self.context)
        except urllib.error.HTTPError as exc:
            try:
                info = json.loads(exc.read().decode("utf-8"))
            except (ValueError, OSError):
                info = {}
            raise BastionError(f"the server refused: {info.get('error') or exc.reason} "
                               f"(HTTP {exc.code})", hint=info.get("hint")) from None
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, ssl.SSLCertVerificationError):
                raise BastionError(f"cannot trust {self.base}: {reason.verify_message}",
                                   hint="pass --server-ca with the API certificate "
                                        "(DATA_DIR/api/cert.pem on the bastion)") from None
            raise BastionError(f"cannot reach {self.base}: {reason}",
                               hint="check --server and that bastion serve runs with "
                                    "--api-listen") from None
        except (TimeoutError, OSError) as exc:
            raise BastionError(f"cannot reach {self.base}: {exc}") from None

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None,
              query: dict[str, Any] | None = None) -> Any:
        with self._open(method, path, body, query) as resp:
            return json.loads(resp.read().decode("utf-8") or "null")

    def approvals(self, all_statuses: bool = False) -> list[dict[str, Any]]:
        return list(self._call("GET", "/api/v1/approvals",
                               query={"all": "1" if all_statuses else None})["approvals"])

    def answer(self, request_id: int, approve: bool, reason: str,
               window: str | None = None) -> dict[str, Any]:
        verb = "approve" if approve else "deny"
        body: dict[str, Any] = {"reason": reason}
        if window:
            body["window"] = window
        return dict(self._call("POST", f"/api/v1/approvals/{int(request_id)}/{verb}", body))

    def sessions(self, **filters: Any) -> list[dict[str, Any]]:
        return list(self._call("GET", "/api/v1/sessions", query=filters)["sessions"])

    def recording(self, session_id: int, channel_id: int) -> bytes:
        """A channel's asciicast file, as stored (masked)."""
        path = f"/api/v1/sessions/{int(session_id)}/channels/{int(channel_id)}/recording"
        with self._open("GET", path, accept="application/x-asciicast") as resp:
            return bytes(resp.read())

    def session(self, session_id: int) -> dict[str, Any]:
        return dict(self._call("GET", f"/api/v1/sessions/{int(session_id)}"))

    def live(self, session_id: int, channel: int | None = None) -> Iterator[dict[str, Any]]:
        """The server-sent events of a live view: ``{"event": name, "data": {...}}`` each."""
        resp = self._open("GET", f"/api/v1/sessions/{int(session_id)}/live",
                          query={"channel": channel}, accept="text/event-stream",
                          timeout=LIVE_TIMEOUT)
        with resp:
            event, data, buf = "message", "", b""
            while True:
                chunk = resp.read1(65536)     # what has arrived (iterating would wait for 8 KiB)
                if not chunk:
                    return
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for raw in lines:
                    line = raw.decode("utf-8", "replace").rstrip("\r")
                    if not line:
                        if data:
                            yield {"event": event, "data": json.loads(data)}
                        event, data = "message", ""
                    elif line.startswith("event:"):
                        event = line[6:].strip()
                    elif line.startswith("data:"):
                        data += line[5:].strip()

    def terminate(self, session_id: int, reason: str) -> dict[str, Any]:
        return dict(self._call("POST", f"/api/v1/sessions/{int(session_id)}/terminate",
                               {"reason": reason}))

    def commands(self, text: str, **filters: Any) -> list[dict[str, Any]]:
        """Full-text search over command lines (``commands search``)."""
        return list(self._call("GET", "/api/v1/commands",
                               query={"q": text, **filters})["commands"])

    def verify(self, files: bool = True) -> dict[str, Any]:
        """The server's ``bastion verify`` report (``VerifyReport.to_dict``)."""
        return dict(self._call("GET", "/api/v1/verify", query={"files": None if files else "0"}))

    def whoami(self) -> dict[str, Any]:
        return dict(self._call("GET", "/api/v1/whoami"))
