"""Limits against login abuse: what someone who can reach the port but cannot log in may cost.

* :class:`PreauthGate` caps unauthenticated connections overall (``max_startups``) and per
  source address (``max_startups_per_source``).  A new connection over either cap is dropped at
  once (before the key exchange), so a flood of idle sockets costs one accept each and never
  crowds out connections that are already authenticating or logged in.  Unlike OpenSSH's
  ``MaxStartups start:rate:full`` there is no random early drop between two marks: the cap is hard.
* :class:`RefusedCounter` turns refused logins into at most two index rows per source address
  per minute: the first refusal of the minute is stored as it happens, the others are counted and
  stored as one summary row when the minute is over (or at shutdown).
* :func:`cap` shortens client-chosen strings (login names, reasons) before logs and the index.
* :func:`raise_nofile_limit` lifts the process's soft ``RLIMIT_NOFILE`` to its hard limit.

Pure bookkeeping: no asyncio, no sockets; ``now`` is passed in.  Not covered here: the number of
failed attempts per connection (``max_auth_tries``) and the login grace time, which
:mod:`bastion.ssh.outer` enforces per connection.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

log = logging.getLogger("bastion.limits")

LOGIN_MAX = 64          # characters of a client-chosen login name kept for logs and the index
CLIENT_MAX = 64
TARGET_MAX = 255
REASON_MAX = 512
MAX_TRACKED_SOURCES = 10_000   # refusal counters held in memory; beyond, sources share one


def cap(text: str | None, limit: int) -> str | None:
    """``text`` cut to ``limit`` characters (with a marker saying how much was cut)."""
    if text is None or len(text) <= limit:
        return text
    return f"{text[:limit]}...[{len(text) - limit} more]"


def source_of(client: str) -> str:
    """The address part of ``host:port`` (IPv6 included)."""
    host, sep, port = client.rpartition(":")
    return host if sep and port.isdigit() else client


class PreauthGate:
    """Counts unauthenticated connections; says whether a new one may proceed."""

    def __init__(self) -> None:
        self.total = 0
        self.by_source: dict[str, int] = {}
        self.dropped = 0

    def admit(self, source: str, *, max_total: int, max_per_source: int) -> str | None:
        """Count a new connection and return None, or return why it is dropped (not counted)."""
        if self.total >= max_total:
            self.dropped += 1
            return f"{self.total} unauthenticated connections (max_startups {max_total})"
        here = self.by_source.get(source, 0)
        if here >= max_per_source:
            self.dropped += 1
            return (f"{here} unauthenticated connections from {source} "
                    f"(max_startups_per_source {max_per_source})")
        self.total += 1
        self.by_source[source] = here + 1
        return None

    def release(self, source: str) -> None:
        """The connection logged in or went away."""
        here = self.by_source.get(source, 0)
        if here <= 0:
            return
        self.total -= 1
        if here == 1:
            del self.by_source[source]
        else:
            self.by_source[source] = here - 1


@dataclass
class _Minute:
    minute: int
    first_reason: str
    login: str | None
    more: int = 0
    last_reason: str = ""


@dataclass
class RefusedCounter:
    """Refused logins per source per minute.

    ``note(source, login, reason, now)`` returns the rows to store now, each
    ``(client, login, reason)``: the first refusal of a minute for a source, and the summary of
    any earlier minute that has ended.  ``flush(now)`` returns the summaries of ended minutes
    (``now=None``: all of them, at shutdown).
    """

    minutes: dict[str, _Minute] = field(default_factory=dict)

    def note(self, source: str, login: str | None, reason: str, now: float) -> list[tuple]:
        minute = int(now // 60)
        rows = self.flush(now)
        if source not in self.minutes and len(self.minutes) >= MAX_TRACKED_SOURCES:
            source = "*"              # a spray from very many addresses: counted together
        entry = self.minutes.get(source)
        if entry is None:
            self.minutes[source] = _Minute(minute, reason, login)
            rows.append((source, login, reason))
        else:
            entry.more += 1
            entry.last_reason = reason
            entry.login = login
        return rows

    def flush(self, now: float | None) -> list[tuple]:
        minute = None if now is None else int(now // 60)
        rows = []
        for source in [s for s, e in self.minutes.items() if minute is None or e.minute < minute]:
            entry = self.minutes.pop(source)
            if entry.more:
                rows.append((source, entry.login,
                             f"{entry.more} more refused logins in the minute from "
                             f"{_clock(entry.minute)} UTC (last: {entry.last_reason})"))
        return rows

    @property
    def pending(self) -> bool:
        return any(e.more for e in self.minutes.values())


def _clock(minute: int) -> str:
    import time
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(minute * 60))


def raise_nofile_limit() -> tuple[int, int, int] | None:
    """Raise the soft open-files limit to the hard limit; returns (soft before, soft after, hard)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on POSIX
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    before = soft
    want = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-files limit from %d to %d: %s", soft, want, exc)
    return before, soft, hard
