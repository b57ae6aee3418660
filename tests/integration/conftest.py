"""Fixtures for a running dev OIDC issuer on 127.0.0.1 (real https, its own CA).

Reusable by other test packages: ``from tests.integration.conftest import ...``
or list this module in ``pytest_plugins``.

* ``dev_issuer``      a started :class:`DevIssuer` (port 0, state in tmp_path); stopped after
* ``agent_client``    a client registered on it with role ``agents`` (secret + certificate)
* ``shared_dev_issuer`` / ``shared_agent_client``: the same, one per test module (key
  generation costs ~0.2 s per issuer); for tests that neither stop it nor count its hits
* ``oidc_config``     an :class:`OidcConfig` for it (audience api://bastion, trusting ca.pem)
* ``clock``           a settable clock (seconds since the epoch) for validators and minting
* ``bastion_exe``     the ``bastion`` console script of this venv
* ``clean_env``       os.environ without BASTION_* variables, with HOME/XDG_CACHE_HOME in tmp
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from bastion.identity.devissuer import DevIssuer


class Clock:
    """A clock tests move by hand: ``clock()`` returns the time, ``clock.advance(s)``."""

    def __init__(self, start: float | None = None) -> None:
        self.now = time.time() if start is None else start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def dev_issuer(tmp_path: Path):
    issuer = DevIssuer(tmp_path / "dev-issuer", host="127.0.0.1", port=0)
    issuer.start()
    try:
        yield issuer
    finally:
        issuer.stop()


@pytest.fixture
def agent_client(dev_issuer: DevIssuer):
    return dev_issuer.add_client("agent1", roles=["agents"], certificate=True)


@pytest.fixture(scope="module")
def shared_dev_issuer(tmp_path_factory):
    issuer = DevIssuer(tmp_path_factory.mktemp("dev-issuer"), host="127.0.0.1", port=0)
    issuer.start()
    try:
        yield issuer
    finally:
        issuer.stop()


@pytest.fixture(scope="module")
def shared_agent_client(shared_dev_issuer: DevIssuer):
    return shared_dev_issuer.add_client("agent1", roles=["agents"], certificate=True)


@pytest.fixture
def oidc_config(dev_issuer: DevIssuer):
    return dev_issuer.oidc_config()


@pytest.fixture
def bastion_exe() -> str:
    exe = Path(sys.executable).parent / "bastion"
    if not exe.exists():
        pytest.skip("the bastion console script is not installed in this venv")
    return str(exe)


@pytest.fixture
def clean_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env["HOME"] = str(home)
    env["XDG_CACHE_HOME"] = str(home / ".cache")
    return env


def pytest_collection_modifyitems(items):
    for item in items:
        if "/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
