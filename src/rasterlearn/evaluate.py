"""Full-scene accuracy assessment of a class map against vector or raster ground truth.

The truth is brought onto the *map's* grid, window by window: vector truth is reprojected to the map's CRS
and rasterized (pixel centres, or every touched pixel); raster truth on another grid is reprojected /
resampled with nearest neighbour. Both are logged and recorded in the output. Pixels are skipped where the
map is nodata, the truth is nodata / the schema's ignore code / a user ignore value, or outside the AOI.
One confusion matrix is accumulated over the whole scene (:mod:`rasterlearn.metrics`), then per-class IoU,
F1, precision (user's accuracy), recall (producer's accuracy), overall accuracy, mean IoU and kappa are
written as JSON, a CSV table and a confusion-matrix PNG.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from rasterlearn.errors import EmptyInputError, InputError
from rasterlearn.grid import Grid, Window
from rasterlearn.io.aoi import resolve_aoi
from rasterlearn.io.raster import RasterReader
from rasterlearn.labels import ClassInfo, ClassSchema, default_color
from rasterlearn.metrics import confusion_matrix, metrics_from_confusion, metrics_table

__all__ = ["Unlabelled", "evaluate_map", "map_schema"]

log = logging.getLogger(__name__)

Unlabelled = Literal["auto", "background", "ignore"]
_VECTOR_EXT = {".gpkg", ".shp", ".geojson", ".json", ".fgb", ".parquet", ".gml", ".kml", ".sqlite"}


def map_schema(path: str | Path) -> ClassSchema | None:
    """The class schema of a map written by rasterlearn (``classes`` tag), else one built from GDAL category
    names; ``None`` when the map names no classes."""
    import rasterio

    from rasterlearn.vectorize import read_class_names

    with rasterio.open(path) as ds:
        raw = ds.tags().get("classes")
    if raw:
        try:
            return ClassSchema.from_dict(json.loads(raw))
        except Exception:  # a foreign 'classes' tag
            log.debug("Unreadable 'classes' tag in %s", path)
    names = read_class_names(path)
    if not names:
        return None
    ignore = 255 if max(names) < 255 else 65535
    return ClassSchema(
        tuple(ClassInfo(c, n, default_color(c)) for c, n in sorted(names.items())),
        ignore,
        0 if 0 in names else None,
    )


def _scan_codes(reader: RasterReader, window_size: int) -> list[int]:
    found: set[int] = set()
    g = reader.grid
    for r0 in range(0, g.height, window_size):
        for c0 in range(0, g.width, window_size):
            b = reader.read(Window(r0, c0, min(window_size, g.height - r0), min(window_size, g.width - c0)))
            found.update(int(v) for v in np.unique(b.data[0][b.valid]))
    if not found:
        raise EmptyInputError(f"{reader.path} has no valid pixels to evaluate")
    return sorted(found)


def _windows(grid: Grid, size: int, extent: Window) -> list[Window]:
    out = []
    for r0 in range(extent.row_off, extent.row_stop, size):
        for c0 in range(extent.col_off, extent.col_stop, size):
            out.append(Window(r0, c0, min(size, extent.row_stop - r0), min(size, extent.col_stop - c0)))
    return out


def _value_to_code(value: Any, schema: ClassSchema) -> int | None:
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, int | np.integer | float | np.floating):
        if isinstance(value, float | np.floating) and not float(value).is_integer():
            return None
        return int(value) if int(value) in schema.codes else None
    text = str(value).strip()
    try:
        return schema.code_of(text)
    except InputError:
        pass
    low = {n.lower(): c for c, n in zip(schema.codes, schema.names, strict=True)}
    if text.lower() in low:
        return low[text.lower()]
    try:
        num = float(text)
    except ValueError:
        return None
    return int(num) if num.is_integer() and int(num) in schema.codes else None


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def evaluate_map(
    map_path: str | Path,
    truth: str | Path,
    *,
    attribute: str | None = None,
    layer: str | None = None,
    schema: ClassSchema | None = None,
    unlabelled: Unlabelled = "auto",
    aoi: Any = None,
    ignore_values: Sequence[float] | None = None,
    all_touched: bool = False,
    window_size: int = 1024,
    output: str | Path | None = None,
    csv_path: str | Path | None = None,
    png_path: str | Path | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Compare a class map with ground truth over the whole scene.

    Args:
        map_path: the predicted class map (single band of class codes).
        truth: a vector layer (GPKG, Shapefile, GeoJSON, FlatGeobuf, ...) or a label raster.
        attribute: vector truth: the column holding class codes or class names (text values are matched to
            the map's class names, case-insensitively, or the schema's ``source_values``).
        layer: vector truth: the layer.
        schema: the classes; default: the map's own (``classes`` tag or category names), else the codes
            found in the map.
        unlabelled: vector truth: pixels covered by no polygon count as the ``background`` class, are
            ``ignore``-d, or ``auto`` (background when the schema has a background class among its classes).
        aoi: only pixels inside this vector file / geometry (map CRS) / bounds count.
        ignore_values: truth values that are not assessed (besides nodata and the schema's ignore code).
        all_touched: vector truth: burn every pixel a polygon touches (default: pixel centres inside).
        window_size: pixels per processing window.
        output: metrics JSON path; ``csv_path``/``png_path`` default to the same name with .csv/.png.
        progress: called with the number of map pixels processed.

    Returns:
        :func:`rasterlearn.metrics.metrics_from_confusion`'s dict plus an ``evaluation`` record (inputs,
        reprojection, pixels compared and ignored).
    """
    from rasterio.features import rasterize

    map_path = Path(map_path)
    truth = Path(truth)
    if unlabelled not in ("auto", "background", "ignore"):
        raise InputError(f"unlabelled must be 'auto', 'background' or 'ignore'; got {unlabelled!r}")
    reader = RasterReader(map_path, [1])
    grid = reader.grid
    if schema is None:
        schema = map_schema(map_path)
    if schema is None:
        codes_found = _scan_codes(reader, window_size)
        log.warning("%s names no classes; evaluating the codes found in it: %s", map_path, codes_found)
        schema = ClassSchema(
            tuple(ClassInfo(c, f"class_{c}", default_color(c)) for c in codes_found),
            255 if max(codes_found) < 255 else 65535,
            0 if 0 in codes_found else None,
        )
    codes = schema.codes
    n = len(codes)
    lut_size = max([*codes, schema.ignore_index]) + 2
    lut = np.full(lut_size, -1, dtype="int64")
    lut[codes] = np.arange(n)

    def to_index(arr: np.ndarray, ok: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        a = np.where(ok, arr, -1).astype("int64")
        inside = (a >= 0) & (a < lut_size)
        idx = np.full(a.shape, -1, dtype="int64")
        idx[inside] = lut[a[inside]]
        return idx, ok & (idx < 0)

    record: dict[str, Any] = {
        "map": str(map_path),
        "truth": str(truth),
        "attribute": attribute,
        "truth_kind": None,
        "truth_reprojected": False,
        "notes": [],
    }
    area = None if aoi is None else resolve_aoi(aoi, grid)
    extent = grid.window if area is None else area.window
    ignore_set = [float(v) for v in (ignore_values or [])]
    is_vector = truth.suffix.lower() in _VECTOR_EXT or truth.is_dir()

    truth_window: Callable[[Window], tuple[np.ndarray, np.ndarray]]
    if is_vector:
        import shapely
        from pyproj import CRS
        from shapely.geometry import box

        from rasterlearn.io.vector import check_overlap, read_vector

        record["truth_kind"] = "vector"
        if grid.crs is None:
            raise InputError(f"{map_path} has no CRS, so vector truth cannot be placed on it")
        gdf = read_vector(truth, layer=layer, attribute=attribute, crs=grid.crs)
        import pyogrio

        info_crs = pyogrio.read_info(truth, layer=layer).get("crs")
        if info_crs is not None and not CRS.from_user_input(info_crs).equals(grid.crs):
            record["truth_reprojected"] = True
            record["notes"].append(
                f"vector truth reprojected from {CRS.from_user_input(info_crs).to_string()} to the map's CRS"
            )
        check_overlap(gdf, grid, what="truth features", raster=str(map_path))
        if attribute is None:
            fg = [c for c in codes if c != schema.background]
            if len(fg) != 1:
                raise InputError(
                    f"Give --attribute: the map has several classes ({schema.describe()}), so the "
                    f"class of each truth polygon must come from an attribute of {truth}"
                )
            values = np.full(len(gdf), fg[0])
            log.info("No attribute given: every truth polygon is class %d (%s)", fg[0], schema.name_of(fg[0]))
        else:
            raw = gdf[attribute].tolist()
            mapping = {}
            unknown = []
            for v in {(v if not isinstance(v, float) or not math.isnan(v) else None) for v in raw}:
                if v is None:
                    continue
                code = _value_to_code(v, schema)
                if code is None:
                    unknown.append(v)
                mapping[v] = code
            if unknown:
                raise InputError(
                    f"Truth values {sorted(map(str, unknown))[:10]} of {attribute!r} in {truth} match "
                    f"no class of the map ({schema.describe()}). Pass --schema with source_values, "
                    f"or use --ignore for values to skip."
                )
            values = np.array(
                [-1 if v is None or (isinstance(v, float) and math.isnan(v)) else mapping[v] for v in raw],
                dtype="int64",
            )
            skipped = values < 0
            if skipped.any():
                log.warning("%d truth features with an empty %r are not used", int(skipped.sum()), attribute)
        keep = values >= 0
        if ignore_set:
            keep &= ~np.isin(values.astype("float64"), ignore_set)
        geoms = np.asarray(gdf.geometry.values)[keep]
        values = values[keep]
        tree = shapely.STRtree(geoms)
        if unlabelled == "auto":
            unlabelled = (
                "background" if schema.background is not None and schema.background in codes else "ignore"
            )
        record["unlabelled"] = unlabelled
        log.info(
            "Pixels outside every truth polygon are %s",
            f"background (class {schema.background})" if unlabelled == "background" else "ignored",
        )
        fill = schema.background if unlabelled == "background" else -1

        def vector_window(win: Window) -> tuple[np.ndarray, np.ndarray]:
            hits = tree.query(box(*grid.window_bounds(win)))
            out = np.full(win.shape, fill, dtype="int64")
            if len(hits):
                out = rasterize(
                    zip(geoms[hits], values[hits], strict=True),
                    out_shape=win.shape,
                    transform=grid.window_transform(win),
                    fill=fill,
                    all_touched=all_touched,
                    dtype="int64",
                )
            return out, out >= 0

        truth_window = vector_window
    else:
        import rasterio
        from rasterio.enums import Resampling
        from rasterio.warp import reproject

        record["truth_kind"] = "raster"
        record["unlabelled"] = None
        treader = RasterReader(truth, [1])
        tnodata = treader.nodata
        same = treader.grid == grid
        if not same:
            record["truth_reprojected"] = True
            msg = (
                f"truth raster resampled (nearest) from {treader.grid.height}x{treader.grid.width} "
                f"{treader.grid.crs.to_string() if treader.grid.crs else 'no CRS'} res {treader.grid.res} "
                f"onto the map grid {grid.height}x{grid.width} res {grid.res}"
            )
            record["notes"].append(msg)
            log.info("Evaluating against %s: %s", truth, msg)
            if grid.crs is None or treader.grid.crs is None:
                raise InputError(
                    f"{truth} and {map_path} are on different grids and one has no CRS; cannot align them"
                )
        tds = rasterio.open(truth) if not same else None

        def raster_window(win: Window) -> tuple[np.ndarray, np.ndarray]:
            if same:
                block = treader.read(win)
                data = block.data[0].astype("float64")
                ok = block.valid.copy()
            else:
                data = np.full(win.shape, np.nan, dtype="float64")
                reproject(
                    rasterio.band(tds, 1),
                    data,
                    src_nodata=tnodata,
                    dst_transform=grid.window_transform(win),
                    dst_crs=grid.crs,
                    dst_nodata=np.nan,
                    resampling=Resampling.nearest,
                )
                ok = np.isfinite(data)
                if tnodata is not None and not math.isnan(tnodata):
                    ok &= data != tnodata
            ok &= np.isfinite(data)
            if ignore_set:
                ok &= ~np.isin(data, ignore_set)
            ok &= data != schema.ignore_index
            ok &= np.equal(np.mod(np.where(ok, data, 0), 1), 0)
            return np.where(ok, data, -1).astype("int64"), ok

        truth_window = raster_window

    cm = np.zeros((n, n), dtype="int64")
    unknown_truth = unknown_pred = 0
    for win in _windows(grid, window_size, extent):
        block = reader.read(win)
        pvalid = block.valid
        if area is not None and area.geometry is not None:
            pvalid = pvalid & area.mask(grid, win)
        if pvalid.any():
            t, tvalid = truth_window(win)
            p_idx, p_bad = to_index(block.data[0], pvalid)
            t_idx, t_bad = to_index(t, tvalid)
            unknown_pred += int(p_bad.sum())
            unknown_truth += int(t_bad.sum())
            cm += confusion_matrix(t_idx, p_idx, n, valid=pvalid & tvalid & (t_idx >= 0) & (p_idx >= 0))
        if progress:
            progress(win.size)
    reader.close()
    if not is_vector:
        treader.close()
        if tds is not None:
            tds.close()
    if unknown_truth:
        log.warning(
            "%d truth pixels hold values that are not classes of the map (%s); they are not assessed",
            unknown_truth,
            schema.describe(),
        )
    if unknown_pred:
        log.warning("%d map pixels hold codes outside the class list; they are not assessed", unknown_pred)
    if cm.sum() == 0:
        raise EmptyInputError(
            f"No pixel has both a valid prediction in {map_path} and valid truth in {truth}; "
            f"check the overlap, nodata and the attribute values"
        )
    metrics = metrics_from_confusion(cm, schema.names, codes)
    record.update(
        {
            "pixels_compared": int(cm.sum()),
            "truth_pixels_unknown_class": unknown_truth,
            "map_pixels_unknown_class": unknown_pred,
            "aoi": None if aoi is None else str(aoi),
            "all_touched": all_touched,
            "ignore_values": ignore_set,
        }
    )
    metrics["evaluation"] = record
    log.info(
        "Overall accuracy %.4f, mean IoU %s, kappa %s over %d pixels",
        metrics["overall_accuracy"],
        metrics["mean_iou"],
        metrics["kappa"],
        cm.sum(),
    )
    if output is not None:
        out = Path(output)
        out.parent.mkdir(parents=True, exist_ok=True)
        _atomic_text(out, json.dumps(metrics, indent=2))
        csv_out = Path(csv_path) if csv_path else out.with_suffix(".csv")
        import pandas as pd

        tmp = csv_out.with_name(f".{csv_out.name}.tmp")
        pd.DataFrame(metrics_table(metrics)).to_csv(tmp, index=False)
        os.replace(tmp, csv_out)
        from rasterlearn.report import plot_confusion_matrix

        plot_confusion_matrix(
            cm,
            schema.names,
            Path(png_path) if png_path else out.with_suffix(".png"),
            title=f"{map_path.name} vs {truth.name}",
        )
    return metrics
