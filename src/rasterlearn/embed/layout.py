"""Geometry of :func:`rasterlearn.embed.embed`: how tiles land on the feature grid, and the plan of a job.

:func:`feature_layout` checks that tiles of ``size`` every ``stride`` raster pixels land on whole feature
pixels; :func:`_plan_features` turns a raster grid, an extent and a memory budget into the job's plan: the
tiles (:func:`rasterlearn.grid.plan_tiles`, edge policy ``pad``), the feature grid (the extent scaled by
the effective stride), the strip height and the column stripes
(:func:`rasterlearn.grid.plan_column_stripes`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rasterlearn.embed.request import MergeMode
from rasterlearn.embed_stream import feature_bytes_per_column
from rasterlearn.engine.events import report_total
from rasterlearn.errors import ConfigError
from rasterlearn.grid import Bounds, Grid, TilePlan, Window, plan_column_stripes, plan_tiles

log = logging.getLogger("rasterlearn.embed")


@dataclass(frozen=True, slots=True)
class FeatureLayout:
    """How tiles map onto the feature grid.

    Attributes:
        size, stride: tile size and step in raster pixels.
        input_size: model input size (tiles are resized to it when it differs from ``size``).
        feat_size: feature pixels per tile side; ``feat_stride``: feature pixels between tiles.
        factor: raster pixels per feature pixel (``size / feat_size``; the effective stride).
    """

    size: int
    stride: int
    input_size: int
    model_stride: int
    feat_size: int
    feat_stride: int

    @property
    def factor(self) -> float:
        return self.size / self.feat_size


def feature_layout(size: int, stride: int, model_stride: int, input_size: int | None = None) -> FeatureLayout:
    """Check that tiles of ``size`` every ``stride`` land on whole feature pixels and return the layout.

    Raises:
        ConfigError: the input size is not a multiple of the model stride, or the tile stride is not a whole
            number of feature pixels (the message suggests valid values).
    """
    if size <= 0 or stride <= 0 or stride > size:
        raise ConfigError(f"need 0 < stride <= size, got size={size}, stride={stride}")
    inp = size if input_size is None else int(input_size)
    if inp % model_stride:
        lo = max(model_stride, inp // model_stride * model_stride)
        raise ConfigError(
            f"model input size {inp} is not a multiple of the model's patch/stride {model_stride}: "
            f"use --size (or --input-size) {lo} or {lo + model_stride}"
        )
    feat = inp // model_stride
    fstride = stride * feat / size
    if abs(fstride - round(fstride)) > 1e-9 or round(fstride) < 1:
        step = size // math.gcd(size, feat)
        ok = [s for s in range(step, size + 1, step)]
        raise ConfigError(
            f"stride {stride} px is not a whole number of feature pixels ({size} px tiles give "
            f"{feat} feature pixels): choose a stride among {ok[:8]}"
        )
    return FeatureLayout(size, stride, inp, model_stride, feat, round(fstride))


def _resolve_extent(
    grid: Grid, extent: Window | Bounds | str | Path | None, extent_crs: str | None
) -> Window:
    """The window of ``extent`` (a window, bounds in ``extent_crs`` or a vector file) on ``grid``, snapped
    outwards and clipped to it; an extent outside the raster is an error."""
    if extent is None:
        return grid.window
    if isinstance(extent, Window):
        win = extent
    elif isinstance(extent, str | Path):
        from rasterlearn.io.vector import read_vector

        gdf = read_vector(extent, crs=grid.crs)
        win = grid.window_for_bounds(tuple(gdf.total_bounds), snap="out")
    else:
        bounds = tuple(float(v) for v in extent)
        if extent_crs is not None and grid.crs is not None:
            from rasterlearn.io.vector import transform_bounds

            bounds = transform_bounds(bounds, extent_crs, grid.crs)  # type: ignore[arg-type]
        win = grid.window_for_bounds(bounds, snap="out")  # type: ignore[arg-type]
    clipped = win.intersection(grid.window)
    if clipped is None:
        from rasterlearn.errors import NoOverlapError

        raise NoOverlapError(f"The extent {extent} does not overlap the raster (bounds {grid.bounds})")
    return clipped


def _keep_slices(
    merge: MergeMode, lay: FeatureLayout, i: int, j: int, nrows: int, ncols: int
) -> tuple[slice, slice]:
    """The feature rows and columns tile ``(i, j)`` contributes: all of them, or with ``center`` its centre
    (the outer tiles keep their outer margins)."""
    if merge != "center":
        return (slice(0, lay.feat_size), slice(0, lay.feat_size))
    ov = lay.feat_size - lay.feat_stride
    lo = ov // 2

    def axis(k: int, n: int) -> slice:
        start = 0 if k == 0 else lo
        stop = lay.feat_size if k == n - 1 else lo + lay.feat_stride
        return slice(start, stop)

    return (axis(i, nrows), axis(j, ncols))


def _choose_blocksize(
    dim: int, width: int, feat_size: int, budget_mb: float, height: int | None = None
) -> int:
    """The strip height (and output block size): the largest of 512..16 whose feature rows fit ``budget_mb``."""
    # no block larger than the grid (a 64 px grid in 512 px blocks wastes GDAL cache on every band)
    top = max(16, -(-max(width, height or width) // 16) * 16)
    for b in (512, 256, 128, 64, 32, 16):
        if b > top and b > 16:
            continue
        if dim * (b + feat_size) * min(width, b) * 4 / 2**20 <= budget_mb:  # wider: column stripes
            return b
    return 16


@dataclass(frozen=True)
class FeaturePlan:
    """The plan of a job: tiles over the extent, the feature grid, strip height and column stripes.

    Attributes:
        tiles: the tiles over ``area`` (``nrows`` x ``ncols``).
        grid: the feature grid (the extent at the effective stride); the output's grid.
        blocksize: feature rows per strip (and the output's block size).
        stripe_width, stripes: the width of the column stripes and each stripe's ``(start, stop)`` columns.
    """

    tiles: TilePlan
    grid: Grid
    blocksize: int
    stripe_width: int
    stripes: list[tuple[int, int]]

    @property
    def nrows(self) -> int:
        return self.tiles.shape[0]

    @property
    def ncols(self) -> int:
        return self.tiles.shape[1]


def _plan_features(
    grid: Grid,
    area: Window,
    lay: FeatureLayout,
    dim: int,
    memory_mb: float,
    batch_size: int,
    workers: int,
    bands: int,
    dtype: str,
    progress: Callable[[int], None] | None,
) -> FeaturePlan:
    """Plan the tiles over ``area``, the feature grid, the strip height and, on wide rasters, the column
    stripes (planned like predict's, so memory does not grow with the width); tell ``progress`` the total."""
    size, stride = lay.size, lay.stride
    plan = plan_tiles(grid, (size, size), (stride, stride), edge="pad", extent=area)
    fgrid = grid.subgrid(area).scaled(lay.factor)
    nrows, ncols = plan.shape
    report_total(progress, nrows * ncols)  # the extent may clip the caller's estimate
    blocksize = _choose_blocksize(dim, fgrid.width, lay.feat_size, memory_mb, fgrid.height)
    # wide rasters: column stripes, planned like predict's, so memory does not grow with the width
    narrowest = min(ncols, max(1, blocksize // lay.feat_stride))
    cap = blocksize + lay.feat_size + lay.feat_stride * math.ceil(batch_size / narrowest)
    per_col = feature_bytes_per_column(
        dim,
        cap,
        blocksize,
        lay.factor,
        size,
        bands,
        np.dtype(dtype).itemsize,
        max(1, workers) + 2,
    )
    stripe_w, stripes = plan_column_stripes(0, fgrid.width, blocksize, per_col, memory_mb)
    if len(stripes) > 1:
        log.info(
            "Encoding %d column stripes of %d feature pixels (memory_mb=%g)",
            len(stripes),
            stripe_w,
            memory_mb,
        )
    return FeaturePlan(plan, fgrid, blocksize, stripe_w, stripes)
