"""The benchmark report: the machine it ran on, goals checked, rich tables, the JSON file.

The JSON file has one key per section (``bulk``, ``setup``, ``echo``,
``concurrency``, ``components``), each holding figures or ``{"na": reason}``, plus
``meta`` (machine, versions, load) and ``goals`` (each goal with the measured
value and whether it was met; ``met`` is None when it could not be measured).
Goals are reported against, never enforced.

Not covered: measuring (the section modules do that).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench.components import figure

SECTIONS = ("bulk", "setup", "echo", "concurrency", "components")
PATH_LABEL = {"direct": "(a) direct", "jump": "(b) ProxyJump", "bastion": "(c) bastion"}


# -- meta ----------------------------------------------------------------------------------
def _cmd(argv: list[str]) -> str:
    try:
        p = subprocess.run(argv, capture_output=True, timeout=10, text=True)
        return (p.stdout or p.stderr).strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def _version(module: str) -> str:
    try:
        from importlib.metadata import version
        return version(module)
    except Exception:  # noqa: BLE001 - informational only
        return "unknown"


def machine_meta(quick: bool, only: tuple[str, ...]) -> dict:
    root = Path(__file__).resolve().parent.parent
    return {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "quick": quick,
        "only": list(only),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "mem_gb": _mem_gb(),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "openssh": _cmd(["ssh", "-V"]),
        "asyncssh": _version("asyncssh"),
        "cryptography": _version("cryptography"),
        "git_commit": _cmd(["git", "-C", str(root), "rev-parse", "--short", "HEAD"]),
        "git_dirty": bool(_cmd(["git", "-C", str(root), "status", "--porcelain"])),
        "loadavg_start": list(os.getloadavg()),
    }


# -- goals ---------------------------------------------------------------------------------
def _goal(name: str, measured, target: str, met: bool | None, note: str = "") -> dict:
    return {"goal": name, "measured": measured, "target": target, "met": met, "note": note}


def goals(results: dict) -> list[dict]:
    out = []
    bulk = results.get("bulk", {})
    ratios = {f"{r['kind']}": r.get("ratio_c_b") for r in bulk.get("rows", [])
              if r.get("cipher") == "default"}
    measured = [v for v in ratios.values() if v is not None]
    out.append(_goal("bulk c/b, default ciphers", ratios or None, ">= 1.0 (each kind)",
                     (min(measured) >= 1.0) if measured else None))
    setup = results.get("setup", {})
    r = setup.get("ratio_c_b_median")
    same_kex = (setup.get("modes") or {}).get("curve25519", {}).get("ratio_c_b_median")
    out.append(_goal("set-up median c/b", r, "<= 0.6", None if r is None else r <= 0.6,
                     f"with curve25519 on every hop: {_fmt(same_kex, 2)}"))
    echo = results.get("echo", {})
    added = echo.get("added_vs_jump_ms")
    out.append(_goal("added echo latency (median c - b)", added, "<= 2 ms",
                     None if added is None else added <= 2.0,
                     f"c - a: {echo.get('added_vs_direct_ms')} ms"))
    levels = [lv for lv in results.get("concurrency", {}).get("levels", [])
              if isinstance(lv.get("bastion"), dict) and "ok" in lv["bastion"]]
    if levels:
        top = max(levels, key=lambda lv: lv["agents"])
        b = top["bastion"]
        rss = (b.get("bastion") or {}).get("rss_peak_mb")
        met = b["failed"] == 0 and rss is not None and rss < 500
        out.append(_goal("concurrent agents: zero failures, RSS < 500 MB",
                         {"agents": top["agents"], "failed": b["failed"], "rss_peak_mb": rss},
                         "200 agents, 0 failed, < 500 MB",
                         met if top["agents"] >= 200 else None,
                         "" if top["agents"] >= 200 else f"only {top['agents']} agents measured"))
    else:
        out.append(_goal("concurrent agents: zero failures, RSS < 500 MB", None,
                         "200 agents, 0 failed, < 500 MB", None))
    comps = results.get("components", {})
    pol = figure(comps, "policy_lines_per_s") if isinstance(comps, dict) else None
    out.append(_goal("policy evaluations", pol, ">= 10,000 lines/s",
                     None if pol is None else pol >= 10_000))
    mask = figure(comps, "masker_mb_per_s") if isinstance(comps, dict) else None
    out.append(_goal("masker throughput", mask, ">= 150 MB/s",
                     None if mask is None else mask >= 150))
    return out


# -- output --------------------------------------------------------------------------------
def write_json(results: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, sort_keys=False) + "\n")
    return path


def _fmt(value, digits: int = 1) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _cell(entry: dict, key: str = "median", digits: int = 1) -> str:
    if not isinstance(entry, dict):
        return "n/a"
    if "na" in entry:
        return "[yellow]n/a[/]"
    return _fmt(entry.get(key), digits)


def _na_note(console: Console, section: str, data: dict) -> bool:
    if isinstance(data, dict) and "na" in data:
        console.print(f"[yellow]{section}: n/a ({data['na']})[/]")
        return True
    return False


def render(results: dict, console: Console | None = None) -> None:
    console = console or Console(width=None if sys.stdout.isatty() else 150)
    bulk = results.get("bulk", {})
    if not _na_note(console, "bulk", bulk):
        t = Table(title=f"bulk throughput, MB/s ({bulk.get('size_bytes', 0) / 1e6:g} MB, "
                        f"median of {bulk.get('reps')})")
        for col in ("transfer", "cipher", *PATH_LABEL.values(), "c/b", "c/a"):
            t.add_column(col, justify="right" if col not in ("transfer", "cipher") else "left")
        for row in bulk.get("rows", []):
            t.add_row(row["kind"], row["cipher"], *(_cell(row.get(p, {}), "mb_s") for p in PATH_LABEL),
                      _fmt(row.get("ratio_c_b"), 2), _fmt(row.get("ratio_c_a"), 2))
        console.print(t)
    setup = results.get("setup", {})
    if not _na_note(console, "setup", setup):
        t = Table(title=f"set-up: `ssh HOST true`, ms ({setup.get('runs')} runs each)")
        for col in ("key exchange", "path", "median", "p95", "min", "max", "c/b median", "c/b p95"):
            t.add_column(col, justify="left" if col in ("path", "key exchange") else "right")
        for mode, entry in (setup.get("modes") or {"default": setup}).items():
            label = {"default": "client defaults", "curve25519": "curve25519 on every hop"}.get(mode, mode)
            for i, (p, plabel) in enumerate(PATH_LABEL.items()):
                e = entry.get("paths", {}).get(p, {})
                last = i == len(PATH_LABEL) - 1
                t.add_row(label if i == 0 else "", plabel, _cell(e), _cell(e, "p95"), _cell(e, "min"),
                          _cell(e, "max"), _fmt(entry.get("ratio_c_b_median"), 2) if last else "",
                          _fmt(entry.get("ratio_c_b_p95"), 2) if last else "")
        ask = setup.get("askpass_round_ms") or {}
        t.add_row("", "one bastion-askpass round", _fmt(ask.get("median")), _fmt(ask.get("p95")),
                  _fmt(ask.get("min")), _fmt(ask.get("max")), "", "")
        console.print(t)
    echo = results.get("echo", {})
    if not _na_note(console, "echo", echo):
        t = Table(title=f"keystroke echo in a pty shell, ms ({echo.get('keys')} keys each); added "
                        f"c-b {_fmt(echo.get('added_vs_jump_ms'), 3)}, "
                        f"c-a {_fmt(echo.get('added_vs_direct_ms'), 3)}")
        for col in ("path", "median", "p99", "max"):
            t.add_column(col, justify="left" if col == "path" else "right")
        for p, label in PATH_LABEL.items():
            e = echo.get("paths", {}).get(p, {})
            if isinstance(e, dict) and "na" in e:
                t.add_row(label, f"[yellow]n/a: {e['na'][:70]}[/]", "", "")
            else:
                t.add_row(label, _cell(e, "median", 3), _cell(e, "p99", 3), _cell(e, "max", 3))
        console.print(t)
    conc = results.get("concurrency", {})
    if not _na_note(console, "concurrency", conc):
        t = Table(title=f"concurrency: agents at once x {conc.get('commands_per_agent')} commands "
                        "on one -J session each")
        for col in ("agents", "path", "ok", "p50 ms", "p99 ms", "open p50 ms", "wall s",
                    "bastion peak RSS MB", "bastion CPU s"):
            t.add_column(col, justify="right" if col not in ("path",) else "left")
        for lv in conc.get("levels", []):
            for p in ("jump", "bastion"):
                r = lv.get(p)
                if not isinstance(r, dict):
                    continue
                if "na" in r:
                    t.add_row(str(lv["agents"]), PATH_LABEL[p], f"[yellow]n/a: {r['na'][:60]}[/]",
                              "", "", "", "", "", "")
                    continue
                b = r.get("bastion") or {}
                okc = f"{r['ok']}/{r['commands']}"
                t.add_row(str(lv["agents"]), PATH_LABEL[p],
                          okc if r["failed"] == 0 else f"[red]{okc}[/]",
                          _fmt(r["command_ms"].get("median")), _fmt(r["command_ms"].get("p99")),
                          _fmt(r["session_open_ms"].get("median")), _fmt(r.get("wall_s"), 2),
                          _fmt(b.get("rss_peak_mb")) if b else "", _fmt(b.get("cpu_s"), 2) if b else "")
        console.print(t)
    comps = results.get("components", {})
    if not _na_note(console, "components", comps):
        t = Table(title="components (bench/bench_*.py)")
        for col in ("component", "figure", "value"):
            t.add_column(col, justify="right" if col == "value" else "left")
        for name, entry in comps.items():
            if not isinstance(entry, dict):
                continue
            if "na" in entry:
                t.add_row(name, "", f"[yellow]n/a: {entry['na'][:70]}[/]")
                continue
            for fig, v in entry.get("figures", {}).items():
                t.add_row(name, fig, f"{_fmt(v['value'])} {v['unit']}" if "value" in v
                          else "[yellow]n/a[/]")
        console.print(t)
    t = Table(title="goals (reported, never gates)")
    for col in ("goal", "measured", "target", "met"):
        t.add_column(col)
    for g in results.get("goals", []):
        met = {True: "[green]yes[/]", False: "[red]no[/]", None: "[yellow]n/a[/]"}[g["met"]]
        measured = g["measured"]
        if isinstance(measured, dict):
            measured = ", ".join(f"{k} {_fmt(v, 2)}" for k, v in measured.items())
        t.add_row(g["goal"], _fmt(measured, 3) if not isinstance(measured, str) else measured,
                  g["target"], met + (f" ({g['note']})" if g.get("note") else ""))
    console.print(t)
