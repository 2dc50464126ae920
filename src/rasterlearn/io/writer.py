"""Block-wise raster writer that produces a Cloud-Optimized GeoTIFF and never leaves half-written files.

:class:`BlockWriter` accepts window-sized arrays in any order and writes them into a tiled GeoTIFF under a
hidden *partial* name beside the output (``.NAME.partial.tif``). :meth:`BlockWriter.close` converts it into
a COG with overviews (GDAL's COG driver) under a temporary name and renames that into place atomically, so
the final name only ever holds a complete file.

Resume: a writer opened with ``resume=True`` reopens an existing partial file and the progress record
(``.NAME.progress.json``) of the keys that :meth:`BlockWriter.mark_done` committed. :meth:`commit` flushes
the GeoTIFF to disk *before* recording progress, so after a crash every key recorded as done is on disk.
The progress record also stores a fingerprint of the job's parameters: a partial file written with other
parameters is discarded, never mixed (one rule for every resumable job: :mod:`rasterlearn.engine.journal`,
whose decision is logged at ``-v``).

Class rasters get a colour table and category names (stored in the ``.aux.xml`` sidecar that GDAL and QGIS
read, plus a QGIS ``.qml`` style with the class names). Sidecars are written under temporary names and
renamed right after the raster.

Safety: a writer holds ``.NAME.lock`` (:func:`rasterlearn.io.paths.output_lock`) from creation to
close/abort, so a second run on the same output refuses. A full disk becomes one
:class:`~rasterlearn.errors.OutputError` ("no space left on ... while writing ...") after removing what
cannot be resumed (the partial file when no block was committed yet, temporary COG and sidecars, and the
``discard_on_error`` paths the stage created).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal
from xml.sax.saxutils import escape

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.windows import Window as RioWindow

from rasterlearn._util import atomic_write_text, disk_full_error, is_disk_full
from rasterlearn.engine.journal import Decision, decide, log_decision
from rasterlearn.errors import InputError, JobCancelledError, OutputError
from rasterlearn.grid import Grid, Window
from rasterlearn.io.paths import acquire_lock, release_lock
from rasterlearn.io.raster import gdal_cache

__all__ = ["BlockWriter", "Compression", "cog_profile", "hex_to_rgba", "write_array"]

log = logging.getLogger(__name__)

Compression = Literal["auto", "zstd", "deflate", "lzw", "none"]
Color = tuple[int, int, int] | tuple[int, int, int, int] | str


def hex_to_rgba(color: Color) -> tuple[int, int, int, int]:
    """``'#RRGGBB'``/``'#RRGGBBAA'`` or an (r, g, b[, a]) tuple to an RGBA tuple."""
    if isinstance(color, str):
        h = color.lstrip("#")
        if len(h) not in (6, 8) or any(ch not in "0123456789abcdefABCDEF" for ch in h):
            raise InputError(f"Colour {color!r} is not '#RRGGBB' or '#RRGGBBAA'")
        vals = [int(h[i : i + 2], 16) for i in range(0, len(h), 2)]
        return (vals[0], vals[1], vals[2], vals[3] if len(vals) == 4 else 255)
    c = tuple(int(v) for v in color)
    if len(c) == 3:
        return (c[0], c[1], c[2], 255)
    if len(c) == 4:
        return (c[0], c[1], c[2], c[3])
    raise InputError(f"Colour {color!r} must have 3 or 4 components")


def _hidden(path: Path, suffix: str) -> Path:
    return path.with_name(f".{path.name}{suffix}")


def cog_profile(
    dtype: str, compress: Compression = "auto", categorical: bool = False, blocksize: int = 512
) -> dict[str, Any]:
    """Creation options for GDAL's COG driver, chosen for the data.

    ``auto``: DEFLATE for class rasters (every reader supports it, categorical data compresses well),
    ZSTD with a predictor for continuous data.
    """
    if compress == "auto":
        compress = "deflate" if categorical else "zstd"
    opts: dict[str, Any] = {
        "BLOCKSIZE": blocksize,
        "BIGTIFF": "IF_SAFER",
        "OVERVIEWS": "AUTO",
        "RESAMPLING": "NEAREST" if categorical else "AVERAGE",
        "NUM_THREADS": "ALL_CPUS",
    }
    if compress != "none":
        opts["COMPRESS"] = compress.upper()
        opts["PREDICTOR"] = "NO" if categorical else "YES"
        if compress == "zstd":
            opts["LEVEL"] = 9
    else:
        opts["COMPRESS"] = "NONE"
    return opts


class BlockWriter:
    """Write a raster of any size window by window, then publish it as a COG.

    Args:
        path: final output path (``.tif``).
        grid: the output grid (shape, transform, CRS).
        count: number of bands.
        dtype: numpy dtype name of the output.
        nodata: nodata value (written to the file; ``None`` for none).
        band_descriptions: one name per band (shown by GDAL/QGIS).
        tags: dataset metadata tags (provenance; values are stringified, dicts/lists as JSON).
        band_tags: per-band metadata tags.
        colormap: ``{value: colour}`` for single-band class rasters (uint8/uint16).
        category_names: ``{value: name}`` class names for single-band class rasters.
        scales, offsets: per-band scale/offset (``value = stored * scale + offset``), e.g. compact features.
        compress: COG compression (``auto`` picks DEFLATE for class rasters, ZSTD otherwise).
        blocksize: internal tile size of the partial file and the COG.
        overviews: build internal overviews.
        resume: reopen a partial file left by an interrupted run with the same ``fingerprint``.
        fingerprint: parameters of the job; a partial written with another fingerprint is discarded.
        overwrite: replace an existing output at ``path`` (else :class:`OutputError`).
        discard_on_error: paths the stage created for this output that cannot be resumed (e.g. a freshly
            fitted ``OUT.model/`` folder); removed when the write fails or is interrupted.
    """

    def __init__(
        self,
        path: str | Path,
        grid: Grid,
        count: int,
        dtype: str,
        *,
        nodata: float | None = None,
        band_descriptions: Sequence[str] | None = None,
        tags: Mapping[str, Any] | None = None,
        band_tags: Sequence[Mapping[str, Any]] | None = None,
        colormap: Mapping[int, Color] | None = None,
        category_names: Mapping[int, str] | None = None,
        scales: Sequence[float] | None = None,
        offsets: Sequence[float] | None = None,
        compress: Compression = "auto",
        blocksize: int = 512,
        overviews: bool = True,
        resume: bool = False,
        fingerprint: str | None = None,
        overwrite: bool = True,
        discard_on_error: Sequence[str | Path] = (),
    ) -> None:
        self.path = Path(path)
        self.discard_on_error = [Path(p) for p in discard_on_error]
        self.grid = grid
        self.count = int(count)
        self.dtype = np.dtype(dtype).name
        self.nodata = nodata
        self.blocksize = int(blocksize)
        self.compress = compress
        self.overviews = overviews
        self.categorical = colormap is not None or category_names is not None
        self.colormap = {int(k): hex_to_rgba(v) for k, v in (colormap or {}).items()}
        self.category_names = {int(k): str(v) for k, v in (category_names or {}).items()}
        self.fingerprint = fingerprint or ""
        self.partial_path = _hidden(self.path, ".partial.tif")
        self.progress_path = _hidden(self.path, ".progress.json")
        self._done: set[str] = set()
        self._pending: set[str] = set()
        self._last_commit = time.monotonic()
        self._closed = False
        if self.blocksize % 16:
            raise InputError(f"blocksize must be a multiple of 16, got {blocksize}")
        if band_descriptions is not None and len(band_descriptions) != self.count:
            raise InputError(f"{len(band_descriptions)} band descriptions given for {self.count} bands")
        if self.colormap and (self.count != 1 or self.dtype not in ("uint8", "uint16")):
            raise InputError("A colour table needs a single-band uint8 or uint16 raster")
        if not self.path.parent.exists():
            raise OutputError(f"Output folder {self.path.parent} does not exist; create it first")
        if self.path.exists() and not overwrite:
            raise OutputError(
                f"{self.path} exists; pass overwrite=True (CLI: --overwrite) or choose another name"
            )
        acquire_lock(self.path)
        try:
            self._open(resume, band_descriptions, tags, band_tags, scales, offsets)
        except BaseException:
            release_lock(self.path)
            raise

    def _open(
        self,
        resume: bool,
        band_descriptions: Sequence[str] | None,
        tags: Mapping[str, Any] | None,
        band_tags: Sequence[Mapping[str, Any]] | None,
        scales: Sequence[float] | None,
        offsets: Sequence[float] | None,
    ) -> None:
        self._meta: dict[str, Any] = {
            "band_descriptions": list(band_descriptions) if band_descriptions else None,
            "tags": {k: _tag_value(v) for k, v in (tags or {}).items()},
            "band_tags": [{k: _tag_value(v) for k, v in t.items()} for t in band_tags] if band_tags else None,
            "scales": list(scales) if scales is not None else None,
            "offsets": list(offsets) if offsets is not None else None,
        }
        if self._journal(resume).action == "resume":
            self._ds = rasterio.open(self.partial_path, "r+")
            log.info("Resuming %s: %d blocks already written", self.path, len(self._done))
        else:
            self._done = set()
            self._discard_partial()
            self._ds = self._create_partial()

    # -- partial file ---------------------------------------------------------------------------
    def _journal(self, resume: bool) -> Decision:
        """Resume or start afresh (:func:`rasterlearn.engine.journal.decide`): the partial file is reused
        only with a readable progress record of the same fingerprint and a partial of the same shape."""
        job = str(self.path)
        if not (self.partial_path.exists() and self.progress_path.exists()):
            return decide(job, self.fingerprint, None)
        if not resume:
            return decide(job, self.fingerprint, "", resume=False)
        try:
            record = json.loads(self.progress_path.read_text())
        except (OSError, json.JSONDecodeError):
            log.warning("Progress record %s is unreadable; starting %s afresh", self.progress_path, self.path)
            return log_decision(job, Decision("restart", "progress record unreadable", "unreadable"))
        done = record.get("done", [])
        decision = decide(job, self.fingerprint, record.get("fingerprint"), done=len(done))
        if decision.action != "resume":
            log.warning("A partial %s from a run with other parameters exists; it is discarded", self.path)
            return decision
        try:
            with rasterio.open(self.partial_path) as ds:
                ok = (ds.width, ds.height, ds.count) == (self.grid.width, self.grid.height, self.count)
        except rasterio.errors.RasterioIOError:
            ok = False
        if not ok:
            log.warning(
                "Partial file %s is unreadable or has another shape; starting afresh", self.partial_path
            )
            return log_decision(
                job, Decision("restart", "partial file unreadable or of another shape", "shape")
            )
        self._done = set(done)
        return decision

    def _discard_partial(self) -> None:
        for p in (self.partial_path, self.progress_path):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()

    def _create_partial(self) -> rasterio.io.DatasetWriter:
        g = self.grid
        profile = {
            "driver": "GTiff",
            "width": g.width,
            "height": g.height,
            "count": self.count,
            "dtype": self.dtype,
            "crs": None if g.crs is None else g.crs.to_wkt(),
            "transform": g.transform,
            "nodata": self.nodata,
            "tiled": True,
            "blockxsize": self.blocksize,
            "blockysize": self.blocksize,
            "compress": "zstd",
            "zstd_level": 1,
            "bigtiff": "IF_SAFER",
            "sparse_ok": True,
            "interleave": "band" if self.count > 4 else "pixel",
        }
        try:
            ds = rasterio.open(self.partial_path, "w", **profile)
        except rasterio.errors.RasterioIOError as exc:
            if is_disk_full(exc, self.path):
                raise disk_full_error(self.path) from exc
            raise OutputError(f"Cannot create {self.partial_path}: {exc}") from exc
        meta = self._meta
        if meta["band_descriptions"]:
            for i, d in enumerate(meta["band_descriptions"], start=1):
                ds.set_band_description(i, str(d))
        if meta["tags"]:
            ds.update_tags(**meta["tags"])
        if meta["band_tags"]:
            for i, t in enumerate(meta["band_tags"], start=1):
                ds.update_tags(i, **t)
        if meta["scales"] is not None:
            ds.scales = tuple(float(v) for v in meta["scales"])
        if meta["offsets"] is not None:
            ds.offsets = tuple(float(v) for v in meta["offsets"])
        if self.colormap:
            ds.write_colormap(1, self.colormap)
        return ds

    # -- writing ----------------------------------------------------------------------------------
    def write(self, data: np.ndarray, window: Window) -> None:
        """Write ``data`` ((bands,) rows, cols) at ``window``; parts outside the grid are cropped."""
        if self._closed:
            raise OutputError(f"Writer for {self.path} is closed")
        arr = data if data.ndim == 3 else data[np.newaxis]
        if arr.shape != (self.count, window.height, window.width):
            raise InputError(
                f"Array of shape {arr.shape} does not match window {window} with {self.count} bands"
            )
        inner = window.intersection(self.grid.window)
        if inner is None:
            return
        sub = inner.relative_to(window)
        part = arr[:, sub.slices()[0], sub.slices()[1]]
        if part.dtype != np.dtype(self.dtype):
            part = _safe_cast(part, np.dtype(self.dtype), self.path)
        try:
            _write_block(self._ds, part, RioWindow(inner.col_off, inner.row_off, inner.width, inner.height))
        except OSError as exc:
            self._fail_if_disk_full(exc)
            raise

    def is_done(self, key: str) -> bool:
        """Whether a unit of work (e.g. a block) was committed by an earlier or the current run."""
        return key in self._done or key in self._pending

    @property
    def done(self) -> frozenset[str]:
        return frozenset(self._done | self._pending)

    def mark_done(self, key: str, *, commit_every_s: float = 30.0) -> None:
        """Record a finished unit of work; commits (flush + progress record) at most every ``commit_every_s``."""
        self._pending.add(key)
        if time.monotonic() - self._last_commit >= commit_every_s:
            self.commit()

    def commit(self) -> None:
        """Flush the partial GeoTIFF to disk, then atomically record the finished keys."""
        if not self._pending and self.progress_path.exists():
            return
        try:
            self._ds.close()  # closing is GDAL's flush: block data and tile directory reach the file
            with open(self.partial_path, "rb") as fh:
                os.fsync(fh.fileno())
            done = self._done | self._pending
            atomic_write_text(
                self.progress_path,
                json.dumps({"fingerprint": self.fingerprint, "done": sorted(done)}),
                fsync=True,  # the progress record must not outrun the data it describes
            )
        except OSError as exc:
            self._fail_if_disk_full(exc)
            raise
        self._done = done
        self._pending.clear()
        self._ds = rasterio.open(self.partial_path, "r+")
        self._last_commit = time.monotonic()

    def _fail_if_disk_full(self, exc: BaseException) -> None:
        """On a full disk: remove what cannot be resumed, release the lock, raise one clear error."""
        if not is_disk_full(exc, self.path):
            return
        self._closed = True
        with contextlib.suppress(Exception):
            self._ds.close()
        resumable = self.progress_path.exists() and bool(self._done)
        if not resumable:
            self._discard_partial()
        for p in (_hidden(self.path, ".cog.tmp.tif"), *self._sidecar_temps()):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        self._discard_created()
        release_lock(self.path)
        note = f" (it resumes from the {len(self._done)} block(s) kept)" if resumable else ""
        raise disk_full_error(self.path, note) from exc

    def _discard_created(self) -> None:
        for p in self.discard_on_error:
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()

    def _sidecars(self) -> list[Path]:
        return [Path(f"{self.path}.aux.xml"), self.path.with_suffix(".qml")]

    def _sidecar_temps(self) -> list[Path]:
        return [_hidden(p, ".tmp") for p in self._sidecars()]

    # -- finishing --------------------------------------------------------------------------------
    def close(self) -> Path:
        """Convert the partial file to a COG, rename it into place and remove the partial and progress."""
        if self._closed:
            return self.path
        try:
            return self._publish()
        finally:
            release_lock(self.path)

    def _publish(self) -> Path:
        self._ds.close()
        self._closed = True
        tmp = _hidden(self.path, ".cog.tmp.tif")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        opts = cog_profile(self.dtype, self.compress, self.categorical, self.blocksize)
        if not self.overviews:
            opts["OVERVIEWS"] = "NONE"
        try:
            with gdal_cache():  # the conversion streams the partial file once
                rasterio.shutil.copy(self.partial_path, tmp, driver="COG", **opts)
        except Exception as exc:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            self._fail_if_disk_full(exc)
            raise OutputError(f"Could not write the COG for {self.path}: {exc}") from exc
        aux, qml = self._sidecars()
        aux_tmp, qml_tmp = self._sidecar_temps()
        if self.category_names:  # sidecars under temporary names, renamed right after the raster
            try:
                _write_text(aux_tmp, _pam_xml(self.category_names, self.colormap))
                _write_text(qml_tmp, _qml(self.category_names, self.colormap, self.nodata))
            except OSError as exc:
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
                self._fail_if_disk_full(exc)
                raise
        os.replace(tmp, self.path)
        if self.category_names:
            os.replace(aux_tmp, aux)
            os.replace(qml_tmp, qml)
        else:
            with contextlib.suppress(FileNotFoundError):
                aux.unlink()  # a stale sidecar of an older output must not describe the new one
        self._discard_partial()
        log.info(
            "Wrote %s (%dx%d, %d band(s), %s)",
            self.path,
            self.grid.width,
            self.grid.height,
            self.count,
            self.dtype,
        )
        return self.path

    def abort(self, keep_partial: bool = True) -> None:
        """Stop without publishing; keep the partial (for resume) unless ``keep_partial`` is False."""
        if self._closed:
            return
        self._closed = True
        try:
            if keep_partial:
                with contextlib.suppress(Exception):
                    self.commit()
            with contextlib.suppress(Exception):
                self._ds.close()
            if not keep_partial or not self._done:  # nothing committed: nothing to resume from
                self._discard_partial()
            self._discard_created()
        finally:
            release_lock(self.path)

    def __enter__(self) -> BlockWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        if exc_type is None:
            self.close()
        elif issubclass(exc_type, JobCancelledError):
            # a cancel stops at a progress call, after the blocks marked done were written: keep them all
            self.abort(keep_partial=True)
        elif not self._closed:
            # keep what was committed so the same job can resume; pending work is re-done
            with contextlib.suppress(Exception):
                self._ds.close()
            self._closed = True
            if not self._done:  # nothing committed: nothing to resume from
                self._discard_partial()
            self._discard_created()
            release_lock(self.path)


def _write_block(ds: Any, data: np.ndarray, window: RioWindow) -> None:
    """One block into the partial GeoTIFF (a seam for tests that simulate a full disk)."""
    ds.write(data, window=window)


def _write_text(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def _safe_cast(arr: np.ndarray, dtype: np.dtype, path: Path) -> np.ndarray:
    if np.issubdtype(dtype, np.integer) and not np.issubdtype(arr.dtype, np.integer):
        info = np.iinfo(dtype)
        finite = arr[np.isfinite(arr)]
        if finite.size and (finite.min() < info.min or finite.max() > info.max):
            raise InputError(
                f"Values {finite.min()}..{finite.max()} do not fit {dtype} for {path}; "
                f"scale them or choose a wider dtype"
            )
        return np.rint(np.nan_to_num(arr)).astype(dtype)
    return arr.astype(dtype, copy=False)


def _tag_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return json.dumps(value, default=str)


def _pam_xml(names: Mapping[int, str], colors: Mapping[int, tuple[int, int, int, int]]) -> str:
    """GDAL PAM sidecar with category names and a raster attribute table (read by GDAL, QGIS, ArcGIS)."""
    top = max(names)
    cats = "\n".join(f"        <Category>{escape(names.get(v, ''))}</Category>" for v in range(top + 1))
    rows = []
    for i, v in enumerate(sorted(names)):
        r, g, b, a = colors.get(v, (0, 0, 0, 255))
        rows.append(
            f'      <Row index="{i}"><F>{v}</F><F>{escape(names[v])}</F><F>{r}</F><F>{g}</F><F>{b}</F>'
            f"<F>{a}</F></Row>"
        )
    fields = "".join(
        f'      <FieldDefn index="{i}"><Name>{n}</Name><Type>{t}</Type><Usage>{u}</Usage></FieldDefn>\n'
        for i, (n, t, u) in enumerate(
            [
                ("Value", 0, 5),
                ("Class_Name", 2, 2),
                ("Red", 0, 6),
                ("Green", 0, 7),
                ("Blue", 0, 8),
                ("Alpha", 0, 9),
            ]
        )
    )
    return (
        '<PAMDataset>\n  <PAMRasterBand band="1">\n    <CategoryNames>\n'
        f"{cats}\n    </CategoryNames>\n"
        '    <GDALRasterAttributeTable tableType="thematic">\n'
        f"{fields}"
        + "\n".join(rows)
        + "\n    </GDALRasterAttributeTable>\n  </PAMRasterBand>\n</PAMDataset>\n"
    )


def _qml(
    names: Mapping[int, str], colors: Mapping[int, tuple[int, int, int, int]], nodata: float | None
) -> str:
    """A QGIS paletted-renderer style so the map opens coloured and labelled."""
    entries = "\n".join(
        f'        <paletteEntry value="{v}" color="#{colors.get(v, (128, 128, 128, 255))[0]:02x}'
        f'{colors.get(v, (128, 128, 128, 255))[1]:02x}{colors.get(v, (128, 128, 128, 255))[2]:02x}" '
        f'alpha="{colors.get(v, (0, 0, 0, 255))[3]}" label="{escape(n, {chr(34): "&quot;"})}"/>'
        for v, n in sorted(names.items())
        if nodata is None or v != nodata
    )
    return (
        "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n<qgis version=\"3.28\" styleCategories=\"Symbology\">\n"
        '  <pipe>\n    <rasterrenderer type="paletted" band="1" opacity="1" alphaBand="-1">\n'
        f"      <colorPalette>\n{entries}\n      </colorPalette>\n    </rasterrenderer>\n  </pipe>\n</qgis>\n"
    )


def write_array(
    path: str | Path,
    data: np.ndarray,
    grid: Grid,
    **kwargs: Any,
) -> Path:
    """Write a whole in-memory array as a COG (convenience for small outputs; uses :class:`BlockWriter`)."""
    arr = data if data.ndim == 3 else data[np.newaxis]
    with BlockWriter(path, grid, arr.shape[0], arr.dtype.name, **kwargs) as w:
        w.write(arr, grid.window)
    return Path(path)
