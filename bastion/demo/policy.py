"""The demo's policy: the rules from the repository's example ``policy.toml``,
with the [oidc] and [[targets]] parts filled in for the local demo pieces."""

from __future__ import annotations

import re
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "policy.toml"

# Used when the package is installed without the repository's policy.toml.
FALLBACK_RULES = """
[settings]
default = "deny"
opaque = "review"

[[rules]]
name = "read-only-tools"
action = "allow"
commands = ["echo", "cat", "ls", "uname", "uptime", "id", "whoami", "hostname", "df", "free",
            "ps", "head", "tail", "grep", "wc", "date", "true", "systemctl status"]

[[rules]]
name = "no-recursive-delete"
action = "deny"
commands = ["rm -r", "rm -R", "rm --recursive"]

[[rules]]
name = "restarts-need-review"
action = "review"
commands = ["systemctl restart", "systemctl stop", "reboot"]
"""


APPROVERS = 'approvers = ["role:approvers"]        # the demo approver (bastion demo)\n'


def rules_text() -> str:
    """The [settings] and [[rules]] part of the example policy (everything from [settings] on),
    with the demo's approvers: anyone with the role ``approvers`` (the demo approver has it)."""
    try:
        text = EXAMPLE.read_text(encoding="utf-8")
    except OSError:
        text = FALLBACK_RULES
    start = text.find("\n[settings]")
    text = text[start:] if start >= 0 else FALLBACK_RULES
    if not re.search(r"(?m)^approvers\s*=", text):
        text = text.replace("[settings]\n", "[settings]\n" + APPROVERS, 1)
    return text


def demo_policy(*, issuer: str, tenant: str, ca_bundle: str, sshd_port: int, user: str,
                host_key: str) -> str:
    return f"""# Written by `bastion demo`; edit policy.toml in the repository instead.
[oidc]
issuer = "{issuer}"
audience = "api://bastion"
tenants = ["{tenant}"]
ca_bundle = "{ca_bundle}"

[[targets]]
name = "demo"
host = "127.0.0.1"
port = {sshd_port}
user = "{user}"
key = "demo"
host_key = "{host_key}"
labels = ["demo"]

[[grants]]
who = ["role:agents"]
targets = ["demo"]
channels = ["exec", "shell"]
{rules_text()}"""
