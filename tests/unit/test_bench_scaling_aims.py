"""bench.scaling_bulk: issue 20's bulk aims read off a run's sections, and CPU per MB
(pure, table-driven)."""

from __future__ import annotations

import pytest

from bench import scaling_bulk
from bench.bulk import cpu_per_mb
from bench.scaling_bulk import aims, summarize


def _bulk(rates: dict[str, float], names=("jump", "bastion/sqlite", "relay")) -> dict:
    """A bulk section whose every row has the same MB/s per path."""
    samples = {f"{kind}/{mode}/{name}": [rate]
               for kind in ("zero", "text", "upload") for mode in ("default", "aes128-gcm")
               for name, rate in rates.items()}
    return summarize(samples, {}, list(names), size=1, reps=1)


def _by_name(result: list[dict]) -> dict[str, dict]:
    return {a["aim"]: a for a in result}


def test_rows_carry_each_backends_ratio_and_the_relays():
    section = _bulk({"jump": 200.0, "bastion/sqlite": 150.0, "relay": 210.0})
    row = section["rows"][0]
    assert row["c_b/sqlite"] == 0.75 and row["relay/jump"] == 1.05
    assert "c_b/relay" not in row


@pytest.mark.parametrize("bastion, relay, met", [
    # (bastion MB/s, relay MB/s against ProxyJump's 100) -> which aims are met
    (80.0, 110.0, {"bulk c/b, sqlite, default ciphers": True,
                   "bulk c/b, sqlite, aes128-gcm ciphers": True,
                   "full path / ProxyJump, sqlite": True, "relay alone / ProxyJump": True}),
    (60.0, 99.9, {"bulk c/b, sqlite, default ciphers": False,
                  "bulk c/b, sqlite, aes128-gcm ciphers": True,
                  "full path / ProxyJump, sqlite": False, "relay alone / ProxyJump": False}),
    (50.0, 100.0, {"bulk c/b, sqlite, default ciphers": False,
                   "bulk c/b, sqlite, aes128-gcm ciphers": False,
                   "full path / ProxyJump, sqlite": False, "relay alone / ProxyJump": True}),
])
def test_each_aim_is_met_only_when_every_measured_value_reaches_it(bastion, relay, met):
    result = _by_name(aims(_bulk({"jump": 100.0, "bastion/sqlite": bastion, "relay": relay}),
                           None))
    assert {name: a["met"] for name, a in result.items()} == met
    assert result["bulk c/b, sqlite, default ciphers"]["measured"] == {
        "zero": bastion / 100, "text": bastion / 100, "upload": bastion / 100}
    # the full path and the relay are the zero and text downloads with default ciphers
    assert set(result["full path / ProxyJump, sqlite"]["measured"]) == {"zero", "text"}
    assert set(result["relay alone / ProxyJump"]["measured"]) == {"zero", "text"}


def test_one_row_below_the_aim_is_enough_to_miss_it():
    section = _bulk({"jump": 100.0, "bastion/sqlite": 80.0, "relay": 120.0})
    for row in section["rows"]:
        if row["kind"] == "text" and row["cipher"] == "aes128-gcm":
            row["c_b/sqlite"] = 0.549
    result = _by_name(aims(section, None))
    assert result["bulk c/b, sqlite, aes128-gcm ciphers"]["met"] is False
    assert result["bulk c/b, sqlite, default ciphers"]["met"] is True


def test_a_path_not_measured_is_not_counted_as_met():
    section = _bulk({"jump": 100.0, "bastion/sqlite": 80.0}, names=("jump", "bastion/sqlite"))
    for row in section["rows"]:
        row["c_b/sqlite"] = None
    result = _by_name(aims(section, None))
    assert result["bulk c/b, sqlite, default ciphers"]["met"] is None
    assert "relay alone / ProxyJump" not in result        # no relay path in this run


@pytest.mark.parametrize("ratios, met", [
    ({"x_jump/sqlite": 0.61, "x_jump/postgresql": 0.6}, True),
    ({"x_jump/sqlite": 0.9, "x_jump/postgresql": 0.59}, False),
])
def test_the_parallel_aim_takes_every_backend(ratios, met):
    par = {"sessions": 8, "workers": 2, "paths": {}, **ratios}
    result = _by_name(aims(None, par))
    entry = result["8 parallel sessions, --workers 2 / ProxyJump"]
    assert entry["target"] == scaling_bulk.PARALLEL_AIM
    assert entry["measured"] == {k.split("/", 1)[1]: v for k, v in ratios.items()}
    assert entry["met"] is met


def test_no_sections_no_aims():
    assert aims(None, None) == []
    assert aims({"na": "error"}, {"na": "error"}) == []


@pytest.mark.parametrize("before, after, size, expected", [
    ({"bastion": 1.0}, {"bastion": 1.5}, 100_000_000, {"bastion": 5.0}),
    ({"bastion": 2.0, "postgresql": 10.0}, {"bastion": 2.2, "postgresql": 10.9}, 200_000_000,
     {"bastion": 1.0, "postgresql": 4.5}),
    ({"bastion": None}, {"bastion": 3.0}, 1_000_000, {"bastion": None}),     # process gone
    ({"bastion": 1.0}, {"bastion": None}, 1_000_000, {"bastion": None}),
])
def test_cpu_per_mb_is_the_difference_over_the_megabytes_carried(before, after, size, expected):
    assert cpu_per_mb(before, after, size) == expected


def test_a_rows_cpu_is_the_median_of_its_transfers():
    samples = {"zero/default/jump": [100.0, 100.0, 100.0],
               "zero/default/bastion/sqlite": [80.0, 90.0, 70.0]}
    cpu = {"zero/default/bastion/sqlite": [{"bastion": 3.0}, {"bastion": 5.0},
                                           {"bastion": 4.0}]}
    section = summarize(samples, {}, ["jump", "bastion/sqlite"], size=1, reps=3, cpu=cpu)
    row = section["rows"][0]
    assert row["bastion/sqlite"]["cpu_ms_per_mb"] == {"bastion": 4.0}
    assert "cpu_ms_per_mb" not in row["jump"]
