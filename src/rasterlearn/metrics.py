"""Accuracy-assessment kernels on confusion matrices (pure numpy).

One implementation serves model evaluation on chips, full-scene map evaluation and classical
classifiers: a confusion matrix accumulated over *all* pixels (never a mean of per-batch scores), then
per-class IoU, F1, precision (= user's accuracy), recall (= producer's accuracy), overall accuracy, mean IoU
and Cohen's kappa.

Convention: ``cm[i, j]`` counts pixels whose truth is class ``i`` and prediction class ``j`` (rows = truth).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from rasterlearn.errors import InputError

__all__ = ["binary_foreground", "confusion_matrix", "metrics_from_confusion", "metrics_table"]


def binary_foreground(p: Any, threshold: float) -> Any:
    """The one binary decision rule: foreground where the probability ``p >= threshold``.

    Training metrics, prediction and the training report's sample panels all decide through this
    function, so a pixel exactly at the threshold is foreground everywhere. ``p`` is a numpy array or a
    torch tensor (the comparison is the same operator on both); returns a boolean array / tensor.
    """
    return p >= threshold


def confusion_matrix(
    truth: np.ndarray, pred: np.ndarray, num_classes: int, valid: np.ndarray | None = None
) -> np.ndarray:
    """Confusion matrix of contiguous class indices ``0..num_classes-1`` (int64).

    Pixels where ``valid`` is False, or where truth/pred fall outside the index range (e.g. an ignore
    code), are not counted.
    """
    t = np.asarray(truth).ravel().astype("int64")
    p = np.asarray(pred).ravel().astype("int64")
    if t.shape != p.shape:
        raise InputError(f"truth and prediction sizes differ: {t.size} vs {p.size}")
    keep = (t >= 0) & (t < num_classes) & (p >= 0) & (p < num_classes)
    if valid is not None:
        keep &= np.asarray(valid).ravel().astype(bool)
    idx = t[keep] * num_classes + p[keep]
    return np.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.full(num.shape, np.nan, dtype="float64")
    np.divide(num, den, out=out, where=den > 0)
    return out


def _clean(value: float) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)


def metrics_from_confusion(
    cm: np.ndarray,
    names: Sequence[str] | None = None,
    codes: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Per-class and overall metrics from a confusion matrix (rows = truth, columns = prediction).

    Returns a JSON-friendly dict: ``confusion_matrix``, ``classes``, ``per_class`` (name -> {code, iou, f1,
    precision, recall, producers_accuracy, users_accuracy, support, predicted}), ``overall_accuracy``,
    ``mean_iou``, ``mean_f1``, ``kappa``, ``pixels``. Undefined ratios (a class absent from truth and
    prediction) are ``null`` and excluded from means.
    """
    cm = np.asarray(cm, dtype="int64")
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise InputError(f"confusion matrix must be square, got shape {cm.shape}")
    n = cm.shape[0]
    names = list(names) if names is not None else [f"class_{i}" for i in range(n)]
    codes = list(codes) if codes is not None else list(range(n))
    tp = np.diag(cm).astype("float64")
    support = cm.sum(axis=1).astype("float64")  # truth per class
    predicted = cm.sum(axis=0).astype("float64")
    total = float(cm.sum())
    precision = _ratio(tp, predicted)
    recall = _ratio(tp, support)
    f1 = _ratio(2 * tp, support + predicted)
    iou = _ratio(tp, support + predicted - tp)
    oa = float(tp.sum() / total) if total else float("nan")
    pe = float((support * predicted).sum() / (total * total)) if total else float("nan")
    kappa = (oa - pe) / (1 - pe) if total and pe < 1 else float("nan")
    per_class = {}
    for i, name in enumerate(names):
        per_class[name] = {
            "code": int(codes[i]),
            "iou": _clean(iou[i]),
            "f1": _clean(f1[i]),
            "precision": _clean(precision[i]),
            "recall": _clean(recall[i]),
            "producers_accuracy": _clean(recall[i]),
            "users_accuracy": _clean(precision[i]),
            "support": int(support[i]),
            "predicted": int(predicted[i]),
        }
    return {
        "classes": names,
        "codes": [int(c) for c in codes],
        "confusion_matrix": cm.tolist(),
        "per_class": per_class,
        "overall_accuracy": _clean(oa),
        "mean_iou": _clean(float(np.nanmean(iou))) if np.isfinite(iou).any() else None,
        "mean_f1": _clean(float(np.nanmean(f1))) if np.isfinite(f1).any() else None,
        "kappa": _clean(kappa),
        "pixels": int(total),
    }


def metrics_table(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows (one per class, plus 'overall') for a CSV or a printed table."""
    rows = []
    for name, m in metrics["per_class"].items():
        rows.append({"class": name, **m})
    rows.append(
        {
            "class": "overall",
            "code": None,
            "iou": metrics["mean_iou"],
            "f1": metrics["mean_f1"],
            "precision": None,
            "recall": None,
            "producers_accuracy": None,
            "users_accuracy": None,
            "support": metrics["pixels"],
            "predicted": metrics["pixels"],
            "overall_accuracy": metrics["overall_accuracy"],
            "kappa": metrics["kappa"],
        }
    )
    return rows
