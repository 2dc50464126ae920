"""Validation of :func:`rasterlearn.features.classify.classify_raster`: cross-validation folds (spatial
blocks, a fold column, random), fitting and scoring every fold, and the metrics of classes and of
regression targets (see the :mod:`~rasterlearn.features.classify` module docs for the schemes)."""

from __future__ import annotations

import logging
from typing import Any, Literal

import numpy as np

from rasterlearn.errors import ConfigError, InputError
from rasterlearn.features._io import estimator_errors
from rasterlearn.features.cv_check import check_folds, groups_per_class
from rasterlearn.features.sampling import VectorSample
from rasterlearn.labels import ClassSchema
from rasterlearn.metrics import confusion_matrix, metrics_from_confusion

__all__ = [
    "CVMode",
    "class_metrics",
    "cross_validate",
    "fit_estimator",
    "make_folds",
    "regression_metrics",
]

log = logging.getLogger("rasterlearn.features.classify")  # the stage's logger, as before the split

CVMode = Literal["spatial", "fold", "random", "none"]


def fit_estimator(cls: type, kwargs: dict[str, Any], X: np.ndarray, y: np.ndarray) -> Any:
    """``cls(**kwargs)`` fitted on ``X, y``; its own errors become one :class:`ConfigError` line."""
    with estimator_errors(cls, kwargs, len(X)):
        est = cls(**kwargs)
        est.fit(X, y)
    return est


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


def class_metrics(y: np.ndarray, pred: np.ndarray, schema: ClassSchema) -> dict[str, Any]:
    """Overall accuracy, per-class precision/recall/F1/IoU, confusion matrix and kappa of class codes."""
    lut = {c: i for i, c in enumerate(schema.codes)}
    t = np.asarray([lut[int(v)] for v in y])
    p = np.asarray([lut.get(int(v), -1) for v in pred])
    cm = confusion_matrix(t, p, schema.num_classes)
    return metrics_from_confusion(cm, schema.names, schema.codes)


def cross_validate(
    metrics: dict[str, Any],
    cls: type,
    kwargs: dict[str, Any],
    X: np.ndarray,
    y: np.ndarray,
    splits: list[tuple[np.ndarray, np.ndarray]],
    cv_info: dict[str, Any],
    task_: str,
    schema: ClassSchema | None,
) -> None:
    """Fit and score every fold; adds the per-fold rows and the pooled out-of-fold metrics to ``metrics``."""
    missing: list[list[int]] = [[] for _ in splits]
    verdict: dict[str, Any] = {}
    if splits and task_ == "classification":
        missing, verdict = check_folds(splits, y, schema, cv_info)  # type: ignore[arg-type]
        cv_info.update(verdict)
    if not splits:
        return
    oof = np.zeros(len(y), dtype=y.dtype)
    tested = np.zeros(len(y), bool)
    fold_rows = []
    for f, (tr, te) in enumerate(splits):
        est = fit_estimator(cls, kwargs, X[tr], y[tr])
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
        metrics |= class_metrics(y[tested], oof[tested], schema)  # type: ignore[arg-type]
    elif task_ == "classification":
        pass  # impossible folds: no headline metric (see metrics["validation"]["reason"])
    else:
        metrics |= regression_metrics(y[tested], oof[tested].astype("float64"))
