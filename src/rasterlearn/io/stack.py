"""Multi-date scenes: rasters of T dates read as one T x C band stack.

:class:`StackReader` opens one raster per date and presents them through the interface of
:class:`~rasterlearn.io.raster.RasterReader` (``grid``, ``read``, ``reopen``, ``band_names``, ``count``,
``dtype``, ``nodata``...), so chips, datasets and prediction take a stack unchanged. Bands are ordered date
by date: ``[date 0 band 1..C, date 1 band 1..C, ...]`` and named ``<band>@t<date>``.

* **Grid.** The first date's grid is the stack's grid. A later date on another grid (other CRS, resolution
  or extent) is resampled onto it through a GDAL warped VRT (bilinear by default, nearest when the grids
  are pixel-aligned); this is logged and recorded in :attr:`StackReader.resampled` and ``describe()``.
* **Validity.** With ``nodata_policy="all-valid"`` (default) a pixel is valid only where every date is
  valid: nodata in any date is nodata for the stack (and holds the first date's nodata value, when it
  declares one, in every band). With ``"any-valid"`` a pixel is valid where at least
  one date is; a date's invalid pixels then take the values of the nearest valid date (so a change model
  sees "no change" there) and :attr:`RasterBlock.band_valid` still reports the true per-band validity.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from rasterlearn.errors import CRSError, InputError
from rasterlearn.grid import Grid, Window
from rasterlearn.io.raster import BandInfo, BandSelector, RasterBlock, RasterReader, _cast_fill
from rasterlearn.io.validity import block_validity

__all__ = [
    "NODATA_POLICIES",
    "NodataPolicy",
    "StackReader",
    "date_band_name",
    "open_image",
    "split_date_band",
]

log = logging.getLogger(__name__)

NodataPolicy = Literal["all-valid", "any-valid"]
NODATA_POLICIES: tuple[str, ...] = ("all-valid", "any-valid")
ResamplingName = Literal["nearest", "bilinear", "cubic", "average"]


def date_band_name(band: str, date: int) -> str:
    """The stack name of ``band`` in date ``date`` (0-based): ``red@t1``."""
    return f"{band}@t{date}"


def split_date_band(name: str) -> tuple[str, int | None]:
    """Inverse of :func:`date_band_name`: ``"red@t1"`` -> ``("red", 1)``; other names -> ``(name, None)``."""
    base, sep, tail = name.rpartition("@t")
    if sep and tail.isdigit():
        return base, int(tail)
    return name, None


class _WarpedDate:
    """One date resampled onto the reference grid: windowed, boundless reads through a warped VRT."""

    def __init__(self, source: RasterReader, grid: Grid, resampling: str) -> None:
        from rasterio.enums import Resampling
        from rasterio.vrt import WarpedVRT

        assert grid.crs is not None
        self.source = source
        self.grid = grid
        self.path = source.path
        self.bands = source.bands
        self.band_indexes = source.band_indexes
        self.dtype = source.dtype
        self.nodata = source.nodata
        nd = source.nodata
        # with a declared nodata the VRT's own nodata masks apply; else an alpha band marks where the
        # source has data (outside its footprint the warped date is invalid)
        kw: dict[str, Any] = {"src_nodata": nd, "nodata": nd} if nd is not None else {"add_alpha": True}
        self._vrt = WarpedVRT(
            source.dataset,
            crs=grid.crs.to_wkt(),
            transform=grid.transform,
            width=grid.width,
            height=grid.height,
            resampling=Resampling[resampling],
            **kw,
        )
        self._alpha = None if nd is not None else int(self._vrt.count)

    def read(self, window: Window, *, band_masks: bool = False, fill: float | None = None) -> RasterBlock:
        from rasterio.windows import Window as RioWindow

        dtype = np.dtype(self.dtype)
        if fill is None:
            fill = self.nodata if self.nodata is not None else (np.nan if dtype.kind == "f" else 0)
        nb = len(self.band_indexes)
        data = np.empty((nb, window.height, window.width), dtype=dtype)
        data[...] = _cast_fill(fill, dtype)
        per_band = np.zeros((nb, window.height, window.width), dtype=bool)
        inner = window.intersection(self.grid.window)
        if inner is not None:
            rs, cs = inner.relative_to(window).slices()
            rw = RioWindow(inner.col_off, inner.row_off, inner.width, inner.height)
            part = self._vrt.read(self.band_indexes, window=rw, out_dtype=dtype)
            # the one policy over what the warped VRT provides: its alpha band (no declared nodata) or its
            # nodata masks, and NaN/inf in float data
            no_nodata = [None] * nb
            if self._alpha is not None:
                alpha = self._vrt.read(self._alpha, window=rw)[np.newaxis]
                _, ok = block_validity(part, no_nodata, alpha=alpha, band_masks=True)
            else:
                masks = self._vrt.read_masks(self.band_indexes, window=rw)
                _, ok = block_validity(part, no_nodata, gdal_masks=masks, band_masks=True)
            data[:, rs, cs] = part
            per_band[:, rs, cs] = ok
        return RasterBlock(window, data, np.asarray(per_band.all(axis=0)), per_band if band_masks else None)

    def close(self) -> None:
        self._vrt.close()
        self.source.close()


class StackReader:
    """A read-only T x C band stack over one raster per date (see the module docstring).

    Args:
        paths: one raster per date, in time order (at least two; the first defines the grid).
        bands: per-date band selection (1-based indexes or descriptions), applied to every date; default
            each raster's non-alpha bands (every date must then give the same number).
        nodata_policy: ``all-valid`` (nodata in any date is nodata for the stack) or ``any-valid``.
        resampling: how dates on another grid are resampled (``bilinear``; ``nearest`` is used for
            pixel-aligned grids, which only differ by extent).
        south_up_ok: passed to :class:`RasterReader`.

    Raises:
        InputError: fewer than two dates, an unknown policy, dates with different band counts.
        CRSError: a date on another grid when either raster lacks a CRS.
    """

    def __init__(
        self,
        paths: Sequence[str | Path],
        bands: Sequence[BandSelector] | None = None,
        *,
        nodata_policy: NodataPolicy = "all-valid",
        resampling: ResamplingName = "bilinear",
        south_up_ok: bool = False,
    ) -> None:
        if len(paths) < 2:
            raise InputError(
                f"A multi-date stack needs at least two rasters (one per date); got {len(paths)}. "
                f"Give --image once per date, e.g. --image A.tif --image B.tif"
            )
        if nodata_policy not in NODATA_POLICIES:
            raise InputError(
                f"nodata_policy must be one of {', '.join(NODATA_POLICIES)}; got {nodata_policy!r}"
            )
        self.paths = [str(p) for p in paths]
        self.nodata_policy: NodataPolicy = nodata_policy
        self.resampling = resampling
        self._bands_arg = None if bands is None else list(bands)
        self._south_up_ok = south_up_ok
        self.resampled: list[dict[str, Any]] = []
        self._dates: list[RasterReader | _WarpedDate] = []
        try:
            self._open_dates(bands)
        except BaseException:
            self.close()
            raise
        first = self._dates[0]
        self.grid: Grid = first.grid
        self.band_indexes: list[int] = list(first.band_indexes)
        self.path = self.paths[0]

    def _open_dates(self, bands: Sequence[BandSelector] | None) -> None:
        first = RasterReader(self.paths[0], bands, south_up_ok=self._south_up_ok)
        self._dates.append(first)
        grid = first.grid
        for t, p in enumerate(self.paths[1:], start=1):
            r = RasterReader(p, bands, south_up_ok=self._south_up_ok)
            self._dates.append(r)  # closed by close() if anything below fails
            if r.count != first.count:
                raise InputError(
                    f"{p} (date {t}) has {r.count} selected band(s) but {self.paths[0]} (date 0) has "
                    f"{first.count}; every date must give the same bands (select them with --bands)"
                )
            if r.grid == grid:
                continue
            if grid.crs is None or r.grid.crs is None:
                raise CRSError(
                    f"{p} (date {t}) is not on the grid of {self.paths[0]} (date 0) and one of them has no "
                    f"CRS, so it cannot be resampled; assign a CRS (gdal_edit.py -a_srs) or resample it "
                    f"onto the first date's grid"
                )
            method = "nearest" if grid.is_aligned_with(r.grid) else self.resampling
            note = {
                "date": t,
                "path": p,
                "crs": r.grid.crs.to_string(),
                "res": list(r.grid.res),
                "shape": [r.grid.height, r.grid.width],
                "resampling": method,
            }
            log.warning(
                "%s (date %d, %dx%d px, res %s, %s) is not on the grid of %s (date 0): resampled onto it "
                "(%s)",
                p,
                t,
                r.grid.width,
                r.grid.height,
                tuple(round(v, 6) for v in r.grid.res),
                r.grid.crs.to_string(),
                self.paths[0],
                method,
            )
            self._dates[-1] = _WarpedDate(r, grid, method)
            self.resampled.append(note)

    # -- description ----------------------------------------------------------------------------
    @property
    def timesteps(self) -> int:
        """Number of dates T."""
        return len(self._dates)

    @property
    def count(self) -> int:
        """Bands of the stack: T x C."""
        return sum(len(d.band_indexes) for d in self._dates)

    @property
    def dtype(self) -> str:
        return str(np.result_type(*[np.dtype(d.dtype) for d in self._dates]))

    @property
    def nodata(self) -> float | None:
        """The first date's declared nodata."""
        return self._dates[0].nodata

    @property
    def bands(self) -> list[BandInfo]:
        """Per-band information of the stack; ``index`` counts stack bands, the description names the date."""
        out: list[BandInfo] = []
        for t, d in enumerate(self._dates):
            for b in d.bands:
                name = date_band_name(b.description or f"band_{b.index}", t)
                out.append(replace(b, index=len(out) + 1, description=name))
        return out

    @property
    def band_names(self) -> list[str]:
        """``<band>@t<date>`` for every stack band, date by date."""
        return [b.description or "" for b in self.bands]

    @property
    def band_dates(self) -> list[int]:
        """The 0-based date index of every stack band."""
        return [t for t, d in enumerate(self._dates) for _ in d.band_indexes]

    def describe(self) -> dict[str, Any]:
        """A JSON-friendly description: dates, grid, bands (with their date), policy, resampled dates."""
        first = self._dates[0]
        assert isinstance(first, RasterReader)
        return {
            **first.describe(),
            "dates": list(self.paths),
            "timesteps": self.timesteps,
            "count": self.count,
            "band_names": self.band_names,
            "band_dates": self.band_dates,
            "nodata_policy": self.nodata_policy,
            "resampled": list(self.resampled),
        }

    # -- reading ----------------------------------------------------------------------------------
    def read(
        self, window: Window | None = None, *, band_masks: bool = False, fill: float | None = None
    ) -> RasterBlock:
        """Read a window of every date (boundless), stacked date by date (see :meth:`RasterReader.read`)."""
        window = window or self.grid.window
        dtype = np.dtype(self.dtype)
        any_valid = self.nodata_policy == "any-valid"
        blocks = [d.read(window, band_masks=band_masks or any_valid, fill=fill) for d in self._dates]
        data = np.concatenate([b.data.astype(dtype, copy=False) for b in blocks])
        dvalid = np.stack([b.valid for b in blocks])
        band_valid = None
        if band_masks or any_valid:
            band_valid = np.concatenate([b.band_valid for b in blocks if b.band_valid is not None])
        if any_valid:
            valid = np.asarray(dvalid.any(axis=0))
            _fill_from_nearest_date(data, dvalid, valid, [len(d.band_indexes) for d in self._dates])
        else:
            valid = np.asarray(dvalid.all(axis=0))
        if self.nodata is not None and not valid.all():
            # nodata for the stack is nodata in every band (dates may declare different nodata values)
            data[:, ~valid] = _cast_fill(self.nodata, dtype)
        return RasterBlock(window, data, valid, band_valid if band_masks else None)

    def read_valid(self, window: Window | None = None) -> np.ndarray:
        return self.read(window).valid

    def reopen(self) -> StackReader:
        """A new, independent handle on the same dates and band selection (one per thread)."""
        return StackReader(
            self.paths,
            self.band_indexes,
            nodata_policy=self.nodata_policy,
            resampling=self.resampling,
            south_up_ok=self._south_up_ok,
        )

    def close(self) -> None:
        for d in self._dates:
            d.close()

    def __enter__(self) -> StackReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"StackReader({self.paths!r}, bands={self.band_indexes}, {self.grid.height}x{self.grid.width}, "
            f"{self.dtype}, {self.nodata_policy})"
        )


def _fill_from_nearest_date(
    data: np.ndarray, dvalid: np.ndarray, valid: np.ndarray, counts: Sequence[int]
) -> None:
    """In place: where a date is invalid but the pixel is valid, copy the nearest valid date's bands."""
    starts = np.cumsum([0, *counts])
    n = len(counts)
    for t in range(n):
        missing = valid & ~dvalid[t]
        if not missing.any():
            continue
        for s in sorted((s for s in range(n) if s != t), key=lambda s: (abs(s - t), s)):
            take = missing & dvalid[s]
            if take.any():
                dst = data[starts[t] : starts[t + 1]]
                dst[:, take] = data[starts[s] : starts[s + 1]][:, take]
                missing &= ~take
            if not missing.any():
                break


def open_image(
    image: str | Path | Sequence[str | Path],
    bands: Sequence[BandSelector] | None = None,
    *,
    nodata_policy: NodataPolicy = "all-valid",
) -> RasterReader | StackReader:
    """A :class:`RasterReader` for one raster, a :class:`StackReader` for several (one per date)."""
    if isinstance(image, str | Path):
        return RasterReader(image, bands)
    paths = list(image)
    if len(paths) == 1:
        return RasterReader(paths[0], bands)
    return StackReader(paths, bands, nodata_policy=nodata_policy)
