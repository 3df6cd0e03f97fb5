"""The package's layers (docs/architecture.md): what each import loads, and the import rules read
from the source (every import statement, including the ones inside functions)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "camfast"

# Layer of a module, by its dotted name: a module may import only its own layer or lower ones.
LAYERS = [  # (prefix, layer), most specific first
    ("camfast.cli", 3), ("camfast.pseudolabel", 3),
    ("camfast.evaluation", 2), ("camfast.metrics", 2), ("camfast.datasets", 2), ("camfast.wsol", 2),
    ("camfast.train", 2),
    ("camfast.ops", 0), ("camfast._ext", 0), ("camfast._C", 0), ("camfast.utils", 0),
    ("camfast._command_env", 0),  # process settings read before torch loads (os and sys only)
    ("camfast", 1),  # the core: methods, nn, localization, crf, puzzle, models, compat
]


def layer(name: str) -> int:
    for prefix, rank in LAYERS:
        if name == prefix or name.startswith(prefix + "."):
            return rank
    raise AssertionError(name)


def modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        yield ".".join(parts), is_package, path


def imports(name: str, is_package: bool, path: Path):
    """``(imported module, imported name or None, line)`` for every import in the file."""
    package = name if is_package else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            for alias in node.names:
                yield module, alias.name, node.lineno


MODULES = list(modules())
NAMES = {name for name, _, _ in MODULES} | {"camfast._C"}


def test_every_module_imports_only_its_layer_or_lower():
    bad = []
    for name, is_package, path in MODULES:
        if name == "camfast":  # the package's lazy loader names every layer (strings, not imports)
            continue
        for module, imported, line in imports(name, is_package, path):
            if imported is not None and f"{module}.{imported}" in NAMES:
                module = f"{module}.{imported}"  # from camfast import _C: the module camfast._C
            if module.startswith("camfast") and layer(module) > layer(name):
                bad.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {name} (layer {layer(name)}) imports "
                           f"{module} (layer {layer(module)})")
    assert not bad, "\n".join(bad)


def test_the_kernels_import_no_method():
    bad = [f"{path}:{line}: {module}" for name, pkg, path in MODULES if name.startswith("camfast.ops")
           for module, _, line in imports(name, pkg, path)
           if module.startswith("camfast.") and not module.startswith(("camfast.ops", "camfast._ext", "camfast._C"))
           and module != "camfast"]
    assert not bad, "\n".join(bad)


def test_no_module_imports_another_modules_private_name():
    """``from m import _x`` only for a private *submodule* of a package the importer is inside
    (``camfast._ext`` from ``camfast.ops._backend``); never a private function, class or
    constant of another module."""
    names = NAMES
    bad = []
    for name, is_package, path in MODULES:
        for module, imported, line in imports(name, is_package, path):
            if not module.startswith("camfast"):
                continue
            full = module if imported is None else f"{module}.{imported}"
            private = [p for p in full.split(".") if p.startswith("_") and not p.startswith("__")]
            if not private:
                continue
            if imported is not None and imported.startswith("_") and full not in names:
                bad.append(f"{path.relative_to(PACKAGE.parent)}:{line}: private name {imported!r} of {module}")
                continue
            # a private module: allowed inside the package that holds it
            owner = full[: full.index("." + private[0])]
            if not (name == owner or name.startswith(owner + ".")):
                bad.append(f"{path.relative_to(PACKAGE.parent)}:{line}: private module {full} from outside {owner}")
    assert not bad, "\n".join(bad)


def _loaded_after(statement: str) -> list[str]:
    code = f"import sys, json\n{statement}\nprint(json.dumps(sorted(m for m in sys.modules if m.startswith('camfast'))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_camfast_loads_only_the_kernels():
    loaded = _loaded_after("import camfast")
    assert all(layer(m) == 0 or m == "camfast" for m in loaded), loaded
    assert "camfast.ops" in loaded


@pytest.mark.parametrize("statement, forbidden", [
    ("import camfast.ops", ("camfast.methods", "camfast.evaluation", "camfast.cli", "camfast.nn")),
    ("import camfast.methods", ("camfast.evaluation", "camfast.cli")),
    ("import camfast.compat", ("camfast.evaluation", "camfast.cli")),
    ("camfast = __import__('camfast'); camfast.zoom_cam", ("camfast.evaluation", "camfast.cli")),
])
def test_each_layer_loads_nothing_above_it(statement, forbidden):
    loaded = _loaded_after(statement)
    assert not [m for m in loaded if m.startswith(forbidden)], loaded


def test_lazy_names_and_old_module_paths():
    code = ("import camfast, camfast.metrics, camfast.datasets.voc\n"
            "from camfast.layers import find_layers\n"
            "assert camfast.metrics is camfast.evaluation.metrics\n"
            "assert camfast.datasets.voc.__name__ == 'camfast.evaluation.datasets.voc'\n"
            "assert find_layers is camfast.find_layers\n"
            "assert callable(camfast.zoom_cam) and callable(camfast.x_grad_cam)\n"
            "assert 'zoom_cam' in camfast.__all__ and 'metrics' in dir(camfast)\n"
            "import camfast as c\n"
            "try:\n    c.no_such_name\nexcept AttributeError as e:\n    print('ok', e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr
