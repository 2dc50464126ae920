"""What a raster holds: its bands (:class:`BandInfo`), band selection by index or description
(:func:`resolve_bands`) and the JSON description ``rasterlearn info`` prints (:func:`describe_raster`).

:class:`~rasterlearn.io.raster.RasterReader` uses them when it opens a raster.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import rasterio

from rasterlearn.errors import InputError
from rasterlearn.grid import Grid

__all__ = ["BandInfo", "BandSelector", "describe_bands", "describe_raster", "resolve_bands"]

BandSelector = int | str


@dataclass(frozen=True, slots=True)
class BandInfo:
    """One band of a raster: 1-based ``index`` in the file, ``dtype``, ``description``, ``nodata``."""

    index: int
    dtype: str
    description: str | None
    nodata: float | None
    color_interp: str
    block_shape: tuple[int, int]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["block_shape"] = list(self.block_shape)
        d["nodata"] = _json_number(self.nodata)
        return d


def _json_number(value: float | None) -> float | str | None:
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return float(value)


def resolve_bands(
    ds: rasterio.DatasetReader, path: str, bands: Sequence[BandSelector] | None, alpha: Sequence[int]
) -> list[int]:
    """1-based indexes of ``bands`` (indexes, or descriptions matched case-insensitively) in ``ds`` opened
    from ``path``. Default: every band except the ``alpha`` bands (all bands when every one is alpha)."""
    if bands is None:
        chosen = [i for i in range(1, ds.count + 1) if i not in alpha]
        return chosen or list(range(1, ds.count + 1))
    if len(bands) == 0:
        raise InputError(f"Empty band selection for {path}: name at least one band")
    out: list[int] = []
    descriptions = list(ds.descriptions)
    for b in bands:
        if isinstance(b, str) and b.strip().lstrip("-").isdigit():
            b = int(b)
        if isinstance(b, int | np.integer):
            if not 1 <= int(b) <= ds.count:
                raise InputError(
                    f"Band {b} does not exist in {path}, which has bands 1..{ds.count} "
                    f"(band indexes are 1-based)"
                )
            out.append(int(b))
        else:
            matches = [
                i + 1 for i, d in enumerate(descriptions) if d is not None and d.lower() == str(b).lower()
            ]
            if not matches:
                listed = ", ".join(f"{i + 1}={d!r}" for i, d in enumerate(descriptions))
                raise InputError(
                    f"No band described as {b!r} in {path}. Its bands are: {listed}. "
                    f"Select by description or by 1-based index."
                )
            out.append(matches[0])
    return out


def describe_bands(ds: rasterio.DatasetReader) -> list[BandInfo]:
    """A :class:`BandInfo` for every band of ``ds``."""
    nodatavals = ds.nodatavals
    return [
        BandInfo(
            index=i + 1,
            dtype=ds.dtypes[i],
            description=ds.descriptions[i],
            nodata=None if nodatavals[i] is None else float(nodatavals[i]),
            color_interp=ds.colorinterp[i].name,
            block_shape=(int(ds.block_shapes[i][0]), int(ds.block_shapes[i][1])),
        )
        for i in range(ds.count)
    ]


def describe_raster(
    ds: rasterio.DatasetReader, path: str, grid: Grid, alpha: list[int], bands: Sequence[BandInfo]
) -> dict[str, Any]:
    """A JSON-friendly description of ``ds`` (opened from ``path``, on ``grid``): grid, CRS, resolution,
    bands, nodata, block layout, driver (what ``rasterlearn info`` prints)."""
    crs = grid.crs
    return {
        "path": path,
        "driver": ds.driver,
        "width": ds.width,
        "height": ds.height,
        "count": ds.count,
        "crs": None if crs is None else crs.to_wkt(),
        "crs_name": None if crs is None else crs.name,
        "epsg": grid.epsg,
        "crs_units": None if crs is None else (crs.axis_info[0].unit_name if crs.axis_info else None),
        "is_geographic": grid.is_geographic,
        "transform": [float(v) for v in tuple(ds.transform)[:6]],
        "res": list(grid.res),
        "bounds": list(grid.bounds),
        "nodata": _json_number(ds.nodata),
        "dtypes": sorted(set(ds.dtypes)),
        "block_shapes": [list(s) for s in sorted(set(ds.block_shapes))],
        "tiled": bool(ds.block_shapes and ds.block_shapes[0][1] < ds.width),  # strips span the full width
        "interleave": None if ds.interleaving is None else ds.interleaving.name.lower(),
        "compression": None if ds.compression is None else ds.compression.name.lower(),
        "overviews": ds.overviews(1) if ds.count else [],
        "mask_flags": [[f.name for f in flags] for flags in ds.mask_flag_enums],
        "alpha_bands": alpha,
        "bands": [b.to_dict() for b in bands],
        "tags": ds.tags(),
    }
