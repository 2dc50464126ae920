"""The types every algorithm declaration uses (pure Python, no QGIS): parameter kinds, :class:`P` (one
parameter) and :class:`AlgoSpec` (one algorithm), plus the parameters several algorithms share."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["INPUT_KINDS", "OUTPUT_KINDS", "AlgoSpec", "P"]

INPUT_KINDS = (
    "raster",
    "vector",
    "field",
    "bands",
    "file",
    "folder",
    "int",
    "float",
    "bool",
    "enum",
    "string",
    "extent",
    "crs",
)
OUTPUT_KINDS = ("out_raster", "out_vector", "out_file", "out_folder")


@dataclass(frozen=True)
class P:
    """One parameter: QGIS name, label, kind, and the CLI option it becomes (``None``: positional)."""

    name: str
    label: str
    kind: str
    flag: str | None = None
    default: Any = None
    optional: bool = False
    options: tuple[str, ...] = ()
    parent: str | None = None
    minimum: float | None = None
    maximum: float | None = None
    invert: str | None = None  # bool: the flag emitted when the value is False (e.g. --no-standardize)
    advanced: bool = False
    file_filter: str = ""
    help: str = ""
    overwrite_flag: str | None = None  # output: the flag that replaces an existing output


@dataclass(frozen=True)
class AlgoSpec:
    """One Processing algorithm: id, display name, group, CLI command, parameters and output styling."""

    id: str
    name: str
    group: str
    command: tuple[str, ...]
    params: tuple[P, ...]
    help: str
    styles: Mapping[str, str] = field(default_factory=dict)  # output name -> classes|probability|rgb|polygons
    progress: bool = True  # accepts --progress json
    device: str | None = None  # '--device' or '--accelerator' when the command runs a network
    extra: tuple[str, ...] = ()
    one_of: tuple[tuple[str, ...], ...] = ()  # groups of parameters of which exactly one must be given


def _out(name: str, label: str, kind: str, flag: str | None, **kw: Any) -> P:
    return P(name, label, kind, flag, **kw)


_RASTER = P("INPUT", "Input raster", "raster", None)
_BANDS = P("BANDS", "Bands (default: all)", "bands", "--bands", optional=True, parent="INPUT")
_SEED = P("SEED", "Random seed", "int", "--seed", default=0, advanced=True)
_STD = P("STANDARDIZE", "Z-score bands first", "bool", None, default=True, invert="--no-standardize")
