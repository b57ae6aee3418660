"""msal against the dev issuer, unchanged: `bastion token`, certificates, the cache,
device code, and bastion-askpass acquiring its token itself.  Real https on 127.0.0.1."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import msal
import pytest

from bastion.errors import TokenRejected
from bastion.identity.acquire import make_session
from bastion.identity.chunking import TokenAssembler
from bastion.identity.oidc import TokenValidator


def run_token(exe, issuer, client, env, *extra, credential=None):
    credential = credential or ["--client-secret-file", str(client.secret_file)]
    args = [exe, "token", "--client-id", client.client_id, "--authority", issuer.authority,
            *credential, "--scope", "api://bastion/.default", *extra]
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)


async def test_bastion_token_with_secret(dev_issuer, agent_client, bastion_exe, clean_env,
                                         tmp_path):
    cache = tmp_path / "cache" / "msal.json"
    proc = run_token(bastion_exe, dev_issuer, agent_client, clean_env,
                     "--ca-bundle", str(dev_issuer.ca_path), "--cache", str(cache))
    assert proc.returncode == 0, proc.stderr
    token = proc.stdout.strip()
    assert proc.stdout == token + "\n" and token.count(".") == 2
    principal = await TokenValidator(dev_issuer.oidc_config()).validate(token)
    assert principal.subject == agent_client.oid and principal.roles == ("agents",)
    assert principal.app_id == agent_client.client_id
    assert token not in proc.stderr

    # Cached: the same token again, and the token endpoint was hit only once.
    assert dev_issuer.hits["token"] == 1
    again = run_token(bastion_exe, dev_issuer, agent_client, clean_env,
                      "--ca-bundle", str(dev_issuer.ca_path), "--cache", str(cache))
    assert again.returncode == 0 and again.stdout.strip() == token
    assert dev_issuer.hits["token"] == 1
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600
    # The issuer's state dir holds no issued token.
    state = b"".join(p.read_bytes() for p in dev_issuer.state_dir.rglob("*") if p.is_file())
    assert token.encode() not in state and token.split(".")[2].encode() not in state


async def test_bastion_token_with_certificate(dev_issuer, agent_client, bastion_exe, clean_env):
    proc = run_token(bastion_exe, dev_issuer, agent_client, clean_env,
                     "--ca-bundle", str(dev_issuer.ca_path), "--no-cache",
                     credential=["--certificate", str(agent_client.certificate_file)])
    assert proc.returncode == 0, proc.stderr
    principal = await TokenValidator(dev_issuer.oidc_config()).validate(proc.stdout.strip())
    assert principal.claims["azpacr"] == "2"          # authenticated by certificate
    assert not list(Path(clean_env["XDG_CACHE_HOME"]).rglob("*.json"))    # --no-cache


def test_certificate_not_registered_is_refused(dev_issuer, agent_client, bastion_exe, clean_env):
    other = dev_issuer.add_client("other", certificate=True)
    proc = run_token(bastion_exe, dev_issuer, agent_client, clean_env,
                     "--ca-bundle", str(dev_issuer.ca_path), "--no-cache",
                     credential=["--certificate", str(other.certificate_file)])
    assert proc.returncode != 0 and proc.stdout == ""
    assert "invalid_client" in proc.stderr


@pytest.mark.parametrize("case, words", [
    ("wrong secret", "invalid_client"),
    ("no ca bundle", "--ca-bundle"),
    ("unknown client", "unauthorized_client"),
    ("two credentials", "give one credential"),
    ("no credential", "no credential given"),
])
def test_bastion_token_errors(case, words, dev_issuer, agent_client, bastion_exe, clean_env,
                              tmp_path):
    wrong = tmp_path / "wrong.secret"
    wrong.write_text("not-the-secret\n")
    ca = ["--ca-bundle", str(dev_issuer.ca_path), "--no-cache"]
    if case == "wrong secret":
        proc = run_token(bastion_exe, dev_issuer, agent_client, clean_env, *ca,
                         credential=["--client-secret-file", str(wrong)])
    elif case == "no ca bundle":
        proc = run_token(bastion_exe, dev_issuer, agent_client, clean_env, "--no-cache")
    elif case == "unknown client":
        proc = subprocess.run(
            [bastion_exe, "token", "--client-id", "nope", "--authority", dev_issuer.authority,
             "--client-secret-file", str(wrong), *ca],
            env=clean_env, capture_output=True, text=True, timeout=60)
    elif case == "two credentials":
        proc = run_token(bastion_exe, dev_issuer, agent_client, clean_env, *ca,
                         "--certificate", str(agent_client.certificate_file))
    else:
        proc = subprocess.run([bastion_exe, "token", "--client-id", "x", "--authority",
                               dev_issuer.authority], env=clean_env, capture_output=True,
                              text=True, timeout=60)
    assert proc.returncode != 0 and proc.stdout == ""
    assert words in " ".join(proc.stderr.split())
    assert "not-the-secret" not in proc.stderr and agent_client.secret.reveal() not in proc.stderr


async def test_device_code_flow_with_msal(dev_issuer, agent_client):
    session = make_session(str(dev_issuer.ca_path), 30)
    app = msal.PublicClientApplication(agent_client.client_id, authority=dev_issuer.authority,
                                       http_client=session, instance_discovery=False)
    flow = app.initiate_device_flow(scopes=["api://bastion/access"])
    assert "user_code" in flow, flow
    assert [c.user_code for c in dev_issuer.pending_device_codes()] == \
        [flow["user_code"].replace("-", "")]
    pending = app.acquire_token_by_device_flow(flow, exit_condition=lambda f: True)
    assert pending.get("error") == "authorization_pending"

    dev_issuer.approve_device_code(flow["user_code"], name="Alice Approver", oid="alice-oid",
                                   roles=["approvers"], groups=["ops"])
    flow["latest_attempt_at"] = 0
    result = app.acquire_token_by_device_flow(flow, exit_condition=lambda f: True)
    assert "access_token" in result, result
    principal = await TokenValidator(dev_issuer.oidc_config()).validate(result["access_token"])
    assert (principal.subject, principal.name, principal.roles, principal.groups) == (
        "alice-oid", "Alice Approver", ("approvers",), ("ops",))
    assert principal.claims["scp"] == "access" and principal.claims["idtyp"] == "user"
    # A device code is good for one token only.
    reused = app.acquire_token_by_device_flow(dict(flow, latest_attempt_at=0),
                                              exit_condition=lambda f: True)
    assert reused.get("error") == "invalid_grant"


def test_device_code_denied(dev_issuer, agent_client):
    session = make_session(str(dev_issuer.ca_path), 30)
    app = msal.PublicClientApplication(agent_client.client_id, authority=dev_issuer.authority,
                                       http_client=session, instance_discovery=False)
    flow = app.initiate_device_flow(scopes=["api://bastion/access"])
    dev_issuer.deny_device_code(flow["user_code"])
    result = app.acquire_token_by_device_flow(flow, exit_condition=lambda f: True)
    assert result.get("error") == "access_denied"
    with pytest.raises(KeyError):
        dev_issuer.approve_device_code(flow["user_code"])


async def test_askpass_acquires_with_msal(dev_issuer, agent_client, clean_env, tmp_path):
    """bastion-askpass with only msal settings: every round sees the same (cached) token."""
    askpass = Path(sys.executable).parent / "bastion-askpass"
    if not askpass.exists():
        pytest.skip("bastion-askpass not installed in this venv")
    env = dict(clean_env, BASTION_CLIENT_ID=agent_client.client_id,
               BASTION_AUTHORITY=dev_issuer.authority,
               BASTION_CLIENT_SECRET_FILE=str(agent_client.secret_file),
               BASTION_CA_BUNDLE=str(dev_issuer.ca_path),
               BASTION_TOKEN_CACHE=str(tmp_path / "askpass-cache.json"))
    # Make the issued token longer than one chunk, like an Entra token.
    roles = [f"role-{i:04d}" for i in range(120)]
    dev_issuer.clients.get(agent_client.client_id).roles = tuple(roles)
    asm = TokenAssembler()
    prompt = asm.prompt
    while prompt is not None:
        proc = subprocess.run([str(askpass), f"(agent@127.0.0.1) {prompt}"], env=env,
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        prompt = asm.feed(proc.stdout.rstrip("\n"))
    assert asm.rounds >= 3
    assert dev_issuer.hits["token"] == 1
    principal = await TokenValidator(dev_issuer.oidc_config()).validate(asm.token)
    assert principal.roles == tuple(roles)


async def test_wrong_audience_scope_gives_a_token_the_bastion_refuses(dev_issuer, agent_client,
                                                                     bastion_exe, clean_env):
    proc = subprocess.run(
        [bastion_exe, "token", "--client-id", agent_client.client_id, "--authority",
         dev_issuer.authority, "--client-secret-file", str(agent_client.secret_file),
         "--ca-bundle", str(dev_issuer.ca_path), "--no-cache", "--scope", "api://other/.default"],
        env=clean_env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    with pytest.raises(TokenRejected, match="wrong audience"):
        await TokenValidator(dev_issuer.oidc_config()).validate(proc.stdout.strip())


def test_clients_file_holds_no_secret(dev_issuer, agent_client):
    data = json.loads((dev_issuer.state_dir / "clients.json").read_text())
    assert agent_client.secret.reveal() not in json.dumps(data)
    assert stat.S_IMODE(agent_client.secret_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(agent_client.certificate_file.stat().st_mode) == 0o600
    assert stat.S_IMODE((dev_issuer.state_dir / "signing-key.pem").stat().st_mode) == 0o600
