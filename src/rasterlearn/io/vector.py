"""Vector reading with pyogrio/geopandas: CRS checks, reprojection, geometry repair, extent filters.

Every function logs what it changed (features reprojected, geometries repaired or dropped) so that
nothing is silently altered.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pyogrio
import shapely
from pyproj import CRS
from pyproj.exceptions import CRSError as PyprojCRSError
from shapely.geometry import box

from rasterlearn._util import disk_full_error, is_disk_full
from rasterlearn.errors import (
    AttributeNotFoundError,
    CRSError,
    EmptyInputError,
    InputError,
    InputNotFoundError,
    NoOverlapError,
    ReadError,
)
from rasterlearn.grid import Bounds, Grid
from rasterlearn.io.remote import is_virtual

__all__ = [
    "check_attribute",
    "check_overlap",
    "list_layers",
    "read_vector",
    "repair_geometries",
    "resolve_layer",
    "transform_bounds",
    "write_vector",
]

log = logging.getLogger(__name__)

_DRIVERS = {
    ".gpkg": "GPKG",
    ".geojson": "GeoJSON",
    ".json": "GeoJSON",
    ".fgb": "FlatGeobuf",
    ".shp": "ESRI Shapefile",
    ".parquet": "Parquet",
}


def list_layers(path: str | Path) -> list[str]:
    """Layer names of a vector data source."""
    _check_exists(path)
    return [str(name) for name, _ in pyogrio.list_layers(path)]


_ANNOUNCED: set[tuple[str, str]] = set()


def resolve_layer(path: str | Path, layer: str | int | None) -> str | int | None:
    """The layer to read: ``layer`` when given, else the source's only data layer.

    A source with several data layers (GeoPackage, FileGDB, ...) and no ``layer`` is ambiguous: refused with
    the list of layers. Tables without geometry that are not data (QGIS's ``layer_styles``) do not count;
    when they are passed over, one log line says so (instead of pyogrio's repeated warnings).

    Raises:
        InputError: several data layers and no ``layer``.
    """
    if layer is not None:
        return layer
    _check_exists(path)
    try:
        layers = [(str(n), g) for n, g in pyogrio.list_layers(path)]
    except Exception:  # let the reader report an unreadable source
        return None
    if len(layers) <= 1:
        return None
    data = [n for n, g in layers if g is not None and n != "layer_styles"]
    if len(data) != 1:
        raise InputError(
            f"{path} holds {len(layers)} layers ({', '.join(repr(n) for n, _ in layers)}); choose one with "
            f"--layer (Python: layer=...)"
        )
    ignored = [n for n, _ in layers if n != data[0]]
    key = (str(path), data[0])
    if key not in _ANNOUNCED:
        _ANNOUNCED.add(key)
        log.info(
            "%s: %d layers: %r used, %s ignored — use --layer to choose",
            path,
            len(layers),
            data[0],
            ", ".join(repr(n) for n in ignored),
        )
    return data[0]


def _check_exists(path: str | Path) -> None:
    p = str(path)
    if not is_virtual(p) and not Path(p).exists():
        raise InputNotFoundError(
            f"Vector file not found: {p}. Check the path (relative paths are resolved from {Path.cwd()})."
        )


def read_vector(
    path: str | Path,
    *,
    layer: str | int | None = None,
    columns: Sequence[str] | None = None,
    attribute: str | None = None,
    crs: CRS | str | None = None,
    bounds: Bounds | None = None,
    bounds_crs: CRS | str | None = None,
    repair: bool = True,
    allow_empty: bool = False,
) -> gpd.GeoDataFrame:
    """Read a vector layer (GPKG, Shapefile, GeoJSON, FlatGeobuf, ...), checked and optionally reprojected.

    Args:
        path: the data source.
        layer: layer name or index (default: the first layer).
        columns: attribute columns to keep (default: all).
        attribute: a column that must exist (its absence is an :class:`AttributeNotFoundError` that lists
            the available columns).
        crs: reproject the features to this CRS (logged when it differs).
        bounds: keep only features intersecting these bounds, given in ``bounds_crs`` (default: ``crs``).
        repair: make invalid geometries valid (count logged); empty/null geometries are dropped (logged).
        allow_empty: return an empty frame instead of raising when the layer has no features.

    Raises:
        InputNotFoundError, ReadError, EmptyInputError, AttributeNotFoundError, CRSError.
    """
    _check_exists(path)
    layer = resolve_layer(path, layer)
    try:
        info = pyogrio.read_info(path, layer=layer)
    except Exception as exc:
        raise ReadError(f"Cannot open {path} as a vector layer (layer={layer!r}): {exc}") from exc
    available = [str(c) for c in info["fields"]]
    if attribute is not None and attribute not in available:
        raise AttributeNotFoundError(
            f"Attribute {attribute!r} not found in {path}. Available attributes: {', '.join(available) or '(none)'}"
        )
    if info.get("crs") is None:
        raise CRSError(
            f"{path} has no coordinate reference system. Assign one (e.g. in QGIS, or with "
            f"ogr2ogr -a_srs EPSG:xxxx) so labels can be aligned with the raster."
        )
    src_crs = CRS.from_user_input(info["crs"])
    read_bbox = None
    if bounds is not None:
        bcrs = _to_crs(
            bounds_crs if bounds_crs is not None else (crs if crs is not None else src_crs), "bounds_crs"
        )
        read_bbox = transform_bounds(bounds, bcrs, src_crs) if not bcrs.equals(src_crs) else tuple(bounds)
        if not np.isfinite(read_bbox).all():
            raw = pyogrio.read_info(path, layer=layer, force_total_bounds=True).get("total_bounds")
            shown = "unknown" if raw is None else "(" + ", ".join(f"{float(v):.6g}" for v in raw) + ")"
            raise CRSError(
                f"The extent {tuple(round(float(v), 3) for v in bounds)} ({_crs_label(bcrs)}) has no finite "
                f"coordinates in the declared CRS {_crs_label(src_crs)} of {path}: the declared CRS is likely "
                f"wrong (the layer's raw bounds are {shown}). Assign the right one, e.g. ogr2ogr -a_srs "
                f"EPSG:xxxx fixed{Path(str(path)).suffix} {Path(str(path)).name}"
            )
    keep = list(columns) if columns is not None else None
    if keep is not None and attribute is not None and attribute not in keep:
        keep.append(attribute)
    try:
        gdf = gpd.read_file(path, layer=layer, columns=keep, bbox=read_bbox, engine="pyogrio")
    except Exception as exc:
        raise ReadError(f"Cannot read features from {path}: {exc}") from exc
    total = int(info.get("features", -1))
    if len(gdf) == 0 and read_bbox is None and not allow_empty:
        raise EmptyInputError(
            f"The vector layer {path} (layer={layer!r}) has no features. Choose another layer "
            f"(layers: {', '.join(list_layers(path))}) or file."
        )
    if gdf.crs is None:
        gdf = gdf.set_crs(src_crs)
    if repair:
        gdf = repair_geometries(gdf, source=str(path))
    if crs is not None:
        target = _to_crs(crs, "crs")
        if not CRS.from_user_input(gdf.crs).equals(target):
            log.info(
                "Reprojecting %d features of %s from %s to %s",
                len(gdf),
                path,
                _crs_label(gdf.crs),
                _crs_label(target),
            )
            raw_bounds = tuple(float(v) for v in gdf.total_bounds)
            gdf = gdf.to_crs(target)
            _check_finite(gdf, path, src_crs, target, raw_bounds)
    if read_bbox is not None:
        log.debug("Read %d of %d features of %s intersecting %s", len(gdf), total, path, bounds)
    gdf.attrs["source"] = str(path)
    layer_bounds = info.get("total_bounds")
    if layer_bounds is not None and np.isfinite(np.asarray(layer_bounds, dtype=float)).all():
        gdf.attrs["layer_bounds"] = tuple(float(v) for v in layer_bounds)
        gdf.attrs["layer_crs"] = _crs_label(src_crs)
    return gdf


def _check_finite(
    gdf: gpd.GeoDataFrame, path: str | Path, src: CRS, dst: CRS, raw_bounds: tuple[float, ...] | None
) -> None:
    """A wrong declared CRS reprojects to inf: say so with the layer's raw bounds instead of inf extents."""
    if len(gdf) == 0:
        return
    finite = np.isfinite(shapely.get_coordinates(gdf.geometry.values)).all(axis=1)
    if finite.all():
        return
    raw = "unknown" if raw_bounds is None else "(" + ", ".join(f"{v:.6g}" for v in raw_bounds) + ")"
    what = "no finite coordinates" if not finite.any() else f"{int((~finite).sum())} non-finite coordinates"
    raise CRSError(
        f"Reprojecting {path} from its declared CRS {_crs_label(src)} to {_crs_label(dst)} produced {what}: "
        f"the declared CRS is likely wrong (the layer's raw bounds are {raw}). Assign the right one, e.g. "
        f"ogr2ogr -a_srs EPSG:xxxx fixed.gpkg {Path(str(path)).name}"
    )


def _to_crs(value: Any, name: str) -> CRS:
    try:
        return CRS.from_user_input(value)
    except PyprojCRSError as exc:
        raise CRSError(f"{name}={value!r} is not a CRS: give an EPSG code ('EPSG:4326') or WKT") from exc


def _crs_label(crs: Any) -> str:
    c = CRS.from_user_input(crs)
    epsg = c.to_epsg()
    return f"EPSG:{epsg}" if epsg else c.name


def repair_geometries(gdf: gpd.GeoDataFrame, source: str = "layer") -> gpd.GeoDataFrame:
    """Drop null/empty geometries and make invalid ones valid, logging both counts."""
    geoms = gdf.geometry.values
    missing = shapely.is_missing(geoms) | shapely.is_empty(geoms)
    if missing.any():
        log.warning("%s: dropped %d features with empty or missing geometry", source, int(missing.sum()))
        gdf = gdf.loc[~np.asarray(missing)].copy()
        geoms = gdf.geometry.values
    invalid = ~shapely.is_valid(geoms)
    if invalid.any():
        reasons = shapely.is_valid_reason(geoms[invalid])
        log.warning("%s: repaired %d invalid geometries (first: %s)", source, int(invalid.sum()), reasons[0])
        fixed = shapely.make_valid(geoms[invalid])
        gdf = gdf.copy()
        gdf.loc[np.asarray(invalid), gdf.geometry.name] = fixed
    gdf.attrs["n_repaired"] = int(invalid.sum())
    gdf.attrs["n_dropped_empty"] = int(missing.sum())
    return gdf


def check_attribute(gdf: gpd.GeoDataFrame, attribute: str, source: str | None = None) -> None:
    """Raise :class:`AttributeNotFoundError` listing the available columns when ``attribute`` is missing."""
    if attribute not in gdf.columns:
        cols = [c for c in gdf.columns if c != gdf.geometry.name]
        raise AttributeNotFoundError(
            f"Attribute {attribute!r} not found in {source or gdf.attrs.get('source', 'layer')}. "
            f"Available attributes: {', '.join(map(str, cols)) or '(none)'}"
        )


def transform_bounds(bounds: Bounds, src: CRS | str, dst: CRS | str) -> Bounds:
    """Reproject bounds, densifying edges so curved boundaries are enclosed."""
    from pyproj import Transformer

    tr = Transformer.from_crs(CRS.from_user_input(src), CRS.from_user_input(dst), always_xy=True)
    out = tr.transform_bounds(*bounds, densify_pts=21)
    return (float(out[0]), float(out[1]), float(out[2]), float(out[3]))


def check_overlap(gdf: gpd.GeoDataFrame, grid: Grid, *, what: str = "labels", raster: str = "raster") -> None:
    """Raise :class:`NoOverlapError` when no feature intersects the grid's footprint.

    The message gives both extents in the raster's CRS.
    """
    if grid.crs is None:
        raise CRSError(
            f"{raster} has no CRS, so {what} cannot be placed on it. Assign the raster a CRS first."
        )
    frame = gdf if CRS.from_user_input(gdf.crs).equals(grid.crs) else gdf.to_crs(grid.crs)
    footprint = box(*grid.bounds)
    if len(frame) == 0 or not frame.geometry.intersects(footprint).any():
        vb: Any = tuple(round(float(v), 3) for v in frame.total_bounds) if len(frame) else "(empty)"
        if not len(frame) and gdf.attrs.get("layer_bounds"):
            shown = ", ".join(f"{v:.6g}" for v in gdf.attrs["layer_bounds"])
            vb = f"(none here; the whole layer spans ({shown}) in its declared {gdf.attrs.get('layer_crs')})"
        rb = tuple(round(float(v), 3) for v in grid.bounds)
        raise NoOverlapError(
            f"The {what} ({gdf.attrs.get('source', 'vector')}) do not overlap the {raster}. In {_crs_label(grid.crs)}: "
            f"{what} extent {vb}, raster extent {rb}. Check that both cover the same area and that the vector's "
            f"declared CRS is right."
        )


def write_vector(gdf: gpd.GeoDataFrame, path: str | Path, *, layer: str | None = None) -> Path:
    """Write a frame atomically (temporary name, then rename); the driver follows the extension."""
    import os

    path = Path(path)
    driver = _DRIVERS.get(path.suffix.lower())
    if driver is None:
        raise ReadError(
            f"Unsupported vector output extension {path.suffix!r} for {path}; use one of "
            f"{', '.join(sorted(_DRIVERS))}"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    for stale in tmp.parent.glob(f".{path.stem}.tmp.*"):
        stale.unlink()
    try:
        if driver == "Parquet":
            gdf.to_parquet(tmp)
        else:
            gdf.to_file(tmp, driver=driver, layer=layer or path.stem, engine="pyogrio")
    except Exception as exc:
        for part in tmp.parent.glob(f".{path.stem}.tmp.*"):
            part.unlink(missing_ok=True)
        if is_disk_full(exc, path):
            raise disk_full_error(path) from exc
        raise
    # a Shapefile is several files: move every sidecar (.shx, .dbf, .prj, .cpg) with the main file
    for part in sorted(tmp.parent.glob(f".{path.stem}.tmp.*")):
        os.replace(part, path.with_suffix(part.suffix))
    return path
