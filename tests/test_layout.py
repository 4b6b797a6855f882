"""The package's layout: layers import downwards only, no import cycles, light roots."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "geoseg"
#: lowest first; a module may import its own layer and the layers before it
LAYERS = [
    {"errors", "config", "_files", "runtime", "limits", "__init__", "testing"},
    {"geometry"}, {"models"}, {"scene"}, {"bundle"}, {"catalog"}, {"tiling"}, {"store"},
    {"inference"}, {"outputs"}, {"runs"}, {"evaluation"}, {"training"}, {"fields"}, {"pipeline"},
    {"jupyter"}, {"service"}, {"cli", "__main__"},
]
LAYER = {name: i for i, names in enumerate(LAYERS) for name in names}


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _runtime_imports(path: Path, modules: set[str]) -> set[str]:
    """geoseg modules imported at run time (imports under ``if TYPE_CHECKING`` do not count)."""
    tree = ast.parse(path.read_text())
    skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
            and getattr(node.test, "id", getattr(node.test, "attr", "")) == "TYPE_CHECKING"
            for n in ast.walk(node)}  # fmt: skip
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("geoseg"):
            # ``from pkg import module`` depends on that module, not on the rest of pkg
            subs = {f"{node.module}.{a.name}" for a in node.names}
            found.update(subs & modules)
            if subs - modules:
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("geoseg"))
    return found


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    graph = {}
    for name, path in mods.items():
        deps = set()
        for dep in _runtime_imports(path, set(mods)):
            while dep and dep not in mods:
                dep = dep.rpartition(".")[0]
            if dep and dep != name and dep != "geoseg":
                deps.add(dep)
        graph[name] = deps
    return graph


def _layer(module: str) -> int:
    parts = module.split(".")
    return LAYER[parts[1] if len(parts) > 1 else "__init__"]


def test_every_subpackage_has_a_layer_and_a_docstring() -> None:
    for name, path in _modules().items():
        assert _layer(name) >= 0
        if path.name == "__init__.py":
            assert ast.get_docstring(ast.parse(path.read_text())), f"{name}: no docstring"


def test_layers_import_downwards_only() -> None:
    upward = [f"{m} -> {d}" for m, deps in _graph().items() for d in deps if _layer(d) > _layer(m)]
    assert not upward, upward


def test_no_import_cycles() -> None:
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while (w := stack.pop()) != v:
                comp.append(w)
            if comp:
                cycles.append(sorted([v, *comp]))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not cycles, cycles


@pytest.mark.parametrize("module", ["geoseg", "geoseg.geometry", "geoseg.geometry.window",
                                    "geoseg.cli.main"])
def test_light_imports(module: str) -> None:
    code = (f"import sys, {module}; heavy = [m for m in ('torch', 'xarray', 'dask', 'zarr', "
            "'torchgeo', 'lightning') if m in sys.modules]; print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    heavy = out.stdout.strip()
    if module == "geoseg.cli.main":  # the CLI may not load torch or dask before a command runs
        loaded = heavy.split(",")  # nor torchgeo/lightning (only geoseg weights/train use them)
        assert not {"torch", "dask", "torchgeo", "lightning"} & set(loaded), heavy
    else:
        assert heavy == "", heavy
