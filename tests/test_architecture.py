"""The package's layers import only downwards (docs/architecture.md), checked on the source with ``ast``.

Imports inside functions count too: a lazy import is still a dependency, and the cycles it hides
are the ones that made ``mechanisms/`` pull the report code in.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "neurorobust"

#: Lowest first. A module may import its own layer and any layer below it, never one above.
LAYERS: list[set[str]] = [
    {"errors", "types", "registry", "validation", "modes", "plotting"},
    {"data", "models", "attacks"},
    {"training"},
    {"mechanisms"},
    {"specs", "store", "claims"},
    {"evaluation"},
    {"experiments"},
    {"report"},
    {"api", "cli", "__init__"},
]
LAYER_OF = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def _top(module: str) -> str:
    """``neurorobust.<top>....`` -> ``<top>`` (``__init__`` for the package itself)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imported_modules(source: str, module: str, is_package: bool) -> list[tuple[int, str]]:
    """(line, absolute module) for every import of a ``neurorobust`` module in ``source``."""
    here = module.split(".") if is_package else module.split(".")[:-1]
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
                if node.module is None:  # ``from . import x``: each name is a module
                    out += [(node.lineno, f"{target}.{a.name}") for a in node.names]
                    continue
            else:
                target = node.module or ""
            if target.split(".")[0] == "neurorobust":
                out.append((node.lineno, target))
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "neurorobust"]
    return out


def upward_imports(source: str, module: str, is_package: bool = False) -> list[str]:
    """Every import in ``source`` (the code of ``module``) of a layer above the module's own."""
    own = LAYER_OF[_top(module)]
    bad = []
    for line, target in imported_modules(source, module, is_package):
        top = _top(target)
        if top not in LAYER_OF:
            bad.append(f"{module}:{line} imports {target}, which has no layer in LAYERS")
        elif LAYER_OF[top] > own:
            bad.append(f"{module}:{line} imports {target} (layer {top!r} sits above {_top(module)!r})")
    return bad


def _package_modules() -> list[tuple[Path, str, bool]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = ("neurorobust", *path.relative_to(PACKAGE).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        out.append((path, ".".join(parts[:-1] if is_package and len(parts) > 1 else parts), is_package))
    return out


def test_every_top_level_module_has_a_layer():
    tops = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir() if p.suffix == ".py" or p.is_dir()}
    tops -= {"__pycache__"}
    assert tops <= set(LAYER_OF), f"give these a layer in tests/test_architecture.py: {sorted(tops - set(LAYER_OF))}"


def test_no_module_imports_a_layer_above_its_own():
    bad = []
    for path, module, is_package in _package_modules():
        bad += upward_imports(path.read_text(), module, is_package)
    assert not bad, "upward imports (see docs/architecture.md):\n" + "\n".join(bad)


@pytest.mark.parametrize(
    "source",
    [
        "from ..report.build import latest_rows",
        "def f():\n    from ..store import ResultsStore\n",
        "import neurorobust.experiments.runner",
        "from neurorobust.claims import load_claims",
    ],
)
def test_an_added_upward_import_is_caught(source):
    assert upward_imports(source, "neurorobust.mechanisms.sleep")


def test_downward_and_sibling_imports_pass():
    source = "from ..training.loop import fit\nfrom . import spectra\nfrom ..errors import SpecError\n"
    assert upward_imports(source, "neurorobust.mechanisms.hebbian") == []
    assert upward_imports("from .families import reporters", "neurorobust.report.build") == []
    assert upward_imports("from . import hebbian", "neurorobust.report.families", is_package=True) == []


def test_mechanisms_and_training_do_not_import_each_other_upwards():
    """Adversarial fine-tuning is registered as a mechanism by ``mechanisms/__init__``, so ``training``
    (below) never imports ``mechanisms`` (above)."""
    source = (PACKAGE / "training" / "adversarial.py").read_text()
    assert "mechanisms" not in "".join(
        t for _, t in imported_modules(source, "neurorobust.training.adversarial", False)
    )
