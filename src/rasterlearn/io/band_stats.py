"""Nodata-aware band statistics from a bounded random sample of windows (:func:`band_statistics`).

Memory is bounded whatever the raster size: at most ``max_windows`` windows on a seeded lattice are read,
and at most ``sample_size`` valid values are kept per band. Validity is the reader's
(:mod:`rasterlearn.io.validity`), per band.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from rasterlearn.grid import Grid, Window
from rasterlearn.io.gdal_env import gdal_cache

if TYPE_CHECKING:
    from rasterlearn.io.raster import ImageReader

__all__ = ["BandStats", "band_statistics"]


@dataclass(frozen=True, slots=True)
class BandStats:
    """Nodata-aware statistics of one band, estimated from a random sample of valid pixels."""

    band: str
    count: int
    mean: float
    std: float
    min: float
    max: float
    p2: float
    p98: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def band_statistics(
    reader: ImageReader,
    *,
    sample_size: int = 200_000,
    window_size: int = 256,
    max_windows: int = 64,
    seed: int = 0,
    windows: Sequence[Window] | None = None,
) -> list[BandStats]:
    """Per-band statistics from a bounded random sample of valid pixels (fixed seed, reproducible).

    Reads at most ``max_windows`` windows of ``window_size`` pixels (or the given ``windows``), never the
    whole raster; keeps at most ``sample_size`` valid values per band. Validity is per band.

    Raises:
        EmptyInputError: no valid pixel was found in the sampled windows.
    """
    from rasterlearn.errors import EmptyInputError

    rng = np.random.default_rng(seed)
    grid = reader.grid
    if windows is None:
        windows = _sample_windows(grid, window_size, max_windows, rng)
    per_window = max(1, sample_size // max(1, len(windows)))
    samples: list[list[np.ndarray]] = [[] for _ in range(reader.count)]
    for win in windows:
        with gdal_cache():  # sampled windows are read once
            block = reader.read(win, band_masks=True)
        assert block.band_valid is not None
        for k in range(reader.count):
            vals = block.data[k][block.band_valid[k]]
            if vals.size > per_window:
                vals = rng.choice(vals, per_window, replace=False)
            samples[k].append(vals.astype("float64"))
    out: list[BandStats] = []
    for k, name in enumerate(reader.band_names):
        vals = np.concatenate(samples[k]) if samples[k] else np.empty(0)
        if vals.size == 0:
            raise EmptyInputError(
                f"No valid pixels found in band {name!r} of {reader.path} (nodata="
                f"{reader.bands[k].nodata}). Check the nodata value or the band selection."
            )
        p2, p98 = np.percentile(vals, [2, 98])
        out.append(
            BandStats(
                name,
                int(vals.size),
                float(vals.mean()),
                float(vals.std()),
                float(vals.min()),
                float(vals.max()),
                float(p2),
                float(p98),
            )
        )
    return out


def _sample_windows(grid: Grid, size: int, max_windows: int, rng: np.random.Generator) -> list[Window]:
    """Non-overlapping random windows on a regular lattice (all of them when the raster is small)."""
    rows = max(1, math.ceil(grid.height / size))
    cols = max(1, math.ceil(grid.width / size))
    cells = rows * cols
    pick = (
        np.arange(cells) if cells <= max_windows else np.sort(rng.choice(cells, max_windows, replace=False))
    )
    out = []
    for cell in pick:
        r, c = divmod(int(cell), cols)
        win = Window(r * size, c * size, size, size).clip(grid.height, grid.width)
        if not win.is_empty:
            out.append(win)
    return out
