"""Thin I/O layer: raster reading, vector reading, block-wise COG writing.

The names are imported lazily (PEP 562), so that ``rasterlearn.io.raster`` alone (what ``predict`` needs)
does not pull in geopandas and pandas through ``rasterlearn.io.vector``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rasterlearn.io.band_stats import BandStats, band_statistics
    from rasterlearn.io.raster import RasterBlock, RasterReader, open_raster
    from rasterlearn.io.vector import check_overlap, read_vector, write_vector
    from rasterlearn.io.writer import BlockWriter, write_array

__all__ = [
    "BandStats",
    "BlockWriter",
    "RasterBlock",
    "RasterReader",
    "band_statistics",
    "check_overlap",
    "open_raster",
    "read_vector",
    "write_array",
    "write_vector",
]

_HOME = {
    "BandStats": "band_stats",
    "RasterBlock": "raster",
    "RasterReader": "raster",
    "band_statistics": "band_stats",
    "open_raster": "raster",
    "check_overlap": "vector",
    "read_vector": "vector",
    "write_vector": "vector",
    "BlockWriter": "writer",
    "write_array": "writer",
}


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'rasterlearn.io' has no attribute {name!r}")
    return getattr(importlib.import_module(f"rasterlearn.io.{home}"), name)
