"""The import direction of the layers: value types <- I/O <- stages <- CLI (never the other way)."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "src" / "rasterlearn"

# rank of each module family: a module may import only modules of a lower or equal rank
VALUE_TYPES = {"errors", "grid", "labels", "normalize", "metrics", "report", "_util"}
RANKS = {"value": 0, "io": 1, "engine": 2, "stage": 3, "cli": 4}
# engine modules that are plain data (no I/O library): the job journal's fingerprint and decision rule,
# which the I/O layer's block writer uses too
VALUE_MODULES = {"rasterlearn.engine.journal"}


def _family(module: str) -> str:
    parts = module.split(".")
    if len(parts) < 2 or parts[0] != "rasterlearn":
        return "external"
    if module in VALUE_MODULES:
        return "value"
    head = parts[1]
    if head in VALUE_TYPES or head == "__init__":
        return "value"
    if head == "io":
        return "io"
    if head == "engine":
        return "engine"
    if head in ("cli", "__main__"):
        return "cli"
    return "stage"


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append(node.module)
        elif isinstance(node, ast.Import):
            out.extend(a.name for a in node.names)
    return [m for m in out if m.startswith("rasterlearn")]


def test_lower_layers_never_import_higher_ones() -> None:
    violations = []
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG.parent).with_suffix("")
        module = ".".join(rel.parts).removesuffix(".__init__")
        fam = _family(module) if module != "rasterlearn" else "value"
        for imp in _imports(path):
            target = _family(imp)
            if target != "external" and imp != "rasterlearn" and RANKS[target] > RANKS[fam]:
                violations.append(f"{module} ({fam}) imports {imp} ({target})")
    assert not violations, "\n".join(violations)


def test_value_types_do_not_import_io_libraries() -> None:
    for name in ("grid.py", "errors.py", "normalize.py", "metrics.py", "_util.py"):
        text = (PKG / name).read_text(encoding="utf-8")
        for lib in ("import rasterio", "import geopandas", "import torch", "import pyogrio"):
            assert lib not in text, f"{name} must stay free of I/O and frameworks ({lib})"


def test_cli_modules_import_heavy_libraries_lazily() -> None:
    for path in (PKG / "cli").glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        top = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
        names = {a.name.split(".")[0] for n in top if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module.split(".")[0] for n in top if isinstance(n, ast.ImportFrom) and n.module}
        heavy = names & {
            "torch",
            "timm",
            "segmentation_models_pytorch",
            "lightning",
            "sklearn",
            "umap",
            "matplotlib",
        }
        assert not heavy, f"{path.name} imports {heavy} at module level; import inside the command"
