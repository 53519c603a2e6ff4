"""The package's import graph runs one way: no cycles, and the layers import only downwards.

Every ``import`` in every module of ``qupath_rkd`` counts, function-level and
``TYPE_CHECKING`` ones included (a lazy import is still a dependency). A module importing a
package's name (``from qupath_rkd.slides import open_slide``) depends on that package's
``__init__``; ``from package import submodule`` depends on the submodule.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "qupath_rkd"

#: package -> packages it must not import (at any depth).
FORBIDDEN = {
    "qupath_rkd.model": ("training", "inference", "sync", "cli"),
    "qupath_rkd.lesions": ("inference",),
    "qupath_rkd.evaluation": ("inference",),
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """``module -> modules of the package it imports`` (ast only: nothing is executed)."""
    files = {_module_name(p): p for p in package.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        is_package = path.name == "__init__.py"
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                deps.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".")
                    base = base[: len(base) - node.level + (1 if is_package else 0)]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                for alias in node.names:
                    sub = f"{module}.{alias.name}"
                    deps.add(sub if sub in files else module)
        graph[name] = {d for d in deps if d in files and d != name}
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_no_import_cycles() -> None:
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_layers_import_only_downwards() -> None:
    graph = import_graph()
    wrong = []
    for module, deps in sorted(graph.items()):
        for layer, banned in FORBIDDEN.items():
            if module != layer and not module.startswith(layer + "."):
                continue
            for dep in sorted(deps):
                if any(
                    dep == f"qupath_rkd.{b}" or dep.startswith(f"qupath_rkd.{b}.") for b in banned
                ):
                    wrong.append(f"{module} imports {dep}")
    assert not wrong, "\n".join(wrong)


def test_the_graph_sees_function_level_imports() -> None:
    graph = import_graph()
    assert "qupath_rkd.inference.predict" in graph["qupath_rkd.inference.batch"]
    assert "qupath_rkd.model.scorer" in graph["qupath_rkd.cli.predict"]  # imported in a function
