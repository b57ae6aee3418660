"""Component figures from the other benchmark modules: policy, masker, recording index.

Each component module lives in ``bench/`` and is owned by the helper who wrote the
component.  This section runs each one as a subprocess, ``python -m bench.NAME
[--quick]``, so a crash or a slow component cannot take the whole run down, keeps
its output, and picks the headline figures out of it with the patterns below.  A
module may also print one JSON object as its last line: it is kept, and a key
named like a figure below (``policy_lines_per_s``, ``masker_mb_per_s``, ...) with
a number wins over the pattern.  A missing module, a failure, or a figure not
found is reported as ``n/a`` with the reason.

Not covered: the figures' meaning (each module's docstring says what it measures).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT_S = 900
QUICK_TIMEOUT_S = 120

_NUM = r"([0-9][0-9,]*(?:\.[0-9]+)?)"

# (figure name, regex with one number group -- or a tuple of them, tried in order --, unit)
COMPONENTS: dict[str, tuple[str, list[tuple[str, str | tuple[str, ...], str]]]] = {
    "policy": ("bench.bench_policy", [
        ("policy_lines_per_s", _NUM + r"\s*(?:lines|evaluations|evals|decisions)\s*/\s*s", "lines/s"),
    ]),
    # headline: the preferred engine (listed first) on 16 KiB chunks, near the 16-32 KiB
    # channel data packets sshd sends, which is what the bastion's masker is fed
    "masker": ("bench.bench_masker", [
        ("masker_mb_per_s", (r"16 KiB chunks:\s*\n\s*\S+\s+" + _NUM + r"\s*MB/s",
                             _NUM + r"\s*MB/s"), "MB/s"),
        ("masker_4k_mb_per_s", r"\b4 KiB chunks:\s*\n\s*\S+\s+" + _NUM + r"\s*MB/s", "MB/s"),
        ("masker_64k_mb_per_s", r"64 KiB chunks:\s*\n\s*\S+\s+" + _NUM + r"\s*MB/s", "MB/s"),
    ]),
    "recording": ("bench.bench_recording", [
        ("index_inserts_per_s", r"index insert rate[^:]*:\s*" + _NUM, "commands/s"),
        ("search_worst_median_ms", r"worst median search latency:\s*" + _NUM, "ms"),
        ("search_index_rows", r"commands search over\s*" + _NUM + r"\s*commands", "commands"),
        ("recorder_text_mb_per_s", r"recorder throughput, text\s*:\s*" + _NUM, "MB/s"),
    ]),
}


def _number(text: str) -> float:
    value = float(text.replace(",", ""))
    return int(value) if value.is_integer() else value


def parse(output: str, patterns: list[tuple[str, str, str]]) -> dict:
    """Figures found in ``output``: ``{name: {"value", "unit"}}`` or ``{name: {"na"}}``."""
    figures = {}
    for name, pattern, unit in patterns:
        alternatives = (pattern,) if isinstance(pattern, str) else pattern
        m = None
        for regex in alternatives:
            m = re.search(regex, output, re.IGNORECASE)
            if m:
                break
        figures[name] = ({"value": _number(m.group(1)), "unit": unit} if m
                         else {"na": f"no figure matching /{alternatives[0]}/ in the output"})
    return figures


def _run_module(module: str, quick: bool, timeout: float) -> tuple[str, str | None]:
    """(stdout, error or None) of ``python -m module [--quick]``."""
    if not (ROOT / (module.replace(".", "/") + ".py")).exists():
        return "", f"{module} does not exist yet"
    argv = [sys.executable, "-m", module] + (["--quick"] if quick else [])
    try:
        p = subprocess.run(argv, cwd=ROOT, capture_output=True, timeout=timeout,
                           stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return "", f"{module} did not finish within {timeout:g}s"
    out = p.stdout.decode(errors="replace")
    if p.returncode != 0:
        err = p.stderr.decode(errors="replace").strip().splitlines()
        return out, f"{module} exited {p.returncode}: {err[-1][:300] if err else 'no message'}"
    return out, None


def _json_figures(output: str) -> dict | None:
    """A module may print one JSON object of figures as its last line."""
    lines = [line for line in output.strip().splitlines() if line.strip()]
    if not lines or not lines[-1].lstrip().startswith("{"):
        return None
    try:
        data = json.loads(lines[-1])
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def run(*, quick: bool = False, only: tuple[str, ...] = tuple(COMPONENTS), log=print) -> dict:
    out: dict = {}
    for name in only:
        module, patterns = COMPONENTS[name]
        output, error = _run_module(module, quick, QUICK_TIMEOUT_S if quick else TIMEOUT_S)
        entry: dict = {"module": module}
        if error:
            entry["na"] = error
        else:
            entry["figures"] = parse(output, patterns)
            extra = _json_figures(output)
            if extra:
                entry["json"] = extra
                for fig, _, unit in patterns:
                    if isinstance(extra.get(fig), (int, float)):
                        entry["figures"][fig] = {"value": extra[fig], "unit": unit}
        entry["output"] = [line.rstrip() for line in output.splitlines()][-40:]
        out[name] = entry
        log(f"  components {name}: " + (f"n/a ({entry['na']})" if "na" in entry else
            ", ".join(f"{k} {v.get('value', 'n/a')}" for k, v in entry["figures"].items())))
    return out


def figure(components: dict, name: str) -> float | None:
    """One headline figure by name from :func:`run`'s result, or None."""
    for entry in components.values():
        if not isinstance(entry, dict):
            continue
        fig = entry.get("figures", {}).get(name)
        if fig and "value" in fig:
            return fig["value"]
    return None
