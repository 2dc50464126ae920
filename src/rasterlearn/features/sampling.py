"""Bounded samples of raster values: random valid pixels, and pixels under points, lines or polygons.

Nothing here reads a whole raster: random samples come from a bounded number of random windows, and vector
samples read only the windows the features cover. Vectors are reprojected to the raster's CRS (logged).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rasterlearn.errors import EmptyInputError, InputError
from rasterlearn.grid import Window
from rasterlearn.io.raster import ImageReader, RasterReader, gdal_cache
from rasterlearn.labels import is_null_label

__all__ = ["PixelSample", "VectorSample", "sample_pixels", "sample_vector"]

log = logging.getLogger(__name__)


@dataclass
class PixelSample:
    """``values`` (n, bands) float32 at pixel ``rows``/``cols`` of the raster grid."""

    values: np.ndarray
    rows: np.ndarray
    cols: np.ndarray

    def __len__(self) -> int:
        return len(self.values)


def sample_pixels(
    reader: ImageReader,
    n: int = 100_000,
    *,
    seed: int = 0,
    window_size: int | None = None,
    max_windows: int = 256,
) -> PixelSample:
    """A reproducible random sample of at most ``n`` valid pixels (all bands valid).

    Reads at most ``max_windows`` windows of ``window_size`` pixels chosen at random on a regular lattice
    (every window when the raster is small) and keeps an equal share of valid pixels from each.

    Raises:
        EmptyInputError: no valid pixel in the sampled windows.
    """
    if n <= 0:
        raise InputError(f"sample size must be positive, got {n}")
    if window_size is None:
        from rasterlearn.features._io import window_size_for

        window_size = window_size_for(reader.count, 256)
    rng = np.random.default_rng(seed)
    grid = reader.grid
    rows_n = math.ceil(grid.height / window_size)
    cols_n = math.ceil(grid.width / window_size)
    cells = rows_n * cols_n
    pick = (
        np.arange(cells) if cells <= max_windows else np.sort(rng.choice(cells, max_windows, replace=False))
    )
    per = max(1, math.ceil(n / len(pick)))
    vals, rr, cc = [], [], []
    for cell in pick:
        r, c = divmod(int(cell), cols_n)
        win = Window(r * window_size, c * window_size, window_size, window_size).clip(grid.height, grid.width)
        with gdal_cache():  # each window is read once: caching its decoded blocks only costs memory
            block = reader.read(win)
        idx = np.flatnonzero(block.valid.ravel())
        if idx.size == 0:
            continue
        if idx.size > per:
            idx = np.sort(rng.choice(idx, per, replace=False))
        pr, pc = np.divmod(idx, win.width)
        vals.append(block.data[:, pr, pc].T.astype("float32"))
        rr.append(pr + win.row_off)
        cc.append(pc + win.col_off)
    if not vals:
        raise EmptyInputError(
            f"No valid pixels found in {reader.path} (nodata={reader.nodata}); check the nodata "
            f"value and the band selection"
        )
    values = np.concatenate(vals)
    rows = np.concatenate(rr)
    cols = np.concatenate(cc)
    if len(values) > n:
        keep = np.sort(rng.choice(len(values), n, replace=False))
        values, rows, cols = values[keep], rows[keep], cols[keep]
    log.info("Sampled %d valid pixels from %d windows of %s", len(values), len(pick), reader.path)
    return PixelSample(values, rows, cols)


@dataclass
class VectorSample:
    """Pixels under vector features.

    Attributes:
        values: (n, bands) float32 raster values.
        rows, cols: pixel positions on the raster grid; x, y: pixel-centre coordinates in the raster CRS.
        feature: index (0-based, in the layer after reading) of the feature each pixel came from.
        labels: the attribute value of that feature (object array), when an attribute was asked for.
        extra: other requested columns, per pixel.
        n_features: features read; n_outside / n_invalid: pixels dropped outside the raster / on nodata.
        n_unlabelled: features skipped because their label attribute is null, empty or blank.
    """

    values: np.ndarray
    rows: np.ndarray
    cols: np.ndarray
    x: np.ndarray
    y: np.ndarray
    feature: np.ndarray
    labels: np.ndarray | None
    extra: dict[str, np.ndarray]
    n_features: int
    n_outside: int
    n_invalid: int
    feature_xy: np.ndarray  # (n_features, 2) representative point of each feature
    n_unlabelled: int = 0  # features skipped for a null, empty or blank label attribute

    def __len__(self) -> int:
        return len(self.values)


def _feature_pixels(
    geom: Any, reader: RasterReader, rate: float, max_pixels: int | None, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of the pixels a geometry covers (may lie outside the grid)."""
    from rasterio.features import geometry_mask

    grid = reader.grid
    gtype = geom.geom_type
    if gtype in ("Point", "MultiPoint"):
        pts = [geom] if gtype == "Point" else list(geom.geoms)
        xs = np.array([p.x for p in pts])
        ys = np.array([p.y for p in pts])
        return grid.rowcol(xs, ys)
    win = grid.window_for_bounds(tuple(geom.bounds), snap="out")
    win = Window(win.row_off, win.col_off, max(1, win.height), max(1, win.width))
    inner = win.intersection(grid.window)
    if inner is None:
        return np.empty(0, "int64"), np.empty(0, "int64")
    mask = geometry_mask(
        [geom],
        out_shape=inner.shape,
        transform=grid.window_transform(inner),
        invert=True,
        all_touched=gtype not in ("Polygon", "MultiPolygon"),
    )
    if not mask.any():  # a polygon smaller than a pixel: take the pixel under its centroid
        c = geom.representative_point()
        return grid.rowcol(np.array([c.x]), np.array([c.y]))
    pr, pc = np.nonzero(mask)
    k = len(pr)
    take = k if rate >= 1 else max(1, round(k * rate))
    if max_pixels is not None:
        take = min(take, max_pixels)
    if take < k:
        sel = np.sort(rng.choice(k, take, replace=False))
        pr, pc = pr[sel], pc[sel]
    return pr + inner.row_off, pc + inner.col_off


def sample_vector(
    reader: RasterReader,
    vector: str | Path | Any,
    *,
    attribute: str | None = None,
    columns: list[str] | None = None,
    layer: str | int | None = None,
    rate: float = 1.0,
    max_per_feature: int | None = 10_000,
    seed: int = 0,
) -> VectorSample:
    """Raster values under points (their pixel), lines (touched pixels) and polygons (pixel centres inside).

    Args:
        reader: the raster.
        vector: a vector file path or a GeoDataFrame (reprojected to the raster CRS when needed).
        attribute: a column whose value labels every sampled pixel (null values are dropped, logged).
        columns: more columns to carry per pixel (e.g. a fold column).
        rate: fraction of a polygon's pixels to sample (1 = all).
        max_per_feature: at most this many pixels per polygon/line.
        seed: random seed for the polygon subsampling.

    Raises:
        NoOverlapError: no feature overlaps the raster. EmptyInputError: every sampled pixel is nodata.
    """
    if not 0 < rate <= 1:
        raise InputError(f"sampling rate must be within (0, 1], got {rate}")
    grid = reader.grid
    gdf, source = _vector_on_grid(reader, vector, attribute, columns, layer)
    gdf, n_unlabelled = _drop_unlabelled(gdf, attribute, source)
    rng = np.random.default_rng(seed)
    rows, cols, feat, rep = _covered_pixels(gdf, reader, rate, max_per_feature, rng)
    inside = (rows >= 0) & (rows < grid.height) & (cols >= 0) & (cols < grid.width)
    n_outside = int((~inside).sum())
    with gdal_cache():  # one read per feature: a bounded block cache
        rows, cols, feat, values, valid = _read_pixels(reader, rows[inside], cols[inside], feat[inside])
    n_invalid = int((~valid).sum())
    if n_outside or n_invalid:
        log.info(
            "%s: %d sampled pixels outside the raster and %d on nodata were dropped",
            source,
            n_outside,
            n_invalid,
        )
    rows, cols, feat, values = rows[valid], cols[valid], feat[valid], values[valid]
    if len(values) == 0:
        raise EmptyInputError(
            f"None of the {len(gdf)} features of {source} covers a valid pixel of {reader.path}; "
            f"check the overlap and the raster's nodata"
        )
    t = grid.transform
    x = t.c + (cols + 0.5) * t.a + (rows + 0.5) * t.b
    y = t.f + (cols + 0.5) * t.d + (rows + 0.5) * t.e
    labels = gdf[attribute].to_numpy(dtype=object)[feat] if attribute is not None else None
    extra = {c: gdf[c].to_numpy(dtype=object)[feat] for c in (columns or [])}
    log.info("Sampled %d pixels from %d features of %s", len(values), len(gdf), source)
    return VectorSample(
        values, rows, cols, x, y, feat, labels, extra, len(gdf), n_outside, n_invalid, rep, n_unlabelled
    )


def _vector_on_grid(
    reader: RasterReader,
    vector: str | Path | Any,
    attribute: str | None,
    columns: list[str] | None,
    layer: str | int | None,
) -> tuple[Any, str]:
    """The features in the raster's CRS (reprojected when needed, logged) and a name for them in messages.

    Raises:
        NoOverlapError: no feature overlaps the raster.
    """
    import geopandas as gpd
    from pyproj import CRS

    from rasterlearn.io.vector import check_attribute, check_overlap, read_vector

    grid = reader.grid
    if isinstance(vector, gpd.GeoDataFrame):
        gdf = vector
        if attribute is not None:
            check_attribute(gdf, attribute)
        if grid.crs is not None and gdf.crs is not None and not CRS.from_user_input(gdf.crs).equals(grid.crs):
            log.info("Reprojecting %d features to the raster CRS", len(gdf))
            gdf = gdf.to_crs(grid.crs)
        source = gdf.attrs.get("source", "GeoDataFrame")
    else:
        gdf = read_vector(vector, layer=layer, attribute=attribute, crs=grid.crs)
        for col in columns or []:
            check_attribute(gdf, col)
        source = str(vector)
    check_overlap(gdf, grid, what=f"features of {source}", raster=reader.path)
    return gdf, source


def _drop_unlabelled(gdf: Any, attribute: str | None, source: str) -> tuple[Any, int]:
    """The features whose ``attribute`` has a value (null, empty or blank ones dropped, logged), and how many
    were dropped."""
    if attribute is None:
        return gdf, 0
    null = np.array([is_null_label(v) for v in gdf[attribute]], dtype=bool)
    if not null.any():
        return gdf, 0
    log.warning(
        "%s: %d features with no value (null, empty or blank) in %r are skipped",
        source,
        int(null.sum()),
        attribute,
    )
    return gdf.loc[~null], int(null.sum())


def _covered_pixels(
    gdf: Any, reader: RasterReader, rate: float, max_per_feature: int | None, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(rows, cols, feature index) of the pixels every feature covers (may lie outside the grid), and each
    feature's representative point."""
    rows_l, cols_l, feat_l = [], [], []
    rep = np.zeros((len(gdf), 2))
    for i, geom in enumerate(gdf.geometry.values):
        pt = geom.representative_point()
        rep[i] = (pt.x, pt.y)
        r, c = _feature_pixels(geom, reader, rate, max_per_feature, rng)
        rows_l.append(np.asarray(r, "int64"))
        cols_l.append(np.asarray(c, "int64"))
        feat_l.append(np.full(len(r), i, "int64"))
    rows = np.concatenate(rows_l) if rows_l else np.empty(0, "int64")
    cols = np.concatenate(cols_l) if cols_l else np.empty(0, "int64")
    feat = np.concatenate(feat_l) if feat_l else np.empty(0, "int64")
    return rows, cols, feat, rep


def _read_pixels(
    reader: RasterReader, rows: np.ndarray, cols: np.ndarray, feat: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Values and validity at pixels inside the grid, read feature by feature (the bounding window of each
    feature's pixels: bounded memory). Returns rows, cols and feature ordered by feature, then the values
    ``(n, bands)`` and validity in that order."""
    values = np.empty((len(rows), reader.count), "float32")
    valid = np.zeros(len(rows), bool)
    order = np.argsort(feat, kind="stable")
    rows, cols, feat = rows[order], cols[order], feat[order]
    bounds = np.flatnonzero(np.diff(feat)) + 1
    for seg in np.split(np.arange(len(rows)), bounds):
        if seg.size == 0:
            continue
        r0, r1 = rows[seg].min(), rows[seg].max() + 1
        c0, c1 = cols[seg].min(), cols[seg].max() + 1
        if (r1 - r0) * (c1 - c0) > 4_000_000:  # scattered multipoints: read pixel by pixel
            for k in seg:
                b = reader.read(Window(int(rows[k]), int(cols[k]), 1, 1))
                values[k] = b.data[:, 0, 0]
                valid[k] = b.valid[0, 0]
            continue
        win = Window(int(r0), int(c0), int(r1 - r0), int(c1 - c0))
        b = reader.read(win)
        rr, cc = rows[seg] - r0, cols[seg] - c0
        values[seg] = b.data[:, rr, cc].T
        valid[seg] = b.valid[rr, cc]
    return rows, cols, feat, values, valid
