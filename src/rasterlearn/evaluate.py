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

import dataclasses
import json
import logging
import os
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from rasterlearn._util import atomic_write_text
from rasterlearn.class_maps import map_schema, raster_class_names
from rasterlearn.engine.events import report_total
from rasterlearn.engine.executor import BlockExecutor, LocalExecutor
from rasterlearn.errors import ConfigError, EmptyInputError, InputError, InputNotFoundError
from rasterlearn.evaluate_kernel import CompareSpec, RasterTruth, VectorTruth, compare_window
from rasterlearn.grid import Grid, Window
from rasterlearn.io.aoi import resolve_aoi
from rasterlearn.io.paths import check_outputs
from rasterlearn.io.raster import RasterReader, gdal_cache
from rasterlearn.label_grid import RasterOnGrid, relate_grids
from rasterlearn.labels import ClassInfo, ClassSchema, default_color, is_null_label
from rasterlearn.metrics import metrics_from_confusion, metrics_table

__all__ = [
    "ClassMatch",
    "TruthClasses",
    "Unlabelled",
    "evaluate_map",
    "map_schema",
    "match_class_names",
    "parse_class_names",
    "raster_class_names",
    "resolve_class_names",
]

log = logging.getLogger(__name__)

Unlabelled = Literal["auto", "background", "ignore"]
ClassMatch = Literal["auto", "name", "code"]
TruthClasses = ClassSchema | Mapping[int, str] | str | Path
_VECTOR_EXT = {".gpkg", ".shp", ".geojson", ".json", ".fgb", ".parquet", ".gml", ".kml", ".sqlite"}


def parse_class_names(text: str) -> dict[int, str]:
    """Parse inline class names ``"1=developed,2=agriculture"`` (``:`` also separates; ``;`` also
    delimits) into ``{1: "developed", 2: "agriculture"}``.

    Raises:
        InputError: an item is not ``CODE=NAME`` with an integer code, or a code repeats.
    """
    out: dict[int, str] = {}
    for item in re.split(r"[,;]", text):
        if not item.strip():
            continue
        m = re.fullmatch(r"\s*(-?\d+(?:\.0*)?)\s*[=:]\s*(.*?)\s*", item)
        if not m or not m.group(2):
            raise InputError(
                f"Class names must be 'CODE=NAME' items separated by commas, e.g. '1=developed,2=water'; "
                f"cannot read {item.strip()!r} in {text!r}"
            )
        code = int(float(m.group(1)))
        if code in out:
            raise InputError(f"Class code {code} is named twice in {text!r}")
        out[code] = m.group(2)
    if not out:
        raise InputError(f"No class names in {text!r}; expected e.g. '1=developed,2=water'")
    return out


def resolve_class_names(value: TruthClasses) -> dict[int, str]:
    """``{code: name}`` from a :class:`ClassSchema`, a mapping, a schema file (YAML/JSON/CSV, see
    :meth:`ClassSchema.load`) or inline ``"1=developed,2=agriculture"`` text."""
    if isinstance(value, ClassSchema):
        return dict(zip(value.codes, value.names, strict=True))
    if isinstance(value, Mapping):
        try:
            return {int(k): str(v) for k, v in value.items()}
        except (TypeError, ValueError) as exc:
            raise InputError(f"Truth class names must map integer codes to names; got {value!r}") from exc
    text = str(value)
    if isinstance(value, Path) or Path(text).exists() or not re.search(r"[=:]", text):
        try:
            schema = ClassSchema.load(text)
        except InputNotFoundError as exc:
            raise InputNotFoundError(
                f"Truth class file not found: {text} (inline names look like '1=developed,2=water')"
            ) from exc
        except (ConfigError, InputError) as exc:
            raise ConfigError(f"Cannot read truth classes from {text}: {exc}") from exc
        return dict(zip(schema.codes, schema.names, strict=True))
    return parse_class_names(text)


def _norm_name(name: str) -> str:
    return re.sub(r"[\s_\-]+", " ", str(name).strip().casefold())


def match_class_names(
    truth_names: Mapping[int, str], schema: ClassSchema
) -> tuple[dict[int, int], dict[int, str]]:
    """Match truth codes to the map's classes by name.

    Names are compared case-insensitively, with runs of spaces, underscores and hyphens treated alike
    (``"Dense_Forest"`` matches ``"dense forest"``); the schema's ``source_values`` (original label texts)
    count as names too. Several truth codes may name the same map class (they are merged).

    Returns:
        ``({truth code: map code}, {truth code: name} of the truth classes that match no map class)``.
    """
    lookup = {_norm_name(n): c for c, n in zip(schema.codes, schema.names, strict=True)}
    for text, code in schema.source_values.items():
        lookup.setdefault(_norm_name(text), code)
    matched: dict[int, int] = {}
    unmatched: dict[int, str] = {}
    for code, name in sorted(truth_names.items()):
        key = _norm_name(name)
        if key in lookup:
            matched[code] = lookup[key]
        else:
            unmatched[code] = name
    return matched, unmatched


def _grid_relation(truth: Grid, grid: Grid) -> tuple[bool, str | None]:
    """Whether a truth grid is read on the map's grid as it is (the same grid, possibly with a differently
    described or a missing CRS), and a note (:func:`rasterlearn.label_grid.relate_grids`)."""
    rel = relate_grids(truth, grid)
    same = rel.kind in ("aligned", "same_grid_crs_described_differently", "same_grid_no_crs")
    return same, rel.note


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


def _worker_path(path: Path) -> str:
    """A local file as an absolute path (workers may run elsewhere); URLs and /vsi paths as given."""
    return str(path.resolve()) if path.exists() else str(path)


def _count_windows(
    spec: CompareSpec,
    windows: list[Window],
    executor: BlockExecutor,
    counters: dict[str, int],
    progress: Callable[[int], None] | None,
) -> tuple[np.ndarray, int, int]:
    """Sum :func:`compare_window`'s counts over ``windows`` (in order): confusion matrix, unknown truth and
    unknown map pixels; non-integer truth pixels go to ``counters``."""
    if not isinstance(executor, LocalExecutor):
        executor.check_readable(spec.map_path)
        if isinstance(spec.truth, RasterTruth):
            executor.check_readable(spec.truth.path)
    cm = np.zeros((spec.n, spec.n), dtype="int64")
    unknown_truth = unknown_pred = 0
    for win, counts in executor.map(compare_window, windows, spec):
        cm += counts.cm
        unknown_truth += counts.unknown_truth
        unknown_pred += counts.unknown_pred
        counters["non_integer"] += counts.non_integer
        if progress:
            progress(win.size)
    return cm, unknown_truth, unknown_pred


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
    map_path = Path(map_path)
    truth = Path(truth)
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
    explicit_names = None if truth_classes is None else resolve_class_names(truth_classes)
    reader = RasterReader(map_path, [1])
    grid = reader.grid
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
    codes = schema.codes
    n = len(codes)
    lut_size = max([*codes, schema.ignore_index]) + 2
    lut = np.full(lut_size, -1, dtype="int64")
    lut[codes] = np.arange(n)

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
    report_total(progress, extent.height * extent.width)
    ignore_set = [float(v) for v in (ignore_values or [])]
    record["class_match"] = "code"
    counters = {"non_integer": 0}

    def name_matching(found: Mapping[int, str] | None, source: str) -> dict[int, int] | None:
        """{truth code: map code} when truth classes are matched by name, else None (codes compared)."""
        names = explicit_names if explicit_names is not None else found
        src = "argument" if explicit_names is not None else source
        strict = explicit_names is not None or class_match == "name"
        if class_match == "code":
            return None
        if not names:
            if class_match == "name":
                raise InputError(
                    f"{truth} names no classes, so its codes cannot be matched to the map's classes by name; "
                    f"name them (truth_classes / --truth-names '1=developed,2=water' / --truth-classes FILE)"
                )
            return None
        if not map_named:
            if strict:
                raise InputError(
                    f"{map_path} names no classes, so truth classes cannot be matched by name; give the map's "
                    f"classes (schema / --schema FILE)"
                )
            log.info("%s names no classes; comparing the truth's codes with the map's", map_path)
            return None
        names = {c: nm for c, nm in names.items() if float(c) not in ignore_set}
        matched, unmatched = match_class_names(names, schema)
        if not matched and not strict:
            msg = (
                f"the truth's class names ({', '.join(sorted(set(names.values())))}) share none with the map's "
                f"({', '.join(schema.names)}); codes are compared"
            )
            log.warning("Evaluating against %s: %s", truth, msg)
            record["notes"].append(msg)
            return None
        if not strict and all(c == m for c, m in matched.items()):
            # the truth's names agree with the map's codes: comparing codes is the same, and it keeps
            # unnamed or unmatched truth codes meeting map classes of that code as before
            log.info("The class names of %s agree with the map's codes; codes are compared", truth)
            if unmatched:
                msg = (
                    f"truth classes {', '.join(f'{c}={nm!r}' for c, nm in unmatched.items())} name no class of "
                    f"the map; codes are compared"
                )
                log.warning("Evaluating against %s: %s", truth, msg)
                record["notes"].append(msg)
            return None
        if unmatched:
            listed = ", ".join(f"{c}={nm!r}" for c, nm in unmatched.items())
            raise InputError(
                f"Truth class(es) {listed} ({'given' if src == 'argument' else 'named by ' + str(truth)}) "
                f"match no class of the map {map_path.name} ({', '.join(schema.names)}; names compared "
                f"case-insensitively). Correct the names (truth_classes / --truth-names / --truth-classes), "
                f"skip those codes (ignore_values / --ignore {','.join(map(str, unmatched))}), or compare "
                f"codes (class_match='code' / --class-match code)."
            )
        record["class_match"] = "name"
        record["truth_class_names"] = src
        record["truth_classes"] = {
            str(c): {"name": names[c], "map_code": m, "map_name": schema.name_of(m)}
            for c, m in matched.items()
        }
        log.info(
            "Truth classes matched to the map's by name (%s): %s",
            "given" if src == "argument" else f"names from {truth.name}",
            ", ".join(f"{c} {names[c]!r} -> {m}" for c, m in matched.items()),
        )
        missing = [nm for c, nm in zip(codes, schema.names, strict=True) if c not in matched.values()]
        if missing:
            log.info("Map classes without a truth class: %s", ", ".join(missing))
        return matched

    is_vector = truth.suffix.lower() in _VECTOR_EXT or truth.is_dir()

    truth_spec: VectorTruth | RasterTruth
    local: dict[str, Any] = {"map": reader}
    if is_vector:
        import shapely
        from pyproj import CRS

        from rasterlearn.io.vector import check_overlap, read_vector

        record["truth_kind"] = "vector"
        if grid.crs is None:
            raise InputError(f"{map_path} has no CRS, so vector truth cannot be placed on it")
        from rasterlearn.io.vector import resolve_layer

        layer = resolve_layer(truth, layer)  # type: ignore[assignment]
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
            remap = name_matching(None, "")
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
                record["notes"].append(
                    f"{int(skipped.sum())} truth features without a value in {attribute!r} skipped"
                )
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
        if unlabelled == "background" and schema.background is None:
            raise InputError(
                f"unlabelled='background' but the map's classes ({schema.describe()}) have no background "
                f"class; use unlabelled='ignore' (--unlabelled ignore) or give a schema with a background"
            )
        record["unlabelled"] = unlabelled
        log.info(
            "Pixels outside every truth polygon are %s",
            f"background (class {schema.background})" if unlabelled == "background" else "ignored",
        )
        fill = schema.background if unlabelled == "background" and schema.background is not None else -1
        truth_spec = VectorTruth(geoms, values, fill, all_touched)
        local["tree"] = tree
    else:
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
        local["truth"] = source
        remap = name_matching(raster_class_names(truth), f"class names of {truth.name}")
        truth_spec = RasterTruth(_worker_path(truth), tuple(ignore_set), schema.ignore_index)
        if remap is not None:
            truth_spec = dataclasses.replace(
                truth_spec,
                remap_keys=np.array(sorted(remap), dtype="int64"),
                remap_vals=np.array([remap[k] for k in sorted(remap)], dtype="int64"),
            )

    cm, unknown_truth, unknown_pred = _count_windows(
        CompareSpec(uuid.uuid4().hex, _worker_path(map_path), grid, lut, n, truth_spec, area, local),
        _windows(grid, window_size, extent),
        executor or LocalExecutor(),
        counters,
        progress,
    )
    reader.close()
    if not is_vector:
        source.close()
    if unknown_truth:
        log.warning(
            "%d truth pixels hold values that are not classes of the map (%s); they are not assessed",
            unknown_truth,
            schema.describe(),
        )
    if counters["non_integer"]:
        log.warning(
            "%d truth pixels hold values that are not whole numbers (not class codes); they are not assessed",
            counters["non_integer"],
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
            "truth_pixels_non_integer": counters["non_integer"],
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
        atomic_write_text(out, json.dumps(metrics, indent=2))
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
