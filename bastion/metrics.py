"""Counters the bastion keeps for ``/metrics`` (Prometheus text exposition format 0.0.4).

One process-wide :data:`METRICS`; the data path counts with :meth:`Metrics.inc` (a dict
update: no lock needed on the event loop), times with :meth:`Metrics.observe` (histograms,
buckets in :data:`BUCKETS`), and the API renders it with gauges read at scrape time
(sessions open, recorder state, queue and lag).  Label values are escaped as the format says;
they are rule names and actions, never agent text.

With ``bastion serve --workers N`` each worker counts in its own process; a
:class:`Snapshot` is what one of them has counted, :func:`merge` sums several (pure), and
:func:`render` shows a sum.  Sharing the snapshots between workers: bastion.workermetrics.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from typing import Any, Callable, Iterable

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
    "bastion_upstream_connect_queue_seconds": ("histogram", "Time an upstream connect waited "
                                                            "for its turn ([settings] "
                                                            "upstream_connects per target)."),
    "bastion_recording_quarantined_total": ("counter", "Recording operations the index refused "
                                                       "even in a replay, kept aside in "
                                                       "DATA_DIR/quarantine."),
    "bastion_upstream_connect_retries_total": ("counter", "Upstream connects the target "
                                                          "dropped before its SSH banner "
                                                          "(sshd MaxStartups), tried again."),
    "bastion_policy_reloads_total": ("counter", "Policy reloads (SIGHUP or a changed file) by "
                                                "result (ok, refused: the previous policy "
                                                "stays in force)."),
}
# histogram buckets (upper bounds in seconds) of each observed metric
BUCKETS = {
    "bastion_upstream_connect_seconds": (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                                         5.0, 10.0),
    "bastion_upstream_connect_queue_seconds": (0.0, 0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0,
                                               30.0, 60.0),
}


Labels = tuple[tuple[str, str], ...]
_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(value: float) -> str:
    """A sample value, exact: ``{:g}`` would show 1234567 bytes as 1.23457e+06."""
    if value.is_integer() and abs(value) < 2 ** 53:
        return str(int(value))
    return repr(value)


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels) + "}"


class Metrics:
    def __init__(self) -> None:
        self._values: dict[str, dict[Labels, float]] = defaultdict(dict)
        self._histograms: dict[str, dict[Labels, list[float]]] = {}

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

    def snapshot(self) -> "Snapshot":
        """A copy of every counter and histogram (see :class:`Snapshot`); call it on the
        event loop that counts, so no observation is caught half done."""
        return Snapshot(
            {name: dict(series) for name, series in self._values.items()},
            {name: (tuple(BUCKETS[name]), {k: list(v) for k, v in series.items()})
             for name, series in self._histograms.items()})

    def load(self, snap: "Snapshot") -> list[str]:
        """Add ``snap`` to these totals (a restarted worker takes over its predecessor's,
        bastion.workermetrics); returns the histograms left out because their buckets
        differ from :data:`BUCKETS` (another version wrote them)."""
        for name, series in snap.counters.items():
            mine = self._values[name]
            for key, value in series.items():
                mine[key] = mine.get(key, 0.0) + value     # in place: ``counter()`` binds it
        skipped = []
        for name, (bounds, hseries) in snap.histograms.items():
            if tuple(BUCKETS.get(name, ())) != bounds:
                skipped.append(name)
                continue
            target = self._histograms.setdefault(name, {})
            for key, counts in hseries.items():
                have = target.setdefault(key, [0.0] * len(counts))
                for i, n in enumerate(counts):
                    have[i] += n
        return skipped

    def render(self, gauges: Iterable[tuple[str, str, float]] = ()) -> str:
        """The exposition text: every counter, then ``gauges`` as (name, help, value)."""
        return render(self.snapshot(), gauges)


class Snapshot:
    """Counters ``{name: {labels: value}}`` and histograms ``{name: (bounds, {labels:
    [bucket counts..., sum, count]})}`` of one process, or summed over several
    (:func:`merge`).  ``to_json``/``from_json`` are the form a worker writes to its file."""

    __slots__ = ("counters", "histograms")

    def __init__(self, counters: dict[str, dict[Labels, float]] | None = None,
                 histograms: dict[str, tuple[tuple[float, ...], dict[Labels, list[float]]]]
                 | None = None) -> None:
        self.counters = counters or {}
        self.histograms = histograms or {}

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Snapshot) and self.counters == other.counters
                and self.histograms == other.histograms)

    def __repr__(self) -> str:
        return f"Snapshot({self.counters!r}, {self.histograms!r})"

    def to_json(self) -> dict[str, Any]:
        return {
            "counters": {name: [[[list(p) for p in key], value] for key, value in series.items()]
                         for name, series in self.counters.items()},
            "histograms": {name: {"bounds": list(bounds),
                                  "series": [[[list(p) for p in key], counts]
                                             for key, counts in series.items()]}
                           for name, (bounds, series) in self.histograms.items()},
        }

    @classmethod
    def from_json(cls, obj: Any) -> "Snapshot":
        """The inverse of :meth:`to_json`; ValueError for anything else (a value that is not
        a finite number >= 0, a histogram whose counts do not fit its bounds...)."""
        try:
            counters = {_name(name): {_key(key): _count(value) for key, value in series}
                        for name, series in obj["counters"].items()}
            histograms = {}
            for name, h in obj["histograms"].items():
                bounds = tuple(float(b) for b in h["bounds"])
                series = {}
                for key, counts in h["series"]:
                    if not isinstance(counts, list) or len(counts) != len(bounds) + 2:
                        raise ValueError(f"{name}: {len(bounds)} buckets but counts {counts!r}")
                    series[_key(key)] = [_count(n) for n in counts]
                histograms[_name(name)] = (bounds, series)
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"not a metrics snapshot: {exc}") from None
        return cls(counters, histograms)


def _name(name: Any) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"bad metric name {name!r}")
    return name


def _key(key: Any) -> Labels:
    pairs = tuple((k, v) for k, v in key)
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in pairs):
        raise ValueError(f"bad labels {key!r}")
    return tuple(sorted(pairs))


def _count(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or value < 0:
        raise ValueError(f"bad value {value!r}")
    return float(value)


def merge(snapshots: Iterable[Snapshot]) -> tuple[Snapshot, list[str]]:
    """The sum of ``snapshots``: every counter series (name and labels) summed, every
    histogram series summed bucket by bucket (and sum and count).  A histogram whose
    bounds differ from the first snapshot's with that name cannot be added: it is left out
    and its name returned in the second item.  Pure."""
    total = Snapshot()
    skipped: list[str] = []
    for snap in snapshots:
        for name, series in snap.counters.items():
            mine = total.counters.setdefault(name, {})
            for key, value in series.items():
                mine[key] = mine.get(key, 0.0) + value
        for name, (bounds, hseries) in snap.histograms.items():
            have_bounds, mine_h = total.histograms.setdefault(name, (bounds, {}))
            if have_bounds != bounds:
                skipped.append(name)
                continue
            for key, counts in hseries.items():
                have = mine_h.setdefault(key, [0.0] * len(counts))
                for i, n in enumerate(counts):
                    have[i] += n
    return total, skipped


def render(snap: Snapshot, gauges: Iterable[tuple[str, str, float]] = ()) -> str:
    """The exposition text of ``snap``: every counter and histogram (with the :data:`HELP`
    ones shown even when empty), then ``gauges`` as (name, help, value)."""
    lines: list[str] = []
    for name in sorted(set(HELP) | set(snap.counters) | set(snap.histograms)):
        kind, text = HELP.get(name, ("counter", name))
        lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
        if kind == "histogram":
            lines += _histogram_lines(name, *snap.histograms.get(name, ((), {})))
            continue
        for key, value in sorted(snap.counters.get(name, {}).items()):
            lines.append(f"{name}{_labels(key)} {_num(value)}")
    for name, text, value in gauges:
        lines += [f"# HELP {name} {text}", f"# TYPE {name} gauge", f"{name} {_num(value)}"]
    return "\n".join(lines) + "\n"


def _histogram_lines(name: str, bounds: tuple[float, ...],
                     series: dict[Labels, list[float]]) -> list[str]:
    lines = []
    for key, counts in sorted(series.items()):
        for bound, n in zip(bounds, counts[:-2], strict=True):
            lines.append(f"{name}_bucket{_labels(key + (('le', f'{bound:g}'),))} {_num(n)}")
        lines.append(f"{name}_bucket{_labels(key + (('le', '+Inf'),))} {_num(counts[-1])}")
        lines.append(f"{name}_sum{_labels(key)} {_num(counts[-2])}")
        lines.append(f"{name}_count{_labels(key)} {_num(counts[-1])}")
    return lines


METRICS = Metrics()

# the data path's counters (bastion.recording.channelrecording, bastion.ssh.sftprelay, forward)
TO_HOST = METRICS.counter("bastion_relayed_bytes_total", direction="agent_to_host")
TO_AGENT = METRICS.counter("bastion_relayed_bytes_total", direction="host_to_agent")
RECORDED_OUTPUT = METRICS.counter("bastion_recorded_bytes_total", stream="output")
RECORDED_INPUT = METRICS.counter("bastion_recorded_bytes_total", stream="input")
