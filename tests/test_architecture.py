"""The package's layering, read from the source: imports flow downward only, no import cycles, and
sampling stands without Lightning. The layers are those of docs/ARCHITECTURE.md."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Lowest first. A module may import modules of its own layer or of any layer below it.
LAYERS = [
    ["crisp_pl.config", "crisp_pl.workspace"],
    ["crisp_pl.cache", "crisp_pl.progress", "crisp_pl.distributed", "crisp_pl.seeds", "crisp_pl.costs", "crisp_pl.repetition", "crisp_pl.sampling", "crisp_pl.corpus", "analysis"],
    ["crisp_pl.embed", "crisp_pl.embedders", "crisp_pl.cluster", "crisp_pl.coverage", "crisp_pl.model"],
    ["crisp_pl.training", "crisp_pl.evaluate"],
    ["crisp_pl.selection"],
    ["crisp_pl.stages"],
    ["crisp_pl.tracking"],
    ["crisp_pl.study"],
    ["crisp_pl.tune", "crisp_pl.plan", "crisp_pl.task_new", "crisp_pl.explain", "crisp_pl.ui"],
    ["crisp_pl.cli"],
]
LIGHTNING_HOME = "crisp_pl.training"  # the only package that imports Lightning


def module_files() -> dict[str, Path]:
    files = {}
    for package in ("crisp_pl", "analysis"):
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            files[name] = path
    return files


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Every module this file imports, at module level or inside functions (relative imports resolved)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import module` imports pkg.module; `from module import name` imports module.
            found.update(f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    files = module_files()
    return {name: imports_of(name, path, set(files)) for name, path in files.items()}


def layer_of(module: str) -> int | None:
    for index, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return index
    return None


def test_every_module_has_a_layer(graph):
    assert [m for m in graph if layer_of(m) is None and m not in ("crisp_pl", "analysis")] == []


def test_imports_flow_downward(graph):
    upward = [f"{m} (layer {layer_of(m)}) imports {t} (layer {layer_of(t)})"
              for m, targets in graph.items() for t in targets
              if m not in ("crisp_pl", "analysis") and layer_of(t) is not None and layer_of(t) > layer_of(m)]
    assert upward == []


def test_no_import_cycles(graph):
    internal = {m: {t for t in targets if t in graph and t != m} for m, targets in graph.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(internal[module]):
            if state.get(target) == 1:
                cycles.append(path[path.index(target):] + [target])
            elif target not in state:
                visit(target, path + [target])
        state[module] = 2

    for module in sorted(internal):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_only_training_imports_lightning(graph):
    importers = sorted(m for m, targets in graph.items()
                       if any(t == "lightning" or t.startswith("lightning.") for t in targets))
    assert importers and all(m.startswith(LIGHTNING_HOME) for m in importers), importers


def test_analysis_knows_nothing_of_the_study_runner(graph):
    assert not [t for m, targets in graph.items() if m.startswith("analysis") for t in targets if t.startswith("crisp_pl")]


def test_sampling_imports_no_lightning_even_indirectly():
    code = "import sys, crisp_pl.sampling, crisp_pl.selection; print(any(m.split('.')[0] == 'lightning' for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert out.strip() == "False"


def test_the_checker_sees_upward_and_circular_imports(tmp_path):
    """The graph reader itself: relative and function-level imports are found."""
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "a.py").write_text("def f():\n    from . import b\n")
    (tmp_path / "pkg" / "b.py").write_text("from pkg.a import f\n")
    known = {"pkg", "pkg.a", "pkg.b"}
    assert imports_of("pkg.a", tmp_path / "pkg" / "a.py", known) == {"pkg.b"}
    assert imports_of("pkg.b", tmp_path / "pkg" / "b.py", known) == {"pkg.a"}
