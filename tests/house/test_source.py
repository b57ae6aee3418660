"""Lint (ruff) and types (mypy) on bastion/, against a baseline that may only shrink (issue 14).

``baseline.json`` holds, per file, how many findings it has today: ruff per rule, mypy per
file.  A file with more fails (fix the new finding); a file with fewer fails too, until the
baseline is lowered with ``python -m tests.house.test_source --update`` -- so the
count only ever goes down.  The rule set and the mypy settings are in pyproject.toml
(``[tool.ruff]``, ``[tool.mypy]``: strict on the pure cores).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BASELINE = Path(__file__).with_name("baseline.json")
BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    path = BIN / name
    if not path.exists():
        found = shutil.which(name)
        if not found:
            pytest.fail(f"{name} is not installed: run scripts/setup.sh --test")
        return found
    return str(path)


def ruff_counts() -> Counter:
    p = subprocess.run([_tool("ruff"), "check", "--output-format", "json", "--no-cache",
                        "bastion"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    if p.returncode not in (0, 1):
        raise AssertionError(f"ruff failed: {p.stderr}")
    found = json.loads(p.stdout or "[]")
    return Counter(f"{Path(f['filename']).relative_to(ROOT)}:{f['code']}" for f in found)


MYPY_LINE = re.compile(r"^(bastion/[^:]+\.py):\d+: error:")


def mypy_counts() -> Counter:
    env = {**os.environ, "MYPY_CACHE_DIR": str(ROOT / ".mypy_cache")}
    p = subprocess.run([_tool("mypy"), "bastion"], cwd=ROOT, capture_output=True, text=True,
                       timeout=600, env=env)
    if p.returncode not in (0, 1) or "error: " not in p.stdout and p.returncode == 1:
        raise AssertionError(f"mypy failed: {p.stdout[-2000:]}{p.stderr[-2000:]}")
    return Counter(m.group(1) for line in p.stdout.splitlines()
                   if (m := MYPY_LINE.match(line)))


def _compare(kind: str, now: Counter) -> None:
    base = Counter(json.loads(BASELINE.read_text())[kind])
    worse = {k: (base.get(k, 0), n) for k, n in now.items() if n > base.get(k, 0)}
    better = {k: (n, now.get(k, 0)) for k, n in base.items() if now.get(k, 0) < n}
    assert not worse, (f"new {kind} findings (baseline -> now), fix them: {worse}; "
                       f"see `{_tool(kind)} ...` output for where")
    assert not better, (f"{kind} findings went down {better}: lower the baseline with "
                        f"`python -m tests.house.test_source --update`")


def test_ruff_finds_nothing_new():
    _compare("ruff", ruff_counts())


def test_mypy_finds_nothing_new():
    _compare("mypy", mypy_counts())


if __name__ == "__main__":
    if sys.argv[1:] == ["--update"]:
        BASELINE.write_text(json.dumps({"ruff": dict(sorted(ruff_counts().items())),
                                        "mypy": dict(sorted(mypy_counts().items()))},
                                       indent=1) + "\n")
        print(f"wrote {BASELINE}")
    else:
        print(__doc__)
