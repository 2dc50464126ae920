"""Diagnostics of a trained model's metrics: class collapse, and a headline that never hides it.

A segmentation network trained on imbalanced labels often "collapses": it predicts the common class
everywhere, reaching a high overall accuracy while a class with truth pixels gets IoU 0. :func:`collapse_warnings`
finds every class that has support but is never predicted or has IoU 0 and returns messages naming the
remedies; :func:`headline` writes a one-line summary that shows overall accuracy only next to kappa and the
worst class IoU.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

__all__ = ["COLLAPSE_REMEDIES", "annotate", "collapse_warnings", "headline", "log_warnings", "worst_class"]

log = logging.getLogger(__name__)

COLLAPSE_REMEDIES = (
    "train with an imbalance-aware loss (--loss auto, ce+dice or focal+dice) and class weights "
    "(--class-weights inverse_sqrt), draw chips holding rare classes more often (--sampler balanced), "
    "cut more chips that contain the class (chips --class-proportion / --min-annotated), or train more epochs"
)
NEAR_ZERO = 0.01


def collapse_warnings(metrics: Mapping[str, Any], where: str = "validation") -> list[str]:
    """Messages for every class with truth pixels in ``metrics`` that is never predicted or has IoU 0.

    ``metrics`` is a dict from :func:`rasterlearn.metrics.metrics_from_confusion`. A model that predicts a
    single class for every pixel gets one message per other class with support.
    """
    out = []
    for name, pc in (metrics.get("per_class") or {}).items():
        support = int(pc.get("support") or 0)
        if support <= 0:
            continue
        predicted = int(pc.get("predicted") or 0)
        iou = pc.get("iou")
        if predicted == 0:
            what = "is never predicted"
        elif iou is None or float(iou) <= 0.0:
            what = "has IoU 0 (no pixel predicted correctly)"
        else:
            continue
        out.append(
            f"Class {name!r} ({support} {where} pixels) {what}: the model collapsed on it. Remedies: "
            f"{COLLAPSE_REMEDIES}."
        )
    return out


def worst_class(metrics: Mapping[str, Any]) -> tuple[str, float] | None:
    """The class with support and the lowest IoU, as ``(name, iou)`` (``None`` without per-class IoUs)."""
    cands = [
        (name, float(pc["iou"]) if pc.get("iou") is not None else 0.0)
        for name, pc in (metrics.get("per_class") or {}).items()
        if int(pc.get("support") or 0) > 0
    ]
    return min(cands, key=lambda t: t[1]) if cands else None


def _f(v: Any) -> str:
    return "n/a" if v is None else f"{float(v):.3f}"


def headline(metrics: Mapping[str, Any]) -> str:
    """``mIoU .., kappa .., lowest class IoU .. (name), OA ..`` plus ``COLLAPSED`` when a class IoU or kappa
    is about 0: overall accuracy never appears alone."""
    worst = worst_class(metrics)
    parts = [f"mIoU {_f(metrics.get('mean_iou'))}", f"kappa {_f(metrics.get('kappa'))}"]
    if worst is not None:
        parts.append(f"lowest class IoU {_f(worst[1])} ({worst[0]})")
    parts.append(f"OA {_f(metrics.get('overall_accuracy'))}")
    text = ", ".join(parts)
    kappa = metrics.get("kappa")
    if (worst is not None and worst[1] < NEAR_ZERO) or (kappa is not None and float(kappa) < NEAR_ZERO):
        text += " - WARNING: a class IoU or kappa is ~0; overall accuracy is misleading here"
    return text


def log_warnings(messages: list[str]) -> None:
    """Log each message loudly (WARNING level, framed so it stands out in a training log)."""
    for msg in messages:
        log.warning("!" * 8 + " " + msg)


def annotate(metrics: dict[str, Any], where: str = "validation") -> list[str]:
    """Put ``warnings`` (collapse messages) and ``headline`` first in ``metrics`` (in place); log and return
    the new messages."""
    msgs = collapse_warnings(metrics, where)
    rest = {k: v for k, v in metrics.items() if k not in ("warnings", "headline")}
    warnings = list(metrics.get("warnings") or []) + msgs
    metrics.clear()
    metrics.update({"warnings": warnings, "headline": headline(rest), **rest})
    log_warnings(msgs)
    return msgs
