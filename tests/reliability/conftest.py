"""Fixtures for the fault-and-abuse tier: a real ``bastion serve`` (through tests/e2e/harness.py),
the dev OIDC issuer, real OpenSSH clients and raw sockets, all on 127.0.0.x."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import _require_openssh, agent_client, issuer, token  # noqa: F401


def pytest_collection_modifyitems(items):
    for item in items:
        if "/reliability/" in str(item.fspath):
            item.add_marker(pytest.mark.reliability)


@pytest.fixture(scope="module")
def client_key():
    """The vault key of the upstream pool tests (test_upstream_pool, test_upstream_storm)."""
    import asyncssh
    return asyncssh.generate_private_key("ssh-ed25519")


@pytest.fixture
def hole():
    """A target that accepts TCP and never says a byte (tests.reliability.netfaults)."""
    from tests.reliability.netfaults import Blackhole
    h = Blackhole()
    yield h
    h.close()
