"""Which adzoo package may import which, read from the source (ast), so a layering slip fails here, not in review.

Every import counts, including those inside functions: a late import hides a dependency from the start-up time,
not from the design. Add a line to ``FORBIDDEN`` when a new layer rule is agreed.
"""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

import pytest

import adzoo

SRC = Path(adzoo.__file__).parent

#: package -> packages it must not import (anything below it may not depend on anything above it)
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "adzoo.utils": ("adzoo.leaderboard", "adzoo.cli", "adzoo.models", "adzoo.data"),
    # scoring conventions live in metrics; methods and the metric callback import them from there
    "adzoo.metrics": ("adzoo.models", "adzoo.callbacks", "adzoo.leaderboard", "adzoo.cli"),
    "adzoo.callbacks": ("adzoo.models", "adzoo.leaderboard", "adzoo.cli"),
}
#: known breaches, each to be removed by its fix (the test fails when one is gone, so the list cannot go stale)
KNOWN_BREACHES: dict[str, str] = {}


def _module_name(path: Path) -> str:
    parts = ["adzoo", *path.relative_to(SRC).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(SRC.rglob("*.py"))}


MODULES = _modules()


def _inside(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def imported_modules(name: str, path: Path) -> set[str]:
    """The adzoo modules ``name`` imports; ``from pkg import sub`` counts as ``pkg.sub`` when that is a module."""
    found: set[str] = set()
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the importing module's package
                anchor = name.split(".")[: len(name.split(".")) - node.level + is_package]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in MODULES else base)
    return {module for module in found if _inside(module, "adzoo")}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` as a closed path of module names, or None (depth-first colouring)."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for child in sorted(graph.get(node, ())):
            if state.get(child) == 1:
                return [*path[path.index(child) :], child]
            if child not in state and (cycle := visit(child)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_the_scan_sees_imports() -> None:
    """The checks below pass vacuously if the scan finds nothing; known edges must be found."""
    assert "adzoo.utils.io" in MODULES and "adzoo.backbones" in MODULES
    assert "adzoo.leaderboard.collect" in imported_modules(
        "adzoo.cli.hydra_callbacks", MODULES["adzoo.cli.hydra_callbacks"]
    )
    assert "adzoo.utils.io" in imported_modules("adzoo.backbones._io", MODULES["adzoo.backbones._io"])


def test_find_cycle_finds_one() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_lower_layers_import_nothing_above_them(package: str) -> None:
    offending = sorted(
        f"{name} imports {target}"
        for name, path in MODULES.items()
        if _inside(name, package)
        for target in imported_modules(name, path)
        if any(_inside(target, above) for above in FORBIDDEN[package])
    )
    new = [breach for breach in offending if breach not in KNOWN_BREACHES]
    assert not new, f"{package} must not import {FORBIDDEN[package]}: " + "; ".join(new)
    fixed = [breach for breach in KNOWN_BREACHES if _inside(breach.split()[0], package) and breach not in offending]
    assert not fixed, f"fixed, remove from KNOWN_BREACHES: {fixed}"


#: packages whose modules must import one another one way only (a cycle works only while every import in it is
#: inside a function, and breaks the day someone moves one to the top)
ACYCLIC: tuple[str, ...] = ("adzoo.backbones",)


@pytest.mark.parametrize("package", ACYCLIC)
def test_no_import_cycle_inside(package: str) -> None:
    inner = {name for name in MODULES if _inside(name, package) and name != package}  # the __init__ only gathers
    graph = {name: {t for t in imported_modules(name, MODULES[name]) if t in inner} for name in inner}
    assert graph and any(graph.values())  # the scan found the package's own imports
    cycle = find_cycle(graph)
    assert cycle is None, f"import cycle in {package}: {' -> '.join(cycle or [])}"


def _tracked_markdown(root: Path) -> list[Path]:
    """The repository's tracked *.md files (git ls-files), or every *.md outside .venv when git is missing."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "*.md"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        return [p for p in root.rglob("*.md") if ".venv" not in p.parts and ".git" not in p.parts]
    return [root / name for name in listed]


def test_docs_name_no_machine_paths() -> None:
    """Commands in the docs run from the repository root; one machine's checkout path means nothing elsewhere."""
    root = Path(__file__).resolve().parents[1]
    files = _tracked_markdown(root)
    assert any(p.name == "README.md" for p in files)
    machine = "/work/" + "main"  # split, so this file does not match itself when scanned
    hits = [
        f"{p.relative_to(root)}:{n}"
        for p in files
        if p.is_file()
        for n, line in enumerate(p.read_text(errors="replace").splitlines(), 1)
        if machine in line
    ]
    assert not hits, f"absolute checkout paths in the docs (use paths relative to the repository): {hits}"
