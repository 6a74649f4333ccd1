"""The layout's rules, checked on the source (issue 11): small modules and functions, no import
cycles, no hidden function-local imports of the package's own modules, and layers that only
import downwards (the IR never imports the runtime, the passes or the command line)."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import tomllib

ROOT = Path(__file__).resolve().parent.parent
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80
LONG_MODULES_ALLOWED = {"cgap_graph/ir/expr.py"}
# layer -> layers it must never import (the architecture's direction: ir < surgery < verify <
# passes < run < cli)
FORBIDDEN = {
    "cgap_graph.ir": ("cgap_graph.run", "cgap_graph.cli", "cgap_graph.passes", "cgap_graph.verify",
                      "cgap_graph.surgery", "cgap_graph.io.model_io"),
    "cgap_graph.rules": ("cgap_graph.run", "cgap_graph.cli", "cgap_graph.passes", "cgap_graph.verify",
                         "cgap_graph.surgery", "cgap_graph.ir.analysis", "cgap_graph.io"),
    "cgap_graph.surgery": ("cgap_graph.run", "cgap_graph.cli", "cgap_graph.passes", "cgap_graph.verify"),
    "cgap_graph.verify": ("cgap_graph.run", "cgap_graph.cli", "cgap_graph.passes"),
    "cgap_graph.passes": ("cgap_graph.run", "cgap_graph.cli"),
    "cgap_graph.run": ("cgap_graph.cli",),
    "cgap_graph.io": ("cgap_graph.run", "cgap_graph.cli", "cgap_graph.passes"),
}


def _sources() -> dict[str, Path]:
    """Module name -> file, for the installed package (passes/ installs as cgap_graph.passes)."""
    out = {}
    for base, prefix in ((ROOT / "cgap_graph", "cgap_graph"), (ROOT / "passes", "cgap_graph.passes")):
        for p in base.rglob("*.py"):
            parts = list(p.relative_to(base).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([prefix, *parts])] = p
    return out


SOURCES = _sources()


def _is_pkg(mod: str) -> bool:
    return SOURCES[mod].name == "__init__.py"


def _imports(mod: str, tree: ast.Module):
    """(imported module, node, top-level?) for every import of the package's own modules."""
    top = set(id(n) for n in tree.body)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = mod.split(".") if _is_pkg(mod) else mod.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            if not name.startswith("cgap_graph"):
                continue
            for a in node.names:
                sub = f"{name}.{a.name}"
                yield (sub if sub in SOURCES else name), node, id(node) in top
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("cgap_graph"):
                    yield a.name, node, id(node) in top


def _trees():
    return {m: ast.parse(p.read_text()) for m, p in SOURCES.items()}


def test_modules_and_functions_are_small():
    long_modules, long_functions = [], []
    for p in SOURCES.values():
        rel = str(p.relative_to(ROOT))
        n = len(p.read_text().splitlines())
        if n > MAX_MODULE_LINES and rel not in LONG_MODULES_ALLOWED:
            long_modules.append(f"{rel}: {n} lines")
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long_functions.append(f"{rel}:{node.lineno} {node.name}: {length} lines")
    assert long_modules == []
    assert long_functions == []


def test_no_import_cycles_and_no_hidden_imports():
    graph = nx.DiGraph()
    local = []
    for mod, tree in _trees().items():
        graph.add_node(mod)
        for target, node, top in _imports(mod, tree):
            if target == mod or target not in SOURCES:
                continue
            if _inside_type_checking(tree, node):
                continue  # for type hints only: not an import at run time
            if not top:
                local.append(f"{mod}:{node.lineno} imports {target} inside a function")
            graph.add_edge(mod, target)
    # a package __init__ re-exporting its children is not a cycle with them
    for a, b in list(graph.edges):
        if _is_pkg(b) and a.startswith(b + "."):
            graph.remove_edge(a, b)
    assert local == []
    assert list(nx.simple_cycles(graph)) == []


def _inside_type_checking(tree: ast.Module, target: ast.AST) -> bool:
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            if any(n is target for n in ast.walk(node)):
                return True
    return False


def test_layers_only_import_downwards():
    wrong = []
    for mod, tree in _trees().items():
        for layer, banned in FORBIDDEN.items():
            if mod == layer or mod.startswith(layer + "."):
                for target, node, _ in _imports(mod, tree):
                    if any(target == b or target.startswith(b + ".") for b in banned):
                        wrong.append(f"{mod}:{node.lineno} imports {target}")
    assert wrong == []


def test_every_package_folder_is_installed():
    declared = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {m for m, p in SOURCES.items() if p.name == "__init__.py"}
    assert found == declared
