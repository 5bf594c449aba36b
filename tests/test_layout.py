"""The layout holds: no import cycle inside the library, and the library never imports its
command line or the benchmarks (both sit on top of it).

Every module under ``autorec/`` is parsed with :mod:`ast`; an edge ``a -> b`` is any
``import``/``from ... import`` of module ``b`` by module ``a``, at module level or inside a
function (a deferred import still ties the two modules together).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "autorec"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """Library modules imported by the module at ``path``."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            # "from . import metrics" imports the submodule autorec.metrics
            targets = [f"{stem}.{alias.name}" if f"{stem}.{alias.name}" in modules else stem
                       for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # a name inside a module
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def _graph() -> dict[str, set[str]]:
    paths = sorted(ROOT.rglob("*.py"))
    modules = {_module_name(p) for p in paths}
    graph = {_module_name(p): _imports(p, modules) for p in paths}
    # importing a submodule runs its packages' __init__ first: not an edge of the code,
    # so package __init__ edges to their own submodules are kept, the reverse is implied
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def _is_package_face(module: str) -> bool:
    return (ROOT.parent / module.replace(".", "/") / "__init__.py").exists()


def test_no_import_cycles():
    graph = _graph()
    # a package's __init__ may re-export (import) its submodules: drop those edges, they
    # cannot make a cycle of code (the package face is what users import)
    code = {m: {t for t in ts if not (_is_package_face(m) and t.startswith(m + "."))}
            for m, ts in graph.items()}
    assert _cycles(code) == []


def test_the_library_never_imports_cli_or_benchmarks():
    graph = _graph()
    entry_points = ("autorec.cli", "autorec.__main__")  # python -m autorec runs the CLI
    bad = sorted((m, t) for m, ts in graph.items() if not m.startswith(entry_points)
                 for t in ts if t.startswith("autorec.cli"))
    assert bad == [], f"library modules import the command line: {bad}"
    for path in ROOT.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level
                     else [])
            assert not any(n.split(".")[0] in ("benchmarks", "paper_tables") for n in names), path


def test_the_checker_sees_a_cycle(tmp_path):
    """The cycle finder is not vacuous: a two-module cycle is reported."""
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
    assert "autorec.data" in _graph()["autorec.models.base"]  # edges are found


@pytest.mark.parametrize("module", ["autorec", "autorec.cli", "autorec.datasets", "autorec.data",
                                    "autorec.metrics", "autorec.split", "autorec.protocols"])
def test_light_modules_do_not_import_torch(module):
    """``import autorec`` and the CLI's parser pay for torch only when a model is used."""
    import subprocess
    import sys

    code = (f"import sys, {module}; "
            + ("from autorec.cli import build_parser; build_parser(); " if module == "autorec.cli" else "")
            + "sys.exit(1 if 'torch' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT.parent).returncode == 0
