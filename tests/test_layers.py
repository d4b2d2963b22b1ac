"""The package's layers (the README's "Layout"), checked on the imports that run: those
under `if TYPE_CHECKING:` are types only and left out.

- no import cycle between the top-level modules and subpackages;
- the core (pipeline, detect, incidents, events, catalog, linescan) imports no driver or
  adapter;
- bus, store, probes and alerts import nothing from web;
- only the command line imports the composition root (`server`).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

import outagewatch

ROOT = Path(outagewatch.__file__).parent
CORE = {"pipeline", "detect", "incidents", "events", "catalog", "linescan"}
ADAPTERS = {"runtime", "web", "store", "bus", "probes", "alerts", "history", "cli", "sim", "server"}
BELOW_WEB = {"bus", "store", "probes", "alerts"}


def _part(module: str) -> str:
    """The top-level module or subpackage of `outagewatch.x.y` ("x")."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "outagewatch"


def _runtime_imports(tree: ast.AST) -> list[str]:
    """Modules imported outside `if TYPE_CHECKING:` blocks."""
    found: list[str] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for stmt in node.orelse:
                visit(stmt)
            return
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
            found.extend(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.extend(a.name for a in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return [m for m in found if m.startswith("outagewatch.")]


def graph() -> dict[str, set[str]]:
    """Top-level part -> the parts it imports (at run time)."""
    edges: dict[str, set[str]] = defaultdict(set)
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        src = _part(".".join(rel.parts))
        for module in _runtime_imports(ast.parse(path.read_text(), str(path))):
            dst = _part(module)
            if dst not in (src, "outagewatch"):
                edges[src].add(dst)
    return edges


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph (its nodes, the first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def walk(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := walk(nxt)) is not None:
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (found := walk(node)) is not None:
            return found
    return None


@pytest.mark.slow
def test_no_import_cycle_between_parts() -> None:
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_check_finds_one_when_there_is_one() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}}) is None


@pytest.mark.slow
def test_the_core_imports_no_adapter() -> None:
    edges = graph()
    bad = {c: sorted(edges.get(c, set()) & ADAPTERS) for c in CORE}
    assert not any(bad.values()), bad


@pytest.mark.slow
def test_bus_store_probes_and_alerts_import_nothing_from_web() -> None:
    edges = graph()
    bad = {p: sorted(edges.get(p, set()) & {"web"}) for p in BELOW_WEB}
    assert not any(bad.values()), bad


@pytest.mark.slow
def test_only_the_cli_imports_the_composition_root() -> None:
    """web/ builds routes over what they need (web/host.py), not over `server.Server`."""
    edges = graph()
    assert sorted(src for src, dst in edges.items() if "server" in dst) == ["cli"]
