"""The package's shape: no import cycle at run time, no module reaching into another's
private names, and no module past 400 lines (see the README's "Where things are")."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parent.parent / "optistate"
MODULES = {path.stem: path for path in PACKAGE.glob("*.py")}


def _runtime_imports(tree: ast.Module) -> list[tuple[str, list[str]]]:
    """(module, names) for every ``from .module import names`` outside ``if TYPE_CHECKING:``."""
    found: list[tuple[str, list[str]]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.append((node.module.split(".")[0], [a.name for a in node.names]))
            else:  # from . import a, b
                found.extend((a.name, []) for a in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return [(module, names) for module, names in found if module in MODULES]


TREES = {name: ast.parse(path.read_text()) for name, path in MODULES.items()}
GRAPH = {name: {module for module, _ in _runtime_imports(tree)} for name, tree in TREES.items()}


def test_the_run_time_imports_have_no_cycle():
    assert GRAPH["store"] and GRAPH["agent"], "no imports found: the check would prove nothing"
    state: dict[str, str] = {}

    def walk(module: str, path: list[str]) -> None:
        state[module] = "open"
        for imported in sorted(GRAPH[module]):
            assert state.get(imported) != "open", " -> ".join([*path, module, imported])
            if imported not in state:
                walk(imported, [*path, module])
        state[module] = "done"

    for module in sorted(GRAPH):
        if module not in state:
            walk(module, [])


def test_no_module_imports_or_reads_another_modules_private_names():
    offences = []
    for name, tree in TREES.items():
        for module, names in _runtime_imports(tree):
            offences += [f"{name}: from .{module} import {n}" for n in names if n.startswith("_")]
        imported_modules = {module for module, names in _runtime_imports(tree) if not names}
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                if isinstance(node.value, ast.Name) and node.value.id in imported_modules:
                    offences.append(f"{name}: {node.value.id}.{node.attr}")
    assert offences == []


def test_no_module_is_over_400_lines():
    sizes = {name: len(path.read_text().splitlines()) for name, path in MODULES.items()}
    assert len(sizes) > 10
    assert {name: size for name, size in sizes.items() if size > 400} == {}
