"""Label sources (thin I/O wrappers over the kernels in rasterlearn.labels): vector labels, label areas,
label rasters read window by window onto an image grid."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from rasterlearn.errors import CRSError, EmptyInputError, InputError, InputNotFoundError, ReadError
from rasterlearn.grid import Grid, Window, plan_tiles
from rasterlearn.io.raster import RasterReader
from rasterlearn.labels import ClassSchema, UnknownPolicy, crs_name, same_place, values_to_codes

# one logger for the whole stage, as before the split (log lines and --progress json name it)
log = logging.getLogger("rasterlearn.chips")


def load_vector_labels(
    path: str | Path,
    grid: Grid,
    *,
    attribute: str | None = None,
    layer: str | int | None = None,
    raster: str = "raster",
) -> Any:
    """Read vector labels for a raster grid: features intersecting the raster, in the raster's CRS.

    Reprojection and geometry repairs are logged (by :func:`rasterlearn.io.vector.read_vector`).

    Raises:
        InputNotFoundError, ReadError, AttributeNotFoundError, EmptyInputError (empty layer),
        CRSError (missing CRS), NoOverlapError (no feature over the raster).
    """
    import pyogrio

    from rasterlearn.io.vector import check_overlap, list_layers, read_vector, resolve_layer

    if grid.crs is None:
        raise CRSError(
            f"The {raster} has no CRS, so vector labels cannot be placed on it. Assign it a CRS "
            f"(gdal_edit.py -a_srs EPSG:xxxx) or use a label raster on the same grid."
        )
    if not Path(str(path)).exists():
        raise InputNotFoundError(
            f"Vector file not found: {path}. Check the path (relative paths are resolved from {Path.cwd()})."
        )
    layer = resolve_layer(path, layer)
    try:
        info = pyogrio.read_info(path, layer=layer)
    except Exception as exc:
        raise ReadError(f"Cannot open {path} as a vector layer (layer={layer!r}): {exc}") from exc
    if int(info.get("features", -1)) == 0:
        raise EmptyInputError(
            f"The vector layer {path} (layer={layer!r}) has no features. Choose another layer "
            f"(layers: {', '.join(list_layers(path))}) or file."
        )
    gdf = read_vector(
        path,
        layer=layer,
        attribute=attribute,
        crs=grid.crs,
        bounds=grid.bounds,
        bounds_crs=grid.crs,
        allow_empty=True,
    )
    check_overlap(gdf, grid, what="labels", raster=raster)
    return gdf


def load_label_areas(path: str | Path, grid: Grid, *, layer: str | int | None = None) -> Any:
    """Read a polygon layer of label areas (where annotation is complete), in the grid's CRS."""
    from rasterlearn.io.vector import check_overlap, read_vector

    gdf = read_vector(
        path, layer=layer, crs=grid.crs, bounds=grid.bounds, bounds_crs=grid.crs, allow_empty=True
    )
    check_overlap(gdf, grid, what="label areas", raster="raster")
    poly = gdf.geometry.geom_type.isin(["Polygon", "MultiPolygon"])
    if not poly.all():
        log.warning("%s: %d non-polygon label areas ignored", path, int((~poly).sum()))
        gdf = gdf.loc[poly]
    return gdf


class LabelRaster:
    """A pre-rasterized label raster read window by window onto an image grid.

    Alignment: a label raster on the image grid (or on an aligned grid) is read directly. One with the same
    shape and transform whose CRS is *described* differently (an EPSG code vs. an unnamed WKT of the same
    projection) is treated as the same grid when both CRS descriptions place the raster's corners within a
    quarter pixel of each other; this is logged and recorded. Anything else is warped to the image grid with
    nearest-neighbour resampling on the fly (logged and recorded).

    The label raster's nodata and pixels outside it become the ignore code; values map to schema codes
    (:func:`rasterlearn.labels.values_to_codes`).
    """

    def __init__(
        self, path: str | Path, grid: Grid, *, band: int = 1, unknown: UnknownPolicy = "error"
    ) -> None:
        self.path = str(path)
        self.grid = grid
        self.unknown = unknown
        self.reader = RasterReader(path, [band])
        self.schema: ClassSchema | None = None
        self.alignment = "aligned"
        self.note: str | None = None
        self._offset = (0, 0)
        self._vrt: Any = None
        lg = self.reader.grid
        if grid.crs is not None and lg.crs is not None and grid.is_aligned_with(lg):
            w = grid.window_of(lg)
            self._offset = (w.row_off, w.col_off)
            if self._offset != (0, 0) or lg.shape != grid.shape:
                self.alignment = "aligned_offset"
        elif (
            lg.shape == grid.shape
            and lg.transform.almost_equals(grid.transform, precision=1e-6)
            and ((grid.crs is None) == (lg.crs is None))
            and same_place(grid, lg)
        ):
            self.alignment = "same_grid_crs_described_differently"
            self.note = (
                f"{self.path}: its CRS {crs_name(lg.crs)} is described differently from the image's "
                f"{crs_name(grid.crs)}, but the grids are identical (same shape and transform, and the two "
                f"CRS descriptions agree within a quarter pixel); the label raster is used as is"
            )
            log.warning(self.note)
        else:
            if grid.crs is None or lg.crs is None:
                raise CRSError(
                    f"{self.path} is not on the image grid and one of the two rasters has no CRS; assign "
                    f"a CRS or resample the label raster to the image grid"
                )
            self.alignment = "warped_nearest"
            self.note = (
                f"{self.path}: grid ({crs_name(lg.crs)}, {lg.width}x{lg.height} px, res {lg.res}) differs "
                f"from the image grid; labels are resampled to the image grid with nearest neighbour"
            )
            log.warning(self.note)
            from rasterio.enums import Resampling
            from rasterio.vrt import WarpedVRT

            nd = self.reader.nodata
            self._vrt = WarpedVRT(
                self.reader.dataset,
                crs=grid.crs.to_wkt(),
                transform=grid.transform,
                width=grid.width,
                height=grid.height,
                resampling=Resampling.nearest,
                src_nodata=nd,
                nodata=nd,
            )

    def _read_raw(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        if self._vrt is None:
            block = self.reader.read(window.shift(-self._offset[0], -self._offset[1]))
            return block.data[0], block.valid
        from rasterio.windows import Window as RioWindow

        data = np.zeros(window.shape, dtype=self.reader.dtype)
        valid = np.zeros(window.shape, dtype=bool)
        inner = window.intersection(self.grid.window)
        if inner is not None:
            sub = inner.relative_to(window)
            rw = RioWindow(inner.col_off, inner.row_off, inner.width, inner.height)
            part = self._vrt.read(1, window=rw)
            pvalid = self._vrt.read_masks(1, window=rw) > 0
            if np.issubdtype(part.dtype, np.floating):
                pvalid &= np.isfinite(part)
            data[sub.slices()] = part
            valid[sub.slices()] = pvalid
        return data, valid

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
        raw, valid = self._read_raw(window)
        return values_to_codes(raw, valid, self.schema, unknown=self.unknown, source=self.path)

    def describe(self) -> dict[str, Any]:
        return {"kind": "raster", "source": self.path, "alignment": self.alignment, "note": self.note}

    def close(self) -> None:
        if self._vrt is not None:
            self._vrt.close()
        self.reader.close()
