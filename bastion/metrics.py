"""Counters the bastion keeps for ``/metrics`` (Prometheus text exposition format 0.0.4).

One process-wide :data:`METRICS`; the data path counts with :meth:`Metrics.inc` (a dict
update: no lock needed on the event loop) and the API renders it with gauges read at scrape
time (sessions open, recorder state, queue).  Label values are escaped as the format says;
they are rule names and actions, never agent text.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Iterable

HELP = {
    "bastion_logins_total": ("counter", "Outer logins by result (ok, refused, error)."),
    "bastion_decisions_total": ("counter", "Policy decisions by channel, action and rule."),
    "bastion_approvals_total": ("counter", "Approval requests by outcome."),
    "bastion_approval_wait_seconds_total": ("counter",
                                            "Seconds held commands waited for their outcome."),
}


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: tuple[tuple[str, str], ...]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels) + "}"


class Metrics:
    def __init__(self) -> None:
        self._values: dict[str, dict[tuple[tuple[str, str], ...], float]] = defaultdict(dict)

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        series = self._values[name]
        series[key] = series.get(key, 0.0) + amount

    def value(self, name: str, **labels: str) -> float:
        return self._values.get(name, {}).get(tuple(sorted(labels.items())), 0.0)

    def render(self, gauges: Iterable[tuple[str, str, float]] = ()) -> str:
        """The exposition text: every counter, then ``gauges`` as (name, help, value)."""
        lines: list[str] = []
        for name in sorted(set(HELP) | set(self._values)):
            kind, text = HELP.get(name, ("counter", name))
            lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
            for key, value in sorted(self._values.get(name, {}).items()):
                lines.append(f"{name}{_labels(key)} {value:g}")
        for name, text, value in gauges:
            lines += [f"# HELP {name} {text}", f"# TYPE {name} gauge", f"{name} {value:g}"]
        return "\n".join(lines) + "\n"


METRICS = Metrics()
