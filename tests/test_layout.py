"""The package's shape: no import cycle inside it, no module too long to read, and the
thin clients' fast path on the standard library alone."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "modules" / "optimization"
MAX_LINES = 700
LONGER: set[str] = set()  # modules allowed past MAX_LINES, with the reason beside each


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every module of the package this file imports at run time, at any depth (lazy imports too)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    tree = ast.parse(path.read_bytes())
    # Imports only the type checker runs (`if MYPY:` / `if TYPE_CHECKING:`) are not the program's.
    typing_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id in ("MYPY", "TYPE_CHECKING")
        for stmt in node.body
        for inner in ast.walk(stmt)
    }
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
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
    # fallback.py (the whole package behind it) and hugepages.py (the environment a daemon is
    # started with) only inside the functions of the slow paths
    assert graph()["modules.optimization.client"] - {"modules.optimization"} == {
        "modules.optimization.wire",
        "modules.optimization.fallback",
        "modules.optimization.hugepages",
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


# Modules whose import gives a way to run code from bytes.
UNPICKLERS = {"pickle", "_pickle", "cPickle", "cloudpickle", "dill", "marshal", "shelve", "jsonpickle", "yaml", "copyreg"}


# What is allowed to exec or compile code: running a stub's own .original script file.
EXEC_ALLOWED = {("client.py", "run_original")}


def _module_imports(path):
    """(absolute module names imported, sibling module files imported relatively)."""
    tree = ast.parse(path.read_text(), str(path))
    absolute, relative = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            absolute.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                absolute.add(node.module or "")
                continue
            base = path.parent
            for _ in range(node.level - 1):
                base = base.parent
            if node.module:
                target = base.joinpath(*node.module.split("."))
                relative.add(target.with_suffix(".py") if target.with_suffix(".py").exists() else target / "__init__.py")
            else:
                relative.update(base / f"{alias.name}.py" for alias in node.names if (base / f"{alias.name}.py").exists())
    return tree, absolute, relative


def _code_runners(tree):
    """(innermost enclosing function, name) of every eval/exec/compile/__import__ call."""
    found = []

    def visit(node, owner):
        for child in ast.iter_child_nodes(node):
            inner = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else owner
            if isinstance(child, ast.Call) and isinstance(child.func, ast.Name) and child.func.id in ("eval", "exec", "compile", "__import__"):
                found.append((owner, child.func.id))
            visit(child, inner)

    visit(tree, "<module>")
    return found


def test_nothing_from_the_socket_or_http_is_unpickled_or_evaluated():
    """Static: the code the daemon and the thin client load imports no unpickler and runs
    no eval/exec on data. The one exception is the process pool for isolated validators
    (subprocess_coordinator.py): multiprocess pickles over pipes it creates to workers it
    forked itself, never over the daemon's socket or http."""
    seen, todo = set(), [PACKAGE / "daemon.py", PACKAGE / "client.py", PACKAGE / "hook_integration.py"]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        tree, absolute, relative = _module_imports(path)
        rel = path.relative_to(PACKAGE)
        if str(rel) == "subprocess_coordinator.py":
            continue  # private pipes to its own forked workers (see the docstring)
        assert not {name.split(".")[0] for name in absolute} & UNPICKLERS, (rel, absolute & UNPICKLERS)
        # multiprocess pickles over its pipes; only its shared_memory (raw bytes) may be used here.
        assert {name for name in absolute if name.split(".")[0] in ("multiprocess", "multiprocessing")} <= {"multiprocess.shared_memory"}, rel
        for owner, name in _code_runners(tree):
            assert (str(rel), owner) in EXEC_ALLOWED, f"{rel}: {name}() in {owner}"
        todo.extend(relative)
    names = {str(p.relative_to(PACKAGE)) for p in seen}
    assert {"daemon.py", "client.py", "protocol.py", "async_db.py", "hook_pool.py"} <= names
    # The daemon's only pickling peer is the isolated-validator pool, reached through the engine.
    assert "subprocess_coordinator.py" in names
