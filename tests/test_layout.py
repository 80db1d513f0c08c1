"""The package's shape: no import cycle inside it, no module too long to read, and the
thin clients' fast path on the standard library alone."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "modules" / "optimization"
MAX_LINES = 700
# forkserver.py runs standalone under the user's interpreter: a second file would be one
# more module every hook could see in sys.modules, so it stays whole.
LONGER = {"forkserver.py"}


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every module of the package this file imports, at any depth (lazy imports too)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_bytes())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            targets = [target] + [f"{target}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            continue
        found |= {t for t in targets if t.startswith("modules.optimization")}
    return found


def graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {t for t in _imports(path) if t in files and t != name} for name, path in files.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges[v]:
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
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle_inside_the_package():
    assert cycles(graph()) == []


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("path", [p for p in sorted(PACKAGE.rglob("*.py")) if p.name not in LONGER], ids=lambda p: p.name)
def test_no_module_is_over_700_lines(path):
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{path.name} has {lines} lines"


def test_the_thin_client_loads_only_the_wire_module_until_it_falls_back():
    client = PACKAGE / "client.py"
    top_level = {
        node.module for node in ast.parse(client.read_bytes()).body if isinstance(node, ast.ImportFrom) and node.level
    }
    assert top_level == {"wire"}
    # fallback.py (the whole package behind it) only inside the functions of the slow path
    assert graph()["modules.optimization.client"] - {"modules.optimization"} == {
        "modules.optimization.wire",
        "modules.optimization.fallback",
    }


def test_the_readme_module_table_names_every_module_and_nothing_else():
    readme = (PACKAGE.parents[1] / "README.md").read_text(encoding="utf-8")
    table = readme.split("| module (`modules/optimization/`) | job |", 1)[1].split("\n\n", 1)[0]
    named = set(re.findall(r"`([a-z_]+\.py)`", table)) | {"__init__.py", "base.py"}  # validators/base.py: the Validator type itself
    named_dirs = set(re.findall(r"`([a-z_]+)/`", table))
    modules = {p.name for p in PACKAGE.rglob("*.py")}
    assert named == modules, (sorted(modules - named), sorted(named - modules))
    assert named_dirs == {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}


def test_architecture_names_only_modules_that_exist():
    text = (PACKAGE.parents[1] / "ARCHITECTURE.md").read_text(encoding="utf-8")
    mentioned = set(re.findall(r"\b([a-z_]+\.py)\b", text))
    modules = {p.name for p in PACKAGE.rglob("*.py")} | {p.name for p in (PACKAGE.parents[1] / "hooks").glob("*.py")}
    tests = {p.name for p in (PACKAGE.parents[1] / "tests").rglob("*.py")} | {p.name for p in (PACKAGE.parents[1] / "bench").glob("*.py")}
    assert mentioned - modules - tests == set()
