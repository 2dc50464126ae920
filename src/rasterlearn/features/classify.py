"""Supervised classification (or regression) of any raster from labelled points or polygons.

Labels come from a column of a vector layer in any CRS (reprojected to the raster). Text labels become a
:class:`rasterlearn.labels.ClassSchema` with codes 1..N and the texts as names; integer labels keep their
values as codes; continuous labels (non-integer numbers) make the task a regression. Any scikit-learn
``ensemble`` or ``neighbors`` estimator is available by name (random forest by default).

Validation, before the final model is refitted on every sample:

- ``spatial`` (default without a fold column): block k-fold. Samples are grouped by the square block
  (``block_size`` CRS units) holding their feature's representative point, so all pixels of one polygon and
  all nearby points fall in the same fold; folds are formed from whole blocks.
- ``fold``: one fold per distinct value of ``fold_column``.
- ``random``: (stratified) random k-fold over samples - optimistic with spatially correlated samples.
- a separate ``test_labels`` layer: fit on the training layer, evaluate on the test layer.
- ``none``.

Metrics (out-of-fold predictions pooled over folds) come from :mod:`rasterlearn.metrics` (overall accuracy,
per-class precision/recall/F1/IoU, confusion matrix, kappa) or MAE/RMSE/R² for regression, and are written to
``OUT.metrics.json``. The model, its class schema and band names are saved in ``OUT.model/``.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from rasterlearn._util import atomic_write_json
from rasterlearn.class_maps import class_map_style
from rasterlearn.engine import journal
from rasterlearn.engine.events import report_total
from rasterlearn.engine.executor import BlockExecutor, open_executor
from rasterlearn.errors import ConfigError, InputError
from rasterlearn.features._io import (
    MapSpec,
    Standardizer,
    check_model_bands,
    default_model_dir,
    load_model_folder,
    model_dir_for,
    parse_kwargs,
    resolve_estimator,
    save_model_folder,
    write_map,
)
from rasterlearn.features._stage import (
    call_options,
    feature_blocks,
    input_files,
    model_identity,
)
from rasterlearn.features.sampling import VectorSample, sample_vector
from rasterlearn.features.validation import (
    CVMode,
    class_metrics,
    cross_validate,
    fit_estimator,
    make_folds,
    regression_metrics,
)
from rasterlearn.io.paths import check_outputs, output_lock
from rasterlearn.io.raster import RasterReader
from rasterlearn.labels import ClassInfo, ClassSchema, default_color
from rasterlearn.options import ClassifyOptions, parse_bands

__all__ = [
    "ESTIMATORS",
    "ClassifyResult",
    "FittedClassifier",
    "classify_raster",
    "label_schema",
    "make_folds",
    "regression_metrics",
    "run_classify",
]

log = logging.getLogger(__name__)

Task = Literal["auto", "classification", "regression"]

ESTIMATORS: dict[str, tuple[str, str | None]] = {
    "random_forest": ("RandomForestClassifier", "RandomForestRegressor"),
    "extra_trees": ("ExtraTreesClassifier", "ExtraTreesRegressor"),
    "gradient_boosting": ("GradientBoostingClassifier", "GradientBoostingRegressor"),
    "hist_gradient_boosting": ("HistGradientBoostingClassifier", "HistGradientBoostingRegressor"),
    "adaboost": ("AdaBoostClassifier", "AdaBoostRegressor"),
    "bagging": ("BaggingClassifier", "BaggingRegressor"),
    "knn": ("KNeighborsClassifier", "KNeighborsRegressor"),
    "k_neighbors": ("KNeighborsClassifier", "KNeighborsRegressor"),
    "radius_neighbors": ("RadiusNeighborsClassifier", "RadiusNeighborsRegressor"),
    "nearest_centroid": ("NearestCentroid", None),
}
_MAX_CLASSES_AUTO = 50


def _estimator_class(method: str, task: str) -> type:
    pair = ESTIMATORS.get(method.lower())
    if pair is not None:
        name = pair[0] if task == "classification" else pair[1]
        if name is None:
            raise ConfigError(
                f"{method} has no regression variant; choose random_forest, extra_trees, knn, ..."
            )
        method = name
    cls = resolve_estimator(method, ["sklearn.ensemble", "sklearn.neighbors"], {})
    from sklearn.base import is_classifier, is_regressor

    probe = None
    with contextlib.suppress(TypeError):  # estimators with required arguments (e.g. StackingClassifier)
        probe = cls()
    if probe is not None:
        if task == "classification" and not is_classifier(probe):
            raise ConfigError(f"{cls.__name__} is not a classifier but the labels are classes")
        if task == "regression" and not is_regressor(probe):
            raise ConfigError(f"{cls.__name__} is not a regressor but the labels are continuous")
    return cls


def _is_int_like(v: Any) -> bool:
    if isinstance(v, bool):
        return False
    try:
        f = float(v)
    except (TypeError, ValueError):
        return False
    return math.isfinite(f) and f.is_integer()


def label_schema(values: np.ndarray, task: Task = "auto") -> tuple[str, ClassSchema | None, np.ndarray]:
    """Decide classification vs regression and encode labels.

    Returns ``(task, schema, y)``: ``y`` are class codes (int64) or float64 targets.
    """
    vals = list(values)
    numeric = all(not isinstance(v, str) and _is_float(v) for v in vals) or all(_is_float(v) for v in vals)
    uniq = sorted({str(v) for v in vals})
    if task == "auto":
        if (numeric and not all(_is_int_like(v) for v in vals)) or (
            numeric and len(uniq) > _MAX_CLASSES_AUTO
        ):
            task = "regression"
        else:
            task = "classification"
        log.info("Labels: %d distinct values, %s -> %s", len(uniq), "numeric" if numeric else "text", task)
    if task == "regression":
        if not numeric:
            raise InputError("regression needs numeric labels; the label column holds text")
        return "regression", None, np.asarray([float(v) for v in vals], "float64")
    if numeric and all(_is_int_like(v) for v in vals):
        codes = sorted({int(float(v)) for v in vals})
        if codes[0] < 0:
            raise InputError(f"class codes must be >= 0, got {codes[0]}; recode the labels")
        classes = tuple(ClassInfo(c, f"class_{c}", default_color(c)) for c in codes)
        ignore = 255 if max(codes) < 255 else 65535
        schema = ClassSchema(classes, ignore, None)
        y = np.asarray([int(float(v)) for v in vals], "int64")
    else:
        names = sorted({str(v) for v in vals})
        classes = tuple(ClassInfo(i + 1, n, default_color(i + 1)) for i, n in enumerate(names))
        ignore = 255 if len(names) < 255 else 65535
        schema = ClassSchema(classes, ignore, None, {n: i + 1 for i, n in enumerate(names)})
        y = np.asarray([schema.source_values[str(v)] for v in vals], "int64")
    log.info("Classes: %s", schema.describe())
    return "classification", schema, y


def _is_float(v: Any) -> bool:
    if isinstance(v, bool):
        return False
    try:
        float(v)
    except (TypeError, ValueError):
        return False
    return True


@dataclass
class FittedClassifier:
    """A fitted scikit-learn estimator with its task, class schema, band names and standardization."""

    method: str
    params: dict[str, Any]
    task: str
    schema: ClassSchema | None
    standardizer: Standardizer
    band_names: list[str]
    estimator: Any
    attribute: str
    info: dict[str, Any] = field(default_factory=dict)

    def predict(self, X: np.ndarray) -> np.ndarray:
        if X.shape[1] != len(self.band_names):
            raise InputError(f"the model was trained on {len(self.band_names)} bands, input has {X.shape[1]}")
        return np.asarray(self.estimator.predict(self.standardizer(X)))

    def fingerprint(self) -> str:
        """The journal's fingerprint of the fitted model (method, parameters, task, samples, scaling)."""
        return journal.fingerprint(
            [self.method, self.params, self.task, self.info.get("samples")], self.standardizer.mean
        )

    def save(self, folder: str | Path) -> Path:
        meta = {
            "kind": "classify",
            "method": self.method,
            "params": self.params,
            "task": self.task,
            "schema": None if self.schema is None else self.schema.to_dict(),
            "band_names": self.band_names,
            "attribute": self.attribute,
            "info": self.info,
            "fingerprint": self.fingerprint(),
        }
        arrays = {"std_mean": self.standardizer.mean, "std_scale": self.standardizer.scale}
        return save_model_folder(folder, meta, arrays, self.estimator)

    @classmethod
    def load(cls, folder: str | Path, *, trust: bool = False) -> FittedClassifier:
        """Read a model folder; one with a pickled estimator needs ``trust=True`` (see ``_io``)."""
        meta, arrays, est = load_model_folder(folder, "classify", trust=trust)
        schema = None if meta.get("schema") is None else ClassSchema.from_dict(meta["schema"])
        return cls(
            meta["method"],
            meta["params"],
            meta["task"],
            schema,
            Standardizer(arrays["std_mean"], arrays["std_scale"]),
            list(meta["band_names"]),
            est,
            meta.get("attribute", ""),
            meta.get("info", {}),
        )


@dataclass
class ClassifyResult:
    path: Path
    metrics_path: Path | None
    model_path: Path
    metrics: dict[str, Any]
    model: FittedClassifier


def metrics_path_for(output: Path) -> Path:
    """``OUT.metrics.json`` beside ``OUT.tif``."""
    return output.with_name(f"{output.stem}.metrics.json")


def classify_raster(
    raster: str | Path,
    labels: str | Path | Any | None,
    output: str | Path,
    *,
    attribute: str | None = None,
    method: str = "random_forest",
    params: dict[str, Any] | str | None = None,
    task: Task = "auto",
    cv: CVMode | None = None,
    folds: int = 5,
    block_size: float | None = None,
    fold_column: str | None = None,
    test_labels: str | Path | Any | None = None,
    layer: str | int | None = None,
    rate: float = 1.0,
    max_per_feature: int | None = 2000,
    bands: Sequence[int | str] | None = None,
    standardize: bool = True,
    seed: int = 0,
    model: str | Path | None = None,
    model_out: str | Path | None = None,
    metrics_out: str | Path | None = None,
    blocksize: int = 512,
    resume: bool = True,
    trust_model: bool = False,
    progress: Callable[[int], None] | None = None,
    executor: BlockExecutor | None = None,
) -> ClassifyResult:
    """Train on labelled features, validate, refit on all samples, save the model and map the raster.

    Args:
        raster: any raster (feature raster or raw bands).
        labels: labelled points/polygons (path or GeoDataFrame, any CRS). Not needed with ``model``.
        output: the class map (uint8/uint16 with colour table and class names; 0 = nodata unless 0 is a
            class, then the schema's ignore code) or, for regression, a float32 map (NaN nodata).
        attribute: the label column (text or numbers).
        method: ``random_forest`` (default), ``extra_trees``, ``gradient_boosting``, ``hist_gradient_boosting``,
            ``adaboost``, ``bagging``, ``knn``, ``radius_neighbors``, ``nearest_centroid`` or any class name
            in ``sklearn.ensemble``/``sklearn.neighbors``. params: its keyword arguments (dict or JSON).
        task: ``auto`` (continuous numbers -> regression), ``classification`` or ``regression``.
        cv: ``spatial`` (default), ``fold`` (default when ``fold_column`` is given), ``random`` or ``none``.
        folds, block_size: number of folds; spatial block side in CRS units (default: sample extent / 2k).
        test_labels: a separate labelled layer for validation (replaces cross-validation).
        rate, max_per_feature: polygon pixel sampling.
        model: apply an already trained model folder (no training).
        metrics_out: metrics JSON (default ``OUT.metrics.json`` beside the output).
        trust_model: allow ``model`` to hold a pickled estimator (forests, boosting, ...); unpickling runs
            code from the file, so only for folders you created (CLI ``--trust-model``).
    """
    output = Path(output)
    model_dir = model_dir_for(output, model, model_out)
    check_outputs(
        [raster, labels, test_labels, model],
        [output, model_dir, None if model is not None else (metrics_out or metrics_path_for(output))],
    )
    new_model = model_dir is not None and not model_dir.exists()
    job, unheld = call_options(
        ClassifyOptions,
        {"raster": raster, "output": output, "labels": labels, "attribute": attribute, "method": method}
        | {"params": params, "task": task, "cv": cv, "folds": folds, "block_size": block_size, "layer": layer}
        | {"fold_column": fold_column, "test_labels": test_labels, "rate": rate, "bands": bands, "seed": seed}
        | {"max_per_feature": max_per_feature, "model": model, "model_out": model_out, "metrics": metrics_out}
        | {"trust_model": trust_model},
    )
    metrics: dict[str, Any] = {}
    metrics_path: Path | None = None
    # the output's lock first: a second run into the same output refuses before it touches the model folder
    with output_lock(output), RasterReader(raster, bands) as reader:
        if model is not None:
            fc = FittedClassifier.load(model, trust=trust_model)
            check_model_bands("model", model, fc.band_names, raster, reader.count)
            model_path = Path(model)
        else:
            training = _Training(
                labels, attribute, method, params, task, cv, folds, block_size, fold_column, test_labels
            )
            sampling = _Sampling(layer, rate, max_per_feature, seed)
            metrics_path = Path(metrics_out) if metrics_out else metrics_path_for(output)
            folder = model_dir or default_model_dir(output)
            fc, metrics, model_path = training.fit_and_save(
                reader, sampling, standardize, folder, metrics_path
            )
        spec, predict = _map_spec(fc, raster, model_path, output)
        write_map(
            reader,
            spec,
            predict,
            job=job,
            resolved={**unheld, "standardize": standardize, "model": fc.fingerprint()},
            inputs={"model": model_identity(model), **input_files(labels=labels, test_labels=test_labels)},
            blocksize=blocksize,
            resume=resume,
            discard_on_error=[model_path] if new_model else [],
            progress=progress,
            executor=executor,
        )
    return ClassifyResult(output, metrics_path, Path(model_path), metrics, fc)


def run_classify(
    options: ClassifyOptions, *, progress: Callable[[int], None] | None = None
) -> ClassifyResult:
    """``rasterlearn classify`` as one call: train on ``options.labels`` (or apply ``options.model``),
    validate, and map ``options.raster`` into ``options.output``; the metrics go to ``options.metrics``
    (default ``OUT.metrics.json``) and are in the result.

    Parses the option texts (``bands``, JSON ``params``), computes the blocks on the executor of
    ``options.scheduler``/``options.workers``, announces the number of blocks to ``progress`` and calls
    :func:`classify_raster`. ``progress(n)`` is called after each committed block (cancellation raises from
    it; a rerun resumes).

    Example::

        from rasterlearn.features import run_classify
        from rasterlearn.options import ClassifyOptions

        res = run_classify(
            ClassifyOptions(raster="features.tif", labels="pts.gpkg", attribute="class", output="map.tif")
        )
        print(res.metrics.get("overall_accuracy"))
    """
    raster, output = options.require("raster", "output")
    bands = parse_bands(options.bands)
    with open_executor(options.scheduler, options.workers) as executor:
        report_total(progress, feature_blocks(options))
        return classify_raster(
            raster,
            options.labels,
            output,
            attribute=options.attribute,
            method=options.method,
            params=options.params,
            task=options.task,
            cv=options.cv,
            folds=options.folds,
            block_size=options.block_size,
            fold_column=options.fold_column,
            test_labels=options.test_labels,
            rate=options.rate,
            max_per_feature=options.max_per_feature,
            layer=options.layer,
            bands=bands,
            seed=options.seed,
            model=options.model,
            model_out=options.model_out,
            metrics_out=options.metrics,
            trust_model=options.trust_model,
            progress=progress,
            executor=executor,
        )


@dataclass(frozen=True)
class _Sampling:
    """How labelled pixels are sampled from the vector layers (:func:`sample_vector`)."""

    layer: str | int | None
    rate: float
    max_per_feature: int | None
    seed: int

    def sample(
        self,
        reader: RasterReader,
        source: Any,
        attribute: str,
        columns: list[str] | None = None,
        seed_offset: int = 0,
    ) -> VectorSample:
        """The labelled pixels of ``source`` (the test layer is drawn with ``seed_offset=1``)."""
        return sample_vector(
            reader,
            source,
            attribute=attribute,
            columns=columns,
            layer=self.layer,
            rate=self.rate,
            max_per_feature=self.max_per_feature,
            seed=self.seed + seed_offset,
        )


@dataclass(frozen=True)
class _Training:
    """The training phase of :func:`classify_raster`: sample, encode labels, validate, refit on every sample."""

    labels: Any
    attribute: str | None
    method: str
    params: dict[str, Any] | str | None
    task: Task
    cv: CVMode | None
    folds: int
    block_size: float | None
    fold_column: str | None
    test_labels: Any

    def fit_and_save(
        self, reader: RasterReader, sampling: _Sampling, standardize: bool, folder: Path, metrics_path: Path
    ) -> tuple[FittedClassifier, dict[str, Any], Path]:
        """Train (:meth:`fit`), save the model in ``folder`` and the metrics (with the model's path) in
        ``metrics_path``; the model, the metrics and the model's folder."""
        fc, metrics, cv_type = self.fit(reader, sampling, standardize)
        model_path = fc.save(folder)
        metrics["model"] = str(model_path)
        atomic_write_json(metrics_path, metrics, default=str)
        _log_validation(metrics, cv_type)
        return fc, metrics, model_path

    def fit(
        self, reader: RasterReader, sampling: _Sampling, standardize: bool
    ) -> tuple[FittedClassifier, dict[str, Any], Any]:
        """The final model, the validation metrics and the type of the cross-validation that ran."""
        labels, attribute, fold_column, seed = self.labels, self.attribute, self.fold_column, sampling.seed
        if labels is None or attribute is None:
            raise ConfigError("training needs labels and the label attribute (--labels, --attribute)")
        vs = sampling.sample(reader, labels, attribute, [fold_column] if fold_column else None)
        task_, schema, y = label_schema(vs.labels, self.task)  # type: ignore[arg-type]
        cv_mode: CVMode = self.cv or ("fold" if fold_column else "spatial")
        if self.test_labels is not None:
            cv_mode = "none"
        kwargs = parse_kwargs(self.params, "classifier")
        cls = _estimator_class(self.method, task_)
        if "random_state" in cls().get_params() and "random_state" not in kwargs:
            kwargs["random_state"] = seed
        std = Standardizer.fit(vs.values, standardize)
        X = std(vs.values)
        splits, cv_info = make_folds(
            vs,
            y,
            cv=cv_mode,
            folds=self.folds,
            block_size=self.block_size,
            fold_values=vs.extra.get(fold_column) if fold_column else None,
            task=task_,
            seed=seed,
        )
        metrics = {
            "task": task_,
            "method": self.method,
            "estimator": cls.__name__,
            "params": kwargs,
            "attribute": attribute,
            "labels": str(labels) if not hasattr(labels, "geometry") else "",
            "samples": len(y),
            "features": vs.n_features,
            "features_without_label": vs.n_unlabelled,
            "validation": cv_info,
        }
        cross_validate(metrics, cls, kwargs, X, y, splits, cv_info, task_, schema)
        final = fit_estimator(cls, kwargs, X, y)
        if self.test_labels is not None:
            ts = sampling.sample(reader, self.test_labels, attribute, seed_offset=1)
            self._test_layer_metrics(metrics, ts, final.predict(std(ts.values)), task_, schema)
        info = {"samples": len(y), "features": vs.n_features, "estimator": cls.__name__}
        fc = FittedClassifier(
            self.method, kwargs, task_, schema, std, reader.band_names, final, attribute, info
        )
        return fc, metrics, cv_info.get("type")

    def _test_layer_metrics(
        self,
        metrics: dict[str, Any],
        ts: VectorSample,
        pred: np.ndarray,
        task_: str,
        schema: ClassSchema | None,
    ) -> None:
        """Validation on the separate test layer (replaces the cross-validation)."""
        if task_ == "classification":
            yt = np.asarray([schema.code_of(v) for v in ts.labels], "int64")  # type: ignore[union-attr]
            metrics |= class_metrics(yt, pred, schema)  # type: ignore[arg-type]
        else:
            metrics |= regression_metrics(np.asarray(ts.labels, "float64"), pred.astype("float64"))
        metrics["validation"] = {
            "type": "test_layer",
            "test_labels": str(self.test_labels),
            "test_samples": len(ts),
        }


def _log_validation(metrics: dict[str, Any], cv_type: Any) -> None:
    """One log line with the headline validation metrics (none when the folds could not score)."""
    if "overall_accuracy" in metrics:
        log.info(
            "Validation (%s): overall accuracy %.3f, kappa %s",
            cv_type,
            metrics["overall_accuracy"] or float("nan"),
            metrics.get("kappa"),
        )
    elif "rmse" in metrics:
        log.info(
            "Validation (%s): MAE %.4g, RMSE %.4g, R² %s",
            cv_type,
            metrics["mae"],
            metrics["rmse"],
            metrics["r2"],
        )


def _map_spec(
    fc: FittedClassifier, raster: str | Path, model_path: Path, output: Path
) -> tuple[MapSpec, Callable[[np.ndarray], np.ndarray]]:
    """The map's data type, nodata, provenance tags and style (class map or regression), and its kernel."""
    tags: dict[str, Any] = {
        "rasterlearn_stage": "classify",
        "rasterlearn_method": fc.method,
        "rasterlearn_task": fc.task,
        "rasterlearn_model": str(Path(model_path).resolve()),
        "rasterlearn_input": str(raster),
        "rasterlearn_attribute": fc.attribute,
    }
    if fc.task == "classification":
        schema = fc.schema
        assert schema is not None
        dtype = schema.mask_dtype
        code = 0 if 0 not in schema.codes else schema.ignore_index
        tags["rasterlearn_schema"] = schema.to_dict()
        nodata: float = code
        style: dict[str, Any] = class_map_style(schema, nodata=code if code == 0 else None)
        description = fc.attribute or "class"

        def predict(X: np.ndarray) -> np.ndarray:
            return fc.predict(X)[:, None]

    else:
        dtype, nodata, style, description = "float32", float("nan"), {}, fc.attribute or "value"

        def predict(X: np.ndarray) -> np.ndarray:
            return fc.predict(X).astype("float32")[:, None]

    return MapSpec(output, dtype, nodata, tags, [description], style), predict
