"""The simulator's module structure: each module imports on its own, the package's import graph has
no cycle, and the simulator imports nothing of the project it simulates for (only itself, the standard
library and a short list of third-party packages)."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import ibkr_tasks.sim

PACKAGE = "ibkr_tasks.sim"
ROOT = Path(ibkr_tasks.sim.__file__).parent
MODULES = sorted(f"{PACKAGE}.{m.name}" for m in pkgutil.iter_modules([str(ROOT)]))
# Third-party packages the simulator may use: the ASGI toolkit, models, the httpx exception an
# in-process client sees, YAML scenarios, OAuth 2.0 JWTs and keys, and the server of ``python -m``.
ALLOWED_THIRD_PARTY = {"starlette", "pydantic", "httpx", "yaml", "jwt", "cryptography", "uvicorn"}


def _path(module: str) -> Path:
    if module == PACKAGE:
        return ROOT / "__init__.py"
    return ROOT / (module.rsplit(".", 1)[1] + ".py")


def imports_of(module: str) -> set[str]:
    """Every module ``module`` imports anywhere in its source (also inside functions and
    ``TYPE_CHECKING`` blocks): ``from pkg import sub`` counts as importing ``pkg.sub`` when that is a
    module of the simulator."""
    tree = ast.parse(_path(module).read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == PACKAGE:
                for alias in node.names:
                    sub = f"{PACKAGE}.{alias.name}"
                    found.add(sub if sub in MODULES else PACKAGE)
            else:
                found.add(node.module)
    return found


def graph() -> dict[str, set[str]]:
    """The import graph among the simulator's modules (the package ``__init__`` included)."""
    nodes = [PACKAGE, *MODULES]
    return {m: {i for i in imports_of(m) if i in nodes and i != m} for m in nodes}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """A cycle of the directed graph ``edges`` (as the list of its nodes, first repeated at the end)."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state:
            cycle = visit(start)
            if cycle:
                return cycle
    return None


def test_the_cycle_finder_finds_a_cycle_and_accepts_a_layered_graph() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_simulator_has_the_modules_the_docs_describe() -> None:
    names = {m.rsplit(".", 1)[1] for m in MODULES}
    assert {"entities", "trade_rows", "activity", "late_data", "matching", "journal", "book"} <= names
    assert "render" not in names  # rendering lives next to the handlers of each endpoint family
    doc = (Path(__file__).parents[1] / "docs" / "simulator.md").read_text(encoding="utf-8")
    undocumented = [n for n in sorted(names) if f"`{n}.py`" not in doc]
    assert undocumented == [], "docs/simulator.md describes every module of ibkr_tasks/sim"


@pytest.mark.parametrize("module", MODULES)
def test_each_module_imports_on_its_own(module: str) -> None:
    assert importlib.import_module(module).__name__ == module


def test_the_import_graph_of_the_simulator_has_no_cycle() -> None:
    edges = graph()
    assert edges["ibkr_tasks.sim.book"]  # the graph is read (book imports its parts)
    assert find_cycle(edges) is None, f"import cycle: {' -> '.join(find_cycle(edges) or [])}"


@pytest.mark.parametrize("module", [PACKAGE, *MODULES])
def test_the_simulator_imports_only_itself_the_standard_library_and_its_few_dependencies(module: str) -> None:
    for name in imports_of(module):
        top = name.split(".", 1)[0]
        if top == "ibkr_tasks":
            assert name == PACKAGE or name.startswith(PACKAGE + "."), f"{module} imports {name}"
        else:
            assert top in sys.stdlib_module_names or top in ALLOWED_THIRD_PARTY, f"{module} imports {name}"


def test_importing_the_simulator_loads_nothing_else_of_the_project() -> None:
    code = (
        "import sys, ibkr_tasks.sim, ibkr_tasks.sim.__main__, ibkr_tasks.sim.testing\n"
        "print(sorted(m for m in sys.modules if m.startswith('ibkr_tasks') and m != 'ibkr_tasks'"
        " and not m.startswith('ibkr_tasks.sim')))"
    )
    root = Path(__file__).parents[1]
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=root,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
    )
    assert out.stdout.strip() == "[]", out.stdout
