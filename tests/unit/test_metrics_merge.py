"""Summing the workers' counters (bastion.metrics: Snapshot, merge, render; Metrics.load),
and a worker's snapshot file (bastion.workermetrics: 0600, written before shown, taken over
by a successor).  Table-driven; the file tests use a real temp dir."""

from __future__ import annotations

import asyncio
import json
import os
import stat

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bastion import workermetrics
from bastion.metrics import BUCKETS, Metrics, Snapshot, merge, render

H = "bastion_upstream_connect_seconds"
B = tuple(BUCKETS[H])
OK = (("result", "ok"),)
REFUSED = (("result", "refused"),)


def hist(*values: float) -> list[float]:
    counts = [float(sum(v <= b for v in values)) for b in B]
    return counts + [float(sum(values)), float(len(values))]


MERGES = [
    ("nothing", [], Snapshot(), []),
    ("one worker is itself", [Snapshot({"bastion_logins_total": {OK: 3.0}})],
     Snapshot({"bastion_logins_total": {OK: 3.0}}), []),
    ("same series summed",
     [Snapshot({"bastion_logins_total": {OK: 3.0}}), Snapshot({"bastion_logins_total": {OK: 4.0}})],
     Snapshot({"bastion_logins_total": {OK: 7.0}}), []),
    ("labels kept apart",
     [Snapshot({"bastion_logins_total": {OK: 3.0}}),
      Snapshot({"bastion_logins_total": {REFUSED: 1.0}})],
     Snapshot({"bastion_logins_total": {OK: 3.0, REFUSED: 1.0}}), []),
    ("a series only one worker has",
     [Snapshot({"bastion_logins_total": {OK: 2.0}}),
      Snapshot({"bastion_api_requests_total": {(("result", "200"),): 5.0}})],
     Snapshot({"bastion_logins_total": {OK: 2.0},
               "bastion_api_requests_total": {(("result", "200"),): 5.0}}), []),
    ("three workers, fractional seconds",
     [Snapshot({"bastion_approval_wait_seconds_total": {(): x}}) for x in (0.5, 1.25, 2.0)],
     Snapshot({"bastion_approval_wait_seconds_total": {(): 3.75}}), []),
    ("histograms bucket by bucket",
     [Snapshot(histograms={H: (B, {(): hist(0.003, 0.2)})}),
      Snapshot(histograms={H: (B, {(): hist(0.04)})})],
     Snapshot(histograms={H: (B, {(): hist(0.003, 0.2, 0.04)})}), []),
    ("histogram with other bounds left out, named",
     [Snapshot(histograms={H: (B, {(): hist(0.003)})}),
      Snapshot(histograms={H: ((1.0,), {(): [1.0, 0.5, 1.0]})})],
     Snapshot(histograms={H: (B, {(): hist(0.003)})}), [H]),
]


@pytest.mark.parametrize("snaps, want, skipped", [m[1:] for m in MERGES],
                         ids=[m[0] for m in MERGES])
def test_merge(snaps, want, skipped):
    before = json.dumps([s.to_json() for s in snaps])
    got, left_out = merge(snaps)
    assert got == want and left_out == skipped
    assert json.dumps([s.to_json() for s in snaps]) == before      # inputs untouched


def test_merged_text_is_what_prometheus_reads():
    a, b = Metrics(), Metrics()
    a.inc("bastion_logins_total", result="ok")
    b.inc("bastion_logins_total", 2, result="ok")
    b.inc("bastion_relayed_bytes_total", 1234567, direction="agent_to_host")
    a.observe(H, 0.02)
    b.observe(H, 3.0)
    text = render(merge([a.snapshot(), b.snapshot()])[0])
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(text) for s in f.samples}
    assert samples[("bastion_logins_total", OK)] == 3
    assert samples[("bastion_relayed_bytes_total", (("direction", "agent_to_host"),))] == 1234567
    assert samples[(H + "_count", ())] == 2 and samples[(H + "_bucket", (("le", "0.025"),))] == 1
    assert "1234567" in text                 # exact, not 1.23457e+06


ROUND_TRIPS = [Snapshot(),
               Snapshot({"bastion_logins_total": {OK: 3.0, REFUSED: 1.0}}),
               Snapshot({"bastion_decisions_total": {(("action", "allow"), ("channel", "exec"),
                                                      ("rule", 'quo"te\\')): 2.0}},
                        {H: (B, {(): hist(0.1, 7.0)})})]


@pytest.mark.parametrize("snap", ROUND_TRIPS)
def test_snapshot_json_round_trip(snap):
    assert Snapshot.from_json(json.loads(json.dumps(snap.to_json()))) == snap


BAD = [
    ("not an object", []),
    ("no histograms", {"counters": {}}),
    ("negative", {"counters": {"x_total": [[[], -1]]}, "histograms": {}}),
    ("not finite", {"counters": {"x_total": [[[], float("inf")]]}, "histograms": {}}),
    ("a string value", {"counters": {"x_total": [[[], "3"]]}, "histograms": {}}),
    ("a bool value", {"counters": {"x_total": [[[], True]]}, "histograms": {}}),
    ("bad name", {"counters": {"x total\n": [[[], 1]]}, "histograms": {}}),
    ("label not a string", {"counters": {"x_total": [[[["a", 1]], 1]]}, "histograms": {}}),
    ("counts do not fit the bounds",
     {"counters": {}, "histograms": {H: {"bounds": [1.0], "series": [[[], [1, 1]]]}}}),
]


@pytest.mark.parametrize("obj", [b[1] for b in BAD], ids=[b[0] for b in BAD])
def test_from_json_refuses(obj):
    with pytest.raises(ValueError):
        Snapshot.from_json(obj)


def test_load_adds_in_place_so_bound_counters_go_on():
    m = Metrics()
    add = m.counter("bastion_relayed_bytes_total", direction="agent_to_host")
    add(10)
    m.observe(H, 0.02)
    skipped = m.load(Snapshot({"bastion_relayed_bytes_total": {(("direction", "agent_to_host"),):
                                                                 100.0}},
                              {H: (B, {(): hist(0.3)}), "other_seconds": ((1.0,), {})}))
    add(1)
    assert m.value("bastion_relayed_bytes_total", direction="agent_to_host") == 111
    assert m.snapshot().histograms[H][1][()] == hist(0.02, 0.3)
    assert skipped == ["other_seconds"]


# -- a worker's share: its file --------------------------------------------------------------

def _run(coro):
    return asyncio.run(coro)


def test_share_writes_before_it_shows_and_a_successor_counts_on(tmp_path):
    async def first() -> Snapshot:
        m = Metrics()
        share = workermetrics.Share(tmp_path, 2, m)
        share.start()
        try:
            m.inc("bastion_logins_total", 5, result="ok")
            shown = await share.current()
            # what was shown is in the file (a kill -9 now loses nothing a scrape saw)
            assert workermetrics.read_snapshot(share.path) == shown
            m.inc("bastion_logins_total", result="ok")          # not shown, not written
            # asked while its loop is stuck (here: blocked by this very call): the written one
            stuck = workermetrics._ask(tmp_path, 2)
            assert stuck == shown
            live = await asyncio.to_thread(workermetrics._ask, tmp_path, 2)   # taken, written
            assert live is not None and live.counters["bastion_logins_total"][OK] == 6
            assert workermetrics.read_snapshot(share.path) == live
            return shown
        finally:
            share._task.cancel()                                 # "killed": no last write
            share._server.close()

    _run(first())
    mode = os.stat(workermetrics.snapshot_path(tmp_path, 2)).st_mode
    assert stat.S_IMODE(mode) == 0o600
    assert stat.S_IMODE(os.stat(workermetrics.metrics_dir(tmp_path)).st_mode) == 0o700

    async def successor() -> float:
        m = Metrics()
        share = workermetrics.Share(tmp_path, 2, m)
        share.start()
        try:
            m.inc("bastion_logins_total", result="ok")
            return (await share.current()).counters["bastion_logins_total"][OK]
        finally:
            await share.close()

    assert _run(successor()) == 7


@pytest.mark.parametrize("answering", [1, 2])
def test_collect_sums_live_and_dead_workers(tmp_path, answering):
    workermetrics.clear(tmp_path)
    dead = Snapshot({"bastion_logins_total": {OK: 4.0}})
    workermetrics.write_snapshot(workermetrics.snapshot_path(tmp_path, 3), dead)

    async def scrape() -> tuple[Snapshot, int]:
        m1, m2 = Metrics(), Metrics()
        one, two = workermetrics.Share(tmp_path, 1, m1), workermetrics.Share(tmp_path, 2, m2)
        one.start()
        two.start()
        try:
            m1.inc("bastion_logins_total", 1, result="ok")
            m2.inc("bastion_logins_total", 2, result="ok")
            return await workermetrics.collect(one if answering == 1 else two)
        finally:
            await one.close()
            await two.close()

    total, stale = _run(scrape())
    assert total.counters["bastion_logins_total"][OK] == 7 and stale == 1


def test_a_successor_removes_a_write_its_predecessor_left_half_done(tmp_path):
    workermetrics.clear(tmp_path)
    left = workermetrics.metrics_dir(tmp_path) / ".w3.json.0badcafe.tmp"
    left.write_text('{"counters": {"bastion_lo')
    other = workermetrics.metrics_dir(tmp_path) / ".w4.json.0badcafe.tmp"
    other.write_text("")

    async def start() -> None:
        share = workermetrics.Share(tmp_path, 3, Metrics())
        share.start()
        await share.close()

    _run(start())
    assert not left.exists() and other.exists()          # only its own


def test_clear_forgets_a_previous_run(tmp_path):
    workermetrics.clear(tmp_path)
    workermetrics.write_snapshot(workermetrics.snapshot_path(tmp_path, 1),
                                 Snapshot({"bastion_logins_total": {OK: 4.0}}))
    workermetrics.clear(tmp_path)
    assert list(workermetrics.metrics_dir(tmp_path).iterdir()) == []


def test_clear_never_follows_a_symlink_in_place_of_the_dir(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "w1.json").write_text("keep me")
    data = tmp_path / "data"
    data.mkdir()
    (data / "metrics").symlink_to(elsewhere)
    workermetrics.clear(data)
    assert (elsewhere / "w1.json").read_text() == "keep me"
    where = workermetrics.metrics_dir(data)
    assert where.is_dir() and not where.is_symlink()
    assert stat.S_IMODE(os.stat(where).st_mode) == 0o700


def test_an_unreadable_predecessor_file_starts_at_zero(tmp_path, caplog):
    workermetrics.clear(tmp_path)
    workermetrics.snapshot_path(tmp_path, 1).write_text("{not json")

    async def start() -> Snapshot:
        m = Metrics()
        share = workermetrics.Share(tmp_path, 1, m)
        share.start()
        try:
            return await share.current()
        finally:
            await share.close()

    assert _run(start()) == Snapshot()
    assert "start again at 0" in caplog.text
