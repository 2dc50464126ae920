"""Honest cross-validation: detect folds that cannot validate some class.

A fold whose test samples hold a class its training samples lack cannot predict that class: its
"accuracy" measures nothing but the split. This happens with spatial (block) or fold-column validation
when a class lives in one block or one fold value only (one polygon per class, a class confined to one
area), and with random validation when a class has fewer samples than folds. :func:`check_folds` finds
those classes and folds; :mod:`rasterlearn.features.classify` then reports no headline metric and says
how to fix the labels or the validation scheme.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from rasterlearn.labels import ClassSchema

__all__ = ["check_folds", "groups_per_class"]

log = logging.getLogger(__name__)

REMEDY = (
    "add labelled features of these classes in other places (at least 2 spatial blocks or fold values "
    "each), give --fold-column with a column assigning features to folds, or use --cv random (optimistic: "
    "neighbouring pixels leak between training and test folds)"
)


def groups_per_class(y: np.ndarray, groups: np.ndarray) -> dict[int, int]:
    """Number of distinct groups (spatial blocks, fold values) holding each class code."""
    return {int(c): len(np.unique(groups[y == c])) for c in np.unique(y)}


def check_folds(
    splits: Sequence[tuple[np.ndarray, np.ndarray]],
    y: np.ndarray,
    schema: ClassSchema,
    cv_info: dict[str, Any],
) -> tuple[list[list[int]], dict[str, Any]]:
    """Per fold, the tested class codes missing from its training samples; and the validation verdict.

    Returns ``(missing_per_fold, verdict)``; ``verdict`` is empty when every fold can validate every class
    it tests, else it holds ``valid: False``, the affected class names, the reason and the remedy (to be
    merged into the metrics' ``validation`` record).
    """
    missing = [sorted(int(c) for c in set(np.unique(y[te])) - set(np.unique(y[tr]))) for tr, te in splits]
    bad = sorted({c for m in missing for c in m})
    if not bad:
        return missing, {}
    names = [schema.name_of(c) for c in bad]
    per_class = cv_info.get("groups_per_class") or {}
    unit = {"spatial": "spatial block", "fold": "fold value"}.get(str(cv_info.get("type")), "fold")
    few = {schema.name_of(c): per_class[c] for c in bad if c in per_class}
    where = (
        "; ".join(f"{n!r} occurs in {k} {unit}{'s' if k != 1 else ''}" for n, k in few.items())
        if few
        else f"classes {', '.join(repr(n) for n in names)} are missing from the training part of some folds"
    )
    n_bad = sum(1 for m in missing if m)
    reason = (
        f"{n_bad} of {len(splits)} {cv_info.get('type')} folds test classes they never trained on ({where}); "
        f"their metrics would measure the split, not the model"
    )
    log.warning("Validation impossible: %s. No validation metrics are reported. Remedy: %s.", reason, REMEDY)
    return missing, {"valid": False, "unvalidated_classes": names, "reason": reason, "remedy": REMEDY}
