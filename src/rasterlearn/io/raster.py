"""Windowed, nodata-aware raster reading over rasterio/GDAL.

:class:`RasterReader` opens any GDAL raster, selects bands by 1-based index or by description, and reads
windows that may extend past the raster (boundless: the outside is filled and marked invalid). Each read
returns the data in the file's own dtype (never rescaled) and a validity mask that honours declared
nodata, NaN/inf, alpha bands and per-dataset masks.

Threading: a GDAL dataset handle must not be shared between threads. Open one :class:`RasterReader` per
worker thread or process (opening is cheap); :meth:`RasterReader.reopen` gives a new handle on the same
file and band selection.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import rasterio
import rasterio.errors
from rasterio.enums import ColorInterp, MaskFlags
from rasterio.windows import Window as RioWindow

from rasterlearn.errors import InputError, InputNotFoundError, ReadError
from rasterlearn.grid import Grid, Window
from rasterlearn.io.remote import apply_cloud_defaults, gdal_path, is_remote, is_virtual

__all__ = [
    "BandInfo",
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


def _json_number(value: float | None) -> float | str | None:
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return float(value)


def _rio(window: Window) -> RioWindow:
    return RioWindow(window.col_off, window.row_off, window.width, window.height)


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


def apply_assumed_nodata(valid: np.ndarray, data: np.ndarray, nodata: float | None) -> np.ndarray:
    """``valid`` without the pixels where any band of ``data`` (bands, rows, cols) equals ``nodata``.

    The user's nodata value (``--nodata``, a model package's ``input_nodata``) for a raster that declares
    none: a pixel is invalid where any selected band holds it, as with a declared nodata. ``None``: ``valid``
    unchanged. Returns a new array.
    """
    if nodata is None:
        return valid
    return valid & np.all(data != np.asarray(nodata).astype(data.dtype), axis=0)


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
        self.band_indexes: list[int] = self._resolve_bands(bands)
        self._all_bands = self._describe_bands()
        self.bands: list[BandInfo] = [self._all_bands[i - 1] for i in self.band_indexes]
        self._fill = self._default_fill()
        self._user_nodata = nodata
        self.assumed_nodata: float | None = None
        if nodata is not None:
            if any(b.nodata is not None for b in self.bands):
                log.info("%s declares its nodata; the nodata value %s given is not used", self.path, nodata)
            else:
                self.assumed_nodata = float(nodata)
        flags = [ds.mask_flag_enums[i - 1] for i in self.band_indexes]
        # A mask that GDAL derives from the data alone (nodata value or all-valid) is computed here from the
        # array we already read; alpha bands and per-dataset masks are read from GDAL.
        self._gdal_mask = any(MaskFlags.per_dataset in f or MaskFlags.alpha in f for f in flags) or any(
            not f for f in flags
        )
        alpha_as_data = [i for i in self.band_indexes if i in self._alpha]
        # GDAL takes an alpha band as the mask only in its own layouts (gray + alpha, RGB + alpha); any other
        # band flagged alpha (e.g. the 5th of RGBN + alpha) is left out of the data above, so it must
        # still mark validity: read it here
        self._alpha_mask = (
            []
            if alpha_as_data or any(MaskFlags.alpha in f for f in flags)
            else [i for i in self._alpha if i not in self.band_indexes]
        )
        if alpha_as_data:
            # The caller chose a band GDAL flags as alpha as *data* (a 4-band uint8 RGBN GeoTIFF written with
            # default options looks like RGBA): then it is not a mask, and validity comes from nodata alone.
            self._gdal_mask = any(MaskFlags.per_dataset in f and MaskFlags.alpha not in f for f in flags)
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
    def _resolve_bands(self, bands: Sequence[BandSelector] | None) -> list[int]:
        ds = self._ds
        if bands is None:
            chosen = [i for i in range(1, ds.count + 1) if i not in self._alpha]
            return chosen or list(range(1, ds.count + 1))
        if len(bands) == 0:
            raise InputError(f"Empty band selection for {self.path}: name at least one band")
        out: list[int] = []
        descriptions = list(ds.descriptions)
        for b in bands:
            if isinstance(b, str) and b.strip().lstrip("-").isdigit():
                b = int(b)
            if isinstance(b, int | np.integer):
                if not 1 <= int(b) <= ds.count:
                    raise InputError(
                        f"Band {b} does not exist in {self.path}, which has bands 1..{ds.count} "
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
                        f"No band described as {b!r} in {self.path}. Its bands are: {listed}. "
                        f"Select by description or by 1-based index."
                    )
                out.append(matches[0])
        return out

    def _describe_bands(self) -> list[BandInfo]:
        ds = self._ds
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
        """A JSON-friendly description: grid, CRS, resolution, bands, nodata, block layout, driver."""
        ds = self._ds
        crs = self.grid.crs
        return {
            "path": self.path,
            "driver": ds.driver,
            "width": ds.width,
            "height": ds.height,
            "count": ds.count,
            "crs": None if crs is None else crs.to_wkt(),
            "crs_name": None if crs is None else crs.name,
            "epsg": self.grid.epsg,
            "crs_units": None if crs is None else (crs.axis_info[0].unit_name if crs.axis_info else None),
            "is_geographic": self.grid.is_geographic,
            "transform": [float(v) for v in tuple(ds.transform)[:6]],
            "res": list(self.grid.res),
            "bounds": list(self.grid.bounds),
            "nodata": _json_number(ds.nodata),
            "dtypes": sorted(set(ds.dtypes)),
            "block_shapes": [list(s) for s in sorted(set(ds.block_shapes))],
            "tiled": bool(ds.block_shapes and ds.block_shapes[0][1] < ds.width),  # strips span the full width
            "interleave": None if ds.interleaving is None else ds.interleaving.name.lower(),
            "compression": None if ds.compression is None else ds.compression.name.lower(),
            "overviews": ds.overviews(1) if ds.count else [],
            "mask_flags": [[f.name for f in flags] for flags in ds.mask_flag_enums],
            "alpha_bands": self._alpha,
            "bands": [b.to_dict() for b in self._all_bands],
            "tags": ds.tags(),
        }

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
        """Pixel validity (all bands valid) and, when asked, per-band validity of data read at ``window``."""
        valid, per_band = self._declared_validity(data, window, band_masks)
        if self.assumed_nodata is None:
            return valid, per_band
        if per_band is not None:
            per_band &= data != np.asarray(self.assumed_nodata).astype(data.dtype)
        return apply_assumed_nodata(valid, data, self.assumed_nodata), per_band

    def _declared_validity(
        self, data: np.ndarray, window: Window, band_masks: bool
    ) -> tuple[np.ndarray, np.ndarray | None]:
        valid, per_band = self._data_validity(data, window, band_masks)
        if self._alpha_mask:
            try:
                alpha = self._ds.read(self._alpha_mask, window=_rio(window))
            except _GDAL_ERRORS as exc:
                raise self._read_error(window, exc) from exc
            opaque = (alpha > 0).all(axis=0)
            valid = valid & opaque
            if per_band is not None:
                per_band &= opaque
        return valid, per_band

    def _data_validity(
        self, data: np.ndarray, window: Window, band_masks: bool
    ) -> tuple[np.ndarray, np.ndarray | None]:
        floating = np.issubdtype(data.dtype, np.floating)
        if self._gdal_mask:
            try:
                per_band = self._ds.read_masks(self.band_indexes, window=_rio(window)) > 0
            except _GDAL_ERRORS as exc:
                raise self._read_error(window, exc) from exc
            if floating:
                per_band &= np.isfinite(data)
            return np.asarray(per_band.all(axis=0)), (per_band if band_masks else None)
        if band_masks:
            per_band = np.ones(data.shape, dtype=bool)
            for k in range(data.shape[0]):
                per_band[k] = self._band_valid(data[k], k, floating)
            return np.asarray(per_band.all(axis=0)), per_band
        # one pass per band straight into the pixel mask: no (bands, rows, cols) temporary
        valid = self._band_valid(data[0], 0, floating)
        for k in range(1, data.shape[0]):
            valid &= self._band_valid(data[k], k, floating)
        return valid, None

    def _band_valid(self, band: np.ndarray, k: int, floating: bool) -> np.ndarray:
        nd = self.bands[k].nodata
        if nd is not None and not math.isnan(nd):
            valid = band != np.asarray(nd).astype(band.dtype)
            if floating:
                valid &= np.isfinite(band)
            return valid
        return np.isfinite(band) if floating else np.ones(band.shape, dtype=bool)

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


# -- statistics ---------------------------------------------------------------------------------


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
