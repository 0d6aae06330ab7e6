"""The package's shape: layers import only downwards, no cycles, no hidden imports of our
own modules inside functions, small files. docs/architecture.md explains the layers."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest
from conftest import REPO

PACKAGE = REPO / "ssl_hpc"

#: each top-level part of the package and its layer; a module may import its own layer and
#: the layers below, never above (docs/architecture.md)
LAYERS = {
    "utils": 0,
    "errors": 0,
    "config": 0,
    "__init__": 0,
    "data": 1,
    "augment": 2,
    "models": 2,
    "losses": 2,
    "metrics": 2,
    "viz": 2,
    "train": 3,
    "embed": 4,
    "search": 4,
    "tune": 4,
    "downstream": 5,
    "report": 6,
    "export": 6,
    "serve": 6,
}
#: viz draws the arrays it is handed: it imports the foundations, and the data format's
#: constants (band names and order), nothing that reads or computes science
VIZ_MAY_IMPORT = {"utils", "errors", "config", "viz", "ssl_hpc.data.format"}
#: third-party modules that may be imported inside a function (heavy or optional)
LAZY_OK = {
    "ray",
    "faiss",
    "triton",
    "fastapi",
    "uvicorn",
    "umap",
    "sklearn",
    "scipy",
    "astropy",
    "mpi4py",
    "h5py",
    "matplotlib",
    "PIL",
    "yaml",
    "torch",
    "threadpoolctl",
}
MAX_LINES = 400
MAX_FUNCTION_LINES = 80


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py"))


def part_of(module: str) -> str:
    """'ssl_hpc.train.export' -> 'train'; 'ssl_hpc.errors' -> 'errors'."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports(path: Path) -> list[tuple[str, bool, int]]:
    """(imported module, inside a function, line) for every import in the file."""
    tree = ast.parse(path.read_text())
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                out.extend((a.name, in_function, child.lineno) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[: len(base) - child.level + 1]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                out.append((target, in_function, child.lineno))
            visit(child, inner)

    visit(tree, False)
    return out


def test_layers_import_only_downwards_and_nothing_imports_the_doors():
    wrong = []
    for path in modules():
        mine = part_of(module_name(path))
        for target, _, line in imports(path):
            where = f"{path.relative_to(REPO)}:{line} imports {target}"
            if target.split(".")[0] == "jobs":
                wrong.append(f"{where} (the library must not import its doors)")
            if not target.startswith("ssl_hpc"):
                continue
            theirs = part_of(target)
            if mine == "viz" and theirs not in VIZ_MAY_IMPORT and target not in VIZ_MAY_IMPORT:
                wrong.append(f"{where} (viz draws arrays, imports no science)")
            elif LAYERS[theirs] > LAYERS[mine]:
                wrong.append(f"{where} (layer {LAYERS[mine]} -> {LAYERS[theirs]})")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles_between_modules():
    graph: dict[str, set[str]] = defaultdict(set)
    names = {module_name(p) for p in modules()}
    for path in modules():
        for target, _, _ in imports(path):
            if target in names:
                graph[module_name(path)].add(target)
            elif target.rpartition(".")[0] in names:  # from pkg import module-or-name
                graph[module_name(path)].add(target.rpartition(".")[0])
    cycles, state = [], {}

    def walk(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if nxt == node or nxt in (node.rpartition(".")[0],):
                continue  # a module importing its own package's __init__ re-exports
            if state.get(nxt) == "open":
                cycles.append(" -> ".join([*stack[stack.index(nxt) :], nxt]))
            elif nxt not in state:
                walk(nxt, [*stack, nxt])
        state[node] = "done"

    for name in sorted(names):
        if name not in state:
            walk(name, [name])
    assert not cycles, "\n".join(cycles)


def test_our_own_modules_are_imported_at_the_top():
    """A function-level import of our own code is how a cycle hides. A module that pulls in
    a heavy optional dependency (triton) may still be imported lazily, marked ``# lazy:``
    with the reason on its line."""
    hidden = []
    for path in modules():
        lines = path.read_text().splitlines()
        for target, in_function, line in imports(path):
            lazy = "# lazy:" in lines[line - 1]
            if in_function and target.startswith("ssl_hpc") and not lazy:
                hidden.append(f"{path.relative_to(REPO)}:{line} imports {target} in a function")
    assert not hidden, "\n".join(hidden)


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_files_stay_small(path):
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(REPO)}: {lines} lines (split it)"


def test_functions_stay_short_or_say_why():
    """A function over 80 lines says in its docstring why it is one piece ("long: ...")."""
    long_ones = []
    for path in modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                doc = ast.get_docstring(node) or ""
                if n > MAX_FUNCTION_LINES and "long:" not in doc:
                    long_ones.append(f"{path.relative_to(REPO)}: {node.name} ({n} lines)")
    assert not long_ones, "\n".join(long_ones)
