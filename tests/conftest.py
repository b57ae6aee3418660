"""Fixtures shared by every tier: a private PostgreSQL cluster (tests/pgcluster.py)."""

from __future__ import annotations

import itertools

import pytest

_dbs = itertools.count(1)


@pytest.fixture(scope="session")
def pg_cluster():
    """One private cluster for the run; fails (never skips) when PostgreSQL is missing."""
    from tests.pgcluster import start_cluster
    cluster = start_cluster()
    yield cluster
    cluster.destroy()


@pytest.fixture
def pg_store(pg_cluster, monkeypatch):
    """A fresh database; this process's store points at it (BASTION_STORE_URL...)."""
    name = f"t{next(_dbs)}"
    pg_cluster.create_db(name)
    env = pg_cluster.store_env(name, node="test-node")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    yield env
