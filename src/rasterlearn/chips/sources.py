"""Label sources (thin I/O wrappers over the kernels in rasterlearn.labels): vector labels, label areas,
label rasters read window by window onto an image grid (:class:`rasterlearn.label_grid.LabelRaster`, shared
with evaluate)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from rasterlearn.errors import CRSError, EmptyInputError, InputNotFoundError, ReadError
from rasterlearn.grid import Grid

# one logger for the whole stage, as before the split (log lines and --progress json name it)
log = logging.getLogger("rasterlearn.chips")


def load_vector_labels(
    path: str | Path,
    grid: Grid,
    *,
    attribute: str | None = None,
    layer: str | int | None = None,
    raster: str = "raster",
) -> Any:
    """Read vector labels for a raster grid: features intersecting the raster, in the raster's CRS.

    Reprojection and geometry repairs are logged (by :func:`rasterlearn.io.vector.read_vector`).

    Raises:
        InputNotFoundError, ReadError, AttributeNotFoundError, EmptyInputError (empty layer),
        CRSError (missing CRS), NoOverlapError (no feature over the raster).
    """
    import pyogrio

    from rasterlearn.io.vector import check_overlap, list_layers, read_vector, resolve_layer

    if grid.crs is None:
        raise CRSError(
            f"The {raster} has no CRS, so vector labels cannot be placed on it. Assign it a CRS "
            f"(gdal_edit.py -a_srs EPSG:xxxx) or use a label raster on the same grid."
        )
    if not Path(str(path)).exists():
        raise InputNotFoundError(
            f"Vector file not found: {path}. Check the path (relative paths are resolved from {Path.cwd()})."
        )
    layer = resolve_layer(path, layer)
    try:
        info = pyogrio.read_info(path, layer=layer)
    except Exception as exc:
        raise ReadError(f"Cannot open {path} as a vector layer (layer={layer!r}): {exc}") from exc
    if int(info.get("features", -1)) == 0:
        raise EmptyInputError(
            f"The vector layer {path} (layer={layer!r}) has no features. Choose another layer "
            f"(layers: {', '.join(list_layers(path))}) or file."
        )
    gdf = read_vector(
        path,
        layer=layer,
        attribute=attribute,
        crs=grid.crs,
        bounds=grid.bounds,
        bounds_crs=grid.crs,
        allow_empty=True,
    )
    check_overlap(gdf, grid, what="labels", raster=raster)
    return gdf


def load_label_areas(path: str | Path, grid: Grid, *, layer: str | int | None = None) -> Any:
    """Read a polygon layer of label areas (where annotation is complete), in the grid's CRS."""
    from rasterlearn.io.vector import check_overlap, read_vector

    gdf = read_vector(
        path, layer=layer, crs=grid.crs, bounds=grid.bounds, bounds_crs=grid.crs, allow_empty=True
    )
    check_overlap(gdf, grid, what="label areas", raster="raster")
    poly = gdf.geometry.geom_type.isin(["Polygon", "MultiPolygon"])
    if not poly.all():
        log.warning("%s: %d non-polygon label areas ignored", path, int((~poly).sum()))
        gdf = gdf.loc[poly]
    return gdf
