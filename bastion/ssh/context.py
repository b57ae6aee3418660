"""Per-connection context shared by the outer server, the inner connection and its sessions."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bastion.config.targets import Target
from bastion.identity.principal import Principal

if TYPE_CHECKING:  # pragma: no cover
    from bastion.services import Services

_ids = itertools.count(1)


@dataclass
class InnerContext:
    """Everything an inner connection knows: who, from where, to which target."""

    services: "Services"
    principal: Principal
    target: Target
    client: str                      # "addr:port" of the agent's outer connection
    login: str = ""                  # the inner login (must be the target's user)
    conn_id: int = field(default_factory=lambda: next(_ids))
    recording: Any = None            # recording.SessionHandle once recording is wired

    @property
    def where(self) -> str:
        return f"{self.principal.subject}→{self.target.user}@{self.target.name}"
