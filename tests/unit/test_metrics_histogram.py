"""The /metrics histogram (bastion.metrics): cumulative buckets, sum and count, in the text
format Prometheus's own parser reads."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bastion.metrics import BUCKETS, Metrics

NAME = "bastion_upstream_connect_seconds"


@pytest.mark.parametrize("values", [[], [0.001], [0.004, 0.02, 0.3, 3.0, 60.0], [10.0, 10.0]])
def test_histogram_buckets_are_cumulative_and_parse(values):
    m = Metrics()
    for v in values:
        m.observe(NAME, v)
    families = {f.name: f for f in text_string_to_metric_families(m.render())}
    fam = families[NAME]
    assert fam.type == "histogram"
    samples = {(s.name, float(s.labels["le"]) if "le" in s.labels else None): s.value
               for s in fam.samples}
    if not values:
        assert not fam.samples
        return
    for bound in BUCKETS[NAME]:
        assert samples[(NAME + "_bucket", bound)] == sum(v <= bound for v in values)
    assert samples[(NAME + "_bucket", float("inf"))] == len(values)
    assert samples[(NAME + "_count", None)] == len(values)
    assert samples[(NAME + "_sum", None)] == pytest.approx(sum(values))


def test_counters_with_amounts_and_labels():
    m = Metrics()
    m.inc("bastion_relayed_bytes_total", 5000, direction="agent_to_host")
    m.inc("bastion_relayed_bytes_total", 7, direction="agent_to_host")
    to_agent = m.counter("bastion_relayed_bytes_total", direction="host_to_agent")
    assert m.value("bastion_relayed_bytes_total", direction="host_to_agent") == 0
    to_agent(1)
    fam = {f.name: f for f in text_string_to_metric_families(m.render())}["bastion_relayed_bytes"]
    got = {s.labels["direction"]: s.value for s in fam.samples if s.name.endswith("_total")}
    assert got == {"agent_to_host": 5007, "host_to_agent": 1}
