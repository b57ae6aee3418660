"""Log output for ``bastion serve``: text for people, JSON lines for a SIEM.

``--log-format json`` writes one JSON object per line with stable field names:

``time``      ISO 8601, UTC, milliseconds (``2026-12-06T03:04:05.123Z``)
``level``     ``debug`` / ``info`` / ``warning`` / ``error`` / ``critical``
``logger``    the logger (``bastion.audit`` for security events)
``event``     a stable snake_case name for audit events (``login``, ``decision``...),
              else ``log``
``message``   the text a person reads (the same as the text format's)
``error``     the exception and traceback, when there is one

plus the fields an audit event carries: ``principal``, ``target``, ``login``, ``client``,
``session``, ``channel``, ``action``, ``rule``, ``request`` ... (see :func:`fields`).  Field
values are what the text message shows: already masked and made printable by the caller.
Pure formatting: the handlers are set up by the CLI.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_ATTR = "bastion_fields"


def fields(event: str, **values: Any) -> dict[str, Any]:
    """``extra=`` for a log call: ``log.info("...", ..., extra=fields("login", principal=s))``.
    None values are left out."""
    return {_ATTR: {"event": event, **{k: v for k, v in values.items() if v is not None}}}


class JsonFormatter(logging.Formatter):
    """One JSON object per record (ASCII only, so no byte of it is a terminal control)."""

    def format(self, record: logging.LogRecord) -> str:
        extra: dict[str, Any] = dict(getattr(record, _ATTR, None) or {})
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                    + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": extra.pop("event", "log"),
            "message": record.getMessage(),
        }
        for key, value in extra.items():
            out.setdefault(key, value if isinstance(value, (str, int, float, bool)) else str(value))
        if record.exc_info:
            out["error"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=True, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    """``TEXT_FORMAT``, always encodable: a lone surrogate (a byte an agent sent that was not
    UTF-8, in a path a traceback quotes) is written as ``\\udcff``, not a logging error."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return text if text.isascii() else text.encode("utf-8", "backslashreplace").decode()


def formatter(kind: str) -> logging.Formatter:
    """The formatter for ``--log-format``; ValueError for an unknown kind."""
    if kind == "json":
        return JsonFormatter()
    if kind == "text":
        return TextFormatter()
    raise ValueError(f"unknown log format {kind!r} (one of: {', '.join(FORMATS)})")
