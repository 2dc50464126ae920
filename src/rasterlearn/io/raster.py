"""Windowed, nodata-aware raster reading over rasterio/GDAL.

:class:`RasterReader` opens any GDAL raster, selects bands by 1-based index or by description, and reads
windows that may extend past the raster (boundless: the outside is filled and marked invalid). Each read
returns the data in the file's own dtype (never rescaled) and a validity mask that honours declared
nodata, NaN/inf, alpha bands and per-dataset masks.

The other phases live in their own modules, whose public names are re-exported here: band selection and
description in :mod:`rasterlearn.io.bands`, the validity policy in :mod:`rasterlearn.io.validity`, the
bounded GDAL block cache in :mod:`rasterlearn.io.gdal_env`, band statistics in
:mod:`rasterlearn.io.band_stats`.

Threading: a GDAL dataset handle must not be shared between threads. Open one :class:`RasterReader` per
worker thread or process (opening is cheap); :meth:`RasterReader.reopen` gives a new handle on the same
file and band selection.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import rasterio
import rasterio.errors
from rasterio.enums import ColorInterp
from rasterio.windows import Window as RioWindow

from rasterlearn.errors import InputError, InputNotFoundError, ReadError
from rasterlearn.grid import Grid, Window
from rasterlearn.io.band_stats import BandStats, band_statistics
from rasterlearn.io.bands import BandInfo, BandSelector, describe_bands, describe_raster, resolve_bands
from rasterlearn.io.gdal_env import GDAL_CACHE_MB, gdal_cache
from rasterlearn.io.remote import apply_cloud_defaults, gdal_path, is_remote, is_virtual
from rasterlearn.io.validity import apply_assumed_nodata, block_validity, mask_sources

__all__ = [
    "GDAL_CACHE_MB",
    "BandInfo",
    "BandSelector",
    "BandStats",
    "ImageReader",
    "RasterBlock",
    "RasterReader",
    "apply_assumed_nodata",
    "band_statistics",
    "gdal_cache",
    "open_raster",
]

log = logging.getLogger(__name__)

try:  # GDAL errors rasterio raises without wrapping them (private module, hence the guard)
    from rasterio._err import CPLE_BaseError

    _GDAL_ERRORS: tuple[type[Exception], ...] = (rasterio.errors.RasterioError, CPLE_BaseError)
except ImportError:  # pragma: no cover
    _GDAL_ERRORS = (rasterio.errors.RasterioError,)


@dataclass(frozen=True, slots=True)
class RasterBlock:
    """Data read from a window: ``data`` (bands, rows, cols) in the file dtype and ``valid`` (rows, cols).

    ``valid`` is True where every selected band holds a valid value. ``band_valid`` (bands, rows, cols)
    is present when asked for.
    """

    window: Window
    data: np.ndarray
    valid: np.ndarray
    band_valid: np.ndarray | None = None

    @property
    def any_valid(self) -> bool:
        return bool(self.valid.any())


def _rio(window: Window) -> RioWindow:
    return RioWindow(window.col_off, window.row_off, window.width, window.height)


def _open_error(path: str, exc: Exception) -> str:
    """One line saying why ``path`` did not open and what to check."""
    msg = str(exc).strip().rstrip(".")
    if not is_remote(path):
        return f"Cannot open {path} as a raster: {msg}. Is it a GDAL-readable image?"
    if "404" in msg or "does not exist" in msg.lower() or "no such file" in msg.lower():
        why = "the server answered that it does not exist (HTTP 404)"
        fix = "Check the URL (open it in a browser or with 'curl -I')"
    elif any(code in msg for code in ("401", "403")) or "denied" in msg.lower():
        why = "access was refused (HTTP 401/403)"
        fix = (
            "Set the credentials GDAL reads (AWS_*, GOOGLE_APPLICATION_CREDENTIALS, AZURE_STORAGE_*) "
            "or AWS_NO_SIGN_REQUEST=YES for a public bucket"
        )
    else:
        why = msg
        fix = "Check the URL, the network and any proxy (HTTP_PROXY/HTTPS_PROXY)"
    return f"Cannot open remote raster {path}: {why}. {fix}; GDAL said: {msg}"


class ImageReader(Protocol):
    """What streaming stages need from a reader: :class:`RasterReader` and
    :class:`rasterlearn.io.stack.StackReader` (a multi-date stack) both provide it."""

    path: str
    grid: Grid
    band_indexes: list[int]

    @property
    def count(self) -> int: ...
    @property
    def dtype(self) -> str: ...
    @property
    def nodata(self) -> float | None: ...
    @property
    def bands(self) -> list[BandInfo]: ...
    @property
    def band_names(self) -> list[str]: ...
    def read(
        self, window: Window | None = None, *, band_masks: bool = False, fill: float | None = None
    ) -> RasterBlock: ...
    def reopen(self) -> ImageReader: ...
    def close(self) -> None: ...


def open_raster(path: str | Path, bands: Sequence[BandSelector] | None = None) -> RasterReader:
    """Open a raster for windowed reading (see :class:`RasterReader`)."""
    return RasterReader(path, bands)


class RasterReader:
    """A read-only handle on one raster with a fixed band selection.

    Args:
        path: any GDAL-readable raster (file path, ``/vsi...`` path or URL GDAL understands).
        bands: 1-based band indexes or band descriptions, in the order wanted. Default: every band
            except alpha bands (which become part of the validity mask).
        south_up_ok: accept a south-up raster (positive pixel height). By default it is refused with an
            :class:`InputError` that says how to rewrite it north-up: windows, chips and models assume rows
            run from north to south, and a flipped image would be mapped upside down without a word.
        nodata: a nodata value to assume when none of the selected bands declares one (``--nodata``):
            pixels where any band holds it are invalid (:func:`apply_assumed_nodata`). Ignored, with a log
            line, when the raster declares its own.

    Validity is the one policy of every stage (chips, training datasets, predict, embed, features,
    evaluate): declared nodata, NaN/inf in float data, alpha bands, per-dataset (internal/external) masks
    and the assumed ``nodata``; a pixel is valid only where every selected band is.

    Use as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        path: str | Path,
        bands: Sequence[BandSelector] | None = None,
        *,
        south_up_ok: bool = False,
        nodata: float | None = None,
    ) -> None:
        self.path = str(path)
        self._south_up_ok = south_up_ok
        if not is_virtual(self.path) and not Path(self.path).exists():
            raise InputNotFoundError(
                f"Raster not found: {self.path}. Check the path (relative paths are "
                f"resolved from {Path.cwd()})."
            )
        if is_remote(self.path):
            apply_cloud_defaults()
        try:
            self._ds = rasterio.open(gdal_path(self.path))
        except rasterio.errors.RasterioIOError as exc:
            raise ReadError(_open_error(self.path, exc)) from exc
        ds = self._ds
        t = ds.transform
        # (a raster without georeferencing has the identity transform: rows run down, nothing to flip)
        if t.b == 0 and t.d == 0 and t.e > 0 and not t.is_identity and not south_up_ok:
            ds.close()
            raise InputError(
                f"{self.path} is stored south-up (positive pixel height {t.e:g}): rows run from south to "
                f"north, so a model would see it upside down. Rewrite it north-up first, e.g. "
                f"'gdalwarp {self.path} north_up.tif' (GDAL writes north-up by default)"
            )
        self._requested = None if bands is None else list(bands)
        self.grid = Grid(ds.height, ds.width, ds.transform, ds.crs.to_wkt() if ds.crs else None)
        self._alpha = [i + 1 for i, ci in enumerate(ds.colorinterp) if ci == ColorInterp.alpha]
        self.band_indexes: list[int] = resolve_bands(ds, self.path, bands, self._alpha)
        self._all_bands = describe_bands(ds)
        self.bands: list[BandInfo] = [self._all_bands[i - 1] for i in self.band_indexes]
        self._fill = self._default_fill()
        self._user_nodata = nodata
        self.assumed_nodata: float | None = None
        if nodata is not None:
            if any(b.nodata is not None for b in self.bands):
                log.info("%s declares its nodata; the nodata value %s given is not used", self.path, nodata)
            else:
                self.assumed_nodata = float(nodata)
        self._masks = mask_sources(ds.mask_flag_enums, self.band_indexes, self._alpha)
        alpha_as_data = list(self._masks.alpha_as_data)
        if alpha_as_data:
            log.info(
                "%s: band(s) %s are flagged as alpha but were selected as data; they are not used as a "
                "validity mask",
                self.path,
                alpha_as_data,
            )
        elif self._alpha and bands is None:
            log.info(
                "%s: band(s) %s are flagged as alpha: used as the validity mask, not as data. If they hold "
                "data (e.g. NIR in an RGBN file), select them explicitly (bands=[1, 2, 3, 4] / --bands)",
                self.path,
                self._alpha,
            )

    # -- description ----------------------------------------------------------------------------
    def _default_fill(self) -> float:
        nd = self.bands[0].nodata
        if nd is not None:
            return nd
        return math.nan if np.issubdtype(np.dtype(self.dtype), np.floating) else 0

    @property
    def dataset(self) -> rasterio.DatasetReader:
        """The underlying rasterio dataset (owned by this reader; do not close it yourself)."""
        return self._ds

    @property
    def count(self) -> int:
        return len(self.band_indexes)

    @property
    def dtype(self) -> str:
        """The common dtype of the selected bands (numpy promotion when they differ)."""
        return str(np.result_type(*[np.dtype(b.dtype) for b in self.bands]))

    @property
    def nodata(self) -> float | None:
        """The first selected band's declared nodata (rasterio reports one per band)."""
        return self.bands[0].nodata

    @property
    def band_names(self) -> list[str]:
        """Descriptions of the selected bands, or ``band_<index>`` when a band has none."""
        return [b.description or f"band_{b.index}" for b in self.bands]

    @property
    def all_bands(self) -> list[BandInfo]:
        return list(self._all_bands)

    @property
    def alpha_bands(self) -> list[int]:
        return list(self._alpha)

    def describe(self) -> dict[str, Any]:
        """A JSON-friendly description: grid, CRS, resolution, bands, nodata, block layout, driver
        (:func:`~rasterlearn.io.bands.describe_raster`)."""
        return describe_raster(self._ds, self.path, self.grid, self._alpha, self._all_bands)

    # -- reading ----------------------------------------------------------------------------------
    def read(
        self, window: Window | None = None, *, band_masks: bool = False, fill: float | None = None
    ) -> RasterBlock:
        """Read a window (default: the whole raster) of the selected bands, boundless.

        Pixels outside the raster are filled with ``fill`` (default: the declared nodata, else NaN for
        float data, else 0) and marked invalid. Data keeps the file's dtype.

        Args:
            window: pixels to read; may extend past the raster on any side.
            band_masks: also return per-band validity (``RasterBlock.band_valid``).
            fill: value for pixels outside the raster.
        """
        window = window or self.grid.window
        fill = self._fill if fill is None else fill
        dtype = np.dtype(self.dtype)
        inner = window.intersection(self.grid.window)
        nb = self.count
        if inner is not None and inner == window:
            data = self._read_bands(window, dtype)
            valid, band_valid = self._validity(data, window, band_masks)
        else:
            data = np.empty((nb, window.height, window.width), dtype=dtype)
            data[...] = _cast_fill(fill, dtype)
            valid = np.zeros((window.height, window.width), dtype=bool)
            band_valid = np.zeros((nb, window.height, window.width), dtype=bool) if band_masks else None
            if inner is not None:
                rs, cs = inner.relative_to(window).slices()
                part = self._read_bands(inner, dtype)
                data[:, rs, cs] = part
                valid[rs, cs], part_bands = self._validity(part, inner, band_masks)
                if band_valid is not None:
                    band_valid[:, rs, cs] = part_bands
        return RasterBlock(window, data, valid, band_valid)

    def _read_bands(self, window: Window, dtype: np.dtype) -> np.ndarray:
        try:
            return self._ds.read(self.band_indexes, window=_rio(window), out_dtype=dtype)
        except _GDAL_ERRORS as exc:
            raise self._read_error(window, exc) from exc

    def _read_error(self, window: Window, exc: BaseException) -> ReadError:
        """One line for a read that fails mid-job (a truncated or corrupt file, a lost network file)."""
        cause = exc.__cause__ or exc.__context__
        detail = str(cause) if cause is not None and str(cause) else str(exc)
        return ReadError(
            f"Cannot read {self.path} at rows {window.row_off}..{window.row_off + window.height - 1}, columns "
            f"{window.col_off}..{window.col_off + window.width - 1} ({detail.strip().splitlines()[0]}); the "
            f"file may be truncated or corrupt: check it with 'gdalinfo -checksum {self.path}'"
        )

    def _validity(
        self, data: np.ndarray, window: Window, band_masks: bool
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Pixel validity (all bands valid) and, when asked, per-band validity of data read at ``window``:
        GDAL's masks and the alpha bands are read here when the mask plan needs them, then
        :func:`~rasterlearn.io.validity.block_validity` applies the policy."""
        gdal_masks = alpha = None
        try:
            if self._masks.gdal_mask:
                gdal_masks = self._ds.read_masks(self.band_indexes, window=_rio(window))
            if self._masks.alpha_mask:
                alpha = self._ds.read(list(self._masks.alpha_mask), window=_rio(window))
        except _GDAL_ERRORS as exc:
            raise self._read_error(window, exc) from exc
        return block_validity(
            data,
            [b.nodata for b in self.bands],
            gdal_masks=gdal_masks,
            alpha=alpha,
            assumed_nodata=self.assumed_nodata,
            band_masks=band_masks,
        )

    def read_valid(self, window: Window | None = None) -> np.ndarray:
        """Only the validity mask of a window."""
        return self.read(window).valid

    def reopen(self) -> RasterReader:
        """A new, independent handle on the same file and band selection (one per thread)."""
        return RasterReader(
            self.path, self.band_indexes, south_up_ok=self._south_up_ok, nodata=self._user_nodata
        )

    def close(self) -> None:
        self._ds.close()

    def __enter__(self) -> RasterReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"RasterReader({self.path!r}, bands={self.band_indexes}, {self.grid.height}x{self.grid.width}, "
            f"{self.dtype})"
        )


def _cast_fill(fill: float, dtype: np.dtype) -> Any:
    if np.issubdtype(dtype, np.floating):
        return fill
    if math.isnan(fill):
        return 0
    info = np.iinfo(dtype)
    return int(min(max(fill, info.min), info.max))
