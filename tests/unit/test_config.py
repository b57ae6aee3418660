"""policy.toml validation outside [[rules]]: each problem reported with its line."""

from __future__ import annotations

import pytest

from bastion.config import parse_config
from bastion.errors import ConfigError

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIN6hGegfdxPvbo1EcXEbNFvrlXaq3EpoPVTs2rPKUGlb"

BASE = f'''
[oidc]
issuer = "https://login.microsoftonline.com/t/v2.0"
audience = "api://bastion"

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


def test_the_repository_example_and_a_minimal_file_are_valid():
    from pathlib import Path
    example = Path(__file__).resolve().parents[2] / "policy.toml"
    cfg = parse_config(example.read_text(), str(example))
    assert "web1" in cfg.targets
    assert parse_config(BASE).targets["web1"].port == 22
    assert parse_config(BASE).targets["web1"].shell == "auto"
    assert parse_config(BASE.replace('key = "web1"', 'key = "web1"\nshell = "sh"')
                        ).targets["web1"].shell == "sh"


@pytest.mark.parametrize("change, message, line", [
    ((KEY, "ssh-ed25519 AAAAnotakey"), "host_key is not an OpenSSH public key", 11),
    (('key = "web1"', 'key = "web1"\nshell = "zsh"'), "shell must be", 11),
    (('issuer = "https://login', 'issuer = "http://login'), "must use https", 3),
    (('targets = ["web*"]', 'targets = ["db*"]'), "matches no [[targets]] entry", 15),
    (('user = "deploy"', 'user = "deploy"\nport = 70000'), "port must be an integer", 10),
    (('name = "web1"', 'name = "web1\\n"'), "may hold only letters", 7),
    (('who = ["role:agents"]', 'who = ["team:agents"]'), "unknown principal selector", 14),
    ((f'host_key = "{KEY}"', ""), "pin the upstream host key", 6),
    (("[[grants]]", "[[grant]]"), "unknown key 'grant'", None),
])
def test_problems_are_named_with_their_line(change, message, line):
    text = BASE.replace(*change)
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    problems = [p for p in info.value.problems if message in p.message]
    assert problems, info.value.problems
    if line is not None:
        assert problems[0].line == line


def test_a_custom_mask_the_masker_cannot_compile_is_a_problem():
    with pytest.raises(ConfigError) as info:
        parse_config(BASE + '\n[[masks]]\nname = "x"\nregex = "(?u)x+"\n')
    assert any("masks[0].regex" in p.message for p in info.value.problems)


def test_forward_destinations_of_grants():
    from bastion.identity.principal import Principal
    cfg = parse_config(BASE + 'forward = ["127.0.0.1:5432", "db*.internal:*"]\n')
    agent = Principal(subject="a", roles=("agents",))
    other = Principal(subject="b", roles=("ops",))
    web1 = cfg.targets["web1"]
    assert cfg.forward_for(agent, web1, "127.0.0.1", 5432) == "127.0.0.1:5432"
    assert cfg.forward_for(agent, web1, "DB1.internal", 6379) == "db*.internal:*"
    assert cfg.forward_for(agent, web1, "127.0.0.1", 22) is None
    assert cfg.forward_for(agent, web1, "db1.internal.evil.com", 5432) is None
    assert cfg.forward_for(other, web1, "127.0.0.1", 5432) is None
    assert parse_config(BASE).grants[0].forward == ()
    for bad in ('"127.0.0.1"', '"host:99999"', '":5432"', '"h:x"'):
        with pytest.raises(ConfigError) as info:
            parse_config(BASE + f"forward = [{bad}]\n")
        assert any("must be HOST:PORT" in p.message for p in info.value.problems)


def test_store_transfers_settings():
    assert parse_config(BASE).settings.store_transfers is False
    assert parse_config(BASE).settings.store_transfers_max == 16 * 1024 * 1024
    cfg = parse_config("[settings]\nstore_transfers = true\nstore_transfers_max = 4096\n" + BASE)
    assert (cfg.settings.store_transfers, cfg.settings.store_transfers_max) == (True, 4096)
    for bad in ("store_transfers = 1", "store_transfers_max = 0", "store_transfers_max = 1.5"):
        with pytest.raises(ConfigError) as info:
            parse_config(f"[settings]\n{bad}\n" + BASE)
        assert any("store_transfers" in p.message for p in info.value.problems), bad
