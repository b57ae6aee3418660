"""Fixtures for end-to-end tests: dev issuer, sshd, and a running bastion."""

from __future__ import annotations

import pytest

from tests.e2e.harness import BastionRig, have_openssh


def pytest_collection_modifyitems(items):
    for item in items:
        if "/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session", autouse=True)
def _require_openssh():
    if not have_openssh():
        pytest.fail("the e2e tests need OpenSSH ssh, ssh-keygen and sshd: run scripts/test.sh, "
                    "which installs openssh-server")


@pytest.fixture(scope="session")
def issuer(tmp_path_factory):
    from bastion.identity.devissuer import DevIssuer
    iss = DevIssuer(tmp_path_factory.mktemp("issuer")).start()
    yield iss
    iss.stop()


@pytest.fixture(scope="session")
def agent_client(issuer):
    return issuer.add_client("e2e-agent", roles=["agents"])


@pytest.fixture(scope="session")
def token(issuer, agent_client):
    """A 2.5 KB token, so the chunked keyboard-interactive rounds are exercised."""
    return issuer.mint(client=agent_client, pad_to=2500)


@pytest.fixture(scope="module")
def rig(tmp_path_factory, issuer):
    r = BastionRig(tmp_path_factory.mktemp("rig"), issuer).setup().start()
    yield r
    r.close()
