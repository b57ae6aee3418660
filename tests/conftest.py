"""Fixtures shared by every tier: a private PostgreSQL cluster (tests/pgcluster.py)."""

from __future__ import annotations

import itertools
import os

import pytest

# pytest-xdist workers start with COLUMNS=80/LINES=24 in their environment, and rich pins a
# Console's width to COLUMNS when the Console is made (bastion.cli.common makes its two at
# import), so every CLI table in that worker would be 80 wide whatever a test asks for.  A
# serial run has neither variable; the workers are made to match it.
for _name in ("COLUMNS", "LINES"):
    os.environ.pop(_name, None)

import bastion.demo.sshd  # noqa: E402
from tests import ports  # noqa: E402

# every server a test starts (LocalSshd, the bastion rigs, the API) takes its port from this
# process's own slice: several pytest-xdist workers run at once (tests/ports.py).  Set before
# any test module runs `from bastion.demo.sshd import free_port`.
bastion.demo.sshd.free_port = ports.free_port

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


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request, monkeypatch):
    """Each test twice: this process's store on SQLite, then on a fresh PostgreSQL database."""
    if request.param == "postgresql":
        request.getfixturevalue("pg_store")
    else:
        monkeypatch.delenv("BASTION_STORE_URL", raising=False)
    return request.param
