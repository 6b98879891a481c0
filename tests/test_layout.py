"""The package's layout: no import cycle between its modules, no sub-package importing one above
it, and no module over the size limit. Imports are read from the source (``ast``), those inside
functions included, so a cycle hidden by a late import is found too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "cmfnet"
#: the modules the command line and run.py start from: nothing inside the package imports them
ENTRY_POINTS = {"cmfnet.cli", "cmfnet.train"}
#: sub-package -> the sub-packages its modules may import (besides itself); the layers from the
#: science core up to the commands
ALLOWED = {
    "mri": {"runs"},
    "models": set(),
    "data": {"mri", "runs"},
    "runs": {"mri", "data", "models"},
    "sweeps": {"mri", "runs"},
    "lit": {"mri", "data", "models", "runs", "sweeps"},
    "commands": {"mri", "data", "models", "runs", "sweeps", "lit"},
}
MAX_LINES = 500


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imported_modules(path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that ``path`` imports anywhere in its source: ``from a.b import c``
    counts as importing ``a.b.c`` where that is a module, else ``a.b``."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                found.add(child if child in modules else node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found & modules.keys()


def import_graph() -> dict[str, set[str]]:
    modules = package_modules()
    return {name: imported_modules(path, modules) - {name} for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a list of nodes (first == last), or None (depth-first search)."""
    done: set[str] = set()
    path: list[str] = []
    on_path: set[str] = set()

    def visit(node: str) -> list[str] | None:
        path.append(node)
        on_path.add(node)
        for nxt in sorted(graph[node]):
            if nxt in on_path:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in done:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        path.pop()
        on_path.discard(node)
        done.add(node)
        return None

    for start in sorted(graph):
        if start not in done:
            cycle = visit(start)
            if cycle:
                return cycle
    return None


def subpackage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in ALLOWED) else None


def test_find_cycle_finds_a_cycle_and_only_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_package_has_no_import_cycle():
    assert find_cycle(import_graph()) is None


def test_every_subpackage_is_one_the_layers_know():
    names = {subpackage(m) for m in package_modules()} - {None}
    assert names == set(ALLOWED)


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_a_subpackage_imports_only_the_layers_below_it(package):
    upward = sorted(
        f"{module} -> {imported}"
        for module, imports in import_graph().items()
        if subpackage(module) == package
        for imported in imports
        if imported in ENTRY_POINTS
        or subpackage(imported) not in {package, None, *ALLOWED[package]}
    )
    assert not upward


def test_the_package_root_holds_only_entry_points_and_subpackages():
    root_modules = {path.stem for path in PACKAGE.glob("*.py")}
    assert root_modules == {"__init__", "cli", "train"}


def test_no_module_is_over_the_size_limit():
    long = {
        name: lines
        for name, path in package_modules().items()
        if (lines := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not long
