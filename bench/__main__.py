"""``python -m bench``: the bastion side by side with OpenSSH, in one run, with ratios.

    python -m bench                          # everything, full sizes (about 10 minutes on 2 cores)
    python -m bench --quick                  # tiny sizes, few runs (under a minute): the test suite runs this
    python -m bench --only bulk,setup        # some sections
    python -m bench --out bench/results/x.json
    python -m bench --only bulk --profile bulk   # py-spy on bastion serve during a section

Starts on 127.0.0.1 only: the dev issuer, a target sshd, a second sshd as a plain
OpenSSH jump host, and ``bastion serve`` (see :mod:`bench.rig`); then runs the
sections in order — bulk, setup, echo, concurrency, components — each interleaving
(a) direct ssh, (b) OpenSSH ProxyJump and (c) the bastion.  A section or path that
fails is reported ``n/a`` with the reason; the run goes on.  Prints tables and
writes a JSON file (default ``bench/results/YYYYmmdd-HHMMSS[-quick].json``).
Never fails on time: exit status 0 unless the rig itself could not start (1).

What each figure means: docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
import traceback
from pathlib import Path

from bench import report

ROOT = Path(__file__).resolve().parent.parent
RIG_SECTIONS = ("bulk", "setup", "echo", "concurrency")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__.split("\n\n")[0],
        epilog="Example: python -m bench --quick --only bulk,setup --out bench/results/quick.json")
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes and few runs (2 MB, 3 set-ups, 20 keys, 3 agents x 3 commands)")
    parser.add_argument("--only", default=",".join(report.SECTIONS),
                        help=f"comma-separated sections among {','.join(report.SECTIONS)}")
    parser.add_argument("--out", type=Path, help="the JSON file to write")
    parser.add_argument("--profile", default="",
                        help="comma-separated sections during which to profile bastion serve with "
                             "py-spy (flame data beside the JSON file, top functions in it)")
    args = parser.parse_args(argv)
    only = tuple(s.strip() for s in args.only.split(",") if s.strip())
    unknown = [s for s in only if s not in report.SECTIONS]
    if unknown or not only:
        parser.error(f"unknown section(s) {', '.join(unknown) or '(none given)'}; "
                     f"choose among {', '.join(report.SECTIONS)}")
    args.only = only
    args.profile = tuple(s.strip() for s in args.profile.split(",") if s.strip())
    bad = [s for s in args.profile if s not in RIG_SECTIONS]
    if bad:
        parser.error(f"--profile: {', '.join(bad)} is not among {', '.join(RIG_SECTIONS)}")
    return args


def _section(name: str, fn) -> dict:
    log(f"[{name}]")
    load = [round(x, 2) for x in os.getloadavg()]   # other work on the machine shows here
    t0 = time.perf_counter()
    try:
        result = fn()
    except Exception as exc:  # noqa: BLE001 - one failed section must not lose the others
        log(traceback.format_exc())
        result = {"na": f"error: {type(exc).__name__}: {exc}"[:500]}
    result["section_seconds"] = round(time.perf_counter() - t0, 1)
    result["loadavg_before"] = load
    return result


def run(quick: bool, only: tuple[str, ...], profile: tuple[str, ...] = (),
        profile_stem: Path | None = None) -> dict:
    from bench import bulk, components, concurrency, echo, setup_latency

    results: dict = {"meta": report.machine_meta(quick, only)}
    for name in report.SECTIONS:
        if name not in only:
            results[name] = {"na": f"not selected (--only {','.join(only)})"}
    if any(s in only for s in RIG_SECTIONS):
        from bench.rig import make_rig, raise_fd_limit
        raise_fd_limit()
        log("starting the dev issuer, two sshd and bastion serve on 127.0.0.1 ...")
        try:
            rig, issuer, tmp = make_rig()
        except Exception as exc:  # noqa: BLE001 - reported, then exit 1
            log(traceback.format_exc())
            for name in RIG_SECTIONS:
                if name in only:
                    results[name] = {"na": f"the rig did not start: {exc}"[:500]}
            results["meta"]["rig_error"] = str(exc)[:500]
        else:
            results["meta"]["rig_dir"] = str(tmp)
            try:
                checks = rig.check_paths()
                results["meta"]["path_check"] = checks
                for path, why in checks.items():
                    log(f"  path {path}: {'ok' if why is None else 'FAILS: ' + why}")
                sections = {
                    "bulk": lambda: bulk.run(rig, quick=quick, log=log),
                    "setup": lambda: setup_latency.run(rig, quick=quick, log=log),
                    "echo": lambda: echo.run(rig, quick=quick, log=log),
                    "concurrency": lambda: concurrency.run(rig, quick=quick, log=log),
                }
                for name in RIG_SECTIONS:
                    if name not in only:
                        continue
                    if name in profile:
                        from bench.profile import Profiler
                        stem = profile_stem or ROOT / "bench" / "results" / "bench"
                        out = stem.parent / f"{stem.name}.profile-{name}.txt"
                        with Profiler(rig.proc.pid, out) as prof:
                            results[name] = _section(name, sections[name])
                        results[name]["profile"] = prof.result()
                    else:
                        results[name] = _section(name, sections[name])
                results["meta"]["bastion_process"] = rig.bastion_usage()
                results["meta"]["bastion_data_dir"] = sorted(
                    p.name for p in rig.data_dir.iterdir()) if rig.data_dir.exists() else []
                errors = [line for line in rig.log().splitlines() if " ERROR " in line]
                results["meta"]["bastion_log_errors"] = errors[-10:]
            finally:
                rig.close()
                issuer.stop()
                shutil.rmtree(tmp, ignore_errors=True)
    if "components" in only:
        results["components"] = _section(
            "components", lambda: components.run(quick=quick, log=log))
    results["meta"]["loadavg_end"] = list(os.getloadavg())
    results["goals"] = report.goals(results)
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = args.out.resolve() if args.out else None      # relative to where it was given
    os.chdir(ROOT)
    out = out or (ROOT / "bench" / "results" /
                       f"{time.strftime('%Y%m%d-%H%M%S')}{'-quick' if args.quick else ''}.json")
    results = run(args.quick, args.only, args.profile, out.with_suffix(""))
    report.write_json(results, out)
    report.render(results)
    log(f"results written to {out}")
    return 1 if "rig_error" in results["meta"] else 0


if __name__ == "__main__":
    sys.exit(main())
