"""Labels on a grid: label and truth rasters brought onto another raster's grid, window by window.

One implementation for the training labels of ``chips`` (:class:`LabelRaster`) and the ground truth of
``evaluate`` (:class:`RasterOnGrid`); vector labels of both are burnt by
:func:`rasterlearn.labels.rasterize_window`.

How a raster meets a target grid (:func:`relate_grids`), in order:

* ``aligned``: the same grid. ``aligned_offset``: the same CRS, pixel size and pixel edges, another extent:
  read directly at a whole-pixel offset (pixels outside it are invalid).
* ``same_grid_crs_described_differently``: the same shape and transform, CRSs described differently (an
  EPSG code vs. an unnamed WKT of the same projection) that place every pixel within a quarter pixel of
  each other; ``same_grid_no_crs``: the same shape and transform, one of the two has no CRS. Both are read
  as they are, with a note (logged and recorded by the caller).
* ``warped_nearest``: anything else is warped onto the target grid with nearest-neighbour resampling on the
  fly (a GDAL warped VRT; pixels outside the raster, or nodata, are invalid). Both grids need a CRS.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from rasterlearn.errors import CRSError, InputError
from rasterlearn.grid import Grid, Window, plan_tiles
from rasterlearn.io.raster import RasterReader
from rasterlearn.io.validity import block_validity
from rasterlearn.labels import ClassSchema, UnknownPolicy, crs_name, values_to_codes

__all__ = ["Alignment", "GridRelation", "LabelRaster", "RasterOnGrid", "relate_grids"]

log = logging.getLogger(__name__)

Alignment = Literal[
    "aligned", "aligned_offset", "same_grid_crs_described_differently", "same_grid_no_crs", "warped_nearest"
]
SAME_GRID_TOLERANCE_PX = 0.25  # CRSs described differently but placing the grid within this are the same


@dataclass(frozen=True)
class GridRelation:
    """How a source grid meets a target grid (see the module docs): ``kind``, the source's whole-pixel
    ``offset`` (rows, cols) on the target for aligned grids, and a ``note`` for grids read as they are
    although their CRSs differ in description or one is missing."""

    kind: Alignment
    offset: tuple[int, int] = (0, 0)
    note: str | None = None

    @property
    def resampled(self) -> bool:
        return self.kind == "warped_nearest"


def relate_grids(src: Grid, dst: Grid, src_name: str = "truth", dst_name: str = "map") -> GridRelation:
    """How ``src`` (a label/truth raster's grid) meets ``dst`` (the image's or map's grid).

    ``src_name``/``dst_name`` name the two in the note (e.g. ``label raster``/``image``).
    """
    if src == dst:
        return GridRelation("aligned")
    if dst.is_aligned_with(src):
        w = dst.window_of(src)
        same = (w.row_off, w.col_off) == (0, 0) and src.shape == dst.shape
        return GridRelation("aligned" if same else "aligned_offset", (w.row_off, w.col_off))
    if src.shape != dst.shape:
        return GridRelation("warped_nearest")
    rel = ~dst.transform @ src.transform  # src pixel -> dst pixel; identity on the same grid
    if max(abs(x - y) for x, y in zip(rel[:6], (1.0, 0.0, 0.0, 0.0, 1.0, 0.0), strict=True)) > 1e-6:
        return GridRelation("warped_nearest")
    if src.crs is None or dst.crs is None:
        which = f"the {src_name} raster" if src.crs is None else f"the {dst_name}"
        return GridRelation(
            "same_grid_no_crs",
            note=(
                f"{which} has no CRS; the {src_name} has the {dst_name}'s shape and transform, so it is read "
                f"on the {dst_name}'s grid (not resampled)"
            ),
        )
    shift = _pixel_shift(src, dst)
    if shift is None or shift > SAME_GRID_TOLERANCE_PX:
        return GridRelation("warped_nearest")
    return GridRelation(
        "same_grid_crs_described_differently",
        note=(
            f"{src_name} CRS ({_crs_label(src.crs)}) is described differently from the {dst_name}'s "
            f"({_crs_label(dst.crs)}) but, with the same shape and transform, places every pixel within "
            f"{shift:.3f} px of the {dst_name}'s: read on the {dst_name}'s grid, not resampled"
        ),
    )


def _pixel_shift(src: Grid, dst: Grid) -> float | None:
    """The largest distance (dst pixels) between where src's and dst's CRSs put src's corners and centre."""
    from pyproj import Transformer

    try:
        tr = Transformer.from_crs(src.crs, dst.crs, always_xy=True)
        rows = np.array([0, 0, src.height, src.height, src.height / 2], dtype="float64")
        cols = np.array([0, src.width, 0, src.width, src.width / 2], dtype="float64")
        t, inv = src.transform, ~dst.transform
        xs, ys = t.a * cols + t.b * rows + t.c, t.d * cols + t.e * rows + t.f
        xt, yt = (np.asarray(v, dtype="float64") for v in tr.transform(xs, ys))
        c2, r2 = inv.a * xt + inv.b * yt + inv.c, inv.d * xt + inv.e * yt + inv.f
        shift = float(np.max(np.hypot(c2 - cols, r2 - rows)))
    except Exception as exc:  # CRSs pyproj cannot relate
        log.debug("Cannot relate the CRSs %s and %s: %s", src.crs, dst.crs, exc)
        return None
    return shift if math.isfinite(shift) else None


def _crs_label(crs: Any) -> str:
    epsg = crs.to_epsg()
    if epsg:
        return f"EPSG:{epsg}"
    name = getattr(crs, "name", None) or ""
    return f"{name!r} (no EPSG code)" if name else crs.to_string()[:60]


class RasterOnGrid:
    """One band of a raster read onto ``grid`` window by window: raw values and validity.

    Validity is the source's (:class:`~rasterlearn.io.raster.RasterReader`: nodata, masks, NaN) and False
    outside the source. ``relation`` tells how the grids meet (:func:`relate_grids`).

    Raises:
        CRSError: the grids differ and one of them has no CRS (nothing to warp by).
    """

    def __init__(
        self, path: str | Path, grid: Grid, *, band: int = 1, src_name: str = "truth", dst_name: str = "map"
    ) -> None:
        self.path = str(path)
        self.grid = grid
        self.reader = RasterReader(path, [band])
        self.relation = relate_grids(self.reader.grid, grid, src_name, dst_name)
        self._vrt: Any = None
        self._alpha: int | None = None  # the warped VRT's alpha band, when the source declares no nodata
        if self.relation.resampled:
            lg = self.reader.grid
            if grid.crs is None or lg.crs is None:
                self.reader.close()
                raise CRSError(
                    f"{self.path} is not on the {dst_name} grid and one of the two rasters has no CRS; "
                    f"assign a CRS or resample the {src_name} raster to the {dst_name} grid"
                )
            from rasterio.enums import Resampling
            from rasterio.vrt import WarpedVRT

            nd = self.reader.nodata
            # without a nodata value an alpha band marks where the source is (else outside reads as valid)
            kw: dict[str, Any] = {"src_nodata": nd, "nodata": nd} if nd is not None else {"add_alpha": True}
            self._vrt = WarpedVRT(
                self.reader.dataset,
                crs=grid.crs.to_wkt(),
                transform=grid.transform,
                width=grid.width,
                height=grid.height,
                resampling=Resampling.nearest,
                **kw,
            )
            # the VRT warps every band of the source: read the added alpha band itself, since GDAL takes it
            # as the mask only in its own layouts (gray + alpha, RGB + alpha)
            self._alpha = None if nd is not None else int(self._vrt.count)

    @property
    def nodata(self) -> float | None:
        return self.reader.nodata

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """``(values, valid)`` of ``window`` on the target grid (boundless), values in the source dtype."""
        if self._vrt is None:
            r, c = self.relation.offset
            block = self.reader.read(window.shift(-r, -c))
            return block.data[0], block.valid
        from rasterio.windows import Window as RioWindow

        data = np.zeros(window.shape, dtype=self.reader.dtype)
        valid = np.zeros(window.shape, dtype=bool)
        inner = window.intersection(self.grid.window)
        if inner is not None:
            sub = inner.relative_to(window)
            rw = RioWindow(inner.col_off, inner.row_off, inner.width, inner.height)
            band = self.reader.band_indexes[0]  # the VRT holds every band of the source
            part = self._vrt.read(band, window=rw)
            # the warped VRT's nodata mask or alpha band, and NaN/inf, as the one policy combines them
            if self._alpha is not None:
                alpha = self._vrt.read(self._alpha, window=rw)
                pvalid, _ = block_validity(part[np.newaxis], [None], alpha=alpha[np.newaxis])
            else:
                masks = self._vrt.read_masks(band, window=rw)
                pvalid, _ = block_validity(part[np.newaxis], [None], gdal_masks=masks[np.newaxis])
            data[sub.slices()] = part
            valid[sub.slices()] = pvalid
        return data, valid

    def close(self) -> None:
        if self._vrt is not None:
            self._vrt.close()
        self.reader.close()


class LabelRaster:
    """A pre-rasterized label raster read window by window onto an image grid (``chips``).

    Placed by :class:`RasterOnGrid` (see the module docs); a grid read as is although its CRS is described
    differently, or warped, is logged and recorded (``alignment``, ``note``). The label raster's nodata and
    pixels outside it become the ignore code; values map to schema codes
    (:func:`rasterlearn.labels.values_to_codes`).
    """

    def __init__(
        self, path: str | Path, grid: Grid, *, band: int = 1, unknown: UnknownPolicy = "error"
    ) -> None:
        self.path = str(path)
        self.grid = grid
        self.unknown = unknown
        self.source = RasterOnGrid(path, grid, band=band, src_name="label raster", dst_name="image")
        self.reader = self.source.reader
        self.schema: ClassSchema | None = None
        rel = self.source.relation
        self.alignment: Alignment = rel.kind
        self.note: str | None = None if rel.note is None else f"{self.path}: {rel.note}"
        lg = self.reader.grid
        if rel.kind == "same_grid_crs_described_differently":  # the wording chips always recorded
            self.note = (
                f"{self.path}: its CRS {crs_name(lg.crs)} is described differently from the image's "
                f"{crs_name(grid.crs)}, but the grids are identical (same shape and transform, and the two "
                f"CRS descriptions agree within a quarter pixel); the label raster is used as is"
            )
        elif rel.resampled:
            self.note = (
                f"{self.path}: grid ({crs_name(lg.crs)}, {lg.width}x{lg.height} px, res {lg.res}) differs "
                f"from the image grid; labels are resampled to the image grid with nearest neighbour"
            )
        if self.note:
            log.warning(self.note)

    def values(self, block: int = 1024) -> list[int]:
        """Distinct valid values of the label raster, scanned block by block (bounded memory)."""
        seen: set[Any] = set()
        lg = self.reader.grid
        for win in plan_tiles(lg, block, block, edge="shift"):
            b = self.reader.read(win.clip(*lg.shape))
            seen.update(np.unique(b.data[0][b.valid]).tolist())
        bad = [v for v in seen if isinstance(v, float) and not float(v).is_integer()]
        if bad:
            raise InputError(
                f"{self.path} holds non-integer label values (e.g. {sorted(bad)[:5]}); a label raster "
                f"must hold integer class values"
            )
        return sorted(int(v) for v in seen)

    def bind(self, schema: ClassSchema) -> LabelRaster:
        self.schema = schema
        return self

    def mask(self, window: Window) -> np.ndarray:
        """The label mask (class codes, ``schema.mask_dtype``) of ``window`` on the image grid."""
        if self.schema is None:
            raise InputError("LabelRaster.bind(schema) must be called before reading masks")
        raw, valid = self.source.read(window)
        return values_to_codes(raw, valid, self.schema, unknown=self.unknown, source=self.path)

    def describe(self) -> dict[str, Any]:
        return {"kind": "raster", "source": self.path, "alignment": self.alignment, "note": self.note}

    def close(self) -> None:
        self.source.close()
