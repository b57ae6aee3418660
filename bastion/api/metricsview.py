"""``GET /metrics``: the Prometheus text (format 0.0.4) of one ``bastion serve``.

The counters and histograms of bastion.metrics, then gauges read at scrape time (sessions
and channels open, recorder state, queue and lag, disk headroom).  With ``serve --workers``
the worker answering sums every worker's counters (bastion.workermetrics) and combines
their status sockets' gauges (bastion.recording.status.merge_workers).  No token: it holds
counts, rule names and actions, never agent text.
"""

from __future__ import annotations

import asyncio
from typing import Any

from bastion.api.http import Response
from bastion.metrics import METRICS, Snapshot, render

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


async def metrics_response(services: Any) -> Response:
    merged = counted = None
    if getattr(services.recorder, "worker", 0):         # serve --workers: all of them
        from bastion import workermetrics
        from bastion.recording.status import merge_workers
        share = workermetrics.active()
        statuses, counted = await asyncio.gather(
            asyncio.to_thread(workermetrics.read_statuses, services.data_dir),
            workermetrics.collect(share) if share is not None else _none())
        merged = merge_workers(statuses)
    return Response(200, exposition(services, merged, counted).encode(),
                    content_type=CONTENT_TYPE)


async def _none() -> None:
    return None


def exposition(services: Any, merged: dict[str, Any] | None = None,
               counted: tuple[Snapshot, int] | None = None) -> str:
    """The exposition text; with ``serve --workers``, ``merged`` is every worker's status
    (gauges) and ``counted`` every worker's counters summed (bastion.workermetrics)."""
    gauges: list[tuple[str, str, float]] = []
    recorder = services.recorder
    if recorder is not None:
        status = recorder.status()
        recording_up = recorder.state == "ok"
        if getattr(recorder, "worker", 0):     # serve --workers: the gauges of all
            if merged is not None:
                status = merged
                recording_up = merged.get("state") == "ok"
            gauges.append(("bastion_workers", "Worker processes of serve --workers (the "
                           "counters and gauges cover them all: docs/SCALING.md)",
                           float(merged.get("workers") or 1) if merged else 1.0))
            if counted is not None:
                gauges.append(("bastion_metrics_stale_workers", "Workers whose counters "
                               "this scrape read from their last snapshot (not answering: "
                               "restarting, or stuck).", float(counted[1])))
        gauges += [
            ("bastion_sessions_open", "Agent sessions open.",
             float(status.get("sessions_open") or 0)),
            ("bastion_channels_open", "Channels open.",
             float(status.get("channels_open") or 0)),
            ("bastion_recording_up", "1 while sessions are recorded (else refused).",
             1.0 if recording_up else 0.0),
        ]
        gauges += [
            ("bastion_recorder_queue_bytes", "Bytes queued for the recording worker, not "
             "yet acknowledged.", float(status.get("queue_bytes") or 0)),
            ("bastion_recorder_queue_ops", "Operations queued for the recording worker.",
             float(status.get("queue_ops") or 0)),
            ("bastion_recorder_lag_seconds", "Age of the oldest operation the recording "
             "worker has not acknowledged (0: none).", float(status.get("index_lag_s") or 0)),
        ]
        policy = status.get("policy") or {}
        refused = status.get("policy_refused", 1 if policy.get("refused") else 0)
        gauges += [
            ("bastion_policy_reload_refused", "Processes whose last policy reload was refused: "
             "they enforce the policy loaded before (bastion status says why).", float(refused)),
            ("bastion_policy_loaded_timestamp_seconds", "When the policy in force was loaded "
             "(with --workers: the oldest worker's).",
             float(status.get("policy_loaded_oldest") or policy.get("loaded") or 0)),
        ]
        free = status.get("disk_free_bytes")
        if free is not None:
            gauges.append(("bastion_disk_free_bytes", "Free bytes in the data dir.",
                           float(free)))
    pool = getattr(services, "pool", None)
    if pool is not None:          # this process's pool (with --workers: the answering one's)
        gauges += [
            ("bastion_upstream_connects_in_progress", "Upstream connects under way (out of "
             "their queue).", float(pool.connecting())),
            ("bastion_upstream_connects_queued", "Upstream connects waiting for their turn "
             "([settings] upstream_connects per target).", float(pool.queued())),
        ]
    if counted is not None:
        return render(counted[0], gauges)
    return METRICS.render(gauges)
