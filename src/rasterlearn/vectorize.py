"""Class map to polygons, window by window, with polygons cut at window seams merged exactly.

Each window of the class map is polygonized with :func:`rasterio.features.shapes` (4-connectivity, holes
kept) in *global pixel coordinates*, where every vertex is an integer and therefore exact. Polygons that
do not touch an inner window seam are complete; pieces touching a seam are merged per class with an exact
union (pieces of one region share identical edges), which gives the same polygons as polygonizing the
whole raster at once. Only then are coordinates transformed to the map's CRS, areas computed, small
polygons dropped and (optionally) geometries simplified. Memory holds one window of pixels plus the
polygons themselves.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from rasterlearn.class_maps import class_styles, raster_class_names
from rasterlearn.engine.journal import fingerprint
from rasterlearn.engine.reduction import ReductionRecord
from rasterlearn.errors import InputError
from rasterlearn.grid import Window
from rasterlearn.io.paths import check_outputs
from rasterlearn.io.raster import RasterReader, gdal_cache
from rasterlearn.options import VectorizeOptions, parse_numbers

__all__ = [
    "AreaUnit",
    "VectorizeResult",
    "class_styles_of_map",
    "read_class_names",
    "run_vectorize",
    "style_polygons",
    "vectorize_fingerprint",
    "vectorize_raster",
]

log = logging.getLogger(__name__)

AreaUnit = Literal["map", "pixels"]


def read_class_names(path: str | Path) -> dict[int, str]:
    """Class names of a class map (:func:`rasterlearn.class_maps.raster_class_names`: rasterlearn's schema
    tags, GDAL category names or attribute table, a QGIS ``.qml`` style). Empty when the map names no
    classes."""
    return raster_class_names(path)


def _to_map(geoms: np.ndarray, transform: Any) -> np.ndarray:
    import shapely

    a, b, c, d, e, f = (transform.a, transform.b, transform.c, transform.d, transform.e, transform.f)

    def fn(xy: np.ndarray) -> np.ndarray:
        col, row = xy[:, 0], xy[:, 1]
        return np.column_stack([a * col + b * row + c, d * col + e * row + f])

    return shapely.transform(geoms, fn)


def _window_pieces(
    reader: RasterReader,
    window_size: int,
    skip: set[int],
    progress: Callable[[int], None] | None,
    record: ReductionRecord,
) -> tuple[list[tuple[int, Any]], dict[int, list[Any]]]:
    """Read phase: polygonize each window in global pixel coordinates.

    Each window's polygons are folded into ``record`` (:class:`rasterlearn.engine.reduction.ReductionRecord`:
    ``complete`` and ``seam`` lists of ``[code, WKB hex]`` in window order) before ``progress`` is told of
    it; windows it holds from an interrupted run are not read again.

    Returns ``(complete, seam)``: ``(code, polygon)`` of the polygons that touch no inner window seam, and
    per class the pieces that do (to be merged by :func:`_merge_seams`), both in window order.
    """
    import shapely

    grid = reader.grid
    state = record.state
    H, W = grid.height, grid.width
    for r0 in range(0, H, window_size):
        for c0 in range(0, W, window_size):
            win = Window(r0, c0, min(window_size, H - r0), min(window_size, W - c0))
            key = f"{r0}:{c0}"
            if not record.is_done(key):
                complete, seam = _polygonize(reader, win, skip)
                state["complete"].extend([c, shapely.to_wkb(g, hex=True)] for c, g in complete)
                state["seam"].extend([c, shapely.to_wkb(g, hex=True)] for c, g in seam)
                record.mark_done(key, state)
            if progress:
                progress(win.size)
    seam_by_class: dict[int, list[Any]] = defaultdict(list)
    for code, wkb in state["seam"]:
        seam_by_class[int(code)].append(shapely.from_wkb(wkb))
    return [(int(c), shapely.from_wkb(wkb)) for c, wkb in state["complete"]], seam_by_class


def _polygonize(reader: RasterReader, win: Window, skip: set[int]) -> tuple[list[Any], list[Any]]:
    """The ``(code, polygon)`` of one window, in global pixel coordinates: those that touch no inner window
    seam, and those that do."""
    import shapely
    from affine import Affine
    from rasterio.features import shapes

    H, W = reader.grid.height, reader.grid.width
    dtype = np.dtype(reader.dtype)
    r0, c0 = win.row_off, win.col_off
    block = reader.read(win)
    data = block.data[0]
    if dtype.kind == "f":
        data = data.astype("float32")
    elif dtype.itemsize > 2 or (dtype.kind == "i" and dtype.itemsize > 1):
        data = data.astype("int32")
    valid = block.valid
    if skip:
        valid = valid & ~np.isin(data, list(skip))
    complete: list[tuple[int, Any]] = []
    seam: list[tuple[int, Any]] = []
    if valid.any():
        tr = Affine.translation(c0, r0)
        for geom, value in shapes(data, mask=valid, connectivity=4, transform=tr):
            poly = shapely.geometry.shape(geom)
            minx, miny, maxx, maxy = poly.bounds
            touches = (
                (minx == c0 and c0 > 0)
                or (maxx == win.col_stop and win.col_stop < W)
                or (miny == r0 and r0 > 0)
                or (maxy == win.row_stop and win.row_stop < H)
            )
            (seam if touches else complete).append((int(value), poly))
    return complete, seam


def _merge_seams(complete: list[tuple[int, Any]], seam: dict[int, list[Any]]) -> tuple[list[int], list[Any]]:
    """Merge phase: exact union of the pieces cut at window seams, per class.

    Returns the class codes and pixel-coordinate polygons: the complete ones first, then the merged ones.
    """
    import shapely

    n_seam = sum(len(v) for v in seam.values())
    codes: list[int] = [c for c, _ in complete]
    geoms: list[Any] = [g for _, g in complete]
    for code, pieces in seam.items():
        merged = shapely.get_parts(shapely.union_all(pieces))
        # tolerance 0 only drops the collinear vertices left where pieces met (coordinates are exact)
        merged = [shapely.simplify(g, 0.0) for g in merged if g.geom_type == "Polygon" and not g.is_empty]
        codes.extend([code] * len(merged))
        geoms.extend(merged)
    if n_seam:
        log.debug("Merged %d polygon pieces cut at window seams", n_seam)
    return codes, geoms


def _polygon_table(
    codes: list[int],
    geoms: list[Any],
    grid: Any,
    names: dict[int, str],
    min_area: float,
    area_unit: AreaUnit,
    simplify: float | None,
) -> Any:
    """Table phase: polygons to map coordinates, areas, ``min_area`` filter, simplification; a GeoDataFrame
    sorted by class code, then by decreasing area."""
    import geopandas as gpd
    import shapely

    pix = np.asarray(geoms, dtype=object)
    pixel_area = np.asarray(shapely.area(pix), dtype="float64") if len(pix) else np.zeros(0)
    world = _to_map(pix, grid.transform) if len(pix) else pix
    area = np.asarray(shapely.area(world), dtype="float64") if len(pix) else np.zeros(0)
    keep = np.ones(len(pix), dtype=bool)
    if min_area > 0:
        keep &= (area if area_unit == "map" else pixel_area) >= min_area
        log.info(
            "Dropped %d polygons smaller than %g %s",
            int((~keep).sum()),
            min_area,
            "map units²" if area_unit == "map" else "pixels",
        )
    world = world[keep]
    if simplify:
        world = shapely.simplify(world, simplify, preserve_topology=True)
    code_arr = np.asarray(codes, dtype="int64")[keep]
    order = np.lexsort((-area[keep], code_arr)) if len(code_arr) else np.zeros(0, dtype=int)
    return gpd.GeoDataFrame(
        {
            "class_code": code_arr[order],
            "class_name": [names.get(int(c), f"class_{int(c)}") for c in code_arr[order]],
            "area": area[keep][order],
            "pixels": np.rint(pixel_area[keep][order]).astype("int64"),
        },
        geometry=list(world[order]) if len(order) else [],
        crs=grid.crs,
    )


def vectorize_raster(
    raster: str | Path,
    output: str | Path | None = None,
    *,
    band: int = 1,
    min_area: float = 0.0,
    area_unit: AreaUnit = "map",
    simplify: float | None = None,
    exclude: Sequence[int] | None = None,
    window_size: int = 2048,
    class_names: dict[int, str] | None = None,
    progress: Callable[[int], None] | None = None,
) -> Any:
    """Polygonize a class map into one polygon per connected region (4-connectivity, holes kept).

    Args:
        raster: single-band class map (integer codes; nodata pixels are left out).
        output: write the polygons here (GPKG, GeoJSON, FlatGeobuf, Shapefile by extension); optional.
        band: band to polygonize.
        min_area: drop polygons smaller than this, in ``area_unit``.
        area_unit: ``map`` (CRS units squared, e.g. m²) or ``pixels``.
        simplify: Douglas-Peucker tolerance in map units (topology of each polygon preserved; neighbouring
            polygons may no longer share edges exactly).
        exclude: class codes to leave out (e.g. the background).
        window_size: pixels per processing window (memory bound).
        class_names: ``{code: name}``; default: read from the map (see :func:`read_class_names`).
        progress: called with the number of pixels processed.

    Returns:
        A GeoDataFrame with ``class_code``, ``class_name``, ``area`` (map units²), ``pixels`` and the
        geometry, in the map's CRS.
    """
    check_outputs([raster], [output])
    if area_unit not in ("map", "pixels"):
        raise InputError(f"area_unit must be 'map' or 'pixels'; got {area_unit!r}")
    if window_size < 2:
        raise InputError(f"window_size must be at least 2 pixels, got {window_size}")
    names = dict(class_names) if class_names is not None else read_class_names(raster)
    skip = {int(c) for c in (exclude or ())}
    # the resume fingerprint: these keywords as the stage's options (the same whether run_vectorize or a
    # direct call made them) with the values resolved here, for the .NAME.progress.json record
    options = _keyword_options(raster, output, min_area, area_unit, simplify, skip, window_size)
    resolved = {"band": band, "exclude": sorted(skip), "window_size": window_size, "names": names}
    key = vectorize_fingerprint(options, resolved, raster)
    record = ReductionRecord(output, key, {"complete": [], "seam": []}, valid=_valid_state, unit="windows")
    with record:  # the output's lock held until the output is written
        with RasterReader(raster, [band]) as reader, gdal_cache():  # each window is read once
            grid = reader.grid
            if grid.is_geographic and area_unit == "map" and min_area:
                log.warning(
                    "%s is in geographic coordinates: areas and min_area are in square degrees", raster
                )
            complete, seam = _window_pieces(reader, window_size, skip, progress, record)
        codes, geoms = _merge_seams(complete, seam)
        gdf = _polygon_table(codes, geoms, grid, names, min_area, area_unit, simplify)
        log.info("%d polygons from %s (%d classes)", len(gdf), raster, len(set(gdf["class_code"].tolist())))
        if output is not None:
            from rasterlearn.io.vector import write_vector

            write_vector(gdf, output)
            log.info("Wrote %s", output)
        record.complete()
    return gdf


def _valid_state(state: Any) -> bool:
    """A recorded state holds ``complete`` and ``seam`` lists of ``[code, WKB hex]``."""
    return all(isinstance(c, int) and isinstance(h, str) for k in ("complete", "seam") for c, h in state[k])


def vectorize_fingerprint(options: VectorizeOptions, resolved: dict[str, Any], raster: str | Path) -> str:
    """What a vectorization's polygons depend on: ``options`` (less their ``output_neutral`` fields) plus the
    values resolved from them (``resolved``: the band, the class codes left out, the window size, the class
    names) and the identity of ``raster``."""
    params = {**options.model_dump(mode="json"), "resolved": resolved}
    return fingerprint(params, neutral=options.neutral_fields(), inputs={"raster": raster})


def _keyword_options(
    raster: str | Path,
    output: str | Path | None,
    min_area: float,
    area_unit: AreaUnit,
    simplify: float | None,
    exclude: set[int],
    window_size: int,
) -> VectorizeOptions:
    """:func:`vectorize_raster`'s keywords as the stage's options (a direct call has none of its own)."""
    values: dict[str, Any] = {
        "raster": raster,
        "output": output,
        "min_area": min_area,
        "area_unit": area_unit,
    }
    values |= {"simplify": simplify, "exclude": sorted(exclude) or None, "window_size": window_size}
    return VectorizeOptions.model_validate(values)


def class_styles_of_map(map_path: str | Path) -> dict[int, tuple[str, str]]:
    """Code -> (name, '#rrggbb') of a class map (:func:`rasterlearn.class_maps.class_styles`)."""
    return class_styles(map_path)


def style_polygons(polygons: str | Path, class_map: str | Path) -> None:
    """Store the class map's names and colours as the default QGIS style of ``polygons`` when it is a
    GeoPackage (:func:`rasterlearn.io.qgis_style.write_class_style`), so it opens categorized by class and not
    with the raster style ``MAP.qml`` of the same stem; other formats are left as they are."""
    from rasterlearn.io.qgis_style import write_class_style

    write_class_style(polygons, class_styles_of_map(class_map))


@dataclass(frozen=True)
class VectorizeResult:
    """What :func:`run_vectorize` wrote: ``output`` and its ``polygons`` (the GeoDataFrame of
    :func:`vectorize_raster`)."""

    output: Path
    polygons: Any

    @property
    def count(self) -> int:
        """Number of polygons written."""
        return len(self.polygons)


def run_vectorize(
    options: VectorizeOptions, *, progress: Callable[[int], None] | None = None
) -> VectorizeResult:
    """Polygonize a class map as ``options`` say (``rasterlearn vectorize``): refuse an existing output
    without ``overwrite``, announce the map's pixels to ``progress``
    (:func:`~rasterlearn.engine.events.report_total`), :func:`vectorize_raster` with the options (which make
    its resume fingerprint), then :func:`style_polygons` (a GeoPackage opens in QGIS with the map's classes).

    Args:
        options: the stage's options; ``raster`` and ``output`` are required.
        progress: called with the number of pixels polygonized, between windows (after each window's
            polygons are recorded, so a cancellation raised from it resumes).

    Raises:
        InputError: no raster or output, an existing output without ``overwrite``, ``exclude`` not a comma
            list of integers; and :func:`vectorize_raster`'s errors.
    """
    from rasterlearn.engine.events import report_total

    raster, output = options.require("raster", "output")
    if output.exists() and not options.overwrite:
        raise InputError(f"{output} exists; pass --overwrite or choose another name")
    exclude = parse_numbers(options.exclude, "exclude", int, "class codes", "0,255")
    with RasterReader(raster) as reader:
        report_total(progress, reader.grid.height * reader.grid.width)
    gdf = vectorize_raster(
        raster,
        output,
        min_area=options.min_area,
        area_unit=options.area_unit,
        simplify=options.simplify,
        exclude=exclude,
        window_size=options.window_size,
        progress=progress,
    )
    style_polygons(output, raster)
    return VectorizeResult(output, gdf)
