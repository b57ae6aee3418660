"""The policy's digest: one short value that says whether two nodes enforce the same policy.

``sha256:`` and the hex SHA-256 of the parsed policy.toml as canonical JSON (keys sorted,
no whitespace), without its ``[store]`` table: ``[store] node`` names each node and the URL
or password file may differ per node, while everything else (``[oidc]``, ``[settings]``,
targets, grants, rules, masks) must be the same on every node of a shared store
(docs/SCALING.md).  Comments, blank lines, key order and quoting style do not change it;
any value that changes a decision does.  Pure: no IO.

Shown by ``bastion policy check``, ``bastion status`` and ``bastion store nodes``; each node
of a shared store publishes its own (bastion.recording.nodeconfig).

Not covered: files the policy names (``[oidc] ca_bundle``): their path is in the digest,
their content is not.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from typing import Any

PREFIX = "sha256:"
SHORT = 12            # hex digits shown where space is short (48 bits: drift, not forgery)
NODE_LOCAL = ("store",)


def _plain(value: Any) -> Any:
    """TOML's dates and times as ISO text (JSON has none); anything else as it is."""
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    raise TypeError(f"not a TOML value: {type(value).__name__}")


def policy_digest(raw: dict[str, Any]) -> str:
    """The digest of a parsed policy.toml (``tomllib.loads``), ``[store]`` left out."""
    shared = {k: v for k, v in raw.items() if k not in NODE_LOCAL}
    text = json.dumps(shared, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=True, default=_plain)
    return PREFIX + hashlib.sha256(text.encode("ascii")).hexdigest()


def short(digest: str | None) -> str:
    """``sha256:0123456789ab``: enough to tell policies apart on a terminal line."""
    if not digest:
        return "unknown"
    return digest[:len(PREFIX) + SHORT] if digest.startswith(PREFIX) else digest[:SHORT]
