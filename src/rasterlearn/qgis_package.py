"""Build the QGIS plugin ZIP (``rasterlearn qgis-plugin``).

The plugin's source is the top-level ``qgis_plugin/rasterlearn_qgis`` folder of the repository (copied into
the wheel as ``rasterlearn/_qgis_plugin``). The ZIP holds that folder under its own name, which is the layout
QGIS' "Install from ZIP" and the plugin repository expect: ``rasterlearn_qgis/metadata.txt``, ``__init__.py``,
icon, licence and modules. Caches (``__pycache__``, ``*.pyc``) are left out.
"""

from __future__ import annotations

import configparser
import zipfile
from pathlib import Path

from rasterlearn._util import atomic_write
from rasterlearn.errors import InputNotFoundError, OutputError

__all__ = ["PLUGIN_NAME", "build_plugin_zip", "plugin_source", "plugin_version"]

PLUGIN_NAME = "rasterlearn_qgis"
_REQUIRED = ("metadata.txt", "__init__.py", "icon.png", "LICENSE")


def plugin_source() -> Path:
    """The plugin folder: inside the installed package, else in the source checkout."""
    here = Path(__file__).resolve().parent
    for cand in (here / "_qgis_plugin", here.parents[1] / "qgis_plugin" / PLUGIN_NAME):
        if (cand / "metadata.txt").is_file():
            return cand
    raise InputNotFoundError(
        f"The QGIS plugin sources are not installed (looked in {here / '_qgis_plugin'} and the source "
        "checkout's qgis_plugin/); build the ZIP from a clone of the repository"
    )


def plugin_version(source: Path | None = None) -> str:
    """The ``version`` of the plugin's ``metadata.txt``."""
    cfg = configparser.ConfigParser(interpolation=None)
    cfg.read((source or plugin_source()) / "metadata.txt", encoding="utf-8")
    return cfg.get("general", "version")


def build_plugin_zip(output: str | Path, *, overwrite: bool = False) -> Path:
    """Write the installable plugin ZIP to ``output`` (atomically) and return its path."""
    output = Path(output)
    if output.exists() and not overwrite:
        raise OutputError(f"{output} exists; pass --overwrite or choose another name")
    if not output.parent.is_dir():
        raise OutputError(f"The folder of {output} does not exist; create it first")
    src = plugin_source()
    missing = [name for name in _REQUIRED if not (src / name).is_file()]
    if missing:
        raise InputNotFoundError(f"The plugin folder {src} lacks {', '.join(missing)}")
    files = sorted(
        p
        for p in src.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".pyo")
    )

    def write(tmp: Path) -> None:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for p in files:
                zf.write(p, f"{PLUGIN_NAME}/{p.relative_to(src).as_posix()}")

    return atomic_write(output, write, suffix=".zip")
