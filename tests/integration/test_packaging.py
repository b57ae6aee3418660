"""packaging/bastion.service: systemd accepts it, its hardening is there, and its ExecStart
is a command line `bastion serve` parses (so a renamed flag cannot break the unit silently)."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main

from bastion.cli.main import app

UNIT = Path(__file__).resolve().parents[2] / "packaging" / "bastion.service"


def _directives() -> dict[str, list[str]]:
    text = UNIT.read_text(encoding="utf-8").replace("\\\n", " ")
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "[")) and "=" in line:
            key, value = line.split("=", 1)
            out.setdefault(key, []).append(value)
    return out


def test_hardening_directives():
    d = _directives()
    for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
                       "PrivateTmp": "yes", "UMask": "0077", "User": "bastion",
                       "StateDirectoryMode": "0700"}.items():
        assert d.get(key) == [value], key
    assert int(d["LimitNOFILE"][0]) >= 65536
    assert d["CapabilityBoundingSet"] == [""]
    # the passphrase is a credential file, never an environment value
    assert any(v.startswith("vault-passphrase:") for v in d["LoadCredential"])
    assert d["Environment"] == ["BASTION_VAULT_PASSPHRASE_FILE=%d/vault-passphrase"]


def test_exec_start_is_a_valid_serve_command_line():
    argv = shlex.split(_directives()["ExecStart"][0])
    assert argv[0].endswith("/bastion") and argv[1] == "serve"
    serve = typer.main.get_command(app).commands["serve"]   # type: ignore[attr-defined]
    ctx = serve.make_context("serve", argv[2:])             # raises on an unknown flag
    assert ctx.params["log_format"] == "json"
    assert ctx.params["listen"] == "0.0.0.0:2222"


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_systemd_analyze_verify(tmp_path):
    unit = tmp_path / "bastion.service"
    exe = str(Path(sys.executable).parent / "bastion")
    unit.write_text(UNIT.read_text(encoding="utf-8").replace("/opt/bastion/.venv/bin/bastion", exe))
    r = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True,
                       timeout=60, cwd=tmp_path)
    problems = [line for line in (r.stdout + r.stderr).splitlines() if "bastion.service" in line]
    assert r.returncode == 0 and not problems, r.stdout + r.stderr
