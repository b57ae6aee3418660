"""`bastion mask` run as a real process (through a typer app that calls register())."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from pathlib import Path

from bastion.proto.masker import mask_bytes

APP = "from bastion.cli.main import app; app()"     # the bastion CLI as shipped
CORPUS = Path(__file__).parents[1] / "unit" / "mask_corpus"


def run(args, data: bytes, tmp_path: Path, **kw) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "BASTION_POLICY"}
    return subprocess.run([sys.executable, "-c", APP, "mask", *args], input=data, capture_output=True,
                          cwd=tmp_path, env=env, timeout=60, **kw)


def test_masks_stdin_with_builtins_when_no_policy(tmp_path):
    data = (CORPUS / "secrets" / "env_dump.txt").read_bytes()
    res = run([], data, tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout == mask_bytes(data)
    assert b"[MASKED:aws-secret-key]" in res.stdout
    assert b"no policy file" in res.stderr


def test_policy_masks_are_applied(tmp_path):
    policy = tmp_path / "p.toml"
    policy.write_text('[[masks]]\nname = "employee-id"\nregex = \'EMP-[0-9]{6}\'\n')
    res = run(["--policy", str(policy)], b"owner EMP-123456 DB_PASSWORD=x\n", tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout == b"owner [MASKED:employee-id] DB_PASSWORD=[MASKED:password]\n"
    assert res.stderr == b""


def test_invalid_policy_fails_closed(tmp_path):
    policy = tmp_path / "p.toml"
    policy.write_text('[[masks]]\nname = "bad"\nregex = \'EMP-[\'\n')
    res = run(["--policy", str(policy)], b"EMP-123456\n", tmp_path)
    assert res.returncode == 2
    assert res.stdout == b""
    assert b"regular expression" in res.stderr


def test_bytes_pass_through_and_large_input(tmp_path):
    ordinary = b"".join(p.read_bytes() for p in sorted((CORPUS / "ordinary").iterdir()))
    data = (ordinary + bytes(range(256)) + b"\n") * 40 + b"tail ghp_" + b"a1" * 18 + b"\n"
    res = run([], data, tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout == data.replace(b"ghp_" + b"a1" * 18, b"[MASKED:github-token]")


def test_quiet_input_is_flushed_without_eof(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", APP, "mask"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=tmp_path)
    try:
        proc.stdin.write(b"Enter password: ")
        proc.stdin.flush()
        deadline = time.monotonic() + 20
        got = b""
        while got != b"Enter password: " and time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
            if ready:
                got += os.read(proc.stdout.fileno(), 100)
        assert got == b"Enter password: "      # the held-back prompt came out with stdin still open
    finally:
        proc.stdin.close()
        proc.wait(timeout=20)
        proc.stdout.close()


def test_help_ends_with_an_example(tmp_path):
    res = subprocess.run([sys.executable, "-c", APP, "mask", "--help"], capture_output=True,
                         cwd=tmp_path, timeout=60, env={**os.environ, "COLUMNS": "200"})
    assert res.returncode == 0
    lines = [line.strip() for line in res.stdout.decode().splitlines() if line.strip()]
    example = next(i for i, line in enumerate(lines) if line.startswith("bastion mask --policy"))
    assert lines[example - 1] == "Example:"
    assert "[[masks]]" in res.stdout.decode()
