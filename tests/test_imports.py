"""The package's import structure: no import circles, and the library imports without napari (or
dask).

A circle between modules (a imports b at module level, b imports a) works only as long as
nobody reorders an import; the library, the CLI and the training engine must also work on a
server with no napari or Qt installed (``pip install blastoseg``)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import blastoseg

PACKAGE_DIR = Path(blastoseg.__file__).parent


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE_DIR.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _top_level_imports(path: Path, modules: set[str]) -> set[str]:
    """blastoseg modules imported when ``path`` is imported (module level, outside
    ``if TYPE_CHECKING``; imports inside functions run later and cannot make a circle)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(body):
        for node in body:
            if isinstance(node, ast.If) and not _is_type_checking(node):
                visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                found.add(base)
                found.update(f"{base}.{a.name}" for a in node.names)

    visit(tree.body)
    return {m for m in found if m in modules and m != name}


def _graph() -> dict[str, set[str]]:
    files = sorted(PACKAGE_DIR.rglob("*.py"))
    modules = {_module_name(f) for f in files}
    return {_module_name(f): _top_level_imports(f, modules) for f in files}


def test_no_module_level_import_circles():
    graph = _graph()
    # importing a.b.c imports its packages a and a.b first; a package __init__ that imports
    # its own submodules is not a circle
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                cycle = stack[stack.index(dep):] + [dep]
                if not all(c == cycle[0] or c.startswith(cycle[0] + ".") or
                           cycle[0].startswith(c + ".") for c in cycle):
                    cycles.append(cycle)
            elif state.get(dep) is None:
                dfs(dep)
        stack.pop()
        state[node] = 2

    for module in sorted(graph):
        if state.get(module) is None:
            dfs(module)
    assert not cycles, "module-level import circles:\n" + "\n".join(
        " -> ".join(c) for c in cycles)


def test_the_graph_sees_imports():
    """The checker above must see real imports (else it passes vacuously)."""
    graph = _graph()
    assert "blastoseg.kinds" in graph["blastoseg.predict.base"]
    assert "blastoseg.errors" in graph["blastoseg.kinds"]


_BLOCK_GUI = r"""
import importlib, importlib.abc, pkgutil, sys

class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        root = name.split(".")[0]
        if root in ("napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "magicgui",
                    "superqt", "vispy",
                    # scale-out extras: only a running batch needs them
                    "dask", "distributed"):
            raise ImportError(f"{name} is blocked: the library must not need it")
        return None

sys.meta_path.insert(0, Blocked())
import blastoseg
failed = []
for info in pkgutil.walk_packages(blastoseg.__path__, "blastoseg."):
    if info.name.startswith("blastoseg.napari"):
        continue
    try:
        importlib.import_module(info.name)
    except Exception as exc:
        failed.append(f"{info.name}: {type(exc).__name__}: {exc}")
print("\n".join(failed))
sys.exit(1 if failed else 0)
"""


def test_every_library_module_imports_without_napari_or_qt():
    proc = subprocess.run([sys.executable, "-c", _BLOCK_GUI], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
