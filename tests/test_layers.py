"""Imports only go down: theory <- llm <- analysis <- paper_figures <- benchmarks; and no module imports itself
through others (no import cycle).

Every ``import`` statement of every module is read from its syntax tree, so imports inside functions (the lazy
ones that keep torch out of light entry points) are checked too. Entry points (``__main__.py``) may import
anything: they are where the layers are put together.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("theory", "llm", "analysis", "paper_figures", "benchmarks")
RANK = {name: rank for rank, name in enumerate(LAYERS)}


def imported_packages(source: str, module: str) -> list[tuple[int, str]]:
    """(line, top-level package) for every absolute or relative import in ``source``."""
    package_parts = module.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the importing module's package
                base = package_parts[: len(package_parts) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.append((node.lineno, target.split(".")[0]))
    return found


def upward_imports(root: Path) -> list[str]:
    """Every import from a layer above the importing module's own, as ``file:line: a -> b``."""
    violations = []
    for layer in LAYERS:
        for path in sorted((root / layer).rglob("*.py")):
            if path.name == "__main__.py":
                continue
            module = ".".join(path.relative_to(root).with_suffix("").parts)
            for line, package in imported_packages(path.read_text(), module):
                if package in RANK and RANK[package] > RANK[layer]:
                    violations.append(f"{path.relative_to(root)}:{line}: {layer} -> {package}")
    return violations


def test_no_module_imports_a_higher_layer():
    assert upward_imports(ROOT) == []


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import paper_figures.report\n", ["theory/bad.py:1: theory -> paper_figures"]),
        ("def lazy():\n    from analysis import statistics\n", ["theory/bad.py:2: theory -> analysis"]),
        ("from .dual import dual_value\n", []),  # relative, inside its own layer
        ("import numpy\nfrom theory.dual import dual_value\n", []),
    ],
)
def test_checker_catches_upward_imports(tmp_path, source, expected):
    # The checker itself must fail on an upward import, lazy ones included.
    for layer in LAYERS:
        (tmp_path / layer).mkdir()
    (tmp_path / "theory" / "bad.py").write_text(source)
    (tmp_path / "theory" / "__main__.py").write_text("import benchmarks\n")  # entry points are exempt
    assert upward_imports(tmp_path) == expected


def module_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the project modules its import statements name (lazy ones included; ``__main__`` excluded).

    ``from a.b import c`` names the module ``a.b.c`` when it exists, else ``a.b``; a package's implicit import of
    its parents is not an edge (Python imports parents first, which is not a cycle of the code's making).
    """
    paths = {".".join(p.relative_to(root).with_suffix("").parts).removesuffix(".__init__"): p
             for layer in LAYERS for p in (root / layer).rglob("*.py") if p.name != "__main__.py"}  # fmt: skip
    graph: dict[str, set[str]] = {}
    for module, path in paths.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                edges |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*parts, base] if base else parts)
                edges |= {f"{base}.{a.name}" if f"{base}.{a.name}" in paths else base for a in node.names}
        graph[module] = {e for e in edges if e in paths and e != module}
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_no_import_cycle():
    assert import_cycles(module_graph(ROOT)) == []


def test_checker_catches_a_lazy_cycle(tmp_path):
    for layer in LAYERS:
        (tmp_path / layer).mkdir()
    (tmp_path / "llm" / "a.py").write_text("from llm.b import thing\n")
    (tmp_path / "llm" / "b.py").write_text("def thing():\n    from llm import a\n")
    (tmp_path / "llm" / "c.py").write_text("import llm.a\n")
    assert import_cycles(module_graph(tmp_path)) == [["llm.a", "llm.b"]]
