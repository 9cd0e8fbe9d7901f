"""The import layers hold: arrows point from the components down to the core, never back up, never
sideways between the two components, never from what runs in production to the dev tools, and never
round in a circle inside a package.

Read from the source with `ast` (nothing is imported): every import statement of a module counts,
whether at the top, inside a function or under `if TYPE_CHECKING:`. `from pkg import name` counts as
an import of `pkg.name` when that is a module of the tree, else of `pkg`. A cycle is a set of modules
of one package each reachable from the others (a strongly connected component of the import graph).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# import root → the folder that holds it
ROOTS = {
    "aikeys": REPO / "aikeys",
    "aikeys_gateway": REPO / "gateway" / "aikeys_gateway",
    "aikeys_operator": REPO / "operator" / "aikeys_operator",
    "aikeys_dev": REPO / "dev" / "aikeys_dev",
}
# who may not import whom
FORBIDDEN = {
    "aikeys": {"aikeys_gateway", "aikeys_operator", "aikeys_dev"},
    "aikeys_gateway": {"aikeys_operator", "aikeys_dev"},
    "aikeys_operator": {"aikeys_gateway", "aikeys_dev"},
}


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    line: int


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for root, folder in ROOTS.items():
        for path in sorted(folder.rglob("*.py")):
            parts = [root, *path.relative_to(folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _is_package(module: str) -> bool:
    return MODULES[module].name == "__init__.py"


def _imports(module: str) -> Iterator[Import]:
    tree = ast.parse(MODULES[module].read_text(), filename=str(MODULES[module]))
    package = module if _is_package(module) else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(module, alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, `level - 1` packages up
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                yield Import(module, candidate if candidate in MODULES else base, node.lineno)


IMPORTS = [i for module in MODULES for i in _imports(module)]


def _root(module: str) -> str:
    return module.split(".", maxsplit=1)[0]


def test_the_tree_is_read() -> None:
    """The graph below is the real one: every root has modules, and imports known to exist are seen."""
    for root in ROOTS:
        assert sum(_root(m) == root for m in MODULES) >= 5, root
    edges = {(i.importer, i.imported) for i in IMPORTS}
    assert any(_root(a) == "aikeys_gateway" and _root(b) == "aikeys" for a, b in edges)
    assert any(_root(a) == "aikeys_operator" and _root(b) == "aikeys" for a, b in edges)
    assert ("aikeys_dev.mockupstream.server", "aikeys_dev.mockupstream.core") in edges
    # `from pkg import submodule` is the submodule; `from pkg import name` the package
    assert ("aikeys_dev.mockupstream.core", "aikeys_dev.mockupstream.wire") in edges
    assert ("aikeys_dev.mockupstream.core", "aikeys_dev.mockupstream.behaviour") in edges


@pytest.mark.parametrize("root", sorted(FORBIDDEN))
def test_no_import_against_the_layers(root: str) -> None:
    wrong = [
        f"{MODULES[i.importer].relative_to(REPO)}:{i.line} imports {i.imported}"
        for i in IMPORTS
        if _root(i.importer) == root and _root(i.imported) in FORBIDDEN[root]
    ]
    assert not wrong, "\n".join(wrong)


def graph_of(root: str) -> dict[str, set[str]]:
    """Module → the modules of the same root it imports."""
    graph: dict[str, set[str]] = {m: set() for m in MODULES if _root(m) == root}
    for i in IMPORTS:
        if i.importer in graph and i.imported in graph:
            graph[i.importer].add(i.imported)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles of `graph`: strongly connected components of more than one module, or a
    module that imports itself (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

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
            if len(component) > 1 or v in graph[v]:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def test_cycles_are_found() -> None:
    """The detector itself: a circle through three modules and a self-import are cycles, a chain is not."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"e"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]
    graph["e"].add("e")
    assert cycles(graph) == [["a", "b", "c"], ["e"]]


@pytest.mark.parametrize("root", sorted(ROOTS))
def test_no_import_cycles(root: str) -> None:
    found = cycles(graph_of(root))
    assert not found, "import cycles:\n" + "\n".join(" ↔ ".join(c) for c in found)
