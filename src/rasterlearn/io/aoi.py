"""Areas of interest (AOI) on a raster grid: a vector file, a geometry or bounds → window + pixel mask.

An AOI restricts a stage (predict, evaluate, ...) to part of a raster. :func:`resolve_aoi` turns any of the
accepted forms into an :class:`AOI` on a given :class:`~rasterlearn.grid.Grid`:

* a **vector file** (any format GDAL/pyogrio reads, any CRS: reprojected to the grid's CRS by
  :func:`rasterlearn.io.vector.read_vector`, which logs it); all its features are unioned;
* a **GeoDataFrame / GeoSeries** (reprojected to the grid's CRS when both have a CRS);
* a **shapely geometry**, taken to be in the grid's CRS;
* **bounds** ``(left, bottom, right, top)`` in the grid's CRS.

The AOI's ``window`` is the part of the grid covering the AOI's bounding box (snapped outwards to whole
pixels, clipped to the grid); ``geometry`` is the polygon to mask by, or ``None`` when the window itself is
the AOI (bounds, or a rectangle lying on pixel edges). :meth:`AOI.mask` gives the pixels of any window
whose centres lie inside the geometry.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rasterlearn.errors import InputError, NoOverlapError
from rasterlearn.grid import Grid, Window

if TYPE_CHECKING:
    from shapely.geometry.base import BaseGeometry

__all__ = ["AOI", "aoi_mask", "parse_aoi", "resolve_aoi"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AOI:
    """An area of interest placed on a grid.

    Attributes:
        window: the grid window holding the AOI's extent (never empty, always inside the grid).
        geometry: the AOI polygon(s) in the grid's CRS, or ``None`` when every pixel of ``window`` is in
            the AOI.
    """

    window: Window
    geometry: BaseGeometry | None = None

    def mask(self, grid: Grid, window: Window) -> np.ndarray:
        """Boolean ``window.shape`` array, ``True`` for pixels inside the AOI.

        Pixels count as inside when their centre lies in the geometry; without a geometry, when they lie in
        :attr:`window`. ``window`` may extend past the grid (padded windows); such pixels are outside.
        """
        if self.geometry is not None:
            return aoi_mask(self.geometry, grid, window)
        out = np.zeros(window.shape, dtype=bool)
        inter = window.intersection(self.window)
        if inter is not None:
            out[inter.relative_to(window).slices()] = True
        return out


def _geometry_of(aoi: Any, grid: Grid) -> BaseGeometry | None:
    """The AOI as one geometry in the grid's CRS, or ``None`` when ``aoi`` is a bounds sequence."""
    import shapely
    from shapely.geometry.base import BaseGeometry

    if isinstance(aoi, str | Path):
        from rasterlearn.io.vector import read_vector

        gdf = read_vector(aoi, crs=grid.crs)
        return shapely.union_all(gdf.geometry.values)
    if isinstance(aoi, BaseGeometry):
        return aoi
    if hasattr(aoi, "geometry"):
        frame = aoi if grid.crs is None or aoi.crs is None else aoi.to_crs(grid.crs)
        return shapely.union_all(frame.geometry.values)
    return None


def resolve_aoi(aoi: str | Path | BaseGeometry | Sequence[float] | Any, grid: Grid) -> AOI:
    """Place an AOI on ``grid``.

    Args:
        aoi: a vector file path, a GeoDataFrame/GeoSeries, a shapely geometry (in the grid's CRS) or
            ``(left, bottom, right, top)`` in the grid's CRS.
        grid: the raster grid.

    Returns:
        The :class:`AOI`: the window covering the AOI's extent (snapped outwards to whole pixels) and the
        geometry to mask by (``None`` for bounds and for rectangles on pixel edges).

    Raises:
        InputError: ``aoi`` is none of the accepted forms.
        NoOverlapError: the AOI does not overlap the grid (the message gives the grid's extent).
        InputNotFoundError, CRSError, EmptyInputError: from :func:`rasterlearn.io.vector.read_vector`.
    """
    from shapely.geometry import box

    geom = _geometry_of(aoi, grid)
    if geom is None:
        bounds: Any = aoi
        try:
            vals = tuple(float(v) for v in bounds)
        except (TypeError, ValueError):
            vals = ()
        if len(vals) != 4:
            raise InputError(
                f"AOI must be a vector file, a geometry or (left, bottom, right, top); got {aoi!r}"
            )
        win = grid.window_for_bounds(vals, snap="out").intersection(grid.window)
        if win is None:
            raise NoOverlapError(f"AOI extent {vals} does not overlap the raster extent {grid.bounds}")
        return AOI(win, None)
    if geom.is_empty or not geom.intersects(box(*grid.bounds)):
        raise NoOverlapError(
            f"AOI {aoi} does not overlap the raster extent {tuple(round(v, 3) for v in grid.bounds)}"
            " (in the raster's CRS)"
        )
    win = grid.window_for_bounds(tuple(geom.bounds), snap="out").intersection(grid.window)
    if win is None:  # pragma: no cover - excluded by the intersects check
        raise NoOverlapError(f"AOI {aoi} does not overlap the raster")
    if geom.geom_type in ("Polygon", "MultiPolygon") and geom.equals(box(*grid.window_bounds(win))):
        geom = None  # a rectangle on pixel edges needs no mask
    log.debug("AOI -> window %s%s", win, "" if geom is None else " + polygon mask")
    return AOI(win, geom)


def aoi_mask(geometry: BaseGeometry, grid: Grid, window: Window) -> np.ndarray:
    """Boolean ``window.shape`` mask of the pixels of ``window`` whose centres lie in ``geometry``.

    Args:
        geometry: polygon(s) in the grid's CRS.
        grid: the grid ``window`` refers to (``window`` may extend past it).
        window: the pixels to test.
    """
    from rasterio.features import geometry_mask

    return geometry_mask(
        [geometry], out_shape=window.shape, transform=grid.window_transform(window), invert=True
    )


def parse_aoi(aoi: str | None) -> tuple[float, ...] | Path | None:
    """An AOI given as text (``--aoi``, an options model's ``aoi``): four comma-separated numbers are bounds
    ``(left, bottom, right, top)``, anything else the path of a vector file; ``None``: none."""
    if aoi is None:
        return None
    parts = aoi.split(",")
    if len(parts) == 4:
        try:
            return tuple(float(p) for p in parts)
        except ValueError:
            pass
    return Path(aoi)
