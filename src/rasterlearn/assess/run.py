"""``assess``: accuracy and area estimates of a class map from a labelled probability sample.

The I/O edge around :func:`rasterlearn.assess.estimate.estimate_accuracy`: read the sample points and their
design, count the map's pixels per class (one streamed pass), look up the map class under every point,
check that the sample matches its design, turn reference labels into classes, estimate, and write JSON, CSV,
PNG and HTML (:mod:`rasterlearn.assess.report`).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from rasterlearn._util import file_sha256
from rasterlearn.assess.estimate import AccuracyEstimates, estimate_accuracy
from rasterlearn.assess.sample import PopulationCounts, area_units, count_population, map_classes, strips
from rasterlearn.assess.store import SAMPLES_LAYER, read_design
from rasterlearn.errors import InputError
from rasterlearn.grid import Grid
from rasterlearn.io.raster import RasterReader, gdal_cache
from rasterlearn.labels import ClassSchema

__all__ = ["assess_sample", "reference_codes"]

log = logging.getLogger(__name__)


def _norm(text: str) -> str:
    return re.sub(r"[\s_\-]+", " ", str(text).strip().casefold())


def _is_missing(v: Any) -> bool:
    if v is None:
        return True
    if isinstance(v, float) and math.isnan(v):
        return True
    try:
        import pandas as pd

        if v is pd.NA:
            return True
    except ImportError:  # pragma: no cover
        pass
    return isinstance(v, str) and not v.strip()


def reference_codes(values: list[Any], schema: ClassSchema, field: str, source: str) -> np.ndarray:
    """Class codes of reference labels: codes (numbers or numeric text) or class names (case-insensitive;
    spaces, ``_`` and ``-`` alike). Missing labels become -1.

    Raises:
        InputError: labels that are not classes of the map (listed with the valid classes).
    """
    by_name = {_norm(n): c for c, n in zip(schema.codes, schema.names, strict=True)}
    for text, code in schema.source_values.items():
        by_name.setdefault(_norm(text), code)
    out = np.full(len(values), -1, dtype="int64")
    unknown: set[str] = set()
    for i, v in enumerate(values):
        if _is_missing(v):
            continue
        key = _norm(str(v))
        if key in by_name:
            out[i] = by_name[key]
            continue
        try:
            num = float(str(v).strip())
        except ValueError:
            num = math.nan
        if math.isfinite(num) and num.is_integer() and int(num) in schema.codes:
            out[i] = int(num)
        else:
            unknown.add(str(v))
    if unknown:
        raise InputError(
            f"Reference values {sorted(unknown)[:10]} in field {field!r} of {source} are not classes of the "
            f"map ({schema.describe()}); use a class name or code of the map"
        )
    return out


def _values_at(
    reader: RasterReader, rows: np.ndarray, cols: np.ndarray, blocksize: int
) -> tuple[np.ndarray, np.ndarray]:
    """Map codes and validity at pixels, reading only the strips that hold points."""
    codes = np.zeros(rows.size, dtype="int64")
    valid = np.zeros(rows.size, dtype=bool)
    for win in strips(reader.grid, blocksize):
        pick = np.flatnonzero((rows >= win.row_off) & (rows < win.row_stop))
        if pick.size:
            block = reader.read(win)
            r, c = rows[pick] - win.row_off, cols[pick] - win.col_off
            codes[pick] = block.data[0][r, c].astype("int64")
            valid[pick] = block.valid[r, c]
    return codes, valid


def _ids(gdf: Any, mask: np.ndarray) -> str:
    col = gdf["id"] if "id" in gdf.columns else gdf.index.to_series() + 1
    ids = [str(v) for v in np.asarray(col)[mask][:10]]
    return ", ".join(ids) + (" ..." if int(mask.sum()) > 10 else "")


def _read_points(samples: Path, layer: str | None, field: str, grid: Grid) -> Any:
    import pyogrio

    from rasterlearn.io.vector import read_vector

    if layer is None and samples.suffix.lower() == ".gpkg":
        names = [str(n) for n, _ in pyogrio.list_layers(samples)]
        layer = SAMPLES_LAYER if SAMPLES_LAYER in names else None
    gdf = read_vector(samples, layer=layer, attribute=field, crs=grid.crs)
    kinds = set(gdf.geom_type.unique())
    if kinds != {"Point"}:
        raise InputError(f"{samples} must hold points (one per sample unit); it holds {sorted(kinds)}")
    return gdf.reset_index(drop=True)


def _check_against_design(
    rec: Mapping[str, Any], grid: Grid, map_counts: Mapping[int, int], map_path: Path
) -> list[str]:
    """Errors when the map is not the one sampled (grid, pixels per class); a note when only its file
    differs (e.g. re-saved with other compression or overviews)."""
    if Grid.from_dict(rec["map"]["grid"]) != grid:
        raise InputError(
            f"The samples were drawn on another grid than {map_path}'s ({rec['map']['path']}); assess them "
            f"against the map they were drawn from"
        )
    drawn = {int(c["code"]): int(c["pixels"]) for c in rec["map_classes"]}
    if drawn != dict(map_counts):
        raise InputError(
            f"The pixels per class of {map_path} ({dict(map_counts)}) differ from those of the map the samples "
            f"were drawn from ({drawn}, {rec['map']['path']}); the map changed since `rasterlearn sample`"
        )
    if rec["map"].get("sha256") and file_sha256(map_path) != rec["map"]["sha256"]:
        msg = (
            f"{map_path} is not the file the samples were drawn from ({rec['map']['path']}, other checksum) but "
            f"has its grid and pixels per class"
        )
        log.info(msg)
        return [msg]
    return []


def _strata(
    rec: Mapping[str, Any] | None,
    gdf: Any,
    mcodes: np.ndarray,
    svals_at: np.ndarray | None,
    counts: PopulationCounts,
    source: str,
) -> tuple[np.ndarray, list[int], np.ndarray, list[str]]:
    """Stratum index per sample, stratum codes, sizes and names for the estimator."""
    stratified = rec is not None and rec.get("design") == "stratified"
    if stratified and rec is not None:
        table = rec["strata"]
        codes = [int(s["code"]) for s in table]
        sizes = np.array([float(s["pixels"]) for s in table])
        names = [str(s["name"]) for s in table]
        svals = mcodes if svals_at is None else svals_at
        if svals_at is None and "stratum" in gdf.columns:
            bad = np.asarray(gdf["stratum"], dtype="int64") != mcodes
            if bad.any():
                raise InputError(
                    f"Samples {_ids(gdf, bad)} of {source} lie in another map class than their stratum: the "
                    f"samples do not match their design (strata = map classes)"
                )
    elif svals_at is not None:  # a plain layer with a strata raster
        codes = [c for c, k in counts.strata_counts.items() if k > 0]
        sizes = np.array([float(counts.strata_counts[c]) for c in codes])
        names = [f"stratum_{c}" for c in codes]
        svals = svals_at
    else:
        codes = [c for c, k in counts.map_counts.items() if k > 0]
        sizes = np.array([float(counts.map_counts[c]) for c in codes])
        names = [str(c) for c in codes]
        svals = mcodes
    lut = {c: i for i, c in enumerate(codes)}
    unknown = np.array([int(v) not in lut for v in svals])
    if unknown.any():
        raise InputError(
            f"Samples {_ids(gdf, unknown)} of {source} have strata {sorted(set(svals[unknown].tolist()))} that "
            f"are not in the design ({codes}): the samples do not match their design"
        )
    h = np.array([lut[int(v)] for v in svals], dtype="int64")
    if stratified and rec is not None:
        n_h = np.bincount(h, minlength=len(codes))
        drawn = np.array([int(s["samples"]) for s in rec["strata"]])
        over = np.flatnonzero(n_h > drawn)
        if over.size:
            raise InputError(
                f"Strata {[names[i] for i in over]} hold more samples ({n_h[over].tolist()}) than the design drew "
                f"({drawn[over].tolist()}) in {source}: points were added; the samples do not match their design"
            )
        if (n_h < drawn).any():
            log.warning(
                "Fewer labelled samples than drawn in strata %s",
                [names[i] for i in np.flatnonzero(n_h < drawn)],
            )
    return h, codes, sizes, names


def assess_sample(
    map_path: str | Path,
    samples: str | Path,
    *,
    reference_field: str = "reference",
    layer: str | None = None,
    design: str | Path | Mapping[str, Any] | None = None,
    strata: str | Path | None = None,
    skip_unlabelled: bool = False,
    confidence: float = 0.95,
    fpc: bool = False,
    output: str | Path | None = None,
    blocksize: int = 1024,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Estimate a map's accuracy and class areas from labelled sample points.

    Args:
        map_path: the class map the sample was drawn from.
        samples: points with a reference class field: a sample written by
            :func:`~rasterlearn.assess.sample.draw_sample` (its design is read from the file), or a plain point
            layer from another tool, analysed as a stratified sample with strata = the map classes at the
            points (post-stratification for simple random or systematic samples) and the map's pixel counts.
        reference_field: the field holding reference class names or codes.
        layer: the point layer (default: ``samples`` in a rasterlearn GeoPackage, else the first).
        design: a design JSON (path or dict) for samples whose file lost it (e.g. re-saved as Shapefile).
        strata: the strata raster of a sample drawn with one (default: the path its design records); with a
            plain point layer, a strata raster on the map's grid whose values at the points are the strata
            (Stehman 2014), their sizes counted on it.
        skip_unlabelled: leave out unlabelled points (logged, recorded) instead of failing.
        confidence: level of the confidence intervals.
        fpc: apply the finite population correction.
        output: JSON to write; the CSV, PNG and HTML go beside it (same name).
        blocksize: block size of the pass over the map.
        progress: called with the map pixels counted.

    Returns:
        The assessment as a dict (also the JSON written), see ``docs/assess.md``.

    Raises:
        InputError: unlabelled samples, reference values that are not classes, strata with fewer than 2
            samples, points outside the map or on nodata, samples that do not match their design.
    """
    map_path, samples = Path(map_path), Path(samples)
    if output is not None and Path(output).resolve() in (map_path.resolve(), samples.resolve()):
        raise InputError(f"The output {output} is an input; choose another name")
    rec = read_design(samples, design)
    strata_path = _strata_raster(rec, strata)
    counts = count_population(map_path, strata_path, blocksize=blocksize, progress=progress)
    grid = counts.grid
    schema = map_classes(map_path, list(counts.map_counts))
    map_notes: list[str] = []
    if rec is not None:
        map_notes = _check_against_design(rec, grid, counts.map_counts, map_path)
    gdf = _read_points(samples, layer, reference_field, grid)
    rows, cols, mcodes = _map_codes_at(map_path, samples, gdf, grid, rec, blocksize)
    svals = None if strata_path is None else _strata_at(strata_path, rows, cols, gdf, rec, samples, blocksize)
    map_notes += _check_lattice_and_record(rec, gdf, rows, cols, samples)
    gdf, mcodes, svals, ref, notes = _labels(
        gdf, mcodes, svals, schema, reference_field, skip_unlabelled, samples
    )
    notes = map_notes + notes
    h, s_codes, sizes, s_names = _strata(rec, gdf, mcodes, svals, counts, str(samples))
    # no design of its own and no strata raster: the strata are the map classes at the points
    post_stratified = (rec is None or rec.get("design") != "stratified") and strata_path is None
    if post_stratified:
        s_names = [schema.name_of(c) for c in s_codes]
    est = _estimate(h, mcodes, ref, sizes, s_names, schema, confidence, fpc, post_stratified, samples)
    from rasterlearn.assess.report import assessment_dict, write_assessment

    result = assessment_dict(
        est,
        schema,
        counts.map_counts,
        area_units(grid),
        _design_statement(rec, strata_path),
        s_codes,
        s_names,
        map_path,
        samples,
        notes,
    )
    if output is not None:
        write_assessment(result, est, schema, output)
    return result


def _estimate(
    h: np.ndarray,
    mcodes: np.ndarray,
    ref: np.ndarray,
    sizes: np.ndarray,
    s_names: list[str],
    schema: ClassSchema,
    confidence: float,
    fpc: bool,
    post_stratified: bool,
    samples: Path,
) -> AccuracyEstimates:
    """The estimates (:func:`estimate_accuracy` on class indexes); a post-stratified sample too small for
    its rare classes gets a hint on how to draw a better one."""
    idx = {c: i for i, c in enumerate(schema.codes)}
    try:
        return estimate_accuracy(
            h,
            [idx[int(c)] for c in mcodes],
            [idx[int(c)] for c in ref],
            sizes,
            len(schema.codes),
            confidence=confidence,
            fpc=fpc,
            stratum_names=s_names,
        )
    except InputError as exc:
        if not post_stratified:
            raise
        raise InputError(
            f"{exc} (the strata are the map classes at the points of {samples.name}: a larger sample, or a "
            f"stratified one with --min-per-class, puts enough points in rare classes)"
        ) from exc


def _map_codes_at(
    map_path: Path, samples: Path, gdf: Any, grid: Grid, rec: Mapping[str, Any] | None, blocksize: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The map's codes under the points; errors for points outside the map, on nodata, or recording
    another map class than the map holds (designed samples)."""
    rows, cols = grid.rowcol(gdf.geometry.x.to_numpy(), gdf.geometry.y.to_numpy())
    inside = (rows >= 0) & (rows < grid.height) & (cols >= 0) & (cols < grid.width)
    if not inside.all():
        raise InputError(
            f"Samples {_ids(gdf, ~inside)} of {samples} lie outside {map_path}; remove them or use the map they were drawn on"
        )
    with RasterReader(map_path, [1]) as reader, gdal_cache():
        mcodes, valid = _values_at(reader, rows, cols, blocksize)
    if not valid.all():
        raise InputError(
            f"Samples {_ids(gdf, ~valid)} of {samples} fall on nodata pixels of {map_path}; they are not part of the mapped population: remove them"
        )
    if (
        "map_code" in gdf.columns
        and rec is not None
        and not np.array_equal(np.asarray(gdf["map_code"], dtype="int64"), mcodes)
    ):
        bad = np.asarray(gdf["map_code"], dtype="int64") != mcodes
        raise InputError(
            f"Samples {_ids(gdf, bad)} of {samples} record another map class than {map_path} holds there: the samples do not match the map"
        )
    return rows, cols, mcodes


def _check_lattice_and_record(
    rec: Mapping[str, Any] | None, gdf: Any, rows: np.ndarray, cols: np.ndarray, samples: Path
) -> list[str]:
    """Systematic samples must lie on their lattice; points that look like a rasterlearn sample but carry
    no design are analysed as a plain layer, with a warning."""
    if rec is None:
        if {"incl_prob", "stratum", "map_code"} <= set(gdf.columns):
            msg = (
                f"{samples} looks like a rasterlearn sample but carries no design (re-saved without its "
                f"'design' table?): analysed as a plain point layer; give the design with --design to use it"
            )
            log.warning(msg)
            return [msg]
        return []
    if rec.get("design") == "systematic":
        step, (r0, c0) = int(rec["step"]), rec["offset"]
        off = ((rows - r0) % step != 0) | ((cols - c0) % step != 0)
        if off.any():
            raise InputError(
                f"Samples {_ids(gdf, off)} of {samples} are not on the systematic lattice of their design "
                f"(every {step} px from row {r0}, col {c0}): the samples do not match their design"
            )
    return []


def _strata_raster(rec: Mapping[str, Any] | None, strata: str | Path | None) -> Path | None:
    """The strata raster to count and read: given, or the one the design records (which must exist)."""
    drawn = rec is not None and rec.get("strata_source") == "strata raster"
    if rec is not None and not drawn:
        if strata is not None:
            raise InputError(
                f"The samples were drawn with the map classes as strata ({rec.get('design')} design); a strata "
                f"raster ({strata}) does not apply to them"
            )
        return None
    if strata is None and drawn and rec is not None:
        strata = rec["strata_raster"]["path"]
        if not Path(strata).exists():
            raise InputError(
                f"The samples were drawn with the strata raster {strata}, which is not there any more; give its "
                f"new path (strata / --strata)"
            )
    return None if strata is None else Path(strata)


def _strata_at(
    strata: Path,
    rows: np.ndarray,
    cols: np.ndarray,
    gdf: Any,
    rec: Mapping[str, Any] | None,
    samples: Path,
    blocksize: int,
) -> np.ndarray:
    """The strata raster's codes under the points; errors for points on its nodata or recording another
    stratum (designed samples)."""
    with RasterReader(strata, [1]) as reader, gdal_cache():
        svals, valid = _values_at(reader, rows, cols, blocksize)
    if not valid.all():
        raise InputError(
            f"Samples {_ids(gdf, ~valid)} of {samples} fall on nodata of the strata raster {strata}: they are not "
            f"part of the sampled population; remove them"
        )
    if rec is not None and "stratum" in gdf.columns:
        bad = np.asarray(gdf["stratum"], dtype="int64") != svals
        if bad.any():
            raise InputError(
                f"Samples {_ids(gdf, bad)} of {samples} record another stratum than {strata} holds there: the "
                f"samples do not match their design"
            )
    return svals


def _labels(
    gdf: Any,
    mcodes: np.ndarray,
    svals: np.ndarray | None,
    schema: ClassSchema,
    reference_field: str,
    skip_unlabelled: bool,
    samples: Path,
) -> tuple[Any, np.ndarray, np.ndarray | None, np.ndarray, list[str]]:
    """Reference codes of the points; unlabelled points stop the assessment or are left out (noted)."""
    ref = reference_codes(list(gdf[reference_field]), schema, reference_field, str(samples))
    notes: list[str] = []
    missing = ref < 0
    if missing.any():
        msg = f"{int(missing.sum())} of {len(gdf)} samples have no reference class in {reference_field!r} (ids {_ids(gdf, missing)})"
        if not skip_unlabelled:
            raise InputError(
                f"{msg}; label them, or pass --skip-unlabelled to leave them out (assumes they are missing at random)"
            )
        log.warning("%s; left out", msg)
        notes.append(f"{msg}; left out (assumed missing at random)")
        keep = ~missing
        gdf, mcodes, ref = gdf[keep].reset_index(drop=True), mcodes[keep], ref[keep]
        svals = None if svals is None else svals[keep]
    return gdf, mcodes, svals, ref, notes


def _design_statement(rec: Mapping[str, Any] | None, strata: Path | None) -> dict[str, Any]:
    if rec is None and strata is not None:
        return {
            "design": "unknown (plain point layer, no design record)",
            "estimator": f"stratified, strata = the values of {strata} at the points, sizes counted on it (Stehman 2014)",
            "statement": (
                "The points carry no design record: they are analysed as a stratified random sample with the "
                f"strata of {strata.name}. Estimates are unbiased only if the points were drawn at random, with "
                "equal probabilities within each stratum."
            ),
        }
    if rec is None:
        return {
            "design": "unknown (plain point layer, no design record)",
            "estimator": "stratified, strata = map classes at the points with the map's pixel counts (Olofsson et al. 2013)",
            "statement": (
                "The points carry no design record: they are analysed as a stratified random sample with the map "
                "classes as strata (for a simple random or systematic sample this is post-stratification, also "
                "valid). Estimates are unbiased only if the points are a probability sample with equal inclusion "
                "probabilities within each map class."
            ),
        }
    keep = (
        "design",
        "estimator",
        "strata_source",
        "n",
        "seed",
        "allocation",
        "min_per_class",
        "target_se",
        "step",
        "offset",
        "map",
        "strata_raster",
    )
    out = {k: rec[k] for k in keep if k in rec}
    out["statement"] = (
        f"{rec['design']} sample drawn by rasterlearn {rec.get('rasterlearn_version', '')}; {rec['estimator']}"
    )
    return out
