"""Probability samples of a class map: stratified random, simple random and systematic, streamed.

The map (and an optional strata raster on the same grid) is read block by block twice at most: one pass
counts the pixels of every stratum and map class, the second draws the sample. Stratified and simple random
samples pick, for each stratum, ``n_h`` distinct ranks among its ``N_h`` pixels (numpy's seeded
``Generator.choice``, memory ``O(n_h)``) and take the pixels of those ranks in the raster's row-major order
(the map is read in full-width strips, so the order, and the sample, do not depend on the block size);
systematic samples take a square lattice with a seeded random start. Nodata pixels (of the map or the
strata) are never part of the population. Memory is one strip plus the sample, whatever the map size.

The points and their design (strata pixel counts and areas, allocation, inclusion probabilities, seed, map
identity) are written together by :mod:`rasterlearn.assess.store`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from rasterlearn import __version__
from rasterlearn._util import file_sha256
from rasterlearn.assess.design import (
    Allocation,
    allocate,
    inclusion_probabilities,
    sample_size,
    systematic_step,
)
from rasterlearn.assess.store import points_frame, write_sample
from rasterlearn.errors import EmptyInputError, InputError, OutputError
from rasterlearn.grid import Grid, Window
from rasterlearn.io.raster import RasterReader, gdal_cache
from rasterlearn.labels import ClassInfo, ClassSchema, default_color, same_place

__all__ = [
    "Design",
    "PopulationCounts",
    "SampleResult",
    "area_units",
    "count_population",
    "draw_sample",
    "map_classes",
]

log = logging.getLogger(__name__)

Design = Literal["stratified", "random", "systematic"]


@dataclass(frozen=True)
class PopulationCounts:
    """Pixels of every map class and stratum among the valid pixels (map and strata both valid)."""

    grid: Grid
    map_counts: dict[int, int]
    strata_counts: dict[int, int]
    pixels: int


def map_classes(map_path: str | Path, found: Sequence[int] = ()) -> ClassSchema:
    """The map's classes (:func:`rasterlearn.evaluate.map_schema`) plus any code found in it without a name."""
    from rasterlearn.class_maps import map_schema

    schema = map_schema(map_path)
    known = set(schema.codes) if schema is not None else set()
    extra = sorted(set(int(c) for c in found) - known)
    if schema is not None and not extra:
        return schema
    if schema is None:
        log.warning("%s names no classes; using the codes found in it: %s", map_path, sorted(found))
    else:
        log.warning("%s holds codes its class list does not name: %s", map_path, extra)
    infos = list(schema.classes) if schema is not None else []
    infos += [ClassInfo(c, f"class_{c}", default_color(c)) for c in extra]
    top = max(c.code for c in infos)
    ignore = 255 if top < 255 else (65535 if top < 65535 else top + 1)
    return ClassSchema(tuple(infos), ignore, None)


def area_units(grid: Grid) -> dict[str, Any]:
    """Pixel area in map units² and the factor from map units² to hectares (``None`` if not linear)."""
    pixel_area = abs(grid.transform.determinant)
    factor = None
    unit = "pixel units"
    if grid.crs is not None and not grid.crs.is_geographic:
        ax = grid.crs.axis_info[0] if grid.crs.axis_info else None
        if ax is not None and ax.unit_conversion_factor:
            unit = ax.unit_name
            factor = float(ax.unit_conversion_factor) ** 2 / 10_000.0
    elif grid.crs is not None:
        unit = "degree"
        log.warning(
            "The map is in a geographic CRS: its pixels differ in area with latitude, so areas are in "
            "degrees² and pixel counts are not proportional to area; reproject it to an equal-area CRS"
        )
    return {"pixel_area": pixel_area, "unit": f"{unit}²", "hectares_per_unit2": factor}


def _read_strata(
    reader: RasterReader, strata: RasterReader | None, win: Window
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    block = reader.read(win)
    codes = block.data[0]
    valid = block.valid.copy()
    if strata is None:
        return codes, codes, valid
    sb = strata.read(win)
    valid &= sb.valid
    return codes, sb.data[0], valid


def _integer_codes(values: np.ndarray, what: str) -> np.ndarray:
    if np.issubdtype(values.dtype, np.floating):
        bad = values != np.round(values)
        if bad.any():
            raise InputError(
                f"{what} holds values that are not whole numbers (e.g. {values[bad][0]}); class maps and strata must hold integer codes"
            )
    return values.astype("int64")


def _value_counts(values: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Distinct integer codes and their counts (a bincount for 8/16-bit codes, else a sort)."""
    if values.dtype in (np.uint8, np.uint16):
        counts = np.bincount(values, minlength=1)
        u = np.flatnonzero(counts)
        return u, counts[u]
    return np.unique(_integer_codes(values, what), return_counts=True)


def _open_strata(reader: RasterReader, strata: str | Path | None) -> RasterReader | None:
    if strata is None:
        return None
    sr = RasterReader(strata, [1])
    if sr.grid != reader.grid and not (
        sr.grid.shape == reader.grid.shape and same_place(sr.grid, reader.grid)
    ):
        sr.close()
        raise InputError(
            f"The strata raster {strata} is not on the map's grid ({reader.grid.height}x{reader.grid.width}, "
            f"{reader.grid.transform[:6]}); resample it onto the map's grid first (e.g. gdalwarp -te ... -tr ...)"
        )
    return sr


def count_population(
    map_path: str | Path,
    strata: str | Path | None = None,
    *,
    blocksize: int = 1024,
    progress: Callable[[int], None] | None = None,
) -> PopulationCounts:
    """Count valid pixels per map class and per stratum in one streamed pass (strata = map classes without
    a strata raster). A pixel counts when the map, and the strata raster if given, are valid there."""
    with RasterReader(map_path, [1]) as reader, gdal_cache():
        sr = _open_strata(reader, strata)
        mc: dict[int, int] = {}
        sc: dict[int, int] = {}
        try:
            for win in strips(reader.grid, blocksize):
                codes, svals, valid = _read_strata(reader, sr, win)
                for store, vals, what in ((mc, codes, str(map_path)), (sc, svals, str(strata or map_path))):
                    u, k = _value_counts(vals[valid], what)
                    for c, cnt in zip(u.tolist(), k.tolist(), strict=True):
                        store[c] = store.get(c, 0) + cnt
                    if strata is None:
                        break
                if progress:
                    progress(win.size)
        finally:
            if sr is not None:
                sr.close()
        if strata is None:
            sc = dict(mc)
        total = sum(mc.values())
        if total == 0:
            raise EmptyInputError(
                f"{map_path} has no valid pixels{' inside the strata' if strata else ''} to sample"
            )
        return PopulationCounts(reader.grid, dict(sorted(mc.items())), dict(sorted(sc.items())), total)


@dataclass(frozen=True)
class SampleResult:
    """What :func:`draw_sample` wrote: the file, the number of units and the design record (JSON-ready)."""

    path: Path
    n: int
    design: dict[str, Any]

    @property
    def allocation(self) -> dict[str, int]:
        return {s["name"]: s["samples"] for s in self.design["strata"]}


def strips(grid: Grid, blocksize: int) -> list[Window]:
    """Full-width strips of about ``blocksize²`` pixels, top to bottom: the pixels are visited in the
    raster's row-major order whatever the block size, so a seed gives the same sample with any
    ``blocksize``, and memory stays bounded for wide rasters."""
    rows = max(1, (blocksize * blocksize) // grid.width)
    return [Window(r, 0, min(rows, grid.height - r), grid.width) for r in range(0, grid.height, rows)]


def _draw_ranked(
    reader: RasterReader,
    sr: RasterReader | None,
    selected: dict[int, np.ndarray],
    single: bool,
    blocksize: int,
    progress: Callable[[int], None] | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rows, cols, map codes and strata of the pixels whose per-stratum ranks (in block order) are selected."""
    seen = dict.fromkeys(selected, 0)
    rows, cols, mcodes, scodes = [], [], [], []
    for win in strips(reader.grid, blocksize):
        codes, svals, valid = _read_strata(reader, sr, win)
        flat = np.flatnonzero(valid.ravel())
        if flat.size:
            sv = (
                np.zeros(flat.size, dtype="int64")
                if single
                else _integer_codes(svals.ravel()[flat], "strata")
            )
            order = np.argsort(sv, kind="stable")  # keeps row-major order inside each stratum
            uniq, starts, counts = np.unique(sv[order], return_index=True, return_counts=True)
            for code, st, k in zip(uniq.tolist(), starts.tolist(), counts.tolist(), strict=True):
                chosen = selected.get(code)
                if chosen is None:
                    continue
                first = seen[code]
                lo, hi = np.searchsorted(chosen, [first, first + k])
                if hi > lo:
                    pos = flat[order[st + chosen[lo:hi] - first]]
                    r, c = np.divmod(pos, win.width)
                    rows.append(r + win.row_off)
                    cols.append(c + win.col_off)
                    mcodes.append(codes.ravel()[pos])
                    scodes.append(np.full(pos.size, code) if single else svals.ravel()[pos])
                seen[code] = first + k
        if progress:
            progress(win.size)
    return tuple(np.concatenate(a) if a else np.zeros(0, "int64") for a in (rows, cols, mcodes, scodes))  # type: ignore[return-value]


def _draw_systematic(
    reader: RasterReader,
    step: int,
    offset: tuple[int, int],
    blocksize: int,
    progress: Callable[[int], None] | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Valid pixels of the lattice ``offset + k·step`` (rows and columns)."""
    rows, cols, mcodes = [], [], []
    for win in strips(reader.grid, blocksize):
        r = np.arange(offset[0] + math.ceil((win.row_off - offset[0]) / step) * step, win.row_stop, step)
        c = np.arange(offset[1] + math.ceil((win.col_off - offset[1]) / step) * step, win.col_stop, step)
        if r.size and c.size:
            block = reader.read(win)
            rr, cc = np.meshgrid(r - win.row_off, c - win.col_off, indexing="ij")
            ok = block.valid[rr, cc]
            rows.append(rr[ok] + win.row_off)
            cols.append(cc[ok] + win.col_off)
            mcodes.append(block.data[0][rr[ok], cc[ok]])
        if progress:
            progress(win.size)
    out = [np.concatenate(a) if a else np.zeros(0, "int64") for a in (rows, cols, mcodes)]
    return out[0], out[1], out[2], out[2]


def _ua_for(expected_ua: float | Mapping[int, float], codes: Sequence[int]) -> np.ndarray:
    if isinstance(expected_ua, Mapping):
        default = float(expected_ua.get(-1, 0.8))
        return np.array([float(expected_ua.get(c, default)) for c in codes])
    return np.full(len(codes), float(expected_ua))


def _stratum_names(strata: str | Path | None, codes: Sequence[int], schema: ClassSchema) -> list[str]:
    if strata is None:
        return [schema.name_of(c) for c in codes]
    from rasterlearn.class_maps import raster_class_names

    names = raster_class_names(strata)
    return [names.get(c, f"stratum_{c}") for c in codes]


def _check_output(output: Path, inputs: Sequence[str | Path | None], overwrite: bool) -> None:
    if output.suffix.lower() not in {".gpkg", ".geojson", ".json", ".fgb", ".shp"}:
        raise OutputError(
            f"Write samples to a .gpkg (recommended), .geojson, .fgb or .shp file; got {output}"
        )
    for p in inputs:
        if p is not None and Path(p).exists() and output.exists() and output.resolve() == Path(p).resolve():
            raise OutputError(f"The output {output} is an input; choose another name")
    if output.exists() and not overwrite:
        raise OutputError(f"{output} exists; pass --overwrite (overwrite=True) or choose another name")


def _plan(
    counts: PopulationCounts,
    schema: ClassSchema,
    design: Design,
    n: int | None,
    allocation: Allocation,
    min_per_class: int,
    target_se: float,
    expected_ua: float | Mapping[int, float],
    strata: str | Path | None,
) -> tuple[list[int], np.ndarray, np.ndarray, int, int]:
    """Strata codes, their pixels, their allocation, the computed n (eq. 13) and the n used."""
    if design == "stratified":
        codes = [c for c, k in counts.strata_counts.items() if k > 0]
    else:
        if strata is not None:
            raise InputError(f"--strata applies to the stratified design only; got design={design!r}")
        codes = [c for c, k in counts.map_counts.items() if k > 0]
    sizes = np.array(
        [counts.strata_counts[c] if design == "stratified" else counts.map_counts[c] for c in codes]
    )
    ua = _ua_for(expected_ua, codes)
    n_eq13 = sample_size(sizes / sizes.sum(), ua, target_se)
    n_use = int(n) if n is not None else n_eq13
    if n_use < 1:
        raise InputError(f"The sample size must be at least 1; got {n_use}")
    if design == "stratified":
        alloc = allocate(n_use, sizes, allocation, min_per_class=min_per_class, users_accuracies=ua)
    else:
        alloc = np.zeros(len(codes), dtype="int64")  # filled from the drawn points
    return codes, sizes, alloc, n_eq13, n_use


def draw_sample(
    map_path: str | Path,
    output: str | Path,
    *,
    design: Design = "stratified",
    n: int | None = None,
    allocation: Allocation = "proportional",
    min_per_class: int = 2,
    target_se: float = 0.01,
    expected_ua: float | Mapping[int, float] = 0.8,
    strata: str | Path | None = None,
    seed: int = 0,
    reference_field: str = "reference",
    blocksize: int = 1024,
    overwrite: bool = False,
    progress: Callable[[int], None] | None = None,
) -> SampleResult:
    """Draw a probability sample of a class map's valid pixels and write it for reference labelling.

    Args:
        map_path: the class map (single band of integer codes; nodata excluded).
        output: ``.gpkg`` (layers ``samples``, ``design``, ``strata``) or ``.geojson``/``.fgb``/``.shp``
            (plus a ``NAME.design.json`` sidecar).
        design: ``stratified`` random (strata = map classes, or ``strata``), simple ``random`` or
            ``systematic`` (square lattice, seeded random start; about ``n`` points).
        n: total sample size; default: Olofsson et al. (2014) eq. 13 from ``target_se`` and
            ``expected_ua`` (:func:`~rasterlearn.assess.design.sample_size`). Given, it wins.
        allocation: stratified: ``proportional``, ``equal`` or ``neyman``
            (:func:`~rasterlearn.assess.design.allocate`); ``min_per_class`` raises small strata (default 2:
            the variance within a stratum needs two samples).
        target_se: target standard error of overall accuracy for the computed ``n``.
        expected_ua: expected user's accuracy, one value or ``{code: value}`` per stratum (key ``-1``: the
            default for codes not listed); used by eq. 13 and Neyman allocation.
        strata: a raster on the map's grid whose codes are the strata (Stehman 2014), instead of the map
            classes.
        seed: random seed; the same inputs and seed give the same sample.
        reference_field: the empty text field to fill with reference classes (names or codes).
        blocksize: block size of the streamed passes (pixels).
        progress: called with the pixels processed (two passes: twice the map's pixel count).

    Returns:
        :class:`SampleResult` with the design record written beside the points.

    Raises:
        InputError, OutputError, EmptyInputError: bad options, existing output, no valid pixels.
    """
    output = Path(output)
    if design not in ("stratified", "random", "systematic"):
        raise InputError(f"design must be 'stratified', 'random' or 'systematic'; got {design!r}")
    _check_output(output, [map_path, strata], overwrite)
    counts = count_population(map_path, strata, blocksize=blocksize, progress=progress)
    schema = map_classes(map_path, list(counts.map_counts))
    codes, sizes, alloc, n_eq13, n_use = _plan(
        counts, schema, design, n, allocation, min_per_class, target_se, expected_ua, strata
    )
    rows, cols, mcodes, scodes, alloc, extra = _draw(
        map_path, strata, design, counts, codes, sizes, alloc, n_use, seed, blocksize, progress
    )
    if rows.size == 0:
        raise EmptyInputError(f"No sample point fell on a valid pixel of {map_path}; raise --n")
    record = _design_record(
        map_path,
        counts,
        schema,
        design,
        codes,
        sizes,
        alloc,
        n,
        n_eq13,
        allocation,
        min_per_class,
        target_se,
        expected_ua,
        strata,
        seed,
        reference_field,
        extra,
    )
    gdf = points_frame(counts.grid, rows, cols, mcodes, scodes, schema, record, reference_field)
    write_sample(gdf, output, record)
    log.info("Wrote %d sample points to %s (%s design)", len(gdf), output, design)
    return SampleResult(output, len(gdf), record)


def _design_record(
    map_path: str | Path,
    counts: PopulationCounts,
    schema: ClassSchema,
    design: Design,
    codes: list[int],
    sizes: np.ndarray,
    alloc: np.ndarray,
    n_requested: int | None,
    n_eq13: int,
    allocation: Allocation,
    min_per_class: int,
    target_se: float,
    expected_ua: float | Mapping[int, float],
    strata: str | Path | None,
    seed: int,
    reference_field: str,
    extra: dict[str, Any],
) -> dict[str, Any]:
    """The design as a JSON-ready dict (what assess checks the samples against)."""
    units = area_units(counts.grid)
    pa, ha = units["pixel_area"], units["hectares_per_unit2"]
    n_total = int(alloc.sum())
    if design == "stratified":
        probs = inclusion_probabilities(alloc, sizes)
    elif design == "random":
        probs = np.full(len(codes), n_total / counts.pixels)
    else:
        probs = np.full(len(codes), 1.0 / extra["step"] ** 2)
    names = _stratum_names(strata, codes, schema)

    def area(px: float) -> dict[str, Any]:
        return {"area": px * pa, "area_ha": None if ha is None else px * pa * ha}

    return {
        "format": "rasterlearn-sample-design/1",
        "design": design,
        "strata_source": "map classes" if strata is None else "strata raster",
        "estimator": (
            "stratified (Olofsson et al. 2014)"
            if design == "stratified" and strata is None
            else "stratified, strata differ from map classes (Stehman 2014)"
            if design == "stratified"
            else "post-stratified by map class (Olofsson et al. 2013)"
        ),
        "map": {
            "path": str(Path(map_path).resolve()),
            "sha256": file_sha256(map_path),
            "grid": counts.grid.to_dict(),
        },
        "strata_raster": None
        if strata is None
        else {"path": str(Path(strata).resolve()), "sha256": file_sha256(strata)},
        "pixels": counts.pixels,
        **units,
        "classes": [{"code": c.code, "name": c.name} for c in schema.classes],
        "map_classes": [
            {"code": c, "name": schema.name_of(c), "pixels": k, **area(k)}
            for c, k in counts.map_counts.items()
        ],
        "strata": [
            {
                "code": c,
                "name": nm,
                "pixels": int(N),
                **area(int(N)),
                "samples": int(k),
                "inclusion_probability": float(p),
            }
            for c, nm, N, k, p in zip(codes, names, sizes, alloc, probs, strict=True)
        ],
        "n": n_total,
        "n_requested": n_requested,
        "n_eq13": n_eq13,
        "target_se": target_se,
        "expected_ua": dict(expected_ua) if isinstance(expected_ua, Mapping) else expected_ua,
        "allocation": allocation if design == "stratified" else None,
        "min_per_class": min_per_class if design == "stratified" else None,
        "seed": seed,
        "reference_field": reference_field,
        "rasterlearn_version": __version__,
        **extra,
    }


def _draw(
    map_path: str | Path,
    strata: str | Path | None,
    design: Design,
    counts: PopulationCounts,
    codes: list[int],
    sizes: np.ndarray,
    alloc: np.ndarray,
    n_use: int,
    seed: int,
    blocksize: int,
    progress: Callable[[int], None] | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """The second pass: rows, cols, map codes and strata of the drawn pixels, the realised allocation and
    the systematic lattice (step, offset)."""
    rng = np.random.default_rng(seed)
    extra: dict[str, Any] = {}
    with RasterReader(map_path, [1]) as reader, gdal_cache():
        if design == "systematic":
            step = systematic_step(counts.pixels, n_use)
            offset = (int(rng.integers(0, step)), int(rng.integers(0, step)))
            rows, cols, mcodes, scodes = _draw_systematic(reader, step, offset, blocksize, progress)
            extra = {"step": step, "offset": list(offset)}
        else:
            sr = _open_strata(reader, strata)
            try:
                if design == "random":
                    total = int(sizes.sum())
                    chosen = {0: np.sort(rng.choice(total, min(n_use, total), replace=False))}
                else:
                    chosen = {
                        c: np.sort(rng.choice(int(N), int(k), replace=False))
                        for c, N, k in zip(codes, sizes, alloc, strict=True)
                    }
                rows, cols, mcodes, scodes = _draw_ranked(
                    reader, sr, chosen, design == "random", blocksize, progress
                )
            finally:
                if sr is not None:
                    sr.close()
    if design != "stratified":
        scodes = mcodes.astype("int64")  # post-strata: the map classes
        alloc = np.array([int((scodes == c).sum()) for c in codes])
    return rows, cols, mcodes, scodes, alloc, extra
