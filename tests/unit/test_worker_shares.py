"""Pure cores of `serve --workers`: whose ids and files a worker has, and the merged status."""

from __future__ import annotations

import itertools

import pytest

from bastion.cli.workers import WorkerRole, describe_exit
from bastion.errors import ConfigError
from bastion.recording import shares
from bastion.recording.status import merge_workers


@pytest.mark.parametrize("start, worker, first", [
    (1, 0, 1), (7, 0, 7),                       # the single process: every id
    (1, 1, 1), (1, 2, 2), (2, 1, 65), (3, 2, 66),
    (64, 1, 65), (65, 1, 65), (66, 1, 129), (130, 2, 130), (131, 63, 191),
])
def test_a_worker_starts_at_its_first_own_id(start, worker, first):
    assert shares.first_id(start, worker) == first
    assert next(shares.counter(start, worker)) == first


@pytest.mark.parametrize("workers", [2, 3, 8, shares.MAX_WORKERS])
def test_workers_never_pick_the_same_id_and_own_only_theirs(workers):
    taken = [list(itertools.islice(shares.counter(w * 5 + 1, w), 50))
             for w in range(1, workers + 1)]
    flat = [i for ids in taken for i in ids]
    assert len(flat) == len(set(flat))
    for w, ids in enumerate(taken, start=1):
        assert all(i % shares.STRIDE == w for i in ids)
        assert shares.own_sessions_sql(w) == f" AND id % {shares.STRIDE} = {w}"


@pytest.mark.parametrize("worker, lock, journal, sock", [
    (0, "recorder.lock", ".tails", "status.sock"),
    (2, "recorder.w2.lock", ".tails.w2", "status.w2.sock"),
])
def test_a_workers_own_files(worker, lock, journal, sock):
    assert (shares.lock_name(worker), shares.journal_name(worker),
            shares.status_name(worker)) == (lock, journal, sock)
    assert shares.own_sessions_sql(0) == ""


@pytest.mark.parametrize("raw, role", [
    ("1:2:2222:1", WorkerRole(1, 2, 2222, True)),
    ("2:2:40000:0", WorkerRole(2, 2, 40000, False)),
])
def test_the_role_a_worker_is_given_round_trips(raw, role, monkeypatch):
    monkeypatch.setenv("BASTION_WORKER", raw)
    assert WorkerRole.from_env() == role and role.env() == raw


@pytest.mark.parametrize("raw", ["1:2", "a:b:c:d", "1:2:3:4:5"])
def test_a_garbled_role_is_a_config_error(raw, monkeypatch):
    monkeypatch.setenv("BASTION_WORKER", raw)
    with pytest.raises(ConfigError):
        WorkerRole.from_env()


@pytest.mark.parametrize("code, text", [(-9, "killed by SIGKILL"), (2, "exited with status 2")])
def test_a_workers_exit_is_described(code, text):
    assert describe_exit(code) == text


def _ok(pid, open_, lag=0.0):
    return {"state": "ok", "pid": pid, "sessions_open": open_, "channels_open": open_,
            "queue_ops": 1, "queue_bytes": 10, "index_lag_s": lag}


@pytest.mark.parametrize("workers, state, sessions, lag", [
    ({1: _ok(10, 2), 2: _ok(11, 3, 0.5)}, "ok", 5, 0.5),
    ({1: _ok(10, 2), 2: {**_ok(11, 0), "state": "failed", "error": "disk full"}}, "failed", 2, 0.0),
    ({1: _ok(10, 1), 2: None}, "not answering", 1, 0.0),
])
def test_the_status_of_workers_is_ok_only_if_every_worker_is(workers, state, sessions, lag):
    merged = merge_workers(workers)
    assert merged is not None
    assert merged["state"] == state and merged["sessions_open"] == sessions
    assert merged["index_lag_s"] == lag and merged["workers"] == len(workers)


def test_no_worker_answering_is_not_running():
    assert merge_workers({1: None, 2: None}) is None and merge_workers({}) is None


@pytest.mark.parametrize("cores, expected", [(1, 1), (2, 2), (16, 16), (200, shares.MAX_WORKERS)])
def test_the_default_is_the_cores_within_what_ids_allow(cores, expected, monkeypatch):
    from bastion.cli import workers
    monkeypatch.setattr(workers.os, "sched_getaffinity", lambda _pid: set(range(cores)))
    assert workers.default_workers() == expected
    assert workers.check_count(expected) == expected


@pytest.mark.parametrize("n", [0, -1, shares.MAX_WORKERS + 1])
def test_a_worker_count_out_of_range_is_a_config_error(n):
    from bastion.cli.workers import check_count
    with pytest.raises(ConfigError, match="--workers must be"):
        check_count(n)
