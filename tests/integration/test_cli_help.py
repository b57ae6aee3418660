"""Every command's --help: plain text that keeps policy.toml's [[tables]], no type tags on
flags, an example at the end of each command that does something; and --version."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import typer.main
from typer.testing import CliRunner

from bastion.cli import main as cli_main
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


def _top_level(app_: typer.Typer) -> set[str]:
    return set(typer.main.get_command(app_).commands)        # type: ignore[attr-defined]


def test_every_top_level_command_is_mapped_to_the_module_that_registers_it():
    # main() registers only COMMANDS[argv[1]]: a name mapped to the wrong module, or a
    # module's new command left out of the map, would fail here before it fails a user
    found = {}
    for module in cli_main.COMMAND_MODULES:
        for name in _top_level(cli_main.build((module,))):
            assert name not in found, f"{name}: registered by {found[name]} and {module}"
            found[name] = module
    assert found == cli_main.COMMANDS
    assert set(found) == set(ROOT.commands)                   # type: ignore[attr-defined]


@pytest.mark.parametrize("name", sorted(cli_main.COMMANDS))
def test_main_runs_each_command_from_its_own_module(name, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["bastion", name, "--help"])
    monkeypatch.setattr("bastion.private.set_private_umask", lambda: None)
    with pytest.raises(SystemExit) as done:
        cli_main.main()
    assert done.value.code == 0
    out = capsys.readouterr().out
    first = out.splitlines()[0]                 # under pytest the program is "python -m pytest"
    assert first.startswith("Usage: ") and f"bastion {name} " in first, out[:200]


@pytest.mark.parametrize("argv", [[], ["--help"], ["sesions"]], ids=["none", "help", "typo"])
def test_main_without_a_known_command_lists_them_all(argv, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["bastion", *argv])
    monkeypatch.setattr("bastion.private.set_private_umask", lambda: None)
    with pytest.raises(SystemExit):
        cli_main.main()
    seen = capsys.readouterr()
    text = seen.out + seen.err
    if argv == ["sesions"]:
        assert "No such command 'sesions'" in text and "Did you mean 'sessions'" in text
    else:
        assert all(f"\n  {name} " in text for name in cli_main.COMMANDS), text


def test_a_command_imports_no_other_commands_module():
    # the point of COMMANDS: `bastion ca ...` never imports the sessions module (the index's
    # query layer) nor any other command's
    probe = ("import sys; sys.argv = ['bastion', 'ca', '--help']\n"
             "from bastion.cli.main import main\n"
             "try:\n    main()\nexcept SystemExit:\n    pass\n"
             "import json; print(json.dumps([m for m in sys.modules if m.startswith('bastion.cli.')]))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert "bastion.cli.ca" in loaded
    others = {f"bastion.cli.{m}" for m in cli_main.COMMAND_MODULES} - {"bastion.cli.ca"}
    assert not others & set(loaded), loaded
