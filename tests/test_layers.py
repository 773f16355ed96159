"""The layers of docs/architecture.md hold: no module imports from a layer above its own.

data (``cen_bayes`` but ``api``) < ``models`` < inference (fitting, prediction, diagnostics) < the
estimator (``cen_bayes.api.CEN`` and the choice of variant and K it runs) < interfaces (the CLI, scoring,
the method registry, reports, the design of the next grids, benchmarks, the collection app). Imports inside
functions count too: a lazy import is still a dependency."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYER = {"cen_bayes": 0, "models": 1, "inference": 2, "cen_bayes.api": 3, "inference.select": 3,
         "inference.evaluate": 4, "inference.methods": 4, "inference.svi": 4, "inference.report": 4,
         "inference.design": 4, "benchmarks": 4, "cen_bayes.app": 4}


def layer_of(module: str) -> int | None:
    """The layer of the most specific entry of ``LAYER`` that names ``module`` or a package holding it."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in LAYER:
            return LAYER[".".join(parts[:n])]
    return None


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            if node.module == "cen_bayes":  # from cen_bayes import CEN is the api
                names |= {"cen_bayes.api" for alias in node.names if alias.name == "CEN"}
    return names


SOURCES = [p for package in ("cen_bayes", "models", "inference", "benchmarks")
           for p in sorted((ROOT / package).rglob("*.py"))]


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_upward_import(path):
    module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    own = layer_of(module)
    if module == "cen_bayes.__init__":  # the lazy ``from cen_bayes import CEN`` entry
        own = LAYER["cen_bayes.api"]  # the package's lazy entry to the estimator
    upward = sorted(name for name in imported_modules(path)
                    if (layer := layer_of(name)) is not None and layer > own)
    assert not upward, f"{module} (layer {own}) imports {upward} from a layer above"


def test_the_check_sees_an_upward_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from inference.predict import posterior_draws\n")
    assert "inference.predict" in imported_modules(bad) and layer_of("inference.predict") > LAYER["models"]
