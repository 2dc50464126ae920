"""Scoring a model on a split (one confusion matrix per split) and writing metrics, curves, samples and
the training report."""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from rasterlearn._util import atomic_write, atomic_write_json
from rasterlearn.data import (
    ChipDataset,
    DatasetInfo,
    load_dataset_info,
)
from rasterlearn.diagnostics import annotate
from rasterlearn.errors import ModelError
from rasterlearn.io.paths import check_outputs
from rasterlearn.metrics import binary_foreground, metrics_from_confusion, metrics_table
from rasterlearn.models import (
    load_package,
)
from rasterlearn.train.config import TrainConfig
from rasterlearn.train.loaders import _auto_workers, _loader
from rasterlearn.train_checks import attach_stored_baseline

# one logger for the whole package, as before the split
log = logging.getLogger("rasterlearn.train")


# ---------------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------------
@torch.no_grad()
def evaluate_loader(
    model: torch.nn.Module,
    loader: Any,
    names: Sequence[str],
    codes: Sequence[int] | None = None,
    *,
    binary: bool = False,
    threshold: float = 0.5,
    ignore_index: int = 255,
    device: str | torch.device = "cpu",
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Metrics of ``model`` over every batch of ``loader`` (one confusion matrix for the whole split)."""
    k = len(names)
    cm = torch.zeros(k * k, dtype=torch.int64)
    model = model.to(device).eval()
    for batch in loader:
        logits = model(batch["image"].to(device))
        if binary:
            pred = binary_foreground(torch.sigmoid(logits[:, 0].float()), threshold).long()
        else:
            pred = logits.argmax(1)
        truth = batch["mask"].to(device)
        keep = (truth != ignore_index) & (truth >= 0) & (truth < k)
        idx = truth[keep] * k + pred[keep]
        cm += torch.bincount(idx.cpu(), minlength=k * k)
        if progress is not None:
            progress(len(logits))
    return metrics_from_confusion(cm.reshape(k, k).numpy(), list(names), list(codes) if codes else None)


def evaluate_model(
    model_dir: str | Path,
    dataset: str | Path,
    *,
    split: Literal["trn", "val", "tst"] = "tst",
    out: str | Path | None = None,
    batch_size: int = 8,
    num_workers: int | None = None,
    device: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Score a model package on a split of a chip folder.

    The package's own normalization and class schema are used (dataset codes the model does not know are
    ignored, with a warning); the dataset's bands must match the model's. With ``out`` (a ``.json`` path)
    writes the metrics JSON, a CSV table beside it (per class IoU, F1, precision = user's accuracy, recall =
    producer's accuracy, plus overall accuracy and kappa) and the confusion matrix PNG (counts and
    row-normalized).
    """
    check_outputs([model_dir, dataset], [out])
    pkg = load_package(model_dir)
    meta = pkg.meta
    info = load_dataset_info(dataset)
    if [b.lower() for b in info.bands] != [b.lower() for b in meta.bands]:
        if len(info.bands) != len(meta.bands):
            raise ModelError(
                f"The model expects {len(meta.bands)} bands {meta.bands}; the chips in {dataset} have "
                f"{len(info.bands)} {info.bands}. Cut chips with the model's bands."
            )
        log.warning(
            "Band names differ (model %s, chips %s); using the chips' bands in order", meta.bands, info.bands
        )
    schema = meta.class_schema
    unknown = sorted(set(info.schema.codes) - set(schema.codes))
    if unknown:
        log.warning("Class codes %s of the dataset are not classes of the model; they are ignored", unknown)
    ds = ChipDataset(dataset, split, normalization=meta.norm, schema=schema, info=info)
    loader = _loader(
        ds, batch_size, _auto_workers(num_workers) if num_workers is not None else 0, train=False, seed=0
    )
    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    metrics = evaluate_loader(
        pkg.model,
        loader,
        schema.names,
        schema.codes,
        binary=meta.task == "binary",
        threshold=meta.threshold,
        ignore_index=schema.ignore_index,
        device=dev,
        progress=progress,
    )
    metrics["split"] = split
    metrics["chips"] = len(ds)
    metrics["model"] = str(Path(model_dir))
    metrics["dataset"] = str(Path(dataset))
    annotate(metrics, split)
    attach_stored_baseline(metrics, model_dir, dataset, split)
    if out is not None:
        write_metrics(metrics, out)
    return metrics


def _write_csv(path: Path, fieldnames: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> Path:
    """Rows as CSV (keys not in ``fieldnames`` left out, missing ones empty), written atomically."""

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=list(fieldnames), extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)

    return atomic_write(path, write)


def write_metrics(metrics: dict[str, Any], out: str | Path) -> dict[str, Path]:
    """Write ``out`` (JSON), ``<stem>.csv`` (per-class table) and ``<stem>_confusion.png``; atomic renames."""
    from rasterlearn.report import plot_confusion_matrix

    out = Path(out)
    if out.suffix.lower() != ".json":
        out = out.with_suffix(".json")
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, metrics)
    csv_path = out.with_suffix(".csv")
    rows = metrics_table(metrics)
    cols = [
        "class",
        "code",
        "iou",
        "f1",
        "precision",
        "recall",
        "producers_accuracy",
        "users_accuracy",
        "support",
        "predicted",
        "overall_accuracy",
        "kappa",
    ]
    _write_csv(csv_path, cols, rows)
    png = plot_confusion_matrix(
        np.asarray(metrics["confusion_matrix"]),
        metrics["classes"],
        out.with_name(f"{out.stem}_confusion.png"),
    )
    return {"json": out, "csv": csv_path, "confusion": png}


def write_training_outputs(
    out_dir: Path,
    metrics: dict[str, Any],
    history: list[dict[str, float]],
    model: torch.nn.Module,
    val: ChipDataset,
    config: TrainConfig,
    info: DatasetInfo,
) -> dict[str, Path]:
    """metrics.json/.csv, confusion PNG, history.csv, curves PNG, sample chips PNG and report.html."""
    from rasterlearn import report

    files = write_metrics(metrics, out_dir / "metrics.json")
    if history:
        keys = sorted({k for h in history for k in h}, key=lambda k: (k != "epoch", k))
        files["history"] = _write_csv(out_dir / "history.csv", keys, history)
        files["curves"] = report.plot_training_curves(history, out_dir / "training_curves.png")
    if config.sample_chips:
        samples = _sample_predictions(
            model, val, config.sample_chips, binary=config.task == "binary", threshold=config.threshold
        )
        files["samples"] = report.plot_sample_grid(
            samples,
            out_dir / "samples.png",
            band_names=info.bands,
            class_names=info.schema.names,
            colors=info.schema.colors,
            ignore_index=info.schema.ignore_index,
        )
    files["report"] = report.training_report_html(
        out_dir / "report.html",
        metrics=metrics,
        history=history,
        images={k: v for k, v in files.items() if str(v).endswith(".png")},
        summary={
            "architecture": config.arch,
            "encoder": config.encoder,
            "bands": ", ".join(info.bands),
            "classes": info.schema.describe(),
            "loss": str(config.loss),
            "epochs": config.epochs,
            "dataset": str(info.root),
        },
        warnings=metrics.get("warnings") or [],
        comparison=(metrics.get("comparison") or {}).get("table") or [],
    )
    return files


@torch.no_grad()
def _sample_predictions(
    model: torch.nn.Module, ds: ChipDataset, n: int, binary: bool, threshold: float = 0.5
) -> list[dict[str, np.ndarray]]:
    """Report panels of ``n`` validation chips: image, truth, prediction and class probabilities.

    A binary model's prediction is :func:`rasterlearn.metrics.binary_foreground` at ``threshold`` (the
    rule of the metrics and of ``predict``), not the argmax of (1 - p, p).
    """
    model.eval()
    idx = np.linspace(0, len(ds) - 1, num=min(n, len(ds))).round().astype(int)
    out = []
    for i in dict.fromkeys(idx.tolist()):
        data, valid, _ = ds.read(i)
        item = ds[i]
        logits = model(item["image"][None])[0].float()
        if binary:
            p = torch.sigmoid(logits[0])
            probs = torch.stack([1 - p, p])
            pred = binary_foreground(p, threshold).long().numpy()
        else:
            probs = logits.softmax(0)
            pred = probs.argmax(0).numpy()
        out.append(
            {
                "image": data,
                "valid": valid,
                "truth": item["mask"].numpy(),
                "pred": pred,
                "probs": probs.numpy(),
            }
        )
    return out
