"""Every command's --help: plain text that keeps policy.toml's [[tables]], no type tags on
flags, an example at the end of each command that does something; and --version."""

from __future__ import annotations

import re

import pytest
import typer.main
from typer.testing import CliRunner

from bastion.cli.main import app

ROOT = typer.main.get_command(app)


def _is_group(command) -> bool:
    return isinstance(getattr(command, "commands", None), dict)


def _commands(group, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = [path]
    if _is_group(group):
        for name, sub in group.commands.items():
            out += _commands(sub, path + (name,))
    return out


COMMANDS = _commands(ROOT)


def _help(path: tuple[str, ...]) -> str:
    r = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "80"})
    assert r.exit_code == 0, r.output
    return r.output


@pytest.mark.parametrize("path", COMMANDS, ids=[" ".join(p) or "bastion" for p in COMMANDS])
def test_help_is_plain_and_leaf_commands_end_with_an_example(path):
    text = _help(path)
    assert "<bool>" not in text                        # a flag takes no value
    assert "\\[" not in text                             # no rich escapes left behind
    assert not re.search("[╭│╰]", text)                 # no panels: copy-paste friendly
    assert max(len(line) for line in text.splitlines()) <= 80
    command = ROOT
    for name in path:
        command = command.commands[name]               # type: ignore[attr-defined]
    if not _is_group(command):
        intro = text.split("\nArguments:\n")[0].split("\nOptions:\n")[0]
        assert "Example" in intro, f"bastion {' '.join(path)} --help has no example"


def test_policy_toml_tables_survive_in_help():
    assert "[[cases]]" in _help(("policy", "test"))


def test_version():
    r = CliRunner().invoke(app, ["--version"])
    assert r.exit_code == 0 and re.fullmatch(r"bastion \S+\n", r.output), r.output
