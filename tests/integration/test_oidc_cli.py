"""The CLI end to end: `bastion dev-issuer` serving, the printed `bastion token` line
working as printed, `bastion askpass`.  Subprocesses of this venv's console scripts."""

from __future__ import annotations

import shlex
import signal
import subprocess

import pytest

from bastion.config import OidcConfig
from bastion.identity.oidc import TokenValidator


def read_until(proc: subprocess.Popen, marker: str) -> list[str]:
    lines = []
    for line in proc.stdout:                        # blocks until the issuer prints
        lines.append(line.rstrip("\n"))
        if marker in line:
            return lines
    raise AssertionError("dev-issuer exited early: " + "\n".join(lines) + proc.stderr.read())


async def test_dev_issuer_cli_serves_and_its_token_line_works(bastion_exe, clean_env, tmp_path):
    state = tmp_path / "issuer"
    proc = subprocess.Popen([bastion_exe, "dev-issuer", "--state-dir", str(state), "--port", "0",
                             "--add-client", "agent1", "--role", "agents"],
                            env=clean_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        lines = read_until(proc, "Ctrl-C to stop.")
        issuer = next(l.split()[-1] for l in lines if l.startswith("dev issuer:"))
        ca = next(l.split()[-1] for l in lines if l.startswith("CA:"))
        token_line = next(l.strip() for l in lines if l.strip().startswith("token: bastion token"))
        argv = shlex.split(token_line.removeprefix("token: "))
        argv[0] = bastion_exe
        got = subprocess.run(argv + ["--no-cache"], env=clean_env, capture_output=True, text=True,
                             timeout=60)
        assert got.returncode == 0, got.stderr
        config = OidcConfig(issuer=issuer, audience=("api://bastion",), ca_bundle=ca)
        principal = await TokenValidator(config).validate(got.stdout.strip())
        assert principal.roles == ("agents",) and principal.name == "agent1"
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "dev issuer stopped" in err


def test_dev_issuer_cli_is_loopback_only(bastion_exe, clean_env, tmp_path):
    proc = subprocess.run([bastion_exe, "dev-issuer", "--state-dir", str(tmp_path / "s"),
                           "--host", "0.0.0.0"], env=clean_env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2 and "loopback" in proc.stderr


@pytest.mark.parametrize("prompt, code, out", [
    ("OIDC token: ", 0, "a" * 1000 + "\n"),
    ("OIDC token (continued at byte 1000): ", 0, "b" * 200 + "\n"),
    ("Enter passphrase for key 'k': ", 1, ""),
])
def test_bastion_askpass_command(prompt, code, out, bastion_exe, clean_env):
    env = dict(clean_env, BASTION_TOKEN="a" * 1000 + "b" * 200)
    proc = subprocess.run([bastion_exe, "askpass", prompt], env=env, capture_output=True,
                          text=True, timeout=60)
    assert (proc.returncode, proc.stdout) == (code, out)


@pytest.mark.parametrize("command", ["token", "askpass", "dev-issuer"])
def test_help_ends_with_an_example(command, bastion_exe, clean_env):
    proc = subprocess.run([bastion_exe, command, "--help"], env=dict(clean_env, COLUMNS="200"),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "Example: " in proc.stdout and "bastion " + command in proc.stdout
