"""Ground truth on the map's grid for :func:`rasterlearn.evaluate.evaluate_map`: vector truth reprojected to the
map's CRS with its class values resolved (rasterized per window by the kernel), or a truth raster read on the
map's grid (:class:`rasterlearn.label_grid.RasterOnGrid`). Each builds the kernel's truth description
(:mod:`rasterlearn.evaluate_kernel`) and records reprojection and matching in the ``evaluation`` record."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np

from rasterlearn.class_maps import raster_class_names
from rasterlearn.errors import InputError
from rasterlearn.evaluate.classes import NameMatching, Unlabelled
from rasterlearn.evaluate_kernel import RasterTruth, VectorTruth
from rasterlearn.grid import Grid
from rasterlearn.label_grid import RasterOnGrid, relate_grids
from rasterlearn.labels import ClassSchema, is_null_label

log = logging.getLogger("rasterlearn.evaluate")  # one logger for the package, as before the split

_VECTOR_EXT = {".gpkg", ".shp", ".geojson", ".json", ".fgb", ".parquet", ".gml", ".kml", ".sqlite"}


def is_vector_path(truth: Path) -> bool:
    """Whether the truth is a vector layer (by extension, or a folder such as a Shapefile directory)."""
    return truth.suffix.lower() in _VECTOR_EXT or truth.is_dir()


def _grid_relation(truth: Grid, grid: Grid) -> tuple[bool, str | None]:
    """Whether a truth grid is read on the map's grid as it is (the same grid, possibly with a differently
    described or a missing CRS), and a note (:func:`rasterlearn.label_grid.relate_grids`)."""
    rel = relate_grids(truth, grid)
    same = rel.kind in ("aligned", "same_grid_crs_described_differently", "same_grid_no_crs")
    return same, rel.note


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


def _as_number(value: Any) -> float | None:
    """A numeric attribute value (or numeric text) as float, else None."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | np.integer | float | np.floating):
        return float(value)
    try:
        return float(str(value).strip())
    except ValueError:
        return None


def worker_path(path: Path) -> str:
    """A local file as an absolute path (workers may run elsewhere); URLs and /vsi paths as given."""
    return str(path.resolve()) if path.exists() else str(path)


def vector_truth(
    m: NameMatching,
    grid: Grid,
    *,
    attribute: str | None,
    layer: str | None,
    unlabelled: Unlabelled,
    all_touched: bool,
) -> tuple[VectorTruth, Any]:
    """Read vector truth in the map's CRS, resolve each feature's class (:func:`_vector_values`) and what
    pixels outside every polygon are (:func:`_unlabelled_fill`).

    Returns the kernel's :class:`VectorTruth` and the features' STRtree (for windows compared here).
    """
    import pyogrio
    import shapely
    from pyproj import CRS

    from rasterlearn.io.vector import check_overlap, read_vector, resolve_layer

    record, truth = m.record, m.truth
    record["truth_kind"] = "vector"
    if grid.crs is None:
        raise InputError(f"{m.map_path} has no CRS, so vector truth cannot be placed on it")
    layer = resolve_layer(truth, layer)  # type: ignore[assignment]
    gdf = read_vector(truth, layer=layer, attribute=attribute, crs=grid.crs)
    info_crs = pyogrio.read_info(truth, layer=layer).get("crs")
    if info_crs is not None and not CRS.from_user_input(info_crs).equals(grid.crs):
        record["truth_reprojected"] = True
        record["notes"].append(
            f"vector truth reprojected from {CRS.from_user_input(info_crs).to_string()} to the map's CRS"
        )
    check_overlap(gdf, grid, what="truth features", raster=str(m.map_path))
    values = _vector_values(m, gdf, attribute)
    keep = values >= 0
    if m.ignore_set:
        keep &= ~np.isin(values.astype("float64"), m.ignore_set)
    geoms = np.asarray(gdf.geometry.values)[keep]
    values = values[keep]
    tree = shapely.STRtree(geoms)
    fill = _unlabelled_fill(m, unlabelled)
    return VectorTruth(geoms, values, fill, all_touched), tree


def _vector_values(m: NameMatching, gdf: Any, attribute: str | None) -> np.ndarray:
    """The map class code of each truth feature: -1 for an empty value, -2 for an ignored one.

    Without ``attribute`` every feature is the map's only non-background class; text values are matched
    to the map's class names, codes to the map's codes or (truth class names given) by name.
    """
    schema, truth, codes, ignore_set = m.schema, m.truth, m.schema.codes, m.ignore_set
    if attribute is None:
        fg = [c for c in codes if c != schema.background]
        if len(fg) != 1:
            raise InputError(
                f"Give --attribute: the map has several classes ({schema.describe()}), so the "
                f"class of each truth polygon must come from an attribute of {truth}"
            )
        log.info("No attribute given: every truth polygon is class %d (%s)", fg[0], schema.name_of(fg[0]))
        return np.full(len(gdf), fg[0])
    raw = gdf[attribute].tolist()
    remap = m.remap(None, "")
    mapping: dict[Any, int] = {}
    unknown = []
    for v in {(None if is_null_label(v) else v) for v in raw}:
        if v is None:
            continue
        num = _as_number(v)
        if num is not None and num in ignore_set:
            mapping[v] = -2  # a raw truth value to ignore
            continue
        if remap is not None and num is not None and num.is_integer():
            code = remap.get(int(num))
        else:
            code = _value_to_code(v, schema)
        if code is None:
            unknown.append(v)
        else:
            mapping[v] = code
    if unknown:
        raise InputError(
            f"Truth values {sorted(map(str, unknown))[:10]} of {attribute!r} in {truth} match "
            f"no class of the map ({schema.describe()}). Pass --schema with source_values or "
            f"--truth-names '1=name,...' for codes, or use --ignore for values to skip."
        )
    values = np.array([mapping.get(v, -1) for v in raw], dtype="int64")  # -1: empty value
    skipped = values == -1
    if skipped.any():
        log.warning(
            "%d truth features with no value (null, empty or blank) in %r are not used",
            int(skipped.sum()),
            attribute,
        )
        m.record["notes"].append(
            f"{int(skipped.sum())} truth features without a value in {attribute!r} skipped"
        )
    return values


def _unlabelled_fill(m: NameMatching, unlabelled: Unlabelled) -> int:
    """The truth code of pixels covered by no truth polygon (``unlabelled`` resolved; -1: ignored)."""
    schema = m.schema
    if unlabelled == "auto":
        unlabelled = (
            "background" if schema.background is not None and schema.background in schema.codes else "ignore"
        )
    if unlabelled == "background" and schema.background is None:
        raise InputError(
            f"unlabelled='background' but the map's classes ({schema.describe()}) have no background "
            f"class; use unlabelled='ignore' (--unlabelled ignore) or give a schema with a background"
        )
    m.record["unlabelled"] = unlabelled
    log.info(
        "Pixels outside every truth polygon are %s",
        f"background (class {schema.background})" if unlabelled == "background" else "ignored",
    )
    return schema.background if unlabelled == "background" and schema.background is not None else -1


def raster_truth(m: NameMatching, grid: Grid) -> tuple[RasterTruth, RasterOnGrid]:
    """Open a truth raster on the map's grid (resampled with nearest neighbour where the grids differ) and
    match its class names (its own, or those given) to the map's.

    Returns the kernel's :class:`RasterTruth` and the open source (for windows compared here; close it).
    """
    record, truth, schema = m.record, m.truth, m.schema
    record["truth_kind"] = "raster"
    record["unlabelled"] = None
    source = RasterOnGrid(truth, grid)  # raises CRSError when the grids differ and a CRS is missing
    tgrid, rel = source.reader.grid, source.relation
    record["truth_alignment"] = rel.kind
    if rel.note:
        record["notes"].append(rel.note)
        record["truth_crs_differs"] = True
        log.warning("Evaluating against %s: %s", truth, rel.note)
    if rel.resampled:
        record["truth_reprojected"] = True
        msg = (
            f"truth raster resampled (nearest) from {tgrid.height}x{tgrid.width} "
            f"{tgrid.crs.to_string() if tgrid.crs else 'no CRS'} res {tgrid.res} "
            f"onto the map grid {grid.height}x{grid.width} res {grid.res}"
        )
        record["notes"].append(msg)
        log.info("Evaluating against %s: %s", truth, msg)
    remap = m.remap(raster_class_names(truth), f"class names of {truth.name}")
    spec = RasterTruth(worker_path(truth), tuple(m.ignore_set), schema.ignore_index)
    if remap is not None:
        spec = dataclasses.replace(
            spec,
            remap_keys=np.array(sorted(remap), dtype="int64"),
            remap_vals=np.array([remap[k] for k in sorted(remap)], dtype="int64"),
        )
    return spec, source
