"""Fixtures of the in-process tier: one bastion (tests/inproc/rig.py) for the whole tier.

``bastion`` serves from this process on 127.0.0.1 with the policy below: the e2e rules,
approvers with role ``sre-leads``, ``touch`` held for review, and a target ``down1`` whose
port nothing listens on.  Tests that break something (the recording worker, a policy
reload) put it back before they end, so the next test finds the bastion as it was.
"""

from __future__ import annotations

import pytest

from tests.e2e.harness import BastionRig, have_openssh
from tests.e2e.test_approvals import APPROVAL_RULES
from tests.inproc.rig import InProcBastion

APPROVAL_TIMEOUT = 60


def pytest_collection_modifyitems(items):
    for item in items:
        if "/inproc/" in str(item.fspath):
            item.add_marker(pytest.mark.inproc)


@pytest.fixture(scope="session")
def issuer(tmp_path_factory):
    from bastion.identity.devissuer import DevIssuer
    if not have_openssh():
        pytest.fail("the in-process tier needs OpenSSH's sshd and ssh-keygen: run scripts/test.sh")
    dev = DevIssuer(tmp_path_factory.mktemp("inproc-issuer")).start()
    yield dev
    dev.stop()


@pytest.fixture(scope="session")
def token(issuer):
    return issuer.mint(client=issuer.add_client("inproc-agent", roles=["agents"]))


@pytest.fixture(scope="session")
def approver_token(issuer):
    return issuer.mint(client=issuer.add_client("inproc-sre-lead", roles=["sre-leads"]))


def down_target(rig: BastionRig) -> str:
    """A target granted like web1 whose port nothing listens on."""
    from bastion.demo.sshd import free_port
    web1 = "[[targets]]" + rig.policy_text().split("[[targets]]")[1].split("[[grants]]")[0]
    return (web1.replace('name = "web1"', 'name = "down1"')
            .replace(f"port = {rig.sshd.port}", f"port = {free_port()}"))


@pytest.fixture(scope="session")
def rig(tmp_path_factory, issuer):
    """The sshd, vault, canary dir and policy file (no ``bastion serve`` process)."""
    made = BastionRig(tmp_path_factory.mktemp("inproc-rig"), issuer).setup()
    try:
        made.extra_targets = down_target(made)
        made.write_policy(made.policy_text(
            APPROVAL_RULES.replace("TIMEOUT", str(APPROVAL_TIMEOUT))))
        yield made
    finally:
        made.close()


@pytest.fixture(scope="session")
def bastion(rig):
    from bastion.services import Services
    with pytest.MonkeyPatch.context() as env:
        for key, value in rig.env.items():
            if key.startswith("BASTION_"):
                env.setenv(key, value)
        b = InProcBastion(Services.build(rig.policy_path, rig.data_dir, rig.keys_dir))
        yield b
        b.close()
