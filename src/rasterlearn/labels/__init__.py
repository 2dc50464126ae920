"""Class schemas and labels: codes, names, colours, the ignore code and the background code; labels placed
on a raster grid.

A :class:`ClassSchema` is the single description of the classes of a task. It travels with chips
(``dataset.json``), model packages (``model.json``) and class maps (colour table + category names).
Schemas load from YAML, from GDL-style colormap CSV files (``value,name,#RRGGBB``) or are inferred from
attribute values.

The package is split by what it describes: :mod:`.schema` (the :class:`ClassSchema` value type),
:mod:`.vector` (vector labels rasterized window by window) and :mod:`.raster` (label rasters, grids).
"""

from __future__ import annotations

from rasterlearn.labels.raster import apply_validity, crs_name, is_raster_path, same_place, values_to_codes
from rasterlearn.labels.schema import (
    DEFAULT_IGNORE,
    ClassInfo,
    ClassSchema,
    UnknownPolicy,
    default_color,
    infer_schema,
    is_null_label,
)
from rasterlearn.labels.vector import LabelAreasMode, OverlapRule, VectorLabels, rasterize_window

__all__ = [
    "DEFAULT_IGNORE",
    "ClassInfo",
    "ClassSchema",
    "LabelAreasMode",
    "OverlapRule",
    "UnknownPolicy",
    "VectorLabels",
    "apply_validity",
    "crs_name",
    "default_color",
    "infer_schema",
    "is_null_label",
    "is_raster_path",
    "rasterize_window",
    "same_place",
    "values_to_codes",
]
