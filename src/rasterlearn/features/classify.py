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
from rasterlearn.engine.executor import BlockExecutor
from rasterlearn.errors import ConfigError, InputError
from rasterlearn.features._io import (
    Standardizer,
    apply_by_window,
    check_model_bands,
    default_model_dir,
    estimator_errors,
    load_model_folder,
    parse_kwargs,
    resolve_estimator,
    save_model_folder,
)
from rasterlearn.features.cv_check import check_folds, groups_per_class
from rasterlearn.features.sampling import VectorSample, sample_vector
from rasterlearn.io.paths import check_outputs, output_lock
from rasterlearn.io.raster import RasterReader
from rasterlearn.io.writer import BlockWriter
from rasterlearn.labels import ClassInfo, ClassSchema, default_color
from rasterlearn.metrics import confusion_matrix, metrics_from_confusion

__all__ = [
    "ESTIMATORS",
    "ClassifyResult",
    "FittedClassifier",
    "classify_raster",
    "label_schema",
    "make_folds",
    "regression_metrics",
]

log = logging.getLogger(__name__)

Task = Literal["auto", "classification", "regression"]
CVMode = Literal["spatial", "fold", "random", "none"]

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


def make_folds(
    sample: VectorSample,
    y: np.ndarray,
    *,
    cv: CVMode,
    folds: int = 5,
    block_size: float | None = None,
    fold_values: np.ndarray | None = None,
    task: str = "classification",
    seed: int = 0,
) -> tuple[list[tuple[np.ndarray, np.ndarray]], dict[str, Any]]:
    """Train/test index pairs for cross-validation, and a description of the scheme."""
    from sklearn.model_selection import GroupKFold, KFold, LeaveOneGroupOut, StratifiedKFold

    n = len(y)
    if cv == "none":
        return [], {"type": "none"}
    if cv == "fold":
        if fold_values is None:
            raise ConfigError("cv 'fold' needs a fold column (--fold-column)")
        groups = np.asarray([str(v) for v in fold_values])
        if len(np.unique(groups)) < 2:
            raise InputError(
                "the fold column has a single value; it cannot separate training and test samples"
            )
        splits = list(LeaveOneGroupOut().split(np.zeros(n), y, groups))
        return splits, {
            "type": "fold",
            "column_values": sorted(np.unique(groups).tolist()),
            "folds": len(splits),
            **({"groups_per_class": groups_per_class(y, groups)} if task == "classification" else {}),
        }
    if cv == "random":
        k = min(folds, n)
        if (
            task == "classification"
            and np.bincount(y).max() > 0
            and min(np.unique(y, return_counts=True)[1]) >= k
        ):
            splitter: Any = StratifiedKFold(k, shuffle=True, random_state=seed)
        else:
            splitter = KFold(k, shuffle=True, random_state=seed)
        return list(splitter.split(np.zeros(n), y)), {
            "type": "random",
            "folds": k,
            "stratified": isinstance(splitter, StratifiedKFold),
        }
    if cv != "spatial":
        raise ConfigError(f"cv must be spatial, fold, random or none; got {cv!r}")
    pts = sample.feature_xy[sample.feature]
    x0, y0 = pts.min(axis=0)
    span = float(max(np.ptp(pts[:, 0]), np.ptp(pts[:, 1]), 1e-9))
    bs = float(block_size) if block_size is not None else span / (2 * folds)
    bx = np.floor((pts[:, 0] - x0) / bs).astype("int64")
    by = np.floor((pts[:, 1] - y0) / bs).astype("int64")
    groups = bx * 1_000_003 + by
    n_groups = len(np.unique(groups))
    if n_groups < 2:
        raise InputError(
            f"all samples fall into one spatial block of {bs:g} units; use a smaller --block-size or "
            f"--cv random"
        )
    k = min(folds, n_groups)
    if k < folds:
        log.warning("Only %d spatial blocks: %d folds instead of %d", n_groups, k, folds)
    splits = list(GroupKFold(n_splits=k).split(np.zeros(n), y, groups))
    return splits, {
        "type": "spatial",
        "folds": k,
        "block_size": bs,
        "blocks": n_groups,
        "grouping": "feature representative point",
        **({"groups_per_class": groups_per_class(y, groups)} if task == "classification" else {}),
    }


def regression_metrics(y: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
    """MAE, RMSE, R² and bias."""
    err = pred - y
    ss_tot = float(((y - y.mean()) ** 2).sum())
    return {
        "mae": float(np.abs(err).mean()),
        "rmse": float(np.sqrt((err**2).mean())),
        "r2": None if ss_tot == 0 else float(1 - (err**2).sum() / ss_tot),
        "bias": float(err.mean()),
        "n": len(y),
    }


def _class_metrics(y: np.ndarray, pred: np.ndarray, schema: ClassSchema) -> dict[str, Any]:
    lut = {c: i for i, c in enumerate(schema.codes)}
    t = np.asarray([lut[int(v)] for v in y])
    p = np.asarray([lut.get(int(v), -1) for v in pred])
    cm = confusion_matrix(t, p, schema.num_classes)
    return metrics_from_confusion(cm, schema.names, schema.codes)


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


def _fit(cls: type, kwargs: dict[str, Any], X: np.ndarray, y: np.ndarray) -> Any:
    with estimator_errors(cls, kwargs, len(X)):
        est = cls(**kwargs)
        est.fit(X, y)
    return est


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
    metrics: dict[str, Any] = {}
    metrics_path: Path | None = None
    model_dir = None if model is not None else Path(model_out or default_model_dir(output))
    check_outputs(
        [raster, labels, test_labels, model],
        [output, model_dir, None if model is not None else (metrics_out or metrics_path_for(output))],
    )
    new_model = model_dir is not None and not model_dir.exists()
    # the output's lock first: a second run into the same output refuses before it touches the model folder
    with output_lock(output), RasterReader(raster, bands) as reader:
        if model is not None:
            fc = FittedClassifier.load(model, trust=trust_model)
            check_model_bands("model", model, fc.band_names, raster, reader.count)
            model_path = Path(model)
        else:
            if labels is None or attribute is None:
                raise ConfigError("training needs labels and the label attribute (--labels, --attribute)")
            cols = [fold_column] if fold_column else None
            vs = sample_vector(
                reader,
                labels,
                attribute=attribute,
                columns=cols,
                layer=layer,
                rate=rate,
                max_per_feature=max_per_feature,
                seed=seed,
            )
            task_, schema, y = label_schema(vs.labels, task)  # type: ignore[arg-type]
            cv_mode: CVMode = cv or ("fold" if fold_column else "spatial")
            if test_labels is not None:
                cv_mode = "none"
            kwargs = parse_kwargs(params, "classifier")
            cls = _estimator_class(method, task_)
            if "random_state" in cls().get_params() and "random_state" not in kwargs:
                kwargs["random_state"] = seed
            std = Standardizer.fit(vs.values, standardize)
            X = std(vs.values)
            splits, cv_info = make_folds(
                vs,
                y,
                cv=cv_mode,
                folds=folds,
                block_size=block_size,
                fold_values=vs.extra.get(fold_column) if fold_column else None,
                task=task_,
                seed=seed,
            )
            metrics = {
                "task": task_,
                "method": method,
                "estimator": cls.__name__,
                "params": kwargs,
                "attribute": attribute,
                "labels": str(labels) if not hasattr(labels, "geometry") else "",
                "samples": len(y),
                "features": vs.n_features,
                "features_without_label": vs.n_unlabelled,
                "validation": cv_info,
            }
            missing: list[list[int]] = [[] for _ in splits]
            verdict: dict[str, Any] = {}
            if splits and task_ == "classification":
                missing, verdict = check_folds(splits, y, schema, cv_info)  # type: ignore[arg-type]
                cv_info.update(verdict)
            if splits:
                oof = np.zeros(len(y), dtype=y.dtype)
                tested = np.zeros(len(y), bool)
                fold_rows = []
                for f, (tr, te) in enumerate(splits):
                    est = _fit(cls, kwargs, X[tr], y[tr])
                    oof[te] = est.predict(X[te])
                    tested[te] = True
                    row: dict[str, Any] = {"fold": f, "train": len(tr), "test": len(te)}
                    if task_ == "classification":
                        row["accuracy"] = float((oof[te] == y[te]).mean())
                        row["classes_in_training"] = sorted(int(v) for v in np.unique(y[tr]))
                        if missing[f]:  # this fold cannot score the classes it never saw
                            row["untrained_test_classes"] = missing[f]
                            row["accuracy"] = None
                    else:
                        row |= regression_metrics(y[te], oof[te].astype("float64"))
                    fold_rows.append(row)
                metrics["folds"] = fold_rows
                if task_ == "classification" and not verdict:
                    metrics |= _class_metrics(y[tested], oof[tested], schema)  # type: ignore[arg-type]
                elif task_ == "classification":
                    pass  # impossible folds: no headline metric (see metrics["validation"]["reason"])
                else:
                    metrics |= regression_metrics(y[tested], oof[tested].astype("float64"))
            final = _fit(cls, kwargs, X, y)
            if test_labels is not None:
                ts = sample_vector(
                    reader,
                    test_labels,
                    attribute=attribute,
                    layer=layer,
                    rate=rate,
                    max_per_feature=max_per_feature,
                    seed=seed + 1,
                )
                pred = final.predict(std(ts.values))
                if task_ == "classification":
                    yt = np.asarray([schema.code_of(v) for v in ts.labels], "int64")  # type: ignore[union-attr]
                    metrics |= _class_metrics(yt, pred, schema)  # type: ignore[arg-type]
                else:
                    metrics |= regression_metrics(np.asarray(ts.labels, "float64"), pred.astype("float64"))
                metrics["validation"] = {
                    "type": "test_layer",
                    "test_labels": str(test_labels),
                    "test_samples": len(ts),
                }
            fc = FittedClassifier(
                method,
                kwargs,
                task_,
                schema,
                std,
                reader.band_names,
                final,
                attribute,
                {"samples": len(y), "features": vs.n_features, "estimator": cls.__name__},
            )
            model_path = fc.save(model_dir or default_model_dir(output))
            metrics["model"] = str(model_path)
            metrics_path = Path(metrics_out) if metrics_out else metrics_path_for(output)
            atomic_write_json(metrics_path, metrics, default=str)
            if "overall_accuracy" in metrics:
                log.info(
                    "Validation (%s): overall accuracy %.3f, kappa %s",
                    cv_info.get("type"),
                    metrics["overall_accuracy"] or float("nan"),
                    metrics.get("kappa"),
                )
            elif "rmse" in metrics:
                log.info(
                    "Validation (%s): MAE %.4g, RMSE %.4g, R² %s",
                    cv_info.get("type"),
                    metrics["mae"],
                    metrics["rmse"],
                    metrics["r2"],
                )
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

        with BlockWriter(
            output,
            reader.grid,
            1,
            dtype,
            nodata=nodata,
            tags=tags,
            band_descriptions=[description],
            blocksize=blocksize,
            resume=resume,
            fingerprint=fc.fingerprint(),
            discard_on_error=[model_path] if new_model else [],
            **style,
        ) as writer:
            apply_by_window(
                reader,
                writer,
                predict,
                nodata=nodata,
                out_dtype=dtype,
                blocksize=blocksize,
                progress=progress,
                executor=executor,
            )
    return ClassifyResult(output, metrics_path, Path(model_path), metrics, fc)
