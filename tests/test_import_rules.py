"""The dependency rules of DESIGN.md, read from the source: ``solve/`` sees only numbers
(no jax, no graph, strategies, trace or pricing), and no import cycle runs through
``plan.py`` (``plan.py`` and ``api.py`` do not import each other).

Imports are read with ``ast``, at module level and inside functions (a lazy import is
still a dependency); those under ``if TYPE_CHECKING:`` are not, as they never run. An
import of ``a.b.c`` depends on ``a.b.c`` and on the packages above it, whose
``__init__`` runs first.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("shardsearch", "cost_model")
# What solve/ may not depend on, at any depth of its module-level imports.
NOT_FOR_SOLVE = ("jax", "jaxlib", "flax", "optax", "shardsearch.graph", "shardsearch.strategies",
                 "shardsearch.trace", "shardsearch.costs", "shardsearch.memory", "shardsearch.plan")


def _module_names() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


MODULES = _module_names()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(name: str) -> list[tuple[str, bool]]:
    """(imported module name, at module level?) for every import statement that can run."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[str, bool]] = []

    def visit(node, top: bool):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for sub in child.orelse:
                    visit(sub, top)
                continue
            if isinstance(child, ast.Import):
                found.extend((a.name, top) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                for a in child.names:
                    sub = f"{base}.{a.name}"
                    found.append((sub if sub in MODULES else base, top))
            inner = top and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            visit(child, inner)

    visit(ast.parse(path.read_text()), True)
    return found


def _targets(imported: str) -> list[str]:
    """The modules an import runs: the module and each package above it."""
    parts = imported.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def _graph(module_level_only: bool) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for name in MODULES:
        edges = set()
        for imported, top in _imports(name):
            if top or not module_level_only:
                edges.update(t for t in _targets(imported) if t != name)
        graph[name] = edges
    return graph


def _reach(graph: dict[str, set[str]], start: str) -> dict[str, str]:
    """Every module reachable from ``start`` -> the module that imports it on the way."""
    parent: dict[str, str] = {}
    todo = [start]
    while todo:
        here = todo.pop()
        for nxt in sorted(graph.get(here, ())):
            if nxt not in parent:
                parent[nxt] = here
                todo.append(nxt)
    return parent


def _path(parent: dict[str, str], start: str, end: str) -> str:
    chain = [end]
    while chain[-1] != start or len(chain) == 1:
        chain.append(parent[chain[-1]])
    return " -> ".join(reversed(chain))


def _forbidden(name: str) -> bool:
    return any(name == f or name.startswith(f + ".") for f in NOT_FOR_SOLVE)


def test_solve_sees_only_numbers():
    graph = _graph(module_level_only=True)
    solve_modules = [m for m in MODULES if m == "shardsearch.solve" or m.startswith("shardsearch.solve.")]
    assert len(solve_modules) > 5
    for module in solve_modules:
        parent = _reach(graph, module)
        bad = sorted(m for m in parent if _forbidden(m))
        assert not bad, f"{module} imports {bad[0]}: {_path(parent, module, bad[0])}"
        # and no lazy import inside a function reaches for them either
        lazy = [imported for imported, _ in _imports(module) if _forbidden(imported)]
        assert not lazy, f"{module} imports {lazy[0]} inside a function"


def test_importing_the_solver_loads_no_jax():
    code = "import sys, shardsearch.solve; print(sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'jaxlib')))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_no_import_cycle_through_plan():
    graph = _graph(module_level_only=False)
    parent = _reach(graph, "shardsearch.plan")
    assert "shardsearch.plan" not in parent, _path(parent, "shardsearch.plan", "shardsearch.plan")
    assert "shardsearch.api" not in parent, _path(parent, "shardsearch.plan", "shardsearch.api")


def test_the_rules_see_imports():
    """The reader finds what is there: api imports plan, search reaches jax and the graph."""
    graph = _graph(module_level_only=False)
    assert "shardsearch.plan" in graph["shardsearch.api"]
    reached = _reach(_graph(module_level_only=True), "shardsearch.search")
    assert "jax" in reached and "shardsearch.graph" in reached and "shardsearch.solve.ilp" in reached
