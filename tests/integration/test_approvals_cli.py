"""The approver CLI in its own process, tokens from the dev issuer over real https.

A broker in the test's event loop holds requests; ``bastion approvals ...`` (a
subprocess) answers them through the shared SQLite index.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bastion.approvals import ApprovalBroker, ApprovalStore
from bastion.cli import main as cli_main
from bastion.config import load_config
from bastion.identity.principal import Principal
from bastion.policy import Action, Decision

HIDING = "rm -rf /srv/data \x1b[2K\rls -la"                 # tries to look like `ls -la`
AGENT = Principal(subject="agent-oid", tenant="", app_id="agent-app", name="deploy-bot",
                  roles=("agents",))
REVIEW = Decision(Action.REVIEW, "restarts", "systemctl restart needs approval")
BOOT = ("import typer; from bastion.cli.approvals import register; "
        "app = typer.Typer(pretty_exceptions_enable=False); register(app); app()")


def cli_argv(bastion_exe: str) -> list[str]:
    """The real `bastion` once main.py lists the module; until then the same app, booted."""
    if "approvals" in cli_main.COMMAND_MODULES:
        return [bastion_exe]
    return [sys.executable, "-c", BOOT]


@pytest.fixture
def rig(tmp_path, dev_issuer, bastion_exe, clean_env):
    policy = tmp_path / "policy.toml"
    policy.write_text(f'''
[oidc]
issuer = "{dev_issuer.issuer}"
audience = "api://bastion"
ca_bundle = "{dev_issuer.ca_path}"

[settings]
approvers = ["role:sre-leads"]
approval_window_max = "15m"
''')
    data = tmp_path / "data"
    data.mkdir()

    def user(oid, roles=("sre-leads",), **claims):
        base = {"oid": oid, "sub": oid, "roles": list(roles), "name": oid.split("-")[0].title(),
                "idtyp": "user", "azp": "approver-cli-app"}
        base.update(claims)
        return dev_issuer.mint(base)

    class Rig:
        issuer = dev_issuer
        settings = load_config(policy).settings
        argv = cli_argv(bastion_exe)
        tokens = {"alice": user("alice-oid"), "carol": user("carol-oid"),
                  "bob": user("bob-oid", roles=("agents",)),
                  # the requesting agent's own subject, through another app id
                  "self": user("agent-oid", azp="some-other-app", appid="some-other-app"),
                  "expired": user("alice-oid", exp=int(time.time()) - 3600,
                                  iat=int(time.time()) - 7200, nbf=int(time.time()) - 7200)}

        def __init__(self):
            self.policy, self.data, self.env = policy, data, dict(clean_env)

        def run(self, *args, token: str | None = "alice", stdin: str | None = None,
                env: dict | None = None) -> subprocess.CompletedProcess:
            e = dict(self.env, COLUMNS="300", **(env or {}))
            if token:
                e["BASTION_TOKEN"] = self.tokens[token]
            policy = [] if args[:2] == ("approvals", "list") else ["--policy", str(self.policy)]
            proc = subprocess.run(self.argv + list(args) + ["--data-dir", str(self.data)] + policy,
                                  env=e, input=stdin, capture_output=True, text=True, timeout=120)
            for t in self.tokens.values():
                assert t not in proc.stdout and t not in proc.stderr
            return proc

        async def arun(self, *args, token="alice") -> tuple[int, str, str]:
            e = dict(self.env, COLUMNS="300", BASTION_TOKEN=self.tokens[token])
            proc = await asyncio.create_subprocess_exec(
                *self.argv, *args, "--data-dir", str(self.data), "--policy", str(self.policy),
                env=e, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            out, err = await proc.communicate()
            return proc.returncode, out.decode(), err.decode()

    return Rig()


@pytest.fixture
async def broker(rig):
    b = ApprovalBroker.open(rig.data, rig.settings, node="cli-test")
    yield b
    b.close()


def hold(broker, line="systemctl restart nginx", timeout=300.0):
    return broker.create(principal=AGENT, target="web1", login="deploy", line=line,
                         decision=REVIEW, session_id=3, command_id=4, channel="exec",
                         timeout=timeout)


async def test_cli_approval_reaches_the_waiting_session(rig, broker):
    pending = await hold(broker)
    waiter = asyncio.ensure_future(pending.wait())
    code, out, err = await rig.arun("approvals", "approve", str(pending.id),
                                    "--reason", "ticket OPS-12")
    exited = time.monotonic()
    assert code == 0, err
    outcome = await waiter
    print(f"\nCLI answer reached the waiting broker {1000 * (time.monotonic() - exited):.0f} ms "
          "after the CLI process exited")
    assert (outcome.approved, outcome.via, outcome.approver, outcome.reason) == (
        True, "approver", "Alice (alice-oid)", "ticket OPS-12")
    assert f"request {pending.id} approved by Alice (alice-oid): ticket OPS-12" in out


async def test_cli_answers_carry_the_tokens_proof_never_the_token(rig, broker):
    """The proof the broker checks comes from the CLI's own token validation."""
    import hashlib

    from bastion.approvals.proof import AnswerProof
    assert rig.settings.approval_issuers == (rig.issuer.issuer,)
    pending = await hold(broker)
    waiter = asyncio.ensure_future(pending.wait())
    code, _out, err = await rig.arun("approvals", "approve", str(pending.id), "--reason", "ok")
    assert code == 0, err
    assert (await waiter).approved
    row = broker.store.get(pending.id)
    proof = AnswerProof.from_json(row.approver_proof)
    assert proof.token_sha256 == hashlib.sha256(rig.tokens["alice"].encode()).hexdigest()
    assert proof.issuer == rig.issuer.issuer and proof.identity().subject == "alice-oid"
    assert proof.identity().roles == ("sre-leads",) and proof.claims["aud"] == "api://bastion"
    assert proof.expires > row.answered >= proof.validated_at
    broker.store.conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
    files = list(rig.data.glob("index.sqlite*"))
    assert files
    for f in files:                         # the index and its WAL: no token, no signature
        data = f.read_bytes()
        for t in rig.tokens.values():
            assert t.encode() not in data and t.split(".")[2].encode() not in data


async def test_cli_denial_reaches_the_waiting_session(rig, broker):
    pending = await hold(broker)
    waiter = asyncio.ensure_future(pending.wait())
    code, _out, err = await rig.arun("approvals", "deny", str(pending.id), "--reason", "no",
                                     token="carol")
    assert code == 0, err
    outcome = await waiter
    assert (outcome.approved, outcome.via, outcome.approver) == (False, "approver",
                                                                 "Carol (carol-oid)")


@pytest.mark.parametrize("token, words", [
    ("self", "your own"),                 # same subject, another app id: four-eyes
    ("bob", "is not an approver"),
    ("expired", "token was rejected: expired"),
])
async def test_cli_refusals_leave_the_request_pending(rig, broker, token, words):
    pending = await hold(broker)
    proc = rig.run("approvals", "approve", str(pending.id), "--reason", "me", token=token)
    assert proc.returncode == 1
    assert words in " ".join(proc.stderr.split())
    assert broker.store.get(pending.id).status == "pending"


async def test_cli_second_answer_refused(rig, broker):
    pending = await hold(broker)
    assert rig.run("approvals", "approve", str(pending.id), "--reason", "ok").returncode == 0
    second = rig.run("approvals", "deny", str(pending.id), "--reason", "no", token="carol")
    assert second.returncode == 1 and "already approved by Alice" in second.stderr
    record = broker.store.get(pending.id)
    assert (record.status, record.approver_subject, record.answer_reason) == (
        "approved", "alice-oid", "ok")


async def test_cli_window_then_list_all_json(rig, broker):
    pending = await hold(broker)
    too_long = rig.run("approvals", "approve", str(pending.id), "--reason", "x", "--window",
                       "2h")
    assert too_long.returncode == 1 and "exceeds" in too_long.stderr
    ok = rig.run("approvals", "approve", str(pending.id), "--reason", "maintenance",
                 "--window", "10m", "--json")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["status"] == "approved"
    again = await hold(broker)
    assert again.outcome is not None and again.outcome.via == "window"
    listed = rig.run("approvals", "list", "--all", "--json", token=None)
    rows = {r["id"]: r for r in json.loads(listed.stdout)}
    assert rows[again.id]["granted_by"] == pending.id and rows[again.id]["via"] == "window"
    assert rows[pending.id]["window_until"].endswith("Z")
    assert rig.run("approvals", "revoke", str(pending.id), token="carol").returncode == 0
    assert (await hold(broker)).outcome is None


async def test_list_shows_escapes_in_full_and_inert(rig, broker):
    pending = await hold(broker, line=HIDING)
    as_json = rig.run("approvals", "list", "--json", token=None)
    assert as_json.returncode == 0, as_json.stderr
    assert "\x1b" not in as_json.stdout and "\\u001b[2K\\rls -la" in as_json.stdout
    assert json.loads(as_json.stdout)[0]["line"] == HIDING
    table = rig.run("approvals", "list", token=None)
    assert table.returncode == 0, table.stderr
    assert not any(c in table.stdout for c in "\x1b\r")
    assert "rm -rf /srv/data ␛[2K␍ls -la" in table.stdout
    assert f"{pending.id}" in table.stdout and "deploy@web1" in table.stdout


async def test_watch_once_shows_the_view(rig, broker):
    await hold(broker, line=HIDING)
    proc = rig.run("approvals", "watch", "--once")
    assert proc.returncode == 0, proc.stderr
    assert "1 pending approval request(s)" in proc.stdout
    assert "rm -rf /srv/data ␛[2K␍ls -la" in proc.stdout and "\x1b" not in proc.stdout
    assert "you: Alice (alice-oid)" in proc.stdout
    refused = rig.run("approvals", "watch", "--once", token="bob")
    assert refused.returncode == 1 and "not an approver" in refused.stderr


async def test_watch_answers_at_the_prompt(rig, broker):
    first = await hold(broker, line=HIDING)
    second = await hold(broker, line="systemctl restart db")
    waiter = asyncio.ensure_future(first.wait())
    script = f"{first.id}\nd\nnot this one\n\n{second.id}\napprove\nok go\n\nq\n"
    proc = await asyncio.get_running_loop().run_in_executor(
        None, lambda: rig.run("approvals", "watch", stdin=script))
    assert proc.returncode == 0, proc.stderr
    outcome = await waiter
    assert (outcome.approved, outcome.reason) == (False, "not this one")
    assert broker.store.get(second.id).status == "approved"
    assert f"request {first.id} denied by Alice (alice-oid): not this one" in proc.stdout
    assert f"request {second.id} approved by Alice (alice-oid): ok go" in proc.stdout
    assert "\x1b" not in proc.stdout and "␛[2K␍ls -la" in proc.stdout


async def test_watch_reports_refusals_and_goes_on(rig, broker):
    pending = await hold(broker)
    script = f"999\nnonsense\n{pending.id}\na\nmine\n\nq\n"
    proc = rig.run("approvals", "watch", stdin=script, token="self")
    assert proc.returncode == 0, proc.stderr
    assert "refused: no approval request 999" in proc.stdout
    assert "not a request id: 'nonsense'" in proc.stdout
    assert "refused:" in proc.stdout and "your own" in proc.stdout
    assert broker.store.get(pending.id).status == "pending"


# -- login -------------------------------------------------------------------------------

def test_login_device_flow_then_answer_with_the_saved_token(rig, tmp_path):
    client = rig.issuer.add_client("approver-cli", secret=False)
    proc = subprocess.Popen(rig.argv + ["login", "--client-id", client.client_id,
                                        "--policy", str(rig.policy)],
                            env=rig.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        for _ in range(600):
            codes = rig.issuer.pending_device_codes()
            if codes or proc.poll() is not None:
                break
            time.sleep(0.05)
        assert codes, proc.communicate(timeout=5)
        rig.issuer.approve_device_code(codes[0].user_code, name="Alice", oid="alice-oid",
                                       roles=["sre-leads"])
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert codes[0].user_code[:4] in err and "logged in as Alice (alice-oid)" in " ".join(
        err.split())
    saved = Path(rig.env["XDG_CACHE_HOME"]) / "bastion" / "approver-token"
    assert stat.S_IMODE(os.stat(saved).st_mode) == 0o600
    token = saved.read_text().strip()
    assert token not in out and token not in err

    store = ApprovalStore.open(rig.data)
    request = store.create(node="elsewhere", principal=AGENT, target="web1", login="deploy",
                           line="systemctl restart nginx", decision=REVIEW, session_id=None,
                           command_id=None, channel="exec", timeout=300)
    answered = rig.run("approvals", "approve", str(request.id), "--reason", "via login",
                       token=None)
    assert answered.returncode == 0, answered.stderr
    assert store.get(request.id).approver_subject == "alice-oid"

    logout = subprocess.run(rig.argv + ["logout"], env=rig.env, capture_output=True, text=True,
                            timeout=60)
    assert logout.returncode == 0 and not saved.exists()
    gone = rig.run("approvals", "approve", str(request.id), "--reason", "x", token=None)
    assert gone.returncode == 1 and "bastion login" in gone.stderr


def test_login_auto_approved_non_approver_is_warned(rig, tmp_path):
    client = rig.issuer.add_client("approver-cli-2", secret=False)
    rig.issuer.auto_approve = {"name": "Dave", "oid": "dave-oid", "roles": ["agents"]}
    target = tmp_path / "tok"
    proc = subprocess.run(rig.argv + ["login", "--client-id", client.client_id, "--policy",
                                      str(rig.policy), "--token-file", str(target)],
                          env=rig.env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "logged in as Dave (dave-oid)" in " ".join(proc.stderr.split())
    assert "cannot answer requests" in " ".join(proc.stderr.split())
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600


def test_login_unknown_client_fails_clearly(rig, tmp_path):
    proc = subprocess.run(rig.argv + ["login", "--client-id", "nope", "--policy",
                                      str(rig.policy)], env=rig.env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 1
    assert "device-code flow" in " ".join(proc.stderr.split())
