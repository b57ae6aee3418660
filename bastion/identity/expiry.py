"""A token's expiry after login: what a principal may still do once its token has expired.

The token is checked at login; the connection then outlives it.  The bastion's rule:

* **New work is refused once the token has expired** (``exp`` plus the issuer's clock
  ``leeway``, as at login): a new inner connection, a new channel, a new shell line.  The agent
  is told to reconnect, which presents a fresh token.
* **Open channels are ended ``session_max_after_expiry`` seconds after ``exp``** (``[settings]``,
  default 300): a command that runs then is cut, with a marker in the recording.

A token without ``exp`` cannot pass login validation; a principal without claims (built in
tests) never expires.  Pure: times in, reasons out.
"""

from __future__ import annotations

import time
from typing import Any

DEFAULT_GRACE = 300          # seconds: [settings] session_max_after_expiry


def expires_at(principal: Any) -> float | None:
    exp = (getattr(principal, "claims", None) or {}).get("exp")
    if isinstance(exp, bool) or not isinstance(exp, (int, float)):
        return None
    return float(exp)


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))


def expired(principal: Any, leeway: float = 0, now: float | None = None) -> str | None:
    """Why new work is refused (the token has expired), or None."""
    exp = expires_at(principal)
    if exp is None:
        return None
    now = time.time() if now is None else now
    if now <= exp + leeway:
        return None
    return (f"the token of {principal.label} expired at {_when(exp)}: "
            f"reconnect to present a fresh token")


def channel_deadline(principal: Any, grace: float = DEFAULT_GRACE) -> float | None:
    """The wall-clock time at which open channels are ended, or None."""
    exp = expires_at(principal)
    return None if exp is None else exp + max(0.0, grace)


def ended_message(principal: Any, grace: float = DEFAULT_GRACE) -> str:
    exp = expires_at(principal) or 0.0
    return (f"bastion: session ended: the token of {principal.label} expired at {_when(exp)} "
            f"and the {grace:g} s allowed after it are over; reconnect with a fresh token")
