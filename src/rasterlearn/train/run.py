"""The training run: :func:`train` (datasets, model, loaders, fit, evaluation, package)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from rasterlearn._util import atomic_write_text
from rasterlearn.data import (
    ChipDataset,
    DatasetInfo,
    load_dataset_info,
)
from rasterlearn.errors import ConfigError
from rasterlearn.imbalance import ImbalanceChoice, balanced_sampler, resolve_imbalance
from rasterlearn.io.paths import check_outputs, output_lock
from rasterlearn.models import (
    ModelMetadata,
    check_chip_size,
    create_model,
    library_versions,
    rgb_band_indexes,
    save_package,
)
from rasterlearn.models_temporal import temporal_model_kwargs
from rasterlearn.train.config import TrainConfig
from rasterlearn.train.evaluation import evaluate_loader, write_training_outputs
from rasterlearn.train.loaders import _auto_workers, _loader
from rasterlearn.train.module import SegmentationModule
from rasterlearn.train.optim import _lightning, make_trainer
from rasterlearn.train.resume import resume_checkpoint
from rasterlearn.train_checks import after_training
from rasterlearn.train_loggers import is_global_zero

# one logger for the whole package, as before the split
log = logging.getLogger("rasterlearn.train")


# ---------------------------------------------------------------------------------------------------
# train()
# ---------------------------------------------------------------------------------------------------
@dataclass
class TrainResult:
    """What :func:`train` produced."""

    out_dir: Path
    metrics: dict[str, Any]
    history: list[dict[str, float]]
    best_checkpoint: Path | None
    epochs_trained: int
    files: dict[str, Path] = field(default_factory=dict)


def _out_channels(config: TrainConfig, info: DatasetInfo) -> int:
    k = info.schema.num_classes
    if config.task == "binary":
        if k != 2:
            raise ConfigError(
                f"task 'binary' needs a schema of exactly 2 classes (background + one); the dataset has "
                f"{k} ({info.schema.describe()}). Use task 'multiclass'."
            )
        return 1
    if k < 2:
        raise ConfigError(
            f"the dataset schema has only {k} class ({info.schema.describe()}); multiclass training "
            f"needs at least 2"
        )
    return k


def train(
    dataset: str | Path,
    out_dir: str | Path,
    config: TrainConfig | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    callbacks: Sequence[Any] = (),
    progress_bar: bool = False,
    progress: Callable[[int], None] | None = None,
) -> TrainResult:
    """Train a segmentation model on a chip folder and write the model package into ``out_dir``.

    Args:
        dataset: chip folder written by ``rasterlearn chips`` (``dataset.json`` + ``manifest.csv``).
        out_dir: output folder: ``model.json`` + ``model.safetensors`` (the package), ``metrics.json``/``.csv``
            (validation metrics of the best model), ``history.csv``, ``training_curves.png``,
            ``samples.png``, ``confusion_matrix.png``, ``report.html``, ``train_config.yaml``,
            ``checkpoints/`` (best + last) and ``logs/``.
        config: training options (defaults when ``None``). ``epochs=0`` evaluates the initial model (e.g.
            given by ``weights``) on the validation split without training.
        resume: continue from ``out_dir/checkpoints/last.ckpt`` (the options must match that run's, except
            epochs, workers, patience, devices and logging).
        overwrite: start afresh even when ``out_dir`` holds checkpoints of an earlier run.
        callbacks: extra Lightning callbacks.
        progress_bar: show Lightning's rich progress bar (the CLI does).
        progress: called with 1 after each finished epoch.
    """
    config = config or TrainConfig()
    dataset = Path(dataset)
    out_dir = Path(out_dir)
    kw: dict[str, Any] = {
        "resume": resume,
        "overwrite": overwrite,
        "callbacks": callbacks,
        "progress_bar": progress_bar,
        "progress": progress,
    }
    if not is_global_zero():  # a DDP rank > 0, started by rank 0, which checked OUT and holds its lock
        return _train(dataset, out_dir, config, **kw)
    check_outputs([dataset, config.weights], [out_dir])
    with output_lock(out_dir):  # a second training into the same folder refuses, naming this one
        return _train(dataset, out_dir, config, **kw)


def _train(
    dataset: Path,
    out_dir: Path,
    config: TrainConfig,
    *,
    resume: bool,
    overwrite: bool,
    callbacks: Sequence[Any],
    progress_bar: bool,
    progress: Callable[[int], None] | None,
) -> TrainResult:
    """:func:`train` once ``out_dir`` is checked and locked (rank 0) or by a DDP rank > 0."""
    info = load_dataset_info(dataset)
    check_chip_size(config.arch, info.chip_size)
    kw = temporal_model_kwargs(
        config.model_kwargs, config.temporal, int(info.raw.get("timesteps") or 1), str(dataset)
    )
    if kw != config.model_kwargs:  # multi-date chips: the model (and its package) records mode and dates
        config = config.model_copy(update={"model_kwargs": kw})
    out_ch = _out_channels(config, info)
    norm = info.normalization_for(config.normalization)
    trn = ChipDataset(dataset, "trn", normalization=norm, augment=config.augment_config(), info=info)
    val = ChipDataset(dataset, config.val_split, normalization=norm, info=info)
    in_ch = trn.in_channels
    if config.weights and config.pretrained:
        raise ConfigError("give either pretrained (a weights name) or weights (a local checkpoint), not both")

    last, ckpt_path = resume_checkpoint(out_dir, config, resume=resume, overwrite=overwrite)

    module, choice = _build_module(config, info, trn, in_ch, out_ch)
    class_weights = choice.class_weights
    out_dir.mkdir(parents=True, exist_ok=True)
    if is_global_zero():
        atomic_write_text(
            out_dir / "train_config.yaml", yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
        )
    trn_loader, val_loader = _data_loaders(config, info, trn, val, choice, in_ch)

    trainer = make_trainer(
        config,
        out_dir,
        callbacks=callbacks,
        progress_bar=progress_bar,
        progress=progress,
        resume_ckpt=ckpt_path,
    )
    best = _fit(config, trainer, module, trn_loader, val_loader, ckpt_path, last)

    model = module.model.cpu().eval()
    metrics = evaluate_loader(
        model,
        val_loader,
        info.schema.names,
        info.schema.codes,
        binary=config.task == "binary",
        threshold=config.threshold,
        ignore_index=info.schema.ignore_index,
    )
    history = module.history
    epochs_trained = int(trainer.current_epoch) if config.epochs > 0 else 0
    if (
        not trainer.is_global_zero
    ):  # under DDP only rank 0 fits the baseline and writes package, metrics, report
        return TrainResult(out_dir, metrics, history, best, epochs_trained, {})
    extras = after_training(
        out_dir,
        dataset,
        info,
        model,
        norm,
        metrics=metrics,
        val_split=config.val_split,
        binary=config.task == "binary",
        threshold=config.threshold,
        baseline=config.baseline,
        baseline_samples=config.baseline_samples,
        seed=config.seed,
        batch_size=config.batch_size,
    )
    meta = _package_metadata(
        config,
        info,
        dataset,
        in_ch,
        out_ch,
        norm,
        model,
        class_weights,
        metrics,
        history,
        epochs_trained,
        len(trn),
        len(val),
        best,
    )
    meta.training.update({"imbalance": choice.to_dict(), **extras})
    save_package(model, meta, out_dir)
    files = write_training_outputs(out_dir, metrics, history, model, val, config, info)
    log.info("Model package written to %s (val mIoU %s)", out_dir, _fmt(metrics.get("mean_iou")))
    return TrainResult(out_dir, metrics, history, best, epochs_trained, files)


def _build_module(
    config: TrainConfig, info: DatasetInfo, trn: ChipDataset, in_ch: int, out_ch: int
) -> tuple[SegmentationModule, ImbalanceChoice]:
    """Seed, build the network (with its initial weights) and wrap it with its loss in our module."""
    pl = _lightning()
    pl.seed_everything(config.seed, workers=True, verbose=False)
    weights = config.weights or config.pretrained
    model = create_model(
        config.arch,
        config.encoder,
        in_ch,
        out_ch,
        weights=weights,
        channel_strategy=config.channel_strategy,
        rgb_bands=rgb_band_indexes(info.bands, in_ch),
        **config.model_kwargs,
    )
    choice = resolve_imbalance(
        config.loss, config.class_weights, info.schema, trn.class_counts(), task=config.task
    )
    class_weights = choice.class_weights
    module = SegmentationModule(
        model, config, info.schema.names, info.schema.ignore_index, class_weights, loss=choice.loss
    )
    return module, choice


def _data_loaders(
    config: TrainConfig,
    info: DatasetInfo,
    trn: ChipDataset,
    val: ChipDataset,
    choice: ImbalanceChoice,
    in_ch: int,
) -> tuple[torch.utils.data.DataLoader, torch.utils.data.DataLoader]:
    """The training and validation loaders (workers, chip caches, the balanced sampler when asked)."""
    workers = _auto_workers(config.num_workers, config.accelerator)
    if workers > 0:
        # fill the chip caches before the workers fork, so they share one copy instead of reading each chip
        trn.preload()
        val.preload()
    sampler = None
    if config.sampler == "balanced":
        sampler, chip_w = balanced_sampler(trn.rows, info.schema, seed=config.seed)
        choice.sampler, choice.chip_weights = "balanced", chip_w.tolist()
    trn_loader = _loader(trn, config.batch_size, workers, train=True, seed=config.seed, sampler=sampler)
    val_loader = _loader(val, config.batch_size, workers, train=False, seed=config.seed)
    log.info(
        "Training %s/%s on %d bands, %d classes: %d trn and %d %s chips of %d px, batch %d, %d workers",
        config.arch,
        config.encoder,
        in_ch,
        info.schema.num_classes,
        len(trn),
        len(val),
        config.val_split,
        info.chip_size,
        config.batch_size,
        workers,
    )
    return trn_loader, val_loader


def _fit(
    config: TrainConfig,
    trainer: Any,
    module: SegmentationModule,
    trn_loader: Any,
    val_loader: Any,
    ckpt_path: Path | None,
    last: Path,
) -> Path | None:
    """Fit (or, with ``epochs = 0``, only log that the initial model is evaluated); load the best checkpoint
    into ``module`` and return its path."""
    weights = config.weights or config.pretrained
    best: Path | None = None
    if config.epochs > 0:
        trainer.fit(
            module, trn_loader, val_loader, ckpt_path=str(ckpt_path) if ckpt_path else None, weights_only=True
        )
        if trainer.interrupted:
            raise RuntimeError(f"Training was interrupted; resume with --resume from {last}")
        ckpt_cb = trainer.checkpoint_callback
        best = Path(ckpt_cb.best_model_path) if ckpt_cb and ckpt_cb.best_model_path else None
        if best and best.exists():
            state = torch.load(str(best), map_location="cpu", weights_only=True)["state_dict"]
            module.load_state_dict(state)
            log.info(
                "Best checkpoint: %s (%s = %s)", best.name, config.monitor, _fmt(ckpt_cb.best_model_score)
            )
    else:
        log.info(
            "epochs = 0: evaluating the %s model on the %s split without training",
            "given" if weights else "untrained",
            config.val_split,
        )
    return best


def _fmt(v: Any) -> str:
    try:
        return f"{float(v):.4f}"
    except (TypeError, ValueError):
        return str(v)


def _package_metadata(
    config: TrainConfig,
    info: DatasetInfo,
    dataset: Path,
    in_ch: int,
    out_ch: int,
    norm: Any,
    model: torch.nn.Module,
    class_weights: Any,
    metrics: dict[str, Any],
    history: list[dict[str, float]],
    epochs: int,
    n_trn: int,
    n_val: int,
    best: Path | None,
) -> ModelMetadata:
    init = getattr(model, "init_info", {}) or {}
    raw = info.raw
    training = {
        "dataset": str(dataset.resolve()),
        "dataset_params_hash": raw.get("params_hash"),
        "dataset_splits": raw.get("splits"),
        "scenes": [s.get("id") for s in raw.get("scenes", []) if isinstance(s, Mapping)],
        "chips": {"trn": n_trn, config.val_split: n_val},
        "epochs_trained": epochs,
        "best_checkpoint": best.name if best else None,
        "monitor": config.monitor,
        "best_epoch": _best_epoch(history, config.monitor, config.mode),
        "validation": {
            "split": config.val_split,
            "mean_iou": metrics.get("mean_iou"),
            "overall_accuracy": metrics.get("overall_accuracy"),
            "kappa": metrics.get("kappa"),
            "iou": {k: v["iou"] for k, v in metrics["per_class"].items()},
        },
        "class_weights": class_weights,
        "initialisation": {k: v for k, v in init.items() if k != "skipped"},
        "config": config.model_dump(mode="json"),
    }
    return ModelMetadata(
        arch=config.arch,
        encoder=config.encoder,
        model_kwargs=dict(config.model_kwargs),
        in_channels=in_ch,
        num_classes=out_ch,
        task=config.task,
        bands=list(info.bands),
        band_indexes=info.band_indexes,
        normalization=norm.to_dict(),
        schema=info.schema.to_dict(),
        chip_size=info.chip_size,
        gsd=info.gsd,
        crs_units=info.crs_units,
        input_dtype=info.dtype,
        input_nodata=info.nodata,
        threshold=config.threshold,
        training=json.loads(json.dumps(training, default=str)),
        versions=library_versions(),
    )


def _best_epoch(history: list[dict[str, float]], monitor: str, mode: str) -> int | None:
    vals = [(h["epoch"], h[monitor]) for h in history if monitor in h and np.isfinite(h[monitor])]
    if not vals:
        return None
    pick = max if mode == "max" else min
    return int(pick(vals, key=lambda t: t[1])[0])
