"""The rules of the code's shape (docs/architecture.md): no import cycle, one door per kind of
I/O, and size limits. Read from the source with ``ast``: nothing is imported or run."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "sandbox"
MAX_MODULE_LINES = 700
MAX_FUNCTION_LINES = 100
# A pure visitor of the SQL syntax tree: one method per node type, long by nature.
SIZE_EXEMPT = {"sandbox.migrations.lint"}

# What other branches remove as they land (testloop, issue 21: cluster and snapshot). The lead
# empties this as they merge; nothing may be added to it.
PENDING: dict[str, set[str]] = {
    "cycle": set(),
    "git": set(),
    "psycopg": set(),
    "module": set(),
    "function": set(),
}


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PKG.rglob("*.py")):
        parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _trees() -> dict[str, ast.Module]:
    return {name: ast.parse(path.read_text(), str(path)) for name, path in MODULES.items()}


TREES = _trees()


def _resolve(module: str, node: ast.ImportFrom) -> list[str]:
    """The sandbox modules an ``import from`` names (the package itself, or its submodules)."""
    is_pkg = MODULES[module].name == "__init__.py"
    if node.level:
        base = module.split(".")
        base = base if is_pkg else base[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    if not (target == "sandbox" or target.startswith("sandbox.")):
        return []
    out = []
    for alias in node.names:
        sub = f"{target}.{alias.name}"
        out.append(sub if sub in MODULES else target)
    return [m for m in out if m in MODULES]


def imports_of(module: str) -> set[str]:
    """Every sandbox module that ``module`` imports, wherever the statement is (module level,
    inside functions, under ``TYPE_CHECKING``)."""
    found: set[str] = set()
    for node in ast.walk(TREES[module]):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("sandbox") and alias.name in MODULES:
                    found.add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            found.update(_resolve(module, node))
    found.discard(module)
    # importing a package's submodule runs the package's __init__ first: not an edge of ours
    return found


def cycles() -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    graph = {m: imports_of(m) for m in MODULES}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    import sys
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for m in graph:
        if m not in index:
            visit(m)
    return out


def _under(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_the_import_graph_has_no_cycle() -> None:
    assert {",".join(c) for c in cycles()} - PENDING["cycle"] == set()


def _runs_git(tree: ast.Module) -> list[int]:
    """Lines that run git: GitPython imported, or an argv whose first word is ``git``."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(a.name == "git" or a.name.startswith("git.") for a in node.names):
            lines.append(node.lineno)
        elif isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").split(".")[0] == "git":
            lines.append(node.lineno)
        elif isinstance(node, (ast.List, ast.Tuple)) and node.elts:
            first = node.elts[0]
            if isinstance(first, ast.Constant) and first.value == "git":
                lines.append(node.lineno)
    return lines


def test_git_runs_only_under_sandbox_git() -> None:
    found = {m: _runs_git(TREES[m]) for m in MODULES if not _under(m, "sandbox.git")}
    assert {m: lines for m, lines in found.items() if lines and m not in PENDING["git"]} == {}


def _imports_package(tree: ast.Module, package: str) -> list[int]:
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] == package for a in node.names):
            lines.append(node.lineno)
        elif isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").split(".")[0] == package:
            lines.append(node.lineno)
    return lines


def test_psycopg_is_imported_only_under_sandbox_databases() -> None:
    found = {m: _imports_package(TREES[m], "psycopg") for m in MODULES if not _under(m, "sandbox.databases")}
    assert {m: lines for m, lines in found.items() if lines and m not in PENDING["psycopg"]} == {}


@pytest.mark.parametrize("module", sorted(set(MODULES) - SIZE_EXEMPT - PENDING["module"]))
def test_no_module_is_over_the_limit(module: str) -> None:
    lines = len(MODULES[module].read_text().splitlines())
    assert lines <= MAX_MODULE_LINES, f"{module} has {lines} lines"


def test_no_function_is_over_the_limit() -> None:
    long = []
    for module, tree in TREES.items():
        if module in SIZE_EXEMPT:
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES and f"{module}.{node.name}" not in PENDING["function"]:
                    long.append(f"{module}.{node.name}: {length} lines")
    assert long == []


def test_the_checks_see_what_they_look_for() -> None:
    """The rules above are not vacuous: they find what they forbid where it is allowed."""
    assert any(_runs_git(TREES[m]) for m in MODULES if _under(m, "sandbox.git"))
    assert any(_imports_package(TREES[m], "psycopg") for m in MODULES if _under(m, "sandbox.databases"))
    assert "sandbox.core" in imports_of("sandbox.api")


@pytest.mark.parametrize("leaf, allowed", [
    ("sandbox.results", set()),
    ("sandbox.faults", set()),
    ("sandbox.host", {"sandbox.errors"}),
    ("sandbox.intents", {"sandbox.faults", "sandbox.host", "sandbox.errors"}),
])
def test_leaves_import_nothing_above_them(leaf: str, allowed: set[str]) -> None:
    assert imports_of(leaf) <= allowed


def test_the_workspaces_and_the_gate_do_not_import_the_facade() -> None:
    for module in MODULES:
        if _under(module, "sandbox.workspaces") or _under(module, "sandbox.migrations") or module == "sandbox.core":
            assert "sandbox.api" not in imports_of(module), module
