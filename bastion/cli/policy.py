"""CLI: ``bastion policy check | eval | test | explain`` — the policy engine from a shell.

Thin layer over :func:`bastion.config.load_config` and
:meth:`bastion.policy.Policy.evaluate`.  Human output is sanitised (the lines
being judged come from agents); ``--json`` / ``--batch`` output is JSON, one
object per line.  Exit codes: 0 success (for ``eval``: whatever the decision),
1 a test case failed or a batch line was unusable, 2 invalid policy or input.
"""

from __future__ import annotations

import json
import sys
import tomllib
from pathlib import Path
from typing import Annotated, Optional

import typer

from bastion.cli.common import (
    DEFAULT_POLICY, JsonOpt, PolicyOpt, err_console, escape, handle_errors, out_console,
)
from bastion.errors import ConfigError, Problem, TargetError
from bastion.proto.sanitize import sanitize

policy_app = typer.Typer(name="policy", no_args_is_help=True, add_completion=False,
                         help="Check policy.toml, evaluate command lines, run policy tests.\n\n"
                              "Example: bastion policy eval --target web1 'sudo rm -rf /x'")

_COLOURS = {"allow": "green", "deny": "red", "review": "yellow"}
_CASE_KEYS = ("line", "target", "claims", "expect", "action", "rule", "name", "interactive")


def _principal(claims):
    from bastion.identity.principal import Principal
    if claims is None:
        return Principal(subject="bastion-cli")
    if not isinstance(claims, dict):
        raise ConfigError("claims must be a JSON/TOML object, e.g. {\"sub\": \"a\", "
                          "\"roles\": [\"agents\"]}")
    try:
        return Principal.from_claims(claims)
    except KeyError as exc:
        raise ConfigError(f"claims have no subject ({exc.args[0]}): add \"sub\" or \"oid\"") \
            from None


def _claims_option(text: str | None):
    if text is None:
        return None
    if text.startswith("@"):
        try:
            text = Path(text[1:]).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read claims file {text[1:]!r}: {exc.strerror}") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--claims is not valid JSON: {exc}") from exc


def _target(config, name):
    if name is None:
        return None
    target = config.target(name)
    if target is None:
        known = ", ".join(sorted(config.targets)) or "none defined"
        raise TargetError(f"unknown target {name!r}", hint=f"targets in the policy: {known}")
    return target


def check(policy: PolicyOpt = Path(DEFAULT_POLICY), as_json: JsonOpt = False) -> None:
    """Validate policy.toml: every problem is printed with its line number.

    Exit status 0 valid, 2 not. With --json: {"ok", "path", "problems": [{"line",
    "message"}], "warnings", "counts", "digest"} on stdout, whatever the outcome.

    A valid file's digest (sha256:...) is what `bastion status` and `bastion store
    nodes` show for the policy a node enforces: the same on every node of a shared
    store ([store] is left out of it; comments and layout do not change it).

    Example: bastion policy check --policy /etc/bastion/policy.toml
    """
    from bastion.config import load_config
    from bastion.proto.masker import check_masks
    try:
        config = load_config(policy)
    except ConfigError as exc:
        if as_json:
            problems = exc.problems or [Problem(str(exc))]
            sys.stdout.write(json.dumps({
                "ok": False, "path": str(exc.path or policy),
                "problems": [{"line": p.line, "message": p.message} for p in problems],
                "hint": exc.hint}, ensure_ascii=True, indent=2) + "\n")
            raise typer.Exit(exc.exit_code) from None
        if not exc.problems:
            raise
        err_console.print(f"[bold red]error:[/] {escape(str(exc.path or policy))}: "
                          f"{len(exc.problems)} problem(s)")
        for p in exc.problems:
            where = f"line {p.line}: " if p.line else ""
            err_console.print(f"  {escape(where + sanitize(p.message))}", soft_wrap=True)
        if exc.hint:
            err_console.print(f"[dim]hint:[/] {escape(exc.hint)}")
        raise typer.Exit(exc.exit_code) from None
    warnings = list(check_masks(config.masks))
    counts = config.policy.counts()
    if as_json:
        sys.stdout.write(json.dumps({
            "ok": True, "path": str(policy), "problems": [], "warnings": warnings,
            "counts": {"targets": len(config.targets), "grants": len(config.grants),
                       "rules": len(config.policy.rules), **counts,
                       "masks": len(config.masks)},
            "default": config.policy.default.value, "opaque": config.policy.opaque.value,
            "digest": config.digest}, ensure_ascii=True, indent=2) + "\n")
        return
    for warning in warnings:
        err_console.print(f"[yellow]warning:[/] {escape(warning)}", soft_wrap=True)
    out_console.print(
        f"[green]ok[/] {escape(str(policy))}: {len(config.targets)} target(s), "
        f"{len(config.grants)} grant(s), {len(config.policy.rules)} rule(s) "
        f"({counts['allow']} allow, {counts['review']} review, {counts['deny']} deny); "
        f"default={config.policy.default.value} opaque={config.policy.opaque.value}; "
        f"{len(config.masks)} custom mask(s); {config.digest}")


def eval_(
    line: Annotated[Optional[str], typer.Argument(metavar="LINE", help="The command line to judge.")] = None,
    policy: PolicyOpt = Path(DEFAULT_POLICY),
    claims: Annotated[Optional[str], typer.Option(
        "--claims", help="Token claims as JSON (or @FILE), e.g. '{\"sub\":\"a\",\"roles\":"
                         "[\"agents\"]}'. Default: a principal with no roles.")] = None,
    target: Annotated[Optional[str], typer.Option(
        "--target", help="Name of a [[targets]] entry (rules with targets= need one).")] = None,
    json_out: JsonOpt = False,
    interactive: Annotated[bool, typer.Option(
        "--interactive", help="Judge the line as typed into an interactive shell.")] = False,
    batch: Annotated[Optional[str], typer.Option(
        "--batch", help="Read JSON lines {\"command\": ..., \"claims\": {...}?, \"target\": ...?} "
                        "from FILE (or - for stdin); write one JSON decision per line.")] = None,
) -> None:
    """Show the decision on one command line (or a batch of them).

    Example: bastion policy eval --claims '{"sub":"a","roles":["agents"]}' --target web1
    'sudo systemctl restart nginx'
    """
    from bastion.config import load_config
    config = load_config(policy)
    default_claims = _claims_option(claims)
    if batch is not None:
        if line is not None:
            raise ConfigError("give either LINE or --batch, not both")
        _batch(config, batch, default_claims, target, interactive)
        return
    if line is None:
        raise ConfigError("no LINE given", hint="bastion policy eval 'ls -la' (or --batch FILE)")
    decision = config.policy.evaluate(_principal(default_claims), _target(config, target), line,
                                      interactive=interactive)
    if json_out:
        sys.stdout.write(json.dumps(decision.to_dict()) + "\n")
        return
    _print_decision(decision)


def _print_decision(decision) -> None:
    action = decision.action.value
    colour = _COLOURS[action]
    out_console.print(f"[bold {colour}]{action}[/]  rule: {escape(sanitize(str(decision.rule)))}")
    out_console.print(f"  {escape(sanitize(decision.reason))}")
    for cmd in decision.commands:
        mark = _COLOURS[cmd.action.value]
        via = f"  (via {cmd.via})" if cmd.via else ""
        out_console.print(f"  [{mark}]{cmd.action.value:6}[/] {escape(sanitize(_argv(cmd.argv)))}"
                          f"{escape(sanitize(via))}  [dim]{escape(sanitize(str(cmd.rule)))}[/]")


def explain(
    line: Annotated[str, typer.Argument(metavar="LINE", help="The command line to explain.")],
    policy: PolicyOpt = Path(DEFAULT_POLICY),
    claims: Annotated[Optional[str], typer.Option(
        "--claims", help="Token claims as JSON (or @FILE). Default: a principal with no roles.")
    ] = None,
    target: Annotated[Optional[str], typer.Option(
        "--target", help="Name of a [[targets]] entry (rules with targets= need one).")] = None,
    json_out: JsonOpt = False,
    dialect: Annotated[str, typer.Option("--dialect", help="bash or sh.")] = "bash",
) -> None:
    """Show each command of a line, its effects (runs, writes, reads, connects) and the
    rule that decided it.

    Example: bastion policy explain --target web1 'sort -o /etc/passwd x; ls > /dev/null'
    """
    from bastion.config import load_config
    from bastion.policy.commands import extract
    from bastion.policy.effects import shown_arg
    config = load_config(policy)
    decision = config.policy.evaluate(_principal(_claims_option(claims)),
                                      _target(config, target), line, dialect)
    found = {c.argv: c for c in extract(line, dialect=dialect).commands}
    rows = []
    for d in decision.commands:
        c = found.get(d.argv)
        effects = {"runs": list(d.argv), "writes": [], "reads": [], "connects": [],
                   "deletes": [], "subcommand": None, "table": False}
        if c is not None:
            effects.update(writes=[shown_arg(a) for a in c.writes],
                           reads=[shown_arg(a) for a in c.reads],
                           deletes=[shown_arg(a) for a in c.deletes],
                           connects=[h or "(run time)" for h in c.connects],
                           subcommand=c.sub, table=c.known)
        rows.append({**d.to_dict(), "effects": effects})
    if json_out:
        sys.stdout.write(json.dumps({**decision.to_dict(), "commands": rows}) + "\n")
        return
    _print_decision(decision)
    for row in rows:
        e = row["effects"]
        out_console.print(f"  {escape(sanitize(_argv(row['argv'])))}  "
                          f"[{_COLOURS[row['action']]}]{row['action']}[/] by "
                          f"{escape(sanitize(str(row['rule'])))}"
                          + ("" if e["table"] else "  [dim](no program table)[/]"))
        for key in ("writes", "deletes", "reads", "connects"):
            if e[key]:
                out_console.print(f"    {key}: {escape(sanitize(', '.join(e[key])))}")
        if e["subcommand"]:
            out_console.print(f"    subcommand: {escape(sanitize(e['subcommand']))}")
        if row["opaque"]:
            out_console.print(f"    opaque: {escape(sanitize(str(row['why'])))}")


def _argv(argv) -> str:
    from bastion.policy.commands import show
    return show(tuple(argv), limit=300)


def _batch(config, source: str, default_claims, default_target, interactive: bool) -> None:
    stream = sys.stdin if source == "-" else None
    if stream is None:
        try:
            stream = open(source, encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read batch file {source!r}: {exc.strerror}") from exc
    failed = 0
    principals: dict = {}
    out = sys.stdout
    try:
        for number, raw in enumerate(stream, start=1):
            if not raw.strip():
                continue
            try:
                item = json.loads(raw)
                if not isinstance(item, dict) or not isinstance(item.get("command"), str):
                    raise ValueError("each line must be an object with a string \"command\"")
                claims = item.get("claims", default_claims)
                key = json.dumps(claims, sort_keys=True)
                if key not in principals:
                    principals[key] = _principal(claims)
                target = _target(config, item.get("target", default_target))
                decision = config.policy.evaluate(principals[key], target, item["command"],
                                                  interactive=bool(item.get("interactive",
                                                                            interactive)))
                out.write(json.dumps(decision.to_dict()) + "\n")
            except (ValueError, ConfigError, TargetError) as exc:
                failed += 1
                out.write(json.dumps({"error": str(exc), "line": number}) + "\n")
    finally:
        if stream is not sys.stdin:
            stream.close()
    out.flush()
    if failed:
        err_console.print(f"[red]{failed} batch line(s) could not be evaluated[/]")
        raise typer.Exit(1)


def test(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="TOML file of [[cases]].")],
    policy: PolicyOpt = Path(DEFAULT_POLICY),
) -> None:
    """Run policy test cases (for CI): each [[cases]] has line, expect (or action:
    allow, deny, review) and optional target, claims, rule, name, interactive;
    [defaults] may set target and claims.
    Prints the failures; exits 1 if any case fails.

    Example: bastion policy test tests/policy_cases.toml --policy policy.toml
    """
    from bastion.config import load_config
    from bastion.tomlpos import TomlPositions
    config = load_config(policy)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read test file: {exc.strerror}", path=str(file)) from exc
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("not valid TOML", [Problem(str(exc))], path=str(file)) from exc
    cases, problems = _cases(raw)
    if problems:
        pos = TomlPositions(text)
        raise ConfigError(f"{len(problems)} problem(s) in the test file",
                          [Problem(p.message, line=pos.line(p.where), where=p.where)
                           for p in problems], path=str(file))
    failures = 0
    for index, case in enumerate(cases):
        decision = config.policy.evaluate(_principal(case["claims"]),
                                          _target(config, case["target"]), case["line"],
                                          interactive=case["interactive"])
        ok = decision.action.value == case["expect"] and (
            case["rule"] is None or decision.rule == case["rule"])
        if not ok:
            failures += 1
            label = case["name"] or f"cases[{index}]"
            want = case["expect"] + (f" by rule {case['rule']}" if case["rule"] else "")
            out_console.print(f"[red]FAIL[/] {escape(sanitize(label))}: "
                              f"{escape(sanitize(case['line']))!s}")
            out_console.print(f"     expected {want}, got {decision.action.value} by rule "
                              f"{escape(sanitize(str(decision.rule)))}: "
                              f"{escape(sanitize(decision.reason))}")
    passed = len(cases) - failures
    colour = "green" if not failures else "red"
    out_console.print(f"[{colour}]{passed} passed, {failures} failed[/]")
    if failures:
        raise typer.Exit(1)


def _cases(raw: dict) -> tuple[list, list]:
    problems: list[Problem] = []
    for key in raw:
        if key not in ("cases", "defaults"):
            problems.append(Problem(f"unknown key {key!r} (use [[cases]] and [defaults])",
                                    where=(key,)))
    defaults = raw.get("defaults", {})
    if not isinstance(defaults, dict):
        problems.append(Problem("[defaults] must be a table", where=("defaults",)))
        defaults = {}
    for key in defaults:
        if key not in ("target", "claims"):
            problems.append(Problem(f"unknown key defaults.{key} (allowed: target, claims)",
                                    where=("defaults", key)))
    items = raw.get("cases", [])
    if not isinstance(items, list) or not items:
        problems.append(Problem("no [[cases]] in the test file", where=("cases",)))
        return [], problems
    cases = []
    for i, item in enumerate(items):
        w = ("cases", i)
        if not isinstance(item, dict):
            problems.append(Problem(f"cases[{i}] must be a table", where=w))
            continue
        for key in item:
            if key not in _CASE_KEYS:
                problems.append(Problem(f"cases[{i}]: unknown key {key!r} "
                                        f"(allowed: {', '.join(_CASE_KEYS)})", where=w + (key,)))
        if not isinstance(item.get("line"), str):
            problems.append(Problem(f"cases[{i}]: line must be a string", where=w + ("line",)))
        if "expect" in item and "action" in item:
            problems.append(Problem(f"cases[{i}]: give expect or action, not both",
                                    where=w + ("action",)))
        expect = item.get("expect", item.get("action"))
        if expect not in ("allow", "deny", "review"):
            problems.append(Problem(f"cases[{i}]: expect must be allow, deny or review, "
                                    f"got {expect!r}", where=w + ("expect",)))
        cases.append({"line": item.get("line"), "expect": expect,
                      "target": item.get("target", defaults.get("target")),
                      "claims": item.get("claims", defaults.get("claims")),
                      "rule": item.get("rule"), "name": item.get("name"),
                      "interactive": bool(item.get("interactive", False))})
    return cases, problems


def register(app: typer.Typer) -> None:
    policy_app.command("check")(handle_errors(check))
    policy_app.command("eval")(handle_errors(eval_))
    policy_app.command("test")(handle_errors(test))
    policy_app.command("explain")(handle_errors(explain))
    app.add_typer(policy_app, name="policy")
