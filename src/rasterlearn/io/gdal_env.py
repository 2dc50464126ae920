"""GDAL settings of a streaming pass: the bounded block cache (:func:`gdal_cache`).

GDAL's default block cache (5 % of RAM) keeps decoded blocks of everything read, so a windowed pass over a
large raster would grow by the raster's size. Every stage that streams a raster once (chips, predict,
embed, features, evaluate, band statistics, the writer's COG conversion) runs its reads under
:func:`gdal_cache`.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

import rasterio

__all__ = ["GDAL_CACHE_MB", "gdal_cache"]

GDAL_CACHE_MB = 64
"""GDAL block-cache bound (MB) of a streaming pass when the caller sets none."""
_CACHE_BOUND: contextvars.ContextVar[int | None] = contextvars.ContextVar("gdal_cache_mb", default=None)


@contextlib.contextmanager
def gdal_cache(mb: int | None = None) -> Iterator[None]:
    """Bound GDAL's block cache to ``mb`` megabytes while the block runs (restored afterwards).

    GDAL's default (5 % of RAM) keeps decoded blocks of everything read, so a windowed pass over a large
    raster grows by the raster's size; stages that stream a raster once bound it here. ``None``: the bound
    of an enclosing ``gdal_cache`` (a job's ``cache_mb`` also holds for the writer's COG conversion inside
    it), else :data:`GDAL_CACHE_MB`.
    """
    if mb is None:
        mb = _CACHE_BOUND.get() or GDAL_CACHE_MB
    token = _CACHE_BOUND.set(int(mb))
    try:
        # rasterio hands an integer GDAL_CACHEMAX to GDALSetCacheMax64, which counts bytes (GDAL's "values
        # below 100000 are megabytes" rule only applies to the config string): give it bytes
        with rasterio.Env(GDAL_CACHEMAX=int(mb) * 2**20):
            yield
    finally:
        _CACHE_BOUND.reset(token)
