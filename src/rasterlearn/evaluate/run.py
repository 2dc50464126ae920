"""The phases of :func:`evaluate_map`: check the options, resolve the map's classes, bring the truth onto the
map's grid (:mod:`.truth`), count the windows (the kernel is :func:`rasterlearn.evaluate_kernel.compare_window`),
estimate the metrics (:func:`rasterlearn.metrics.metrics_from_confusion`) and write the report."""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rasterlearn._util import atomic_write_text
from rasterlearn.class_maps import map_schema
from rasterlearn.engine.events import report_total
from rasterlearn.engine.executor import BlockExecutor, LocalExecutor
from rasterlearn.engine.journal import fingerprint
from rasterlearn.engine.reduction import ReductionRecord
from rasterlearn.errors import EmptyInputError, InputError
from rasterlearn.evaluate.classes import (
    ClassMatch,
    NameMatching,
    TruthClasses,
    Unlabelled,
    resolve_class_names,
)
from rasterlearn.evaluate.truth import is_vector_path, raster_truth, vector_truth, worker_path
from rasterlearn.evaluate_kernel import CompareSpec, RasterTruth, VectorTruth, WindowCounts, compare_window
from rasterlearn.grid import Grid, Window
from rasterlearn.io.aoi import resolve_aoi
from rasterlearn.io.paths import check_outputs
from rasterlearn.io.raster import RasterReader, gdal_cache
from rasterlearn.label_grid import RasterOnGrid
from rasterlearn.labels import ClassInfo, ClassSchema, default_color
from rasterlearn.metrics import metrics_from_confusion, metrics_table
from rasterlearn.options import EvaluateOptions

log = logging.getLogger("rasterlearn.evaluate")  # one logger for the package, as before the split


def _scan_codes(reader: RasterReader, window_size: int) -> list[int]:
    found: set[int] = set()
    g = reader.grid
    with gdal_cache():  # one pass over the map: a bounded block cache
        for r0 in range(0, g.height, window_size):
            for c0 in range(0, g.width, window_size):
                b = reader.read(
                    Window(r0, c0, min(window_size, g.height - r0), min(window_size, g.width - c0))
                )
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


def _count_windows(
    spec: CompareSpec,
    windows: list[Window],
    executor: BlockExecutor,
    progress: Callable[[int], None] | None,
    record: ReductionRecord,
) -> WindowCounts:
    """Count phase: sum :func:`compare_window`'s counts over ``windows`` (in order) into the scene's
    confusion matrix and unknown truth, unknown map and non-integer truth pixels.

    The sum is folded into ``record`` (:class:`rasterlearn.engine.reduction.ReductionRecord`) window by
    window: windows it holds from an interrupted run are skipped (counted once, by that run), and each
    window is recorded before ``progress`` is told of it (a cancel raised from there keeps it)."""
    if not isinstance(executor, LocalExecutor):
        executor.check_readable(spec.map_path)
        if isinstance(spec.truth, RasterTruth):
            executor.check_readable(spec.truth.path)
    total = _counts_from_state(record.state, spec.n)
    todo = []
    for win in windows:
        if not record.is_done(_window_key(win)):
            todo.append(win)
        elif progress:
            progress(win.size)
    for win, counts in executor.map(compare_window, todo, spec):
        total.cm += counts.cm
        total.unknown_truth += counts.unknown_truth
        total.unknown_pred += counts.unknown_pred
        total.non_integer += counts.non_integer
        record.mark_done(_window_key(win), _counts_state(total))
        if progress:
            progress(win.size)
    return total


def _window_key(win: Window) -> str:
    return f"{win.row_off}:{win.col_off}"


def _counts_state(total: WindowCounts) -> dict[str, Any]:
    """The record's state: the summed :class:`WindowCounts` as JSON data."""
    return {
        "cm": total.cm.tolist(),
        "unknown_truth": int(total.unknown_truth),
        "unknown_pred": int(total.unknown_pred),
        "non_integer": int(total.non_integer),
    }


def _counts_from_state(state: dict[str, Any], n: int) -> WindowCounts:
    return WindowCounts(
        np.asarray(state["cm"], dtype="int64").reshape(n, n).copy(),
        unknown_pred=int(state["unknown_pred"]),
        unknown_truth=int(state["unknown_truth"]),
        non_integer=int(state["non_integer"]),
    )


def _valid_state(n: int) -> Callable[[Any], bool]:
    def valid(state: Any) -> bool:
        cm = np.asarray(state["cm"])
        ok = cm.shape == (n, n) and cm.dtype.kind in "iu" and bool((cm >= 0).all())
        return ok and all(isinstance(state[k], int) for k in ("unknown_truth", "unknown_pred", "non_integer"))

    return valid


def _journal(
    m: NameMatching,
    options: EvaluateOptions,
    output: str | Path | None,
    extent: Window,
    window_size: int,
    aoi: Any,
) -> ReductionRecord:
    """The evaluation's :class:`ReductionRecord` (beside ``output``; none without one): its state is the
    summed :class:`WindowCounts`, its fingerprint :func:`evaluation_fingerprint`."""
    key = evaluation_fingerprint(options, m, extent, window_size, aoi)
    n = len(m.schema.codes)
    initial = _counts_state(WindowCounts(np.zeros((n, n), dtype="int64")))
    return ReductionRecord(output, key, initial, valid=_valid_state(n), unit="windows")


def evaluation_fingerprint(
    options: EvaluateOptions, m: NameMatching, extent: Window, window_size: int, aoi: Any = None
) -> str:
    """What an evaluation's counts depend on: ``options`` (less their ``output_neutral`` fields: the
    executor) plus the values resolved from them (the map's classes, the truth's name matching, the AOI's
    extent, the ignore values, the window size) and the identities of the map, the truth and ``aoi`` when it is
    a file."""
    resolved = {
        "classes": [[c.code, c.name] for c in m.schema.classes],
        "ignore_index": m.schema.ignore_index,
        "background": m.schema.background,
        "class_match": m.class_match,
        "truth_names": m.explicit_names,
        "extent": [extent.row_off, extent.col_off, extent.height, extent.width],
        "ignore_values": m.ignore_set,
        "window_size": window_size,
    }
    inputs: dict[str, str | Path | None] = {"map": m.map_path, "truth": m.truth}
    if isinstance(aoi, str | Path) and Path(aoi).is_file():
        inputs["aoi"] = aoi
    params = {**options.model_dump(mode="json"), "resolved": resolved}
    return fingerprint(params, neutral=options.neutral_fields(), inputs=inputs)


def _keyword_options(
    map_path: Path,
    truth: Path,
    output: str | Path | None,
    attribute: str | None,
    layer: str | None,
    class_match: ClassMatch,
    unlabelled: Unlabelled,
    aoi: Any,
    ignore_values: Sequence[float] | None,
    all_touched: bool,
) -> EvaluateOptions:
    """:func:`evaluate_map`'s keywords as the stage's options (a direct call has none of its own); objects
    with no text form in the options (a schema, truth names, an AOI geometry) enter the fingerprint
    through their resolved values, an AOI geometry also as its text."""
    values: dict[str, Any] = {"map": map_path, "truth": truth, "output": output, "attribute": attribute}
    values["layer"] = layer
    values |= {"class_match": class_match, "unlabelled": unlabelled, "all_touched": all_touched}
    values["aoi"] = None if aoi is None else aoi if isinstance(aoi, list | tuple) else str(aoi)
    values["ignore"] = None if ignore_values is None else [float(v) for v in ignore_values]
    return EvaluateOptions.model_validate(values)


def evaluate_map(
    map_path: str | Path,
    truth: str | Path,
    *,
    attribute: str | None = None,
    layer: str | None = None,
    schema: ClassSchema | None = None,
    truth_classes: TruthClasses | None = None,
    class_match: ClassMatch = "auto",
    unlabelled: Unlabelled = "auto",
    aoi: Any = None,
    ignore_values: Sequence[float] | None = None,
    all_touched: bool = False,
    window_size: int = 1024,
    output: str | Path | None = None,
    csv_path: str | Path | None = None,
    png_path: str | Path | None = None,
    progress: Callable[[int], None] | None = None,
    executor: BlockExecutor | None = None,
) -> dict[str, Any]:
    """Compare a class map with ground truth over the whole scene.

    Args:
        map_path: the predicted class map (single band of class codes).
        truth: a vector layer (GPKG, Shapefile, GeoJSON, FlatGeobuf, ...) or a label raster.
        attribute: vector truth: the column holding class codes or class names (text values are matched to
            the map's class names, case-insensitively, or the schema's ``source_values``).
        layer: vector truth: the layer.
        schema: the map's classes; default: the map's own (``classes`` tag or category names), else the
            codes found in the map.
        truth_classes: the names of the truth's class codes, when they differ from the map's codes: a
            :class:`ClassSchema`, a ``{code: name}`` mapping, a schema file (YAML/JSON/CSV) or inline text
            ``"1=developed,2=agriculture"``. Truth codes are then matched to the map's classes by name
            (:func:`match_class_names`). Without it, a truth raster's own class names are used
            (:func:`raster_class_names`: tags, ``.aux.xml`` category names or attribute table, ``.qml``).
        class_match: how truth values meet the map's classes: ``name`` (truth codes → names → the map's
            class of that name; every named truth class must match one, or an :class:`InputError` lists
            the others), ``code`` (truth values are the map's codes), or ``auto``: by name when
            ``truth_classes`` is given or the truth raster names its classes and the map names its own
            (an error when only some names match, unless the matching names have the map's codes), else
            by code.
        unlabelled: vector truth: pixels covered by no polygon count as the ``background`` class, are
            ``ignore``-d, or ``auto`` (background when the schema has a background class among its classes).
        aoi: only pixels inside this vector file / geometry (map CRS) / bounds count.
        ignore_values: truth values that are not assessed (besides nodata and the schema's ignore code).
        all_touched: vector truth: burn every pixel a polygon touches (default: pixel centres inside).
        window_size: pixels per processing window.
        output: metrics JSON path; ``csv_path``/``png_path`` default to the same name with .csv/.png.
        progress: called with the number of map pixels processed.
        executor: where the windows are compared (default: this process); a dask executor
            (:func:`rasterlearn.engine.executor.open_executor`) runs them on its workers, which read the
            map and a truth raster themselves (they must be readable there). The counts are summed here in
            window order: the report is the same.

    Truth rasters of any dtype are accepted; float rasters must hold whole-number codes (other values are
    counted and skipped). A truth raster with the map's shape and transform but a differently described
    CRS (e.g. an unnamed copy of the same projection) is read on the map's grid without resampling when
    the two CRSs place every pixel within a quarter pixel of each other; this is logged and noted.

    Returns:
        :func:`rasterlearn.metrics.metrics_from_confusion`'s dict plus an ``evaluation`` record (inputs,
        reprojection, class matching, pixels compared and ignored).

    Raises:
        InputError: unknown truth values / unmatched truth class names (listed), bad options.
        EmptyInputError: no pixel has both a valid prediction and valid truth.
    """
    map_path, truth = Path(map_path), Path(truth)
    _check_options(map_path, truth, aoi, output, csv_path, png_path, unlabelled, class_match, truth_classes)
    explicit_names = None if truth_classes is None else resolve_class_names(truth_classes)
    reader = RasterReader(map_path, [1])
    schema, map_named = _map_classes(reader, map_path, schema, window_size)
    record = _new_record(map_path, truth, attribute)
    area = None if aoi is None else resolve_aoi(aoi, reader.grid)
    extent = reader.grid.window if area is None else area.window
    report_total(progress, extent.height * extent.width)
    ignore_set = [float(v) for v in (ignore_values or [])]
    matching = NameMatching(
        map_path, truth, schema, map_named, class_match, explicit_names, ignore_set, record
    )
    spec, source = _compare_spec(matching, reader, area, attribute, layer, unlabelled, all_touched)
    # the resume fingerprint: these keywords as the stage's options (the same whether run_evaluate or a
    # direct call made them) with the resolved classes, extent and window size
    kw = (attribute, layer, class_match, unlabelled, aoi, ignore_values, all_touched)
    options = _keyword_options(map_path, truth, output, *kw)
    with _journal(matching, options, output, extent, window_size, aoi) as journal:
        total = _count_windows(
            spec, _windows(reader.grid, window_size, extent), executor or LocalExecutor(), progress, journal
        )
        reader.close()
        if source is not None:
            source.close()
        metrics = _scene_metrics(total, matching, aoi=aoi, all_touched=all_touched)
        if output is not None:
            title = f"{map_path.name} vs {truth.name}"
            _write_report(metrics, total.cm, schema, Path(output), csv_path, png_path, title)
        journal.complete()
    return metrics


def _compare_spec(
    m: NameMatching,
    reader: RasterReader,
    area: Any,
    attribute: str | None,
    layer: str | None,
    unlabelled: Unlabelled,
    all_touched: bool,
) -> tuple[CompareSpec, RasterOnGrid | None]:
    """Plan phase: the truth on the map's grid (:func:`vector_truth` or :func:`raster_truth`) and the
    kernel's :class:`CompareSpec` (the map's class lookup, the AOI, this process's open readers).

    Returns the spec and the open truth raster, if any (close it after counting).
    """
    grid = reader.grid
    local: dict[str, Any] = {"map": reader}
    source = None
    truth_spec: VectorTruth | RasterTruth
    if is_vector_path(m.truth):
        truth_spec, local["tree"] = vector_truth(
            m, grid, attribute=attribute, layer=layer, unlabelled=unlabelled, all_touched=all_touched
        )
    else:
        truth_spec, source = raster_truth(m, grid)
        local["truth"] = source
    lut = _class_lut(m.schema)
    spec = CompareSpec(
        uuid.uuid4().hex, worker_path(m.map_path), grid, lut, len(m.schema.codes), truth_spec, area, local
    )
    return spec, source


def _check_options(
    map_path: Path,
    truth: Path,
    aoi: Any,
    output: str | Path | None,
    csv_path: str | Path | None,
    png_path: str | Path | None,
    unlabelled: Unlabelled,
    class_match: ClassMatch,
    truth_classes: TruthClasses | None,
) -> None:
    """Refuse an output that is an input, and unknown option values."""
    derived = [] if output is None else [Path(output).with_suffix(".csv"), Path(output).with_suffix(".png")]
    check_outputs([map_path, truth, aoi], [output, csv_path, png_path, *derived])
    if unlabelled not in ("auto", "background", "ignore"):
        raise InputError(f"unlabelled must be 'auto', 'background' or 'ignore'; got {unlabelled!r}")
    if class_match not in ("auto", "name", "code"):
        raise InputError(f"class_match must be 'auto', 'name' or 'code'; got {class_match!r}")
    if class_match == "code" and truth_classes is not None:
        raise InputError(
            "Truth class names were given, but class_match='code' compares codes; use 'name' or 'auto'"
        )


def _map_classes(
    reader: RasterReader, map_path: Path, schema: ClassSchema | None, window_size: int
) -> tuple[ClassSchema, bool]:
    """The map's classes (given, its own, else the codes found in it) and whether the map names them."""
    if schema is None:
        schema = map_schema(map_path)
    map_named = schema is not None
    if schema is None:
        codes_found = _scan_codes(reader, window_size)
        log.warning("%s names no classes; evaluating the codes found in it: %s", map_path, codes_found)
        schema = ClassSchema(
            tuple(ClassInfo(c, f"class_{c}", default_color(c)) for c in codes_found),
            255 if max(codes_found) < 255 else 65535,
            0 if 0 in codes_found else None,
        )
    return schema, map_named


def _class_lut(schema: ClassSchema) -> np.ndarray:
    """Map code -> row of the confusion matrix (-1: not a class of the map)."""
    codes = schema.codes
    lut = np.full(max([*codes, schema.ignore_index]) + 2, -1, dtype="int64")
    lut[codes] = np.arange(len(codes))
    return lut


def _new_record(map_path: Path, truth: Path, attribute: str | None) -> dict[str, Any]:
    """The output's ``evaluation`` record as it starts: the inputs; the phases add to it."""
    return {
        "map": str(map_path),
        "truth": str(truth),
        "attribute": attribute,
        "truth_kind": None,
        "truth_reprojected": False,
        "notes": [],
        "class_match": "code",
    }


def _scene_metrics(total: WindowCounts, m: NameMatching, *, aoi: Any, all_touched: bool) -> dict[str, Any]:
    """Estimate phase: log the pixels not assessed, refuse a scene without any pixel compared, and compute
    the metrics of the scene's confusion matrix, with the completed ``evaluation`` record."""
    schema = m.schema
    if total.unknown_truth:
        log.warning(
            "%d truth pixels hold values that are not classes of the map (%s); they are not assessed",
            total.unknown_truth,
            schema.describe(),
        )
    if total.non_integer:
        log.warning(
            "%d truth pixels hold values that are not whole numbers (not class codes); they are not assessed",
            total.non_integer,
        )
    if total.unknown_pred:
        log.warning(
            "%d map pixels hold codes outside the class list; they are not assessed", total.unknown_pred
        )
    if total.cm.sum() == 0:
        raise EmptyInputError(
            f"No pixel has both a valid prediction in {m.map_path} and valid truth in {m.truth}; "
            f"check the overlap, nodata and the attribute values"
        )
    metrics = metrics_from_confusion(total.cm, schema.names, schema.codes)
    m.record.update(
        {
            "pixels_compared": int(total.cm.sum()),
            "truth_pixels_unknown_class": total.unknown_truth,
            "truth_pixels_non_integer": total.non_integer,
            "map_pixels_unknown_class": total.unknown_pred,
            "aoi": None if aoi is None else str(aoi),
            "all_touched": all_touched,
            "ignore_values": m.ignore_set,
        }
    )
    metrics["evaluation"] = m.record
    log.info(
        "Overall accuracy %.4f, mean IoU %s, kappa %s over %d pixels",
        metrics["overall_accuracy"],
        metrics["mean_iou"],
        metrics["kappa"],
        total.cm.sum(),
    )
    return metrics


def _write_report(
    metrics: dict[str, Any],
    cm: np.ndarray,
    schema: ClassSchema,
    out: Path,
    csv_path: str | Path | None,
    png_path: str | Path | None,
    title: str,
) -> None:
    """Write phase: the metrics JSON at ``out``, the per-class CSV table and the confusion-matrix PNG
    (default: ``out`` with .csv / .png), each complete or not at all."""
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(metrics, indent=2))
    csv_out = Path(csv_path) if csv_path else out.with_suffix(".csv")
    import pandas as pd

    tmp = csv_out.with_name(f".{csv_out.name}.tmp")
    pd.DataFrame(metrics_table(metrics)).to_csv(tmp, index=False)
    os.replace(tmp, csv_out)
    from rasterlearn.report import plot_confusion_matrix

    plot_confusion_matrix(
        cm, schema.names, Path(png_path) if png_path else out.with_suffix(".png"), title=title
    )
