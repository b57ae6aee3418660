"""The house's layer contracts, checked on the source (issue 14 item 1).

Every runtime import inside ``bastion/`` (at module level or in a function; imports under
``if TYPE_CHECKING:`` are for the type checker only and do not count) must go down the
layers below, never up or sideways into a higher rank.  The pure cores (``policy``,
``proto``) import no IO, clock or process module at all.  A package cycle known today is
listed in ``KNOWN_CYCLES`` with its way out; the list may only shrink (an entry that no longer
occurs fails the test until it is removed).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "bastion"

# rank of each package (or top-level module): imports must go to a strictly lower rank
RANK = {
    "bastion": 0, "errors": 0, "secret": 0, "tomlpos": 0,
    "policy": 1, "proto": 1, "private": 1, "vault": 1, "logfmt": 1, "metrics": 1,
    "identity": 2, "transfer": 2, "store": 2,
    "config": 3,
    "recording": 4,
    "approvals": 5, "workermetrics": 5,
    "ssh": 6,
    "services": 7,
    "demo": 8, "api": 8,
    "web": 9,
    "cli": 10,
}
PURE = ("policy", "proto")
IO_MODULES = {"asyncio", "asyncssh", "sqlite3", "sqlite_utils", "socket", "subprocess",
              "threading", "multiprocessing", "time", "datetime", "os", "pathlib", "logging",
              "ssl", "urllib", "http", "requests", "select", "signal"}
# (importer, imported): upward imports that exist today, and how they go away
KNOWN_CYCLES: dict[tuple[str, str], str] = {}


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "bastion"


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(path: Path, module: str):
    """(imported module name, line) of every runtime import in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))

    def walk(node):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking_only(child):
                yield from (x for n in child.orelse for x in walk_one(n))
                continue
            yield from walk_one(child)

    def walk_one(node):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[:len(base) - node.level + (1 if path.name == "__init__.py" else 0)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            yield name, node.lineno
        yield from walk(node)

    yield from walk(tree)


def _all_imports():
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        module = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        for name, line in _imports(path, module):
            yield path, module, name, line


IMPORTS = list(_all_imports())


def test_every_package_has_a_rank():
    packages = {_package(m) for _p, m, _n, _l in IMPORTS}
    assert packages <= set(RANK), f"give these a rank in RANK: {packages - set(RANK)}"


def test_imports_go_down_the_layers():
    wrong, seen = [], set()
    for path, module, name, line in IMPORTS:
        if not name.startswith("bastion"):
            continue
        src, dst = _package(module), _package(name)
        if src == dst or RANK[dst] < RANK[src]:
            continue
        if (src, dst) in KNOWN_CYCLES:
            seen.add((src, dst))
            continue
        wrong.append(f"{path.relative_to(ROOT.parent)}:{line}: {src} (rank {RANK[src]}) "
                     f"imports {name} (rank {RANK[dst]})")
    assert not wrong, "imports that go up the layers:\n" + "\n".join(wrong)
    gone = set(KNOWN_CYCLES) - seen
    assert not gone, f"these known cycles are gone: remove them from KNOWN_CYCLES: {gone}"


@pytest.mark.parametrize("package", PURE)
def test_the_pure_cores_do_no_io(package):
    wrong = []
    for path, module, name, line in IMPORTS:
        if _package(module) != package:
            continue
        top = name.split(".")[0]
        if top in IO_MODULES:
            wrong.append(f"{path.relative_to(ROOT.parent)}:{line}: imports {name}")
        if name.startswith("bastion") and _package(name) not in (package, "errors", "secret"):
            wrong.append(f"{path.relative_to(ROOT.parent)}:{line}: imports {name} "
                         f"(a pure core uses only errors and secret of the package)")
    assert not wrong, "\n".join(wrong)
