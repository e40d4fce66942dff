"""The house keeps its shape: imports point down the layers and along the lifecycle, and nothing imports in a circle.

flows/ -> tasks/ -> optiflow/ (the core); tools/ start services and may use the core, but nothing imports them but
the CLI. Inside the core each lifecycle step may import earlier steps and the bottom, never a later step. The
import graph is read from the source (ast), every import counted wherever it stands, except those made only for
type checking.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.stages import imported_modules
from tests.conftest import REPO

PACKAGES = ("optiflow", "tasks", "flows", "tools")
# The core in lifecycle order; a module may import modules of its own rank or lower.
CORE_RANKS = {
    "optiflow.errors": 0,
    "optiflow.io": 0,
    "optiflow.parallel": 0,
    "optiflow.timing": 0,
    "optiflow.config": 1,
    "optiflow.data": 2,
    "optiflow.modeling": 3,
    "optiflow.preflight": 3,
    "optiflow.assess": 4,
    "optiflow.release": 5,
    "optiflow.monitoring": 6,
    "optiflow.serving": 7,
}
# Outside the core: which top-level packages each may import.
ALLOWED = {
    "optiflow": {"optiflow"},
    "tasks": {"optiflow", "tasks"},
    "flows": {"optiflow", "tasks", "flows", "tools"},
    "tools": {"optiflow", "tools"},
}
NO_PREFECT = ("optiflow",)  # the core is pure: Prefect stays in tasks/ and flows/


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for package in PACKAGES for path in sorted((REPO / package).rglob("*.py"))}


def _imports(path: Path, known: set[str]) -> set[str]:
    """Project modules ``path`` imports (a name imported from a package counts as its submodule when it is one)."""
    found = set()
    for module in imported_modules(path):
        parent = module.rpartition(".")[0]
        found.add(parent if module not in known and parent in known else module)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, set(modules)) for name, path in modules.items()}


def _rank(module: str) -> int | None:
    for prefix, rank in CORE_RANKS.items():
        if module == prefix or module.startswith(prefix + "."):
            return rank
    return None


def test_every_core_module_has_a_place_in_the_lifecycle(graph: dict[str, set[str]]) -> None:
    unplaced = [m for m in graph if m.startswith("optiflow.") and _rank(m) is None]
    assert not unplaced, f"add these to CORE_RANKS (and to the layout in docs/concepts.md): {unplaced}"


def test_imports_point_down_the_layers_and_along_the_lifecycle(graph: dict[str, set[str]]) -> None:
    wrong = []
    for module, imported in graph.items():
        top = module.split(".")[0]
        for target in imported:
            target_top = target.split(".")[0]
            if target_top not in PACKAGES:
                if target_top == "prefect" and top in NO_PREFECT:
                    wrong.append(f"{module} -> {target} (the core never imports Prefect)")
                continue
            if target_top not in ALLOWED[top]:
                wrong.append(f"{module} -> {target} ({top}/ may import only {sorted(ALLOWED[top])})")
            elif top == "optiflow" and target_top == "optiflow":
                source_rank, target_rank = _rank(module), _rank(target)
                if source_rank is not None and target_rank is not None and target_rank > source_rank:
                    wrong.append(f"{module} -> {target} (a later lifecycle step)")
    assert not wrong, "imports against the layer order:\n" + "\n".join(sorted(wrong))


def test_no_import_circles(graph: dict[str, set[str]]) -> None:
    circles = [component for component in _strongly_connected(graph) if len(component) > 1]
    circles += [[module] for module, imported in graph.items() if module in imported]
    assert not circles, "import circles:\n" + "\n".join(" <-> ".join(sorted(c)) for c in circles)


def test_the_checks_find_what_they_look_for() -> None:
    """The graph reader sees lazy imports and skips type-only ones; the cycle finder finds a circle."""
    source = REPO / "tests" / "unit" / "_layers_probe.py"
    source.write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import optiflow.serving\n"
        "def late():\n    from optiflow.release import registry\n"
    )
    try:
        found = _imports(source, {"optiflow.release", "optiflow.release.registry", "optiflow.serving"})
    finally:
        source.unlink()
    assert {module for module in found if module.startswith("optiflow")} == {
        "optiflow.release",
        "optiflow.release.registry",
    }
    assert [sorted(c) for c in _strongly_connected({"a": {"b"}, "b": {"a"}, "c": {"a"}}) if len(c) > 1] == [["a", "b"]]


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm over the project modules (edges to modules outside the graph are ignored)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in graph:
                continue
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            components.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components
