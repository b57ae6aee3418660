"""Issue 15: GTFOBins examples of programs the tables know are never allowed by
``commands = ["P"]`` alone.

For every ``command`` / ``shell`` / ``file-write`` example of a program in KNOWN (and every
``file-read`` example, whose input is /etc/shadow, a path the policy denies reading), a
policy of

    default = "deny", opaque = "review"
    allow  commands = ["P"]                  (and "echo", which examples pipe from)
    deny   reads = ["/etc/shadow"]

must not ALLOW the example's payload line: the last line of the example that runs P
(earlier lines prepare files; later lines are keystrokes typed into P).

Two sources:
* tests/unit/policy_effects/gtfobins_examples.toml: payload lines written for this
  project, one or more per program and class (always present, CI runs these);
* the upstream GTFOBins entries when ../shared/reference/gtfobins (or $GTFOBINS_DIR) is
  present: every matching example, placeholders replaced by harmless concrete values.
  They are GPL data and are read where they are, not copied into this repository
  (the front matter is read by a small parser: no YAML dependency).

Nothing is ever executed: the lines are only parsed by the policy engine.
"""

from __future__ import annotations

import os
import re
import tomllib
from functools import lru_cache
from pathlib import Path

import pytest

from bastion.identity.principal import Principal
from bastion.policy import Action, compile_policy

HERE = Path(__file__).parent
FIXTURE = HERE / "policy_effects" / "gtfobins_examples.toml"
REFERENCE = Path(os.environ.get("GTFOBINS_DIR")
                 or HERE.resolve().parents[2] / "shared" / "reference" / "gtfobins")
AGENT = Principal(subject="agent-1", roles=("agents",))

# Programs the tables know (issue 15 asks for at least these); extend with the tables.
KNOWN = [
    "find", "awk", "gawk", "mawk", "sed", "tar", "git", "less", "more", "man", "vim", "view",
    "curl", "wget", "sort", "uniq", "xxd", "tee", "dd", "cp", "mv", "python3", "perl", "ruby",
    "node", "openssl", "systemctl", "journalctl", "docker", "kubectl", "env", "xargs",
]
FUNCTIONS = ("command", "shell", "file-write", "file-read")
# upstream entry names for programs filed under another name
UPSTREAM_NAME = {"python3": "python"}

SUBSTITUTIONS = [  # placeholder -> harmless concrete value (never executed anyway)
    (re.compile(r"/path/to/input-file"), "/etc/shadow"),
    (re.compile(r"/path/to/ou?tput-file"), "/srv/app/output.txt"),
    (re.compile(r"/path/to/temp-file"), "/tmp/gtfo-temp"),
    (re.compile(r"/path/to/temp-dir"), "/tmp/gtfo-dir"),
    (re.compile(r"/path/to/output-dir"), "/srv/app/out"),
    (re.compile(r"/path/to/input-dir"), "/srv/app/in"),
    (re.compile(r"/path/to/command"), "/usr/local/bin/job"),
    (re.compile(r"/path/to/lib"), "/tmp/gtfo-lib.so"),
    (re.compile(r"/path/to/([\w.-]+)"), r"/srv/app/\1"),
    (re.compile(r"attacker\.com"), "attacker.example"),
    (re.compile(r"\$CONTAINER_ID"), "web1"),
    (re.compile(r"\bDATA\b"), "data"),
]


@lru_cache(maxsize=None)
def policy_for(program: str):
    return compile_policy({"default": "deny", "opaque": "review"}, [
        {"name": "only-p", "action": "allow", "commands": [program]},
        {"name": "feeder", "action": "allow", "commands": ["echo"]},
        {"name": "no-shadow", "action": "deny", "reads": ["/etc/shadow"]},
    ])


def substitute(code: str) -> str:
    for rx, repl in SUBSTITUTIONS:
        code = rx.sub(repl, code)
    return code


def runs(line: str, program: str) -> bool:
    """Does this line of an example invoke ``program`` as a command word?"""
    return re.search(r"(^|[\s|;&(`'\"=])" + re.escape(program) + r"(\s|$)", line) is not None


def payload(code: str, program: str) -> str | None:
    """The last line of the example that runs ``program`` (here-document bodies skipped)."""
    lines, body_end = code.split("\n"), None
    chosen = None
    for line in lines:
        if body_end is not None:
            if line.strip() == body_end:
                body_end = None
            continue
        m = re.search(r"<<-?\s*['\"]?(\w+)", line)
        if runs(line, program):
            chosen = line
        if m:
            body_end = m.group(1)
    return chosen


# ---------------------------------------------------------------- the fixture

def fixture_examples() -> list[tuple[str, str, str]]:
    return [tuple(e) for e in tomllib.loads(FIXTURE.read_text(encoding="utf-8"))["examples"]]


def test_fixture_covers_every_known_program():
    progs = {p for p, _, _ in fixture_examples()}
    assert set(KNOWN) <= progs, set(KNOWN) - progs
    assert {f for _, f, _ in fixture_examples()} <= set(FUNCTIONS)


KNOWN_GAPS = set(tomllib.loads((Path(__file__).parent / "policy_effects" / "known_gaps.toml")
                               .read_text(encoding="utf-8"))["gtfobins"])


@pytest.mark.parametrize("program, function, line", fixture_examples(),
                         ids=[f"{p}-{f}-{i}" for i, (p, f, _) in enumerate(fixture_examples())])
def test_fixture_example_is_not_allowed_by_an_allow_rule_for_the_program(program, function, line):
    decision = policy_for(program).evaluate(AGENT, None, line)
    if line in KNOWN_GAPS:          # listed in policy_effects/known_gaps.toml: must still be one
        assert decision.action == Action.ALLOW, f"fixed, remove from known_gaps.toml: {line!r}"
        return
    assert decision.action != Action.ALLOW, (
        f"{function} example of {program} allowed by commands = [{program!r}]: {line!r}\n"
        f"  {decision.reason}")


# ---------------------------------------------------------------- upstream, when present

def _front_matter(path: Path) -> dict:
    """The subset of the entries' YAML front matter we need, without a YAML library:
    ``alias: NAME`` and ``functions: {name: [{"code": text}, ...]}`` (each entry's own
    ``code: |-`` block; per-context variants, indented deeper, are left out)."""
    meta: dict = {"functions": {}}
    lines = path.read_text(encoding="utf-8").split("\n")
    if not lines or lines[0].strip() != "---":
        return meta
    function, i = None, 1
    while i < len(lines):
        line = lines[i]
        if line.strip() in ("---", "..."):
            break
        if line.startswith("alias:"):
            meta["alias"] = line.split(":", 1)[1].strip()
        elif re.fullmatch(r"  [\w-]+:", line):
            function = line.strip()[:-1]
            meta["functions"].setdefault(function, [])
        elif function and line in ("  - code: |-", "    code: |-"):
            block = []
            i += 1
            while i < len(lines) and (lines[i].startswith("      ") or lines[i] == ""):
                block.append(lines[i][6:])
                i += 1
            while block and block[-1] == "":
                block.pop()
            meta["functions"][function].append({"code": "\n".join(block)})
            continue
        elif line and not line.startswith(" "):
            function = None
        i += 1
    return meta


def upstream_examples() -> list[tuple[str, str, str]]:
    """[(program, function, payload line)] from the reference entries, if present."""
    root = REFERENCE / "_gtfobins"
    if not root.is_dir():
        return []
    out = []
    for program in KNOWN:
        name = UPSTREAM_NAME.get(program, program)
        path = root / name
        if not path.is_file():
            continue
        meta = _front_matter(path)
        source_name = name
        if "alias" in meta:                              # awk -> mawk, view -> vim
            source_name = meta["alias"]
            meta = _front_matter(root / source_name)
        for function, entries in (meta.get("functions") or {}).items():
            if function not in FUNCTIONS:
                continue
            for entry in entries or ():
                code = substitute(entry["code"])
                if source_name != program:                # written for the aliased name
                    code = re.sub(r"(^|(?<=[\s|;&('\"=]))" + re.escape(source_name) + r"(?=\s|$)",
                                  program, code, flags=re.M)
                line = payload(code, program)
                if line is None:
                    continue
                if function == "file-read" and "/etc/shadow" not in line:
                    continue                               # reads nothing the policy protects
                out.append((program, function, line))
    return sorted(set(out))


UPSTREAM = upstream_examples()


@pytest.mark.parametrize("program, function, line", UPSTREAM,
                         ids=[f"{p}-{f}-{i}" for i, (p, f, _) in enumerate(UPSTREAM)])
def test_upstream_example_is_not_allowed_by_an_allow_rule_for_the_program(program, function, line):
    decision = policy_for(program).evaluate(AGENT, None, line)
    if line in KNOWN_GAPS:
        assert decision.action == Action.ALLOW, f"fixed, remove from known_gaps.toml: {line!r}"
        return
    assert decision.action != Action.ALLOW, (
        f"GTFOBins {function} example of {program} allowed by commands = [{program!r}]: "
        f"{line!r}\n  {decision.reason}")


def test_payload_extraction():
    assert payload("echo x >/tmp/f\ntar cf /tmp/f.tar /tmp/f\ntar xf /tmp/f.tar --to-command sh",
                   "tar") == "tar xf /tmp/f.tar --to-command sh"
    assert payload("less /etc/hosts\n!/bin/sh", "less") == "less /etc/hosts"
    assert payload("cat >/tmp/k <<EOF\n  command: kubectl\nEOF\nkubectl get pods", "kubectl") \
        == "kubectl get pods"
    assert payload("echo data | sort -m -o /srv/x", "sort") == "echo data | sort -m -o /srv/x"
    assert payload("LESSOPEN='x # %s' less /etc/hosts", "less") == "LESSOPEN='x # %s' less /etc/hosts"
    assert substitute("cat /path/to/input-file > /path/to/output-file") \
        == "cat /etc/shadow > /srv/app/output.txt"
