"""Fixtures for the fault-and-abuse tier: a real ``bastion serve`` (through tests/e2e/harness.py),
the dev OIDC issuer, real OpenSSH clients and raw sockets, all on 127.0.0.x."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import _require_openssh, agent_client, issuer, token  # noqa: F401


def pytest_collection_modifyitems(items):
    for item in items:
        if "/reliability/" in str(item.fspath):
            item.add_marker(pytest.mark.reliability)
