"""Tables of ``python -m bench.scaling``: the sizing table, set-up, approvals, bulk, parallel
bulk and the bulk aims.

Not covered: measuring (bench/scaling.py); the JSON holds every figure shown here.
"""

from __future__ import annotations

import sys

from rich.console import Console
from rich.table import Table

from bench.report import _fmt


def path_label(run: dict) -> str:
    if run["path"] == "jump":
        return "ProxyJump (OpenSSH sshd)"
    return f"bastion, {run['backend']}, --workers {run['workers']}"


def level_line(run: dict) -> str:
    """One log line for a finished level."""
    if "na" in run:
        return f"  {path_label(run)}: n/a ({run['na']})"
    b = run.get("bastion") or {}
    extra = ""
    if run["path"] == "bastion":
        extra = (f", indexed {run.get('indexed_distinct')}/{run['commands']}, "
                 f"RSS peak {b.get('rss_peak_mb')} MB, CPU {b.get('cpu_s')} s"
                 + (f", PostgreSQL CPU {run['postgresql_cpu_s']} s" if "postgresql_cpu_s" in run else ""))
    errors = f"; errors: {run['errors'][:3]}" if run.get("errors") else ""
    return (f"  {path_label(run)}: {run['ok']}/{run['commands']} ok, command p50/p99 "
            f"{run['command_ms']['median']}/{run['command_ms']['p99']} ms, open p50/p99 "
            f"{run['session_open_ms']['median']}/{run['session_open_ms']['p99']} ms, "
            f"wall {run['wall_s']} s{extra}{errors}")


def render(results: dict, console: Console | None = None) -> None:
    console = console or Console(width=None if sys.stdout.isatty() else 170)
    meta = results.get("meta", {})
    conc = results.get("concurrency") or {}
    if "na" in conc:
        console.print(f"[yellow]concurrency: n/a ({conc['na']})[/]")
    else:
        t = Table(title=f"sizing: {conc.get('agents')} agents at once x "
                        f"{conc.get('commands_per_agent')} commands (one -J session each)")
        for col in ("path", "ok", "failed", "indexed", "cmd p50 ms", "cmd p99 ms", "open p50 ms",
                    "open p99 ms", "wall s", "RSS peak MB", "CPU s", "CPU ms/cmd", "PG CPU s"):
            t.add_column(col, justify="left" if col == "path" else "right")
        for r in conc.get("runs", []):
            if "na" in r:
                t.add_row(path_label(r), f"[yellow]n/a: {r['na'][:80]}[/]", *[""] * 11)
                continue
            b = r.get("bastion") or {}
            failed = r.get("failed_total", r["failed"])
            t.add_row(path_label(r), f"{r['ok']}/{r['commands']}",
                      f"[red]{failed}[/]" if failed else "0",
                      _fmt(r.get("indexed_distinct")) if r["path"] == "bastion" else "",
                      _fmt(r["command_ms"]["median"]), _fmt(r["command_ms"]["p99"]),
                      _fmt(r["session_open_ms"]["median"]), _fmt(r["session_open_ms"]["p99"]),
                      _fmt(r["wall_s"], 1), _fmt(b.get("rss_peak_mb")), _fmt(b.get("cpu_s"), 1),
                      _fmt(b.get("cpu_ms_per_command"), 2), _fmt(r.get("postgresql_cpu_s"), 1))
        console.print(t)
    setup = results.get("setup") or {}
    if "na" in setup:
        console.print(f"[yellow]setup: n/a ({setup['na']})[/]")
    else:
        t = Table(title=f"set-up: `ssh HOST true`, ms ({setup.get('runs')} runs each, interleaved)")
        for col in ("path", "p50", "p95", "p99", "max", "failed", "p50 / ProxyJump"):
            t.add_column(col, justify="left" if col == "path" else "right")
        paths = setup.get("paths", {})
        base = (paths.get("jump") or {}).get("median")
        for name, e in paths.items():
            rel = e["median"] / base if base and e.get("median") else None
            t.add_row(name, _fmt(e.get("median")), _fmt(e.get("p95")), _fmt(e.get("p99")),
                      _fmt(e.get("max")), str(e.get("failed")), _fmt(rel, 2))
        console.print(t)
    appr = results.get("approvals") or {}
    if "na" in appr:
        console.print(f"[yellow]approvals: n/a ({appr['na']})[/]")
    else:
        t = Table(title=f"approvals: answer CLI start -> held command ran, ms ({appr.get('rounds')} each)")
        for col in ("backend", "ran p50", "ran p90", "answering CLI p50"):
            t.add_column(col, justify="left" if col == "backend" else "right")
        for key, label in (("sqlite_one_node", "SQLite, one node (poll 0.2 s)"),
                           ("postgresql_a_to_b", "PostgreSQL, held on A, answered on B (NOTIFY)")):
            e = appr.get(key) or {}
            t.add_row(label, _fmt(e.get("ran_p50_ms")), _fmt(e.get("ran_p90_ms")),
                      _fmt(e.get("cli_p50_ms")))
        console.print(t)
    render_bulk(results.get("bulk"), console)
    render_parallel(results.get("parallel"), console)
    render_aims(results.get("aims"), console)
    console.print(f"load average: start {meta.get('loadavg_start')}, end {meta.get('loadavg_end')}")


def _ratio_key(name: str) -> tuple[str, str]:
    """(JSON key, column title) of a bulk path's ratio to ProxyJump."""
    if "/" not in name:                                    # the relay alone
        return f"{name}/jump", f"{name} / jump"
    backend = name.split("/", 1)[1]
    return f"c_b/{backend}", f"c/b {backend}"


def _absent(section: dict | None, name: str, console: Console) -> bool:
    """True if the section was not run (nothing printed) or failed (its reason printed)."""
    if section and "na" in section:
        console.print(f"[yellow]{name}: n/a ({section['na']})[/]")
    return not section or "na" in section


def render_bulk(bulk: dict | None, console: Console) -> None:
    if _absent(bulk, "bulk", console):
        return
    assert bulk is not None
    names = bulk["paths"]
    t = Table(title=f"bulk, MB/s ({bulk['size_bytes'] // 1_000_000} MB, median of "
                    f"{bulk['reps']}, recording and masking on; relay: neither) and ratios to "
                    "ProxyJump")
    for col in ("transfer", "cipher", *names, *(_ratio_key(n)[1] for n in names[1:]), "aim"):
        t.add_column(col, justify="left" if col in ("transfer", "cipher") else "right")
    for r in bulk["rows"]:
        t.add_row(r["kind"], r["cipher"],
                  *(_fmt(r[n].get("mb_s")) if "mb_s" in r[n] else "[yellow]n/a[/]" for n in names),
                  *(_fmt(r.get(_ratio_key(n)[0]), 2) for n in names[1:]),
                  _fmt(r.get("aim_c_b"), 2))
    console.print(t)
    cols = [(n, label) for n in names for label in
            next((r[n]["cpu_ms_per_mb"] for r in bulk["rows"] if "cpu_ms_per_mb" in r[n]), {})]
    if not cols:
        return
    t = Table(title="bulk: CPU per MB carried, ms (median; bastion: its process and workers)")
    for col in ("transfer", "cipher", *(f"{n}: {label}" for n, label in cols)):
        t.add_column(col, justify="left" if col in ("transfer", "cipher") else "right")
    for r in bulk["rows"]:
        t.add_row(r["kind"], r["cipher"],
                  *(_fmt(r[n].get("cpu_ms_per_mb", {}).get(label), 2) for n, label in cols))
    console.print(t)


def render_parallel(par: dict | None, console: Console) -> None:
    if _absent(par, "parallel", console):
        return
    assert par is not None
    t = Table(title=f"parallel: {par['sessions']} downloads of {par['size_bytes'] // 1_000_000} "
                    f"MB at once, bastion --workers {par['workers']}, aggregate MB/s (median of "
                    f"{par['rounds']})")
    for col in ("path", "MB/s", "rounds", "x ProxyJump"):
        t.add_column(col, justify="left" if col == "path" else "right")
    for name, e in par["paths"].items():
        rel = par.get(f"x_jump/{name.split('/', 1)[1]}") if "/" in name else None
        t.add_row(name, _fmt(e.get("mb_s")) if "mb_s" in e else f"[yellow]n/a: {e['na'][:60]}[/]",
                  ", ".join(_fmt(v) for v in e.get("runs", [])), _fmt(rel, 2))
    console.print(t)


def render_aims(aims: list[dict] | None, console: Console) -> None:
    if not aims:
        return
    t = Table(title="issue 20's bulk aims (reported, never gates)")
    for col in ("aim", "target", "measured", "met"):
        t.add_column(col, justify="right" if col == "target" else "left")
    for a in aims:
        measured = ", ".join(f"{k} {_fmt(v, 3)}" for k, v in a["measured"].items())
        met = {True: "yes", False: "[red]no[/]", None: "n/a"}[a["met"]]
        t.add_row(a["aim"], _fmt(a["target"], 2), measured, met)
    console.print(t)
