"""What :func:`rasterlearn.train.train` checks after fitting: collapse warnings and the baseline comparison.

:func:`after_training` annotates the validation metrics in place (``warnings`` and ``headline`` first, see
:mod:`rasterlearn.diagnostics`), scores the network on the tst split too, fits the per-pixel random forest
of :mod:`rasterlearn.baseline` on the same trn chips and scores it on the same splits, writes
``baseline.json`` and returns what goes into the model package (``training.baseline``,
``training.warnings``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from rasterlearn._util import atomic_write_json
from rasterlearn.baseline import baseline_warnings, run_baseline, side_by_side
from rasterlearn.data import ChipDataset, DatasetInfo, read_manifest
from rasterlearn.diagnostics import annotate, log_warnings

__all__ = ["BASELINE_FILE", "after_training", "attach_stored_baseline", "summary"]

log = logging.getLogger(__name__)

BASELINE_FILE = "baseline.json"


def summary(m: Mapping[str, Any]) -> dict[str, Any]:
    """The headline numbers of a metrics dict (mIoU, kappa, OA, IoU per class)."""
    return {
        "mean_iou": m.get("mean_iou"),
        "kappa": m.get("kappa"),
        "overall_accuracy": m.get("overall_accuracy"),
        "iou": {k: v.get("iou") for k, v in (m.get("per_class") or {}).items()},
    }


def _prepend(metrics: dict[str, Any], key: str, value: Any) -> None:
    items = {k: v for k, v in metrics.items() if k != key}
    metrics.clear()
    metrics[key] = value
    metrics.update(items)


def after_training(
    out_dir: Path,
    dataset: Path,
    info: DatasetInfo,
    model: torch.nn.Module,
    norm: Any,
    *,
    metrics: dict[str, Any],
    val_split: str,
    binary: bool,
    threshold: float,
    baseline: bool,
    baseline_samples: int,
    seed: int,
    batch_size: int,
) -> dict[str, Any]:
    """Annotate ``metrics`` (in place) and compare with the baseline; returns the package's extra fields."""
    from rasterlearn.train import _loader, evaluate_loader

    warnings = annotate(metrics, val_split)
    extra: dict[str, Any] = {}
    if baseline:
        network = {val_split: metrics}
        if val_split != "tst" and read_manifest(dataset, "tst"):
            tst = ChipDataset(dataset, "tst", normalization=norm, info=info)
            network["tst"] = evaluate_loader(
                model,
                _loader(tst, batch_size, 0, train=False, seed=seed),
                info.schema.names,
                info.schema.codes,
                binary=binary,
                threshold=threshold,
                ignore_index=info.schema.ignore_index,
            )
        base = run_baseline(dataset, splits=list(network), max_samples=baseline_samples, seed=seed)
        table = side_by_side(network, base.metrics)
        lost = baseline_warnings(network, base.metrics)
        log_warnings(lost)
        warnings = warnings + lost
        for split, m in network.items():
            b = base.metrics.get(split) or {}
            log.info(
                "%s split: network mIoU %s vs baseline random forest %s",
                split,
                _f(m.get("mean_iou")),
                _f(b.get("mean_iou")),
            )
        comparison = {
            "baseline": {k: v for k, v in base.to_dict().items() if k != "metrics"},
            "network": {s: summary(m) for s, m in network.items()},
            "random_forest": {s: summary(m) for s, m in base.metrics.items()},
            "table": table,
            "network_wins": not lost,
        }
        atomic_write_json(
            out_dir / BASELINE_FILE,
            {**base.to_dict(), "network": {s: summary(m) for s, m in network.items()}, "table": table},
        )
        metrics["comparison"] = comparison
        extra["baseline"] = comparison
    else:
        log.info("Baseline comparison skipped (--no-baseline)")
    _prepend(metrics, "headline", metrics.pop("headline"))
    _prepend(metrics, "warnings", warnings)
    extra["warnings"] = warnings
    return extra


def _f(v: Any) -> str:
    return "n/a" if v is None else f"{float(v):.4f}"


def attach_stored_baseline(
    metrics: dict[str, Any], model_dir: str | Path, dataset: str | Path, split: str
) -> dict[str, Any] | None:
    """Add the package's stored baseline metrics for ``split`` to ``metrics`` (``baseline`` key) when the
    package was trained on ``dataset``; warn when the network does not beat it. Returns the baseline summary.
    """
    import json

    path = Path(model_dir) / BASELINE_FILE
    meta_path = Path(model_dir) / "model.json"
    if not path.exists() or not meta_path.exists():
        return None
    trained_on = (json.loads(meta_path.read_text(encoding="utf-8")).get("training") or {}).get("dataset")
    if not trained_on or Path(trained_on).resolve() != Path(dataset).resolve():
        log.info(
            "The package's baseline was fitted on %s, not on %s: no side-by-side baseline",
            trained_on,
            dataset,
        )
        return None
    stored = json.loads(path.read_text(encoding="utf-8"))
    base = (stored.get("metrics") or {}).get(split)
    if not base:
        return None
    lost = baseline_warnings({split: metrics}, {split: base})
    log_warnings(lost)
    metrics["warnings"] = list(metrics.get("warnings") or []) + lost
    metrics["baseline"] = {
        "random_forest": summary(base),
        "table": side_by_side({split: metrics}, {split: base}),
    }
    return metrics["baseline"]
