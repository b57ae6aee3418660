"""bastion-askpass: which prompts it answers, with what, and where the token comes from."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bastion.identity.askpass import EXIT_NO_TOKEN, EXIT_NOT_OURS, NoToken, answer, token_from_env
from bastion.identity.chunking import TokenAssembler

TOKEN = "".join("abcdefghij"[i % 10] if i % 97 else "." for i in range(2500))
ASKPASS = Path(sys.executable).parent / "bastion-askpass"


@pytest.mark.parametrize("prompt, expected", [
    ("OIDC token: ", TOKEN[0:1000]),
    ("(agent@127.0.0.1) OIDC token: ", TOKEN[0:1000]),
    ("(agent@127.0.0.1) OIDC token (continued at byte 1000): ", TOKEN[1000:2000]),
    ("OIDC token (continued at byte 2000): ", TOKEN[2000:2500]),
    ("OIDC token (continued at byte 3000): ", ""),
])
def test_answers_our_prompts(prompt, expected):
    assert answer(prompt, {"BASTION_TOKEN": TOKEN}) == (0, expected)


@pytest.mark.parametrize("prompt", [
    "Enter passphrase for key '/root/.ssh/id_ed25519': ",
    "Are you sure you want to continue connecting (yes/no/[fingerprint])? ",
    "deploy@web1's password: ",
    "Verification code: ",
    "OIDC token (continued at byte 1500): ",
    "",
])
def test_refuses_other_prompts(prompt):
    assert answer(prompt, {"BASTION_TOKEN": TOKEN}) == (EXIT_NOT_OURS, "")


def test_token_file(tmp_path):
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    assert token_from_env({"BASTION_TOKEN_FILE": str(path)}) == TOKEN
    assert token_from_env({"BASTION_TOKEN": "direct", "BASTION_TOKEN_FILE": str(path)}) == "direct"


@pytest.mark.parametrize("env, words", [
    ({}, "BASTION_TOKEN"),
    ({"BASTION_TOKEN_FILE": "/nonexistent/token"}, "cannot read"),
    ({"BASTION_CLIENT_ID": "x"}, "BASTION_AUTHORITY"),      # incomplete msal settings
])
def test_no_token(env, words):
    with pytest.raises(NoToken) as info:
        token_from_env(env)
    assert words in str(info.value)


def test_empty_token_file(tmp_path):
    path = tmp_path / "token"
    path.write_text("\n")
    with pytest.raises(NoToken, match="empty"):
        token_from_env({"BASTION_TOKEN_FILE": str(path)})


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
    env.update(extra)
    return env


def _askpass(prompt: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([str(ASKPASS), prompt], env=env, capture_output=True, text=True,
                          timeout=30)


@pytest.mark.skipif(not ASKPASS.exists(), reason="bastion-askpass not installed in this venv")
def test_subprocess_rounds_reassemble_the_token():
    """Spawned once per round like OpenSSH does; the server side reassembles the token."""
    env = _env(BASTION_TOKEN=TOKEN)
    asm = TokenAssembler()
    prompt = asm.prompt
    while prompt is not None:
        proc = _askpass("(agent@127.0.0.1) " + prompt, env)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.endswith("\n") and len(proc.stdout) <= 1023
        prompt = asm.feed(proc.stdout.rstrip("\r\n"))     # what readpass.c does
    assert asm.token.reveal() == TOKEN and asm.rounds == 3


@pytest.mark.skipif(not ASKPASS.exists(), reason="bastion-askpass not installed in this venv")
def test_subprocess_refuses_foreign_prompt_and_missing_token():
    proc = _askpass("Enter passphrase for key 'id': ", _env(BASTION_TOKEN=TOKEN))
    assert proc.returncode == EXIT_NOT_OURS and proc.stdout == ""
    assert TOKEN[:50] not in proc.stderr
    proc = _askpass("OIDC token: ", _env())
    assert proc.returncode == EXIT_NO_TOKEN and proc.stdout == ""
    assert "BASTION_TOKEN" in proc.stderr


def test_askpass_imports_stay_light():
    """Spawned once per round: no msal, jwt, typer, rich, pydantic or cryptography on the way."""
    code = ("import sys, bastion.identity.askpass; "
            "print(','.join(m for m in ('msal','jwt','typer','rich','cryptography','requests',"
            "'pydantic','asyncio') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=30, env=_env())
    assert out.returncode == 0 and out.stdout.strip() == ""
