"""The package's layout, read from its import statements: the report reads run folders and never loads the
training side, packages import each other in one direction, no private name crosses a module, and imports sit at
the top of their module (but for the optional dependencies named in ``LOCAL_IMPORTS``)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TRAINING_SIDE = ("replab.train", "replab.loop", "replab.tasks", "replab.runner", "replab.data", "replab.cli",
                 "replab.reproduce", "replab.estimate")
# Imports inside functions that are allowed: optional dependencies, imported where they are used.
LOCAL_IMPORTS = {"pynvml", "IPython.display", "PIL", "torch.profiler"}


def within(module: str, prefixes: tuple[str, ...]) -> bool:
    """Whether ``module`` is one of ``prefixes`` or inside one of them (``replab.data.cifar10`` in ``replab.data``)."""
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(*packages: str) -> dict[str, Path]:
    return {module_name(p): p for package in packages for p in sorted((ROOT / package).rglob("*.py"))}


def imports(path: Path) -> list[tuple[str, str | None, ast.AST, bool]]:
    """``(module, name, node, inside a function)`` of every import of a file: ``from m import n`` gives ``(m, n)``,
    ``import m`` gives ``(m, None)``; relative imports resolved."""
    tree = ast.parse(path.read_text())
    local = {id(n) for f in ast.walk(tree) if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)
             for n in ast.walk(f)}
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, None, node, id(node) in local) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + [base]).strip(".")
            found += [(base, alias.name, node, id(node) in local) for alias in node.names]
    return found


def targets(path: Path, known: dict[str, Path]) -> set[str]:
    """The modules of ``known`` that a file imports (``from package import module`` counts as the module)."""
    found = set()
    for module, name, _, _ in imports(path):
        if name is not None and f"{module}.{name}" in known:
            found.add(f"{module}.{name}")
        elif module in known:
            found.add(module)
    return found


def unit(module: str) -> str:
    """The node of a module in the package graph: its subpackage (``replab.report``), or the top-level module."""
    parts = module.split(".")
    return ".".join(parts[:2])


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of a directed graph, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for successor in sorted(graph.get(node, ())):
            if state.get(successor) == 1:
                return stack[stack.index(successor):] + [successor]
            if successor not in state and (found := visit(successor)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_report_commands_load_nothing_of_the_training_side():
    code = ("import sys, replab.report.commands\n"
            f"loaded = sorted(m for m in sys.modules if m in {TRAINING_SIDE!r} or m.startswith('replab.data.'))\n"
            "assert not loaded, loaded")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_no_report_module_imports_the_training_side():
    known = modules("replab")
    for name, path in modules("replab/report").items():
        wrong = sorted(t for t in targets(path, known) if within(t, TRAINING_SIDE))
        assert not wrong, f"{name} imports {wrong}"


def test_the_runner_imports_no_command_module():
    code = ("import sys, replab.runner\n"
            "assert not {'replab.cli', 'replab.reproduce', 'replab.report.commands', 'benchmarks'} & set(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_no_import_cycle_between_modules_or_between_packages():
    known = modules("replab")
    graph = {name: targets(path, known) - {name} for name, path in known.items()}
    graph = {name: {t for t in found if not name.startswith(t + ".")} for name, found in graph.items()}  # parents
    assert cycle(graph) is None, f"modules import each other: {' -> '.join(cycle(graph))}"
    packages: dict[str, set[str]] = {}
    for name, found in graph.items():
        packages.setdefault(unit(name), set()).update(unit(t) for t in found if unit(t) != unit(name))
    assert cycle(packages) is None, f"packages import each other: {' -> '.join(cycle(packages))}"


def test_text_imports_nothing_of_data():
    known = modules("replab")
    for name, path in modules("replab/text").items():
        assert not [t for t in targets(path, known) if within(t, ("replab.data",))], name


def test_the_graph_checks_find_what_they_look_for():
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None
    assert unit("replab.report.runs") == "replab.report" and unit("replab.cli") == "replab.cli"


@pytest.mark.parametrize("package", ["replab", "benchmarks"])
def test_no_private_name_is_imported_across_modules(package):
    ours = ("replab", "benchmarks")
    for name, path in modules(package).items():
        private = [f"{module}.{imported}" for module, imported, _, _ in imports(path)
                   if module.startswith(ours) and imported and imported.startswith("_")]
        assert not private, f"{name} imports {private}"


@pytest.mark.parametrize("package", ["replab", "benchmarks"])
def test_imports_sit_at_the_top_but_for_optional_dependencies(package):
    for name, path in modules(package).items():
        lines = path.read_text().splitlines()
        for module, _, node, inside in imports(path):
            if not inside:
                continue
            assert module in LOCAL_IMPORTS, f"{name}:{node.lineno} imports {module} inside a function"
            first = node.lineno - 1  # the first line of the run of import lines this one is in
            while first > 0 and lines[first - 1].strip().startswith(("import ", "from ")):
                first -= 1
            assert any("#" in line for line in lines[first - 1 : node.end_lineno]), \
                f"{name}:{node.lineno}: say why {module} is imported where it is used"
