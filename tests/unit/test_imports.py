"""The package layout's promises (docs/architecture.md): imports at the top of each module, no import cycles
between modules, and the early pipeline stages never import the later ones."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

BUNDLE = Path(__file__).resolve().parents[2] / "bundle"
# stage -> packages it must not import (a later stage, or a workflow built on top of it)
FORBIDDEN = {
    "bundle.data": ("bundle.lungs", "bundle.synthesis", "bundle.preprocess", "bundle.training", "bundle.evaluation"),
    "bundle.lungs": ("bundle.synthesis", "bundle.preprocess", "bundle.training", "bundle.evaluation"),
    "bundle.synthesis": ("bundle.lungs", "bundle.preprocess", "bundle.training", "bundle.evaluation"),
    "bundle.preprocess": ("bundle.training", "bundle.evaluation", "bundle.inference"),
    "bundle.evaluation": ("bundle.training", "bundle.preprocess", "bundle.inference"),
}


@functools.lru_cache(maxsize=1)
def _modules() -> dict[str, ast.Module]:
    out = {}
    for path in sorted(BUNDLE.rglob("*.py")):
        name = ".".join(path.relative_to(BUNDLE.parent).with_suffix("").parts).removesuffix(".__init__")
        out[name] = ast.parse(path.read_text(), filename=str(path))
    return out


def _bundle_imports(tree: ast.Module, top_level_only: bool) -> set[str]:
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("bundle"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("bundle"))
    return found


def test_bundle_imports_are_at_the_top():
    late = {
        name: sorted(_bundle_imports(tree, False) - _bundle_imports(tree, True)) for name, tree in _modules().items()
    }
    assert not {k: v for k, v in late.items() if v}, f"bundle imports inside functions: {late}"


def test_no_import_cycles():
    graph = {name: _bundle_imports(tree, False) & set(_modules()) for name, tree in _modules().items()}
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                pytest.fail("import cycle: " + " -> ".join(path[path.index(dep) :] + [node, dep]))
            if dep not in state:
                visit(dep, path + [node])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [])


@pytest.mark.parametrize("stage", sorted(FORBIDDEN))
def test_early_stages_do_not_import_later_ones(stage):
    offending = {
        name: sorted(dep for dep in _bundle_imports(tree, False) if dep.startswith(FORBIDDEN[stage]))
        for name, tree in _modules().items()
        if name == stage or name.startswith(stage + ".")
    }
    assert not {k: v for k, v in offending.items() if v}, offending
