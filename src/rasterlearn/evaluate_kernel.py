"""The per-window step of :func:`rasterlearn.evaluate.evaluate_map`: read a map window and the truth on it,
count a confusion matrix. A module-level kernel, so an executor can run it on dask workers
(:mod:`rasterlearn.engine.executor`); the client sums the integer counts in window order, so the report is
the same whichever executor ran it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rasterlearn.engine.executor import worker_cache
from rasterlearn.grid import Grid, Window
from rasterlearn.io.raster import RasterReader, gdal_cache
from rasterlearn.metrics import confusion_matrix

__all__ = ["CompareSpec", "RasterTruth", "VectorTruth", "WindowCounts", "compare_window"]


@dataclass(frozen=True)
class VectorTruth:
    """Truth polygons (map CRS) with their map class codes, burnt window by window."""

    geoms: np.ndarray
    values: np.ndarray
    fill: int
    all_touched: bool

    def tree(self, key: str, local: dict[str, Any]) -> Any:
        import shapely

        if "tree" not in local:  # a worker builds the index once per job
            return worker_cache(("evaluate-tree", key), lambda: shapely.STRtree(self.geoms))
        return local["tree"]

    def window(self, grid: Grid, win: Window, tree: Any) -> tuple[np.ndarray, np.ndarray, int]:
        from shapely.geometry import box

        from rasterlearn.labels import rasterize_window

        hits = tree.query(box(*grid.window_bounds(win)))
        out = rasterize_window(
            self.geoms[hits],
            self.values[hits],
            grid,
            win,
            fill=self.fill,
            dtype="int64",
            all_touched=self.all_touched,
        )
        return out, out >= 0, 0


@dataclass(frozen=True)
class RasterTruth:
    """A truth raster read on the map grid through :class:`rasterlearn.label_grid.RasterOnGrid` (directly,
    at a pixel offset, or warped nearest-neighbour: the chips' implementation)."""

    path: str
    ignore_set: tuple[float, ...]
    ignore_index: int
    remap_keys: np.ndarray | None = None
    remap_vals: np.ndarray | None = None

    def handle(self, key: str, local: dict[str, Any], grid: Grid) -> Any:
        if "truth" in local:
            return local["truth"]

        def make() -> Any:
            from rasterlearn.label_grid import RasterOnGrid

            return RasterOnGrid(self.path, grid)

        return worker_cache(("evaluate-truth", key, self.path), make)

    def window(self, grid: Grid, win: Window, handle: Any) -> tuple[np.ndarray, np.ndarray, int]:
        raw, valid = handle.read(win)
        data = raw.astype("float64")
        ok = valid.copy()
        ok &= np.isfinite(data)
        if self.ignore_set:
            ok &= ~np.isin(data, self.ignore_set)
        whole = ok & (np.abs(np.where(ok, data, 0)) < 2**53)
        whole &= np.equal(np.mod(np.where(whole, data, 0), 1), 0)
        non_integer = int((ok & ~whole).sum())
        ok = whole
        values = np.where(ok, data, -1).astype("int64")
        if self.remap_keys is None or self.remap_vals is None:
            ok &= values != self.ignore_index
        else:  # truth codes -> map codes by name; unnamed codes become -1 (counted as unknown)
            pos = np.clip(np.searchsorted(self.remap_keys, values), 0, len(self.remap_keys) - 1)
            hit = self.remap_keys[pos] == values
            values = np.where(ok & hit, self.remap_vals[pos], -1)
        return np.where(ok, values, -1), ok, non_integer


@dataclass(frozen=True)
class CompareSpec:
    """What computing one window needs (sent once to each worker). ``local`` holds this process's open
    handles (map reader, truth reader or index) for the local executor; workers open their own."""

    key: str
    map_path: str
    grid: Grid
    lut: np.ndarray
    n: int
    truth: VectorTruth | RasterTruth
    area: Any = None
    local: dict[str, Any] = field(default_factory=dict, compare=False)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "local": {}}  # handles never travel

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


@dataclass
class WindowCounts:
    """A window's confusion matrix and the pixels not assessed (summed by the client)."""

    cm: np.ndarray
    unknown_pred: int = 0
    unknown_truth: int = 0
    non_integer: int = 0


def _to_index(lut: np.ndarray, arr: np.ndarray, ok: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Class indexes of codes (``-1``: not a class) and where a valid pixel holds no class."""
    a = np.where(ok, arr, -1).astype("int64")
    inside = (a >= 0) & (a < len(lut))
    idx = np.full(a.shape, -1, dtype="int64")
    idx[inside] = lut[a[inside]]
    return idx, ok & (idx < 0)


def compare_window(spec: CompareSpec, win: Window) -> WindowCounts:
    """Kernel: the confusion counts of the map against the truth in ``win``."""
    reader = spec.local.get("map") or worker_cache(
        ("evaluate-map", spec.key, spec.map_path), lambda: RasterReader(spec.map_path, [1])
    )
    counts = WindowCounts(np.zeros((spec.n, spec.n), dtype="int64"))
    with gdal_cache(64):
        block = reader.read(win)
        pvalid = block.valid
        if spec.area is not None and spec.area.geometry is not None:
            pvalid = pvalid & spec.area.mask(spec.grid, win)
        if not pvalid.any():
            return counts
        truth = spec.truth
        handle = (
            truth.tree(spec.key, spec.local)
            if isinstance(truth, VectorTruth)
            else truth.handle(spec.key, spec.local, spec.grid)
        )
        t, tvalid, counts.non_integer = truth.window(spec.grid, win, handle)
    p_idx, p_bad = _to_index(spec.lut, block.data[0], pvalid)
    t_idx, t_bad = _to_index(spec.lut, t, tvalid)
    counts.unknown_pred = int(p_bad.sum())
    counts.unknown_truth = int((t_bad & pvalid).sum())
    counts.cm += confusion_matrix(t_idx, p_idx, spec.n, valid=pvalid & tvalid & (t_idx >= 0) & (p_idx >= 0))
    return counts
