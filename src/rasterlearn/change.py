"""Unsupervised change detection between two dates: a distance per pixel, an automatic threshold, polygons.

``change_map(A, B, OUT)`` reads the two rasters as one two-date stack
(:class:`rasterlearn.io.stack.StackReader`: B is resampled onto A's grid when needed, logged; nodata in
either date is nodata) and computes, per pixel,

* ``cosine`` (default, for feature rasters from ``rasterlearn embed``): the cosine distance
  ``1 - cos(f_a, f_b)`` between the two feature vectors (0 = same direction, 2 = opposite);
* ``cva`` (change vector analysis, for raw bands): the magnitude ``||x_b - x_a||`` of the change vector.

The threshold is Otsu's (between-class variance maximum of the distance histogram, computed on a seeded
random sample of valid pixels) unless one is given. Outputs: a COG change map (0 no change, 1 change, 255
nodata; class names, colours and the class schema in its tags, so ``evaluate`` reads it as any map), an
optional float32 distance raster and optional change polygons (:func:`rasterlearn.vectorize.vectorize_raster`).
Blocks are streamed through :class:`rasterlearn.io.writer.BlockWriter` (resumable per block).

Feature rasters are compared only when they were produced the same way: their ``embed`` provenance tags
(weights digest, model, layer, input bands, normalization, tiling) must agree, else :class:`InputError`
names both files and the differing field. Features of a random-initialised backbone are comparable only
with the same ``--seed`` (the weights digest tells).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from rasterlearn.class_maps import class_map_style
from rasterlearn.engine import journal
from rasterlearn.engine.events import report_total
from rasterlearn.errors import EmptyInputError, InputError
from rasterlearn.io.paths import check_outputs
from rasterlearn.io.raster import gdal_cache
from rasterlearn.io.stack import NodataPolicy, StackReader
from rasterlearn.labels import ClassInfo, ClassSchema

__all__ = [
    "CHANGE_METHODS",
    "PROVENANCE_FIELDS",
    "ChangeMethod",
    "ChangeResult",
    "change_distance",
    "change_map",
    "check_feature_provenance",
    "otsu_threshold",
]

log = logging.getLogger(__name__)

ChangeMethod = Literal["cosine", "cva"]
CHANGE_METHODS: tuple[str, ...] = ("cosine", "cva")
#: ``embed`` tags two feature rasters must share to be compared (normalization: see
#: :func:`check_feature_provenance`).
PROVENANCE_FIELDS: tuple[str, ...] = (
    "rasterlearn_model",
    "rasterlearn_weights_sha256",
    "rasterlearn_checkpoint",
    "rasterlearn_layer",
    "rasterlearn_input_bands",
    "rasterlearn_normalization",
    "rasterlearn_tile_size",
    "rasterlearn_input_size",
    "rasterlearn_effective_stride",
    "rasterlearn_merge",
)
MAP_NODATA = 255


def change_schema() -> ClassSchema:
    """0 no change, 1 change (ignore 255)."""
    return ClassSchema(
        (ClassInfo(0, "no_change", "#d9d9d9"), ClassInfo(1, "change", "#e31a1c")),
        ignore_index=MAP_NODATA,
        background=0,
    )


@dataclass
class ChangeResult:
    """What :func:`change_map` produced."""

    map_path: Path
    distance_path: Path | None
    polygons_path: Path | None
    method: str
    threshold: float
    threshold_method: str
    changed_fraction: float
    valid_pixels: int
    polygons: int | None = None


# -- kernels ---------------------------------------------------------------------------------------


def change_distance(a: np.ndarray, b: np.ndarray, method: ChangeMethod = "cosine") -> np.ndarray:
    """Per-pixel distance between ``a`` and ``b`` (``(n, bands)`` each): cosine distance or CVA magnitude."""
    a = np.asarray(a, dtype="float64")
    b = np.asarray(b, dtype="float64")
    if method == "cva":
        return np.sqrt(((b - a) ** 2).sum(axis=1))
    if method != "cosine":
        raise InputError(f"method must be one of {', '.join(CHANGE_METHODS)}; got {method!r}")
    na = np.linalg.norm(a, axis=1)
    nb = np.linalg.norm(b, axis=1)
    denom = na * nb
    cos = np.divide((a * b).sum(axis=1), denom, out=np.ones_like(denom), where=denom > 0)
    # two zero vectors are the same; one zero vector against another is maximally unlike (distance 1)
    cos = np.where((denom == 0) & ((na > 0) | (nb > 0)), 0.0, cos)
    return 1.0 - np.clip(cos, -1.0, 1.0)


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of ``values``: the cut maximising the between-class variance of their histogram.

    Raises:
        EmptyInputError: no finite value.
    """
    v = np.asarray(values, dtype="float64").ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        raise EmptyInputError("No finite distance values to choose a threshold from")
    lo, hi = float(v.min()), float(v.max())
    if hi <= lo:
        return hi
    counts, edges = np.histogram(v, bins=bins, range=(lo, hi))
    centres = 0.5 * (edges[:-1] + edges[1:])
    w0 = np.cumsum(counts).astype("float64")
    w1 = w0[-1] - w0
    m = np.cumsum(counts * centres)
    mu0 = np.divide(m, w0, out=np.zeros_like(m), where=w0 > 0)
    mu1 = np.divide(m[-1] - m, w1, out=np.zeros_like(m), where=w1 > 0)
    between = w0 * w1 * (mu0 - mu1) ** 2
    b = between[:-1]
    ties = np.flatnonzero(b >= b.max())  # empty bins between two modes: take the middle of the gap
    k = int(ties[len(ties) // 2])
    return float(edges[k + 1])


# -- provenance ------------------------------------------------------------------------------------


def _tags(path: Path) -> dict[str, str]:
    import rasterio

    with rasterio.open(path) as ds:
        return dict(ds.tags())


def _parse(value: str | None) -> Any:
    if value is None:
        return None
    try:
        return json.loads(value)
    except ValueError:
        return value


def _norm_key(value: Any) -> Any:
    """The normalization fields that must agree: per-image statistics legitimately differ between dates."""
    if not isinstance(value, Mapping):
        return value
    if value.get("mode") == "image":
        return {"mode": "image", "method": value.get("method"), "value_scale": value.get("value_scale")}
    return dict(value)


def check_feature_provenance(path_a: str | Path, path_b: str | Path) -> dict[str, Any]:
    """Refuse two feature rasters that were not produced by the same weights, bands and normalization.

    Compares the ``embed`` tags listed in :data:`PROVENANCE_FIELDS` (with ``--normalization image`` only
    the normalization mode is compared: per-image statistics differ by design). Returns the shared
    provenance (for the output's tags); rasters without ``embed`` tags on both sides are accepted with a
    warning (nothing to verify).

    Raises:
        InputError: naming both files and the first differing field.
    """
    a, b = Path(path_a), Path(path_b)
    ta, tb = _tags(a), _tags(b)
    ea, eb = ta.get("rasterlearn_stage") == "embed", tb.get("rasterlearn_stage") == "embed"
    if not ea and not eb:
        log.warning(
            "%s and %s carry no 'rasterlearn embed' provenance tags: cannot check they come from the same "
            "network, bands and normalization",
            a,
            b,
        )
        return {}
    if ea != eb:
        plain, featured = (a, b) if not ea else (b, a)
        raise InputError(
            f"{featured} is a feature raster written by 'rasterlearn embed' but {plain} is not; compare "
            f"features with features (embed both dates with the same model and options), or use --method cva "
            f"on raw bands"
        )
    shared: dict[str, Any] = {}
    for key in PROVENANCE_FIELDS:
        va, vb = _parse(ta.get(key)), _parse(tb.get(key))
        if key == "rasterlearn_normalization":
            va, vb = _norm_key(va), _norm_key(vb)
        if va != vb:
            field = key.removeprefix("rasterlearn_")
            raise InputError(
                f"{a} and {b} were not produced the same way: their {field} differs ({va!r} in {a.name} vs "
                f"{vb!r} in {b.name}); the distance between them would be meaningless. Embed both dates with "
                f"the same model, weights (the same --seed for random weights), bands and normalization"
            )
        shared[key.removeprefix("rasterlearn_")] = va
    return shared


# -- files -----------------------------------------------------------------------------------------


def _scales(paths: Sequence[Path], bands: Sequence[int] | None) -> tuple[np.ndarray, np.ndarray]:
    """Per stack band ``value = stored * scale + offset`` (compact uint16 features record them)."""
    import rasterio

    sc: list[float] = []
    off: list[float] = []
    for p in paths:
        with rasterio.open(p) as ds:
            idx = list(bands) if bands else list(range(1, ds.count + 1))
            sc.extend(float(ds.scales[i - 1] or 1.0) for i in idx)
            off.extend(float(ds.offsets[i - 1] or 0.0) for i in idx)
    return np.asarray(sc, dtype="float64"), np.asarray(off, dtype="float64")


def change_map(
    raster_a: str | Path,
    raster_b: str | Path,
    output: str | Path,
    *,
    method: ChangeMethod = "cosine",
    threshold: float | None = None,
    distance: str | Path | None = None,
    polygons: str | Path | None = None,
    min_area: float = 0.0,
    bands: Sequence[int | str] | None = None,
    nodata_policy: NodataPolicy = "all-valid",
    check_provenance: bool = True,
    sample_size: int = 200_000,
    seed: int = 0,
    blocksize: int = 512,
    overwrite: bool = False,
    resume: bool = True,
    progress: Callable[[int], None] | None = None,
) -> ChangeResult:
    """Write a change map (and optionally the distance raster and change polygons) for two dates.

    Args:
        raster_a, raster_b: the two dates (feature rasters for ``cosine``, any bands for ``cva``); B is
            resampled onto A's grid when their grids differ (logged and recorded).
        output: change map (COG, uint8: 0 no change, 1 change, 255 nodata).
        method: ``cosine`` (feature rasters) or ``cva`` (change vector magnitude, raw bands).
        threshold: distance above which a pixel is change; default: Otsu's on a sample of the distances.
        distance: also write the float32 distance raster here.
        polygons: also write change polygons here (GPKG, GeoJSON, FlatGeobuf); ``min_area`` in map units.
        bands: bands of each date (1-based indexes or descriptions); default: all.
        nodata_policy: ``all-valid`` (nodata in either date is nodata) or ``any-valid``.
        check_provenance: for ``cosine``, refuse feature rasters with different provenance
            (:func:`check_feature_provenance`).
        sample_size, seed: the pixel sample of the automatic threshold.
        blocksize: output block size (resume granularity).
        overwrite: replace existing outputs; resume: continue an interrupted run of the same job.
        progress: called with the number of blocks finished.

    Raises:
        InputError: mismatched feature rasters, bad options; OutputError: an output exists.
    """
    a, b, out = Path(raster_a), Path(raster_b), Path(output)
    dist_path = None if distance is None else Path(distance)
    poly_path = None if polygons is None else Path(polygons)
    _check_paths(a, b, out, dist_path, poly_path, method)
    provenance = check_feature_provenance(a, b) if (method == "cosine" and check_provenance) else {}
    reader = StackReader([a, b], bands, nodata_policy=nodata_policy)
    try:
        c = reader.count // 2
        scale, offset = _scales([a, b], reader.band_indexes)

        def dist(x: np.ndarray) -> np.ndarray:
            v = x.astype("float64") * scale + offset
            return change_distance(v[:, :c], v[:, c:], method)

        thr, how = _threshold(reader, dist, threshold, sample_size, seed, method)
        params = {"method": method, "threshold": thr, "threshold_method": how, "nodata_policy": nodata_policy}
        tags = {
            "rasterlearn_stage": "change",
            "rasterlearn_inputs": [str(a), str(b)],
            "rasterlearn_change": params,
            "rasterlearn_bands": reader.band_names,
            "rasterlearn_resampled_dates": reader.resampled,
            "rasterlearn_provenance": provenance,
            "classes": change_schema().to_dict(),
        }
        fp = journal.fingerprint({**params, "bands": reader.band_indexes}, inputs={"a": a, "b": b}, length=32)
        writers = _open_writers(out, dist_path, reader, tags, method, blocksize, resume, overwrite, fp)
        _stream_blocks(reader, writers, dist, thr, blocksize, progress)
        for w in writers:
            w.commit()
        for w in writers:
            w.close()
    finally:
        reader.close()
    return _summarize(out, dist_path, poly_path, min_area, method, thr, how)


def _check_paths(
    a: Path, b: Path, out: Path, dist_path: Path | None, poly_path: Path | None, method: str
) -> None:
    """Refuse outputs that exist or are inputs, an unknown method, and two outputs on one file."""
    check_outputs([a, b], [out, dist_path, poly_path])
    if method not in CHANGE_METHODS:
        raise InputError(f"method must be one of {', '.join(CHANGE_METHODS)}; got {method!r}")
    if len({p.resolve() for p in (out, dist_path, poly_path) if p is not None}) < sum(
        p is not None for p in (out, dist_path, poly_path)
    ):
        raise InputError("The change map, distance raster and polygons must be different files")


def _threshold(
    reader: StackReader,
    dist: Callable[[np.ndarray], np.ndarray],
    threshold: float | None,
    sample_size: int,
    seed: int,
    method: str,
) -> tuple[float, str]:
    """The given threshold, else Otsu's on a seeded sample of the distances; and how it was chosen."""
    from rasterlearn.features.sampling import sample_pixels

    if threshold is not None:
        return float(threshold), "given"
    sample = sample_pixels(reader, sample_size, seed=seed)
    thr = otsu_threshold(dist(sample.values))
    log.info("Otsu threshold %.6g on %d sampled pixels (%s distance)", thr, len(sample.values), method)
    return thr, "otsu"


def _summarize(
    out: Path,
    dist_path: Path | None,
    poly_path: Path | None,
    min_area: float,
    method: str,
    thr: float,
    how: str,
) -> ChangeResult:
    """Count the written map's changed pixels, vectorize it when asked, log and describe the result."""
    changed, valid_px = _count(out)
    n_poly = None
    if poly_path is not None:
        from rasterlearn.vectorize import vectorize_raster

        gdf = vectorize_raster(out, poly_path, min_area=min_area, exclude=[0])
        n_poly = len(gdf)
    frac = changed / valid_px if valid_px else 0.0
    log.info(
        "Change map %s: %.2f %% of %d valid pixels changed (threshold %.6g, %s)",
        out,
        100 * frac,
        valid_px,
        thr,
        how,
    )
    return ChangeResult(out, dist_path, poly_path, method, thr, how, frac, valid_px, n_poly)


def _count(path: Path) -> tuple[int, int]:
    """(changed, valid) pixels of a written change map, block by block."""
    import rasterio

    changed = valid = 0
    with rasterio.open(path) as ds:
        for _, win in ds.block_windows(1):
            m = ds.read(1, window=win)
            changed += int((m == 1).sum())
            valid += int((m != MAP_NODATA).sum())
    return changed, valid


def _open_writers(
    out: Path,
    dist_path: Path | None,
    reader: StackReader,
    tags: dict[str, Any],
    method: str,
    blocksize: int,
    resume: bool,
    overwrite: bool,
    fp: str,
) -> list[Any]:
    """The change map's writer, and the distance raster's when one is asked for."""
    from rasterlearn.io.writer import BlockWriter

    schema = change_schema()
    common: dict[str, Any] = {"blocksize": blocksize, "resume": resume, "overwrite": overwrite}
    writers = [
        BlockWriter(
            out,
            reader.grid,
            1,
            "uint8",
            nodata=MAP_NODATA,
            band_descriptions=["change"],
            tags={**tags, "product": "change map"},
            **class_map_style(schema),
            fingerprint=fp + ":map",
            **common,
        )
    ]
    if dist_path is not None:
        writers.append(
            BlockWriter(
                dist_path,
                reader.grid,
                1,
                "float32",
                nodata=float("nan"),
                band_descriptions=[f"{method}_distance"],
                tags={**tags, "product": "change distance"},
                fingerprint=fp + ":distance",
                **common,
            )
        )
    return writers


def _stream_blocks(
    reader: StackReader,
    writers: list[Any],
    dist: Callable[[np.ndarray], np.ndarray],
    thr: float,
    blocksize: int,
    progress: Callable[[int], None] | None,
) -> None:
    """Distance and class of every block not yet committed; partial state kept if stopped."""
    from rasterlearn.features._io import block_windows, window_size_for

    ok = False
    try:
        windows = block_windows(reader.grid, window_size_for(reader.count, blocksize))
        report_total(progress, len(windows))
        with gdal_cache(64):
            for win in windows:
                key = f"{win.row_off}:{win.col_off}"
                if not all(w.is_done(key) for w in writers):
                    block = reader.read(win)
                    d = np.full(win.shape, np.nan, dtype="float32")
                    if block.valid.any():
                        d[block.valid] = dist(block.data[:, block.valid].T)
                    cls = np.where(block.valid, (d > thr).astype("uint8"), np.uint8(MAP_NODATA)).astype(
                        "uint8"
                    )
                    writers[0].write(cls[np.newaxis], win)
                    if len(writers) > 1:
                        writers[1].write(d[np.newaxis], win)
                    for w in writers:
                        w.mark_done(key)
                if progress is not None:
                    progress(1)
        ok = True
    finally:
        if not ok:
            for w in writers:
                w.abort(keep_partial=True)
