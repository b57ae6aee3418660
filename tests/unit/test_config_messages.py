"""policy.toml problems, one table: each names the setting, its line, and what to write.

Pins the whole message (a trailing ``...`` marks a prefix), so a rewrite of the checks
(e.g. onto a schema library: docs/ARCHITECTURE.md "Libraries weighed") cannot lose the
setting's name, the line or the hint without failing here.
"""

from __future__ import annotations

import pytest

from bastion.config import parse_config
from bastion.errors import ConfigError

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIN6hGegfdxPvbo1EcXEbNFvrlXaq3EpoPVTs2rPKUGlb"

BASE = f'''[oidc]
issuer = "https://login.example.com/t/v2.0"
audience = "api://bastion"

[settings]
approval_timeout = 300

[[targets]]
name = "web1"
host = "10.0.0.5"
user = "deploy"
key = "web1"
host_key = "{KEY}"

[[grants]]
who = ["role:agents"]
targets = ["web*"]
'''
SETTING = "approval_timeout = 300"
TARGET = 'host = "10.0.0.5"'
GRANT = 'targets = ["web*"]'

CASES = [
    # (replace this in BASE, with this, the problem's message, its line)
    (SETTING, "approval_timeout = 0", "settings.approval_timeout must be a number >= 1", 6),
    (SETTING, "max_auth_tries = 1.5", "settings.max_auth_tries must be a whole number >= 1", 6),
    (SETTING, 'mask_live = "yes"', "settings.mask_live must be true or false", 6),
    (SETTING, "connect_timeout = 0", "settings.connect_timeout must be a number >= 0.1", 6),
    (SETTING, "upstream_connects = 0", "settings.upstream_connects must be a whole number >= 1", 6),
    (SETTING, "upstream_connects = 2.5", "settings.upstream_connects must be a whole number >= 1",
     6),
    (SETTING, "upstream_queue_timeout = 0",
     "settings.upstream_queue_timeout must be a number >= 0.1", 6),
    (SETTING, 'approval_window_max = "15x"', 'settings.approval_window_max must be seconds '
     '(an integer >= 0) or a duration like "15m", "1h30m"', 6),
    (SETTING, 'approvers = ["team:x"]', "settings.approvers: unknown principal selector 'team:x': "
     "use *, role:VALUE, group:VALUE, app:VALUE, sub:VALUE, tenant:VALUE", 6),
    (SETTING, "ciphers = [1]", "settings.ciphers must be a list of strings", 6),
    (SETTING, 'approval_webhook = "http://hooks.example.com/x"',
     "settings.approval_webhook must use https (http only for a loopback host)", 6),
    (SETTING, 'approval_webhook = "https://u:p@hooks.example.com/x"',
     "settings.approval_webhook must not carry credentials in the URL", 6),
    (SETTING, "max_startups = 5\nmax_startups_per_source = 6",
     "settings.max_startups_per_source (6) must not exceed settings.max_startups (5)", 7),
    (SETTING, "approval_allow_unproven = true",
     "settings.approval_allow_unproven is only for a dev issuer on a loopback address: with a "
     "real [oidc] issuer every answer must carry its token proof", 6),
    (SETTING, 'colour = "blue"', "unknown key 'settings.colour' (allowed: approvers, ...", 6),
    ('audience = "api://bastion"', "audience = []",
     'oidc.audience is required (e.g. "api://bastion")', 3),
    ('audience = "api://bastion"', 'audience = "api://bastion"\nleeway = -1',
     "oidc.leeway must be a number >= 0", 4),
    ('issuer = "https://login', 'issuer = "ftp://login',
     "oidc.issuer is not an http(s) URL: 'ftp://login.example.com/t/v2.0'", 2),
    ('user = "deploy"\n', "", "targets[0]: missing required key 'user'", 8),
    ('name = "web1"', 'name = ""', "targets[0].name must be a non-empty string", 9),
    (TARGET, TARGET + '\nport = "22"', "targets[0].port must be a number >= 1", 11),
    (TARGET, TARGET + '\nlabels = "prod"\nshell = "zsh"', 'targets[0].shell must be "auto", '
     '"bash" or "sh" (the shell that runs a mediated pty session)', 12),
    ("[[grants]]", '[[targets]]\nname = "web1"\nhost = "h"\nuser = "u"\nkey = "k"\n'
     'known_hosts = "kh"\n\n[[grants]]', "duplicate target name 'web1'", 16),
    (GRANT, GRANT + '\nchannels = ["exec", "x11"]',
     "grants[0].channels: unknown kind 'x11' (use exec, shell, sftp, forward)", 18),
    (GRANT, GRANT + '\nforward = ["db:99999"]', "grants[0].forward: 'db:99999' must be HOST:PORT "
     '(HOST may be a glob, PORT a number or *), e.g. "127.0.0.1:5432"', 18),
    (GRANT, GRANT + "\nmask_live = 1", "grants[0].mask_live must be true or false", 18),
    (GRANT, 'targets = ["label:"]', "grants[0].targets: target selector 'label:' names no label",
     17),
    ("[[grants]]", '[[masks]]\nname = "m"\nregex = "("\n\n[[grants]]',
     "masks[0].regex is not a valid regular expression: ...", 17),
    ("[[grants]]", '[[masks]]\nregex = "x"\n\n[[grants]]', "masks[0]: missing required key 'name'",
     15),
    ("[[grants]]", "[grants]", "grants must be an array of tables: write [[grants]]", 15),
]


@pytest.mark.parametrize("old, new, message, line", CASES, ids=[c[1][:40] for c in CASES])
def test_each_problem_names_the_setting_its_line_and_what_to_do(old: str, new: str, message: str,
                                                                line: int) -> None:
    assert old in BASE
    with pytest.raises(ConfigError) as info:
        parse_config(BASE.replace(old, new, 1))
    [problem] = info.value.problems
    if message.endswith("..."):
        assert problem.message.startswith(message[:-3]), problem.message
    else:
        assert problem.message == message
    assert problem.line == line
    assert "bastion policy check" in (info.value.hint or "")


def test_every_problem_of_a_file_is_reported_in_line_order() -> None:
    text = (BASE.replace(SETTING, "approval_timeout = 0\nmask_live = 2")
            .replace(GRANT, GRANT + '\nchannels = ["x11"]').replace('name = "web1"', 'name = ""'))
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    assert [(p.line, p.message.split(" ")[0]) for p in info.value.problems] == [
        (6, "settings.approval_timeout"), (7, "settings.mask_live"),
        (10, "targets[0].name"), (19, "grants[0].channels:")]


def test_the_upstream_connect_settings_default_below_sshd_maxstartups_and_are_read():
    """upstream_connects 8 by default (OpenSSH's MaxStartups starts dropping at 10), the queue
    wait 60 s; both read from [settings]."""
    s = parse_config(BASE).settings
    assert (s.upstream_connects, s.upstream_queue_timeout) == (8, 60.0)
    s = parse_config(BASE.replace(SETTING, "upstream_connects = 3\nupstream_queue_timeout = 5")
                     ).settings
    assert (s.upstream_connects, s.upstream_queue_timeout) == (3, 5.0)
