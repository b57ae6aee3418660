"""Counters the bastion keeps for ``/metrics`` (Prometheus text exposition format 0.0.4).

One process-wide :data:`METRICS`; the data path counts with :meth:`Metrics.inc` (a dict
update: no lock needed on the event loop), times with :meth:`Metrics.observe` (histograms,
buckets in :data:`BUCKETS`), and the API renders it with gauges read at scrape time
(sessions open, recorder state, queue and lag).  Label values are escaped as the format says;
they are rule names and actions, never agent text.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Callable, Iterable

HELP = {
    "bastion_logins_total": ("counter", "Outer logins by result (ok, refused, error)."),
    "bastion_decisions_total": ("counter", "Policy decisions by channel, action and rule."),
    "bastion_approvals_total": ("counter", "Approval requests by outcome."),
    "bastion_approval_wait_seconds_total": ("counter",
                                            "Seconds held commands waited for their outcome."),
    "bastion_relayed_bytes_total": ("counter", "Bytes relayed between agents and hosts, by "
                                               "direction (agent_to_host, host_to_agent)."),
    "bastion_recorded_bytes_total": ("counter", "Bytes queued for the recordings, by stream "
                                                "(output, input); before masking."),
    "bastion_upstream_connect_seconds": ("histogram", "Time to open an upstream SSH connection "
                                                      "(TCP, key exchange, authentication)."),
}
# histogram buckets (upper bounds in seconds) of each observed metric
BUCKETS = {
    "bastion_upstream_connect_seconds": (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                                         5.0, 10.0),
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
        self._histograms: dict[str, dict[tuple[tuple[str, str], ...], list[float]]] = {}

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        series = self._values[name]
        series[key] = series.get(key, 0.0) + amount

    def counter(self, name: str, **labels: str) -> Callable[[float], None]:
        """``inc`` bound to one series, for the data path (no key to build per call); the
        series shows (at 0) from now on."""
        series = self._values[name]
        key = tuple(sorted(labels.items()))
        series.setdefault(key, 0.0)

        def add(amount: float = 1.0) -> None:
            series[key] += amount
        return add

    def observe(self, name: str, value: float, **labels: str) -> None:
        """One observation of a histogram (its buckets: :data:`BUCKETS`)."""
        key = tuple(sorted(labels.items()))
        series = self._histograms.setdefault(name, {})
        counts = series.get(key)
        if counts is None:
            counts = series[key] = [0.0] * (len(BUCKETS[name]) + 2)   # buckets, sum, count
        for i, bound in enumerate(BUCKETS[name]):
            if value <= bound:
                counts[i] += 1
        counts[-2] += value
        counts[-1] += 1

    def value(self, name: str, **labels: str) -> float:
        return self._values.get(name, {}).get(tuple(sorted(labels.items())), 0.0)

    def render(self, gauges: Iterable[tuple[str, str, float]] = ()) -> str:
        """The exposition text: every counter, then ``gauges`` as (name, help, value)."""
        lines: list[str] = []
        for name in sorted(set(HELP) | set(self._values) | set(self._histograms)):
            kind, text = HELP.get(name, ("counter", name))
            lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
            if kind == "histogram":
                lines += self._histogram_lines(name)
                continue
            for key, value in sorted(self._values.get(name, {}).items()):
                lines.append(f"{name}{_labels(key)} {value:g}")
        for name, text, value in gauges:
            lines += [f"# HELP {name} {text}", f"# TYPE {name} gauge", f"{name} {value:g}"]
        return "\n".join(lines) + "\n"


    def _histogram_lines(self, name: str) -> list[str]:
        lines = []
        for key, counts in sorted(self._histograms.get(name, {}).items()):
            for bound, n in zip(BUCKETS[name], counts[:-2], strict=True):
                lines.append(f"{name}_bucket{_labels(key + (('le', f'{bound:g}'),))} {n:g}")
            lines.append(f"{name}_bucket{_labels(key + (('le', '+Inf'),))} {counts[-1]:g}")
            lines.append(f"{name}_sum{_labels(key)} {counts[-2]:g}")
            lines.append(f"{name}_count{_labels(key)} {counts[-1]:g}")
        return lines


METRICS = Metrics()

# the data path's counters (bastion.recording.channelrecording, bastion.ssh.sftprelay, forward)
TO_HOST = METRICS.counter("bastion_relayed_bytes_total", direction="agent_to_host")
TO_AGENT = METRICS.counter("bastion_relayed_bytes_total", direction="host_to_agent")
RECORDED_OUTPUT = METRICS.counter("bastion_recorded_bytes_total", stream="output")
RECORDED_INPUT = METRICS.counter("bastion_recorded_bytes_total", stream="input")
