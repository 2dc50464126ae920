"""Training and evaluation of segmentation models on chip folders (Lightning drives a module we own).

:func:`train` reads a chip folder (``rasterlearn chips``), builds a model from the registry, trains it with
:class:`SegmentationModule` under a Trainer from :func:`make_trainer` (CPU/GPU/MPS auto, bf16/fp16 mixed
precision on GPU, gradient clipping, seeding, deterministic option, DDP-ready), keeps the best checkpoint by
a validation metric plus the last one (``--resume`` continues exactly from it), and writes the *model
package* (``model.json`` + ``model.safetensors``) with validation metrics, curves, sample chips and an HTML
report beside it. :func:`evaluate_model` scores a package on a split of a chip folder.

Validation metrics come from a confusion matrix accumulated over the whole split (torchmetrics, ignore
index honoured), never from means of per-batch scores.
"""

from __future__ import annotations

import csv
import json
import logging
import random
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from rasterlearn._util import atomic_write, atomic_write_json, atomic_write_text, load_yaml, stable_hash
from rasterlearn.data import (
    AugmentConfig,
    ChipDataset,
    DatasetInfo,
    EpochSampler,
    augment_preset,
    default_workers,
    load_dataset_info,
)
from rasterlearn.diagnostics import annotate
from rasterlearn.errors import ConfigError, InputNotFoundError, ModelError, OutputError
from rasterlearn.imbalance import balanced_sampler, resolve_imbalance
from rasterlearn.io.paths import check_outputs, output_lock
from rasterlearn.losses import build_loss
from rasterlearn.metrics import binary_foreground, metrics_from_confusion, metrics_table
from rasterlearn.models import (
    ChannelStrategy,
    ModelMetadata,
    check_chip_size,
    create_model,
    freeze_encoder,
    library_versions,
    load_package,
    rgb_band_indexes,
    save_package,
)
from rasterlearn.models_temporal import temporal_model_kwargs
from rasterlearn.train_checks import after_training, attach_stored_baseline
from rasterlearn.train_loggers import build_logger, is_global_zero

__all__ = [
    "SegmentationModule",
    "TrainConfig",
    "TrainResult",
    "evaluate_model",
    "load_train_config",
    "make_trainer",
    "train",
]

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
# config fields that may change when resuming (everything else must match the checkpoint's run)
_RESUMABLE_CHANGES = {
    "epochs",
    "num_workers",
    "early_stopping_patience",
    "accelerator",
    "devices",
    "strategy",
    "num_nodes",
    "logger",
    "sample_chips",
    "limit_val_batches",
    "mlflow_experiment",
    "run_name",
    "baseline",
    "baseline_samples",
}


class TrainConfig(BaseModel):
    """All training options (YAML ``--config`` files use these keys; unknown keys are errors)."""

    model_config = ConfigDict(extra="forbid")

    # model
    arch: str = "unet"
    encoder: str = "resnet18"
    model_kwargs: dict[str, Any] = Field(default_factory=dict, description="extra architecture arguments")
    pretrained: str | None = Field(
        default=None, description="pretrained encoder weights name, e.g. 'imagenet' (downloads)"
    )
    weights: str | None = Field(
        default=None, description="local checkpoint: .safetensors/.pt/.ckpt or a model package"
    )
    channel_strategy: ChannelStrategy = "repeat"
    temporal: Literal["early", "siamese"] | None = Field(
        default=None,
        description="multi-date chips: 'early' (dates stacked as channels, the default) or 'siamese' "
        "(shared encoder per date, feature differencing)",
    )
    task: Literal["multiclass", "binary"] = "multiclass"
    threshold: float = Field(default=0.5, gt=0, lt=1, description="binary decision threshold on the sigmoid")
    freeze_encoder_epochs: int = Field(
        default=0, ge=0, description="train only the decoder for the first N epochs"
    )
    # loss
    loss: str | dict[str, float] = Field(
        default="auto", description="'auto' = ce+dice when imbalanced, else ce (rasterlearn.imbalance)"
    )
    loss_params: dict[str, dict[str, Any]] = Field(default_factory=dict)
    class_weights: Literal["auto", "none", "inverse", "inverse_sqrt", "median"] | list[float] = "auto"
    sampler: Literal["shuffle", "balanced"] = Field(
        default="shuffle", description="balanced: draw chips holding rare classes more often"
    )
    baseline: bool = Field(default=True, description="fit and compare the per-pixel random forest baseline")
    baseline_samples: int = Field(default=100_000, ge=100, description="trn pixels the baseline is fitted on")
    # optimisation
    optimizer: Literal["adamw", "adam", "sgd"] = "adamw"
    lr: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=1e-4, ge=0)
    momentum: float = Field(default=0.9, ge=0)
    scheduler: Literal["none", "cosine", "onecycle", "plateau", "step"] = "cosine"
    step_size: int = Field(default=10, ge=1, description="epochs between LR drops (step)")
    gamma: float = Field(default=0.1, gt=0, description="LR factor (step, plateau)")
    plateau_patience: int = Field(default=3, ge=0)
    min_lr: float = Field(default=0.0, ge=0)
    epochs: int = Field(default=20, ge=0, description="0 = evaluate the (given) model only")
    batch_size: int = Field(default=8, ge=1)
    accumulate_grad_batches: int = Field(default=1, ge=1)
    gradient_clip: float | None = Field(default=1.0, description="clip the gradient norm (None = off)")
    # data
    augment: Literal["none", "flips", "geometric", "full"] | AugmentConfig = "flips"
    normalization: Literal["dataset", "zscore", "percentile", "minmax"] = "dataset"
    val_split: Literal["val", "tst"] = "val"
    num_workers: int | None = Field(default=None, ge=0, description="DataLoader workers (None = auto)")
    # checkpoints, stopping, logging
    monitor: str = Field(
        default="val/miou", description="metric choosing the best checkpoint, e.g. val/miou, val/loss"
    )
    monitor_mode: Literal["max", "min"] | None = None
    early_stopping_patience: int | None = Field(default=None, ge=1)
    logger: Literal["csv", "tensorboard", "mlflow"] = "csv"
    mlflow_experiment: str = Field(default="rasterlearn", description="MLflow experiment name")
    run_name: str | None = Field(default=None, description="MLflow run name (None = MLflow's own)")
    sample_chips: int = Field(default=6, ge=0, description="validation chips drawn in the report")
    # hardware and reproducibility
    accelerator: str = "auto"
    devices: int | str = "auto"
    strategy: str = Field(default="auto", description="Lightning strategy: auto, ddp, ddp_spawn, fsdp, ...")
    num_nodes: int = Field(default=1, ge=1, description="machines of a distributed run (Lightning num_nodes)")
    precision: Literal["auto", "32", "bf16-mixed", "16-mixed"] = "auto"
    seed: int = 42
    deterministic: bool = False
    limit_train_batches: float | int = 1.0
    limit_val_batches: float | int = 1.0

    @field_validator("loss")
    @classmethod
    def _check_loss(cls, v: Any) -> Any:
        if v != "auto":
            build_loss(v)  # raises ConfigError naming the valid losses
        return v

    @property
    def mode(self) -> Literal["max", "min"]:
        if self.monitor_mode:
            return self.monitor_mode
        return "min" if self.monitor.endswith("loss") else "max"

    def augment_config(self) -> AugmentConfig:
        return self.augment if isinstance(self.augment, AugmentConfig) else augment_preset(self.augment)

    def fingerprint(self) -> str:
        d = {k: v for k, v in self.model_dump(mode="json").items() if k not in _RESUMABLE_CHANGES}
        if d.get("temporal") is None:  # single-date runs keep the fingerprint they had before the option
            d.pop("temporal", None)
        return stable_hash(d)


def load_train_config(path: str | Path | None = None, **overrides: Any) -> TrainConfig:
    """A :class:`TrainConfig` from a YAML file (optional) with keyword overrides (``None`` = not given)."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.exists():
            raise InputNotFoundError(f"Training config not found: {p}")
        loaded = load_yaml(p) or {}
        if not isinstance(loaded, Mapping):
            raise ConfigError(f"{p} must hold a mapping of training options")
        data.update(loaded)
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return TrainConfig(**data)
    except ValidationError as exc:
        msgs = "; ".join(f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"Invalid training options{f' in {path}' if path else ''}: {msgs}") from exc


# ---------------------------------------------------------------------------------------------------
# The LightningModule
# ---------------------------------------------------------------------------------------------------
def _lightning() -> Any:
    import lightning.pytorch as pl

    _quiet_lightning()
    return pl


def _quiet_lightning() -> None:
    """Silence Lightning's start-up banner ("GPU available ..."), tips and ``limit_*_batches`` notices: they
    are INFO lines of its own loggers. Kept with ``-v`` (our logger at DEBUG)."""
    if logging.getLogger("rasterlearn").isEnabledFor(logging.DEBUG):
        return
    for name in ("lightning.pytorch", "lightning.fabric", "lightning_fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # a deprecation between Lightning and torch, printed on every logged metric; nothing a user can change
    warnings.filterwarnings(
        "ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning
    )


def _module_base() -> type:
    return _lightning().LightningModule


class SegmentationModule(_module_base()):  # type: ignore[misc]
    """Our LightningModule: a segmentation network, a loss, whole-split confusion-matrix metrics.

    Args:
        model: the network (from :func:`rasterlearn.models.create_model`).
        config: the training options.
        class_names: names of the classes (schema order).
        ignore_index: target value skipped by loss and metrics.
        class_weights: per-class loss weights (or ``None``).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        config: TrainConfig,
        class_names: Sequence[str],
        ignore_index: int = 255,
        class_weights: Sequence[float] | None = None,
        loss: str | Mapping[str, float] | None = None,
    ) -> None:
        super().__init__()
        from torchmetrics.classification import MulticlassConfusionMatrix

        self.model = model
        self.config = config
        self.class_names = list(class_names)
        self.ignore_index = int(ignore_index)
        self.binary = config.task == "binary"
        self.num_eval_classes = len(self.class_names)
        self.loss_fn = build_loss(
            loss if loss is not None else config.loss,
            ignore_index=self.ignore_index,
            class_weights=class_weights,
            params=config.loss_params,
        )
        self.val_confmat = MulticlassConfusionMatrix(
            self.num_eval_classes, ignore_index=self.ignore_index, validate_args=False
        )
        self.history: list[dict[str, float]] = []
        self.last_metrics: dict[str, Any] | None = None
        self._train_loss_sum = 0.0
        self._train_loss_n = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def predict_classes(self, logits: torch.Tensor) -> torch.Tensor:
        if self.binary:
            return binary_foreground(torch.sigmoid(logits[:, 0].float()), self.config.threshold).long()
        return logits.argmax(dim=1)

    # -- training -------------------------------------------------------------------------------
    def on_train_epoch_start(self) -> None:
        n = self.config.freeze_encoder_epochs
        if n and self.current_epoch < n:
            freeze_encoder(self.model, True)
            log.info("Epoch %d: encoder frozen (decoder only until epoch %d)", self.current_epoch, n)
        elif n and not next(self.model.get_submodule("encoder").parameters()).requires_grad:
            freeze_encoder(self.model, False)
            self.model.get_submodule("encoder").train()
            log.info("Epoch %d: encoder unfrozen", self.current_epoch)
        self._train_loss_sum, self._train_loss_n = 0.0, 0

    def training_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        logits = self.model(batch["image"])
        loss = self.loss_fn(logits, batch["mask"])
        if not torch.isfinite(loss):
            raise ModelError(
                f"Training loss became {loss.item()} at epoch {self.current_epoch}, batch "
                f"{batch_idx}: lower --lr, enable gradient clipping, or check the normalization"
            )
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(logits))
        self._train_loss_sum += float(loss.detach()) * len(logits)
        self._train_loss_n += len(logits)
        return loss

    # -- validation -----------------------------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        self.val_confmat.reset()

    def validation_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        logits = self.model(batch["image"])
        loss = self.loss_fn(logits, batch["mask"])
        self.val_confmat.update(self.predict_classes(logits), batch["mask"])
        self.log(
            "val/loss",
            loss,
            on_step=False,
            on_epoch=True,
            prog_bar=True,
            batch_size=len(logits),
            sync_dist=True,
        )
        return loss

    def on_validation_epoch_end(self) -> None:
        cm = self.val_confmat.compute().detach().cpu().numpy().astype("int64")
        m = metrics_from_confusion(cm, self.class_names)
        self.last_metrics = m
        values = {
            "val/miou": m["mean_iou"],
            "val/mean_f1": m["mean_f1"],
            "val/oa": m["overall_accuracy"],
            "val/kappa": m["kappa"],
        }
        for name, pc in m["per_class"].items():
            values[f"val/iou_{name}"] = pc["iou"]
            values[f"val/f1_{name}"] = pc["f1"]
        clean = {k: float("nan") if v is None else float(v) for k, v in values.items()}
        self.log("val/miou", clean.pop("val/miou"), prog_bar=True)
        self.log_dict(clean, prog_bar=False)
        clean = {"val/miou": float("nan") if m["mean_iou"] is None else float(m["mean_iou"]), **clean}
        if self.trainer.sanity_checking:
            return
        row: dict[str, float] = {"epoch": float(self.current_epoch)}
        if self._train_loss_n:
            row["train/loss"] = self._train_loss_sum / self._train_loss_n
        vl = self.trainer.callback_metrics.get("val/loss")
        if vl is not None:
            row["val/loss"] = float(vl)
        row.update(clean)
        if self.trainer.optimizers:
            row["lr"] = float(self.trainer.optimizers[0].param_groups[0]["lr"])
        self.history = [h for h in self.history if h["epoch"] != row["epoch"]] + [row]

    # -- optimisation ---------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        c = self.config
        params = list(self.model.parameters())
        opt: torch.optim.Optimizer
        sched: torch.optim.lr_scheduler.LRScheduler
        if c.optimizer == "adamw":
            opt = torch.optim.AdamW(params, lr=c.lr, weight_decay=c.weight_decay)
        elif c.optimizer == "adam":
            opt = torch.optim.Adam(params, lr=c.lr, weight_decay=c.weight_decay)
        else:
            opt = torch.optim.SGD(
                params, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay, nesterov=True
            )
        if c.scheduler == "none":
            return opt
        if c.scheduler == "cosine":
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, c.epochs), eta_min=c.min_lr)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}
        if c.scheduler == "step":
            sched = torch.optim.lr_scheduler.StepLR(opt, step_size=c.step_size, gamma=c.gamma)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}
        if c.scheduler == "onecycle":
            total = int(self.trainer.estimated_stepping_batches)
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=c.lr, total_steps=max(1, total))
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, mode=c.mode, factor=c.gamma, patience=c.plateau_patience, min_lr=c.min_lr
        )
        return {
            "optimizer": opt,
            "lr_scheduler": {"scheduler": sched, "monitor": c.monitor, "interval": "epoch"},
        }

    # -- exact resume: RNG states and history travel in the checkpoint ---------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        np_state = np.random.get_state(legacy=True)
        if not isinstance(np_state, tuple):  # the legacy global generator is always MT19937
            raise ModelError(f"Unexpected numpy RNG state {type(np_state).__name__}; cannot checkpoint it")
        checkpoint["rasterlearn"] = {
            "config": self.config.model_dump(mode="json"),
            "fingerprint": self.config.fingerprint(),
            "history": [dict(h) for h in self.history],
            "rng_torch": torch.get_rng_state(),
            "rng_numpy": torch.from_numpy(np.asarray(np_state[1], dtype="int64")),
            "rng_numpy_pos": int(np_state[2]),
            "rng_python": repr(random.getstate()),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        extra = checkpoint.get("rasterlearn") or {}
        self.history = [dict(h) for h in extra.get("history", [])]
        if "rng_torch" in extra:
            torch.set_rng_state(extra["rng_torch"])
            np.random.set_state(
                ("MT19937", extra["rng_numpy"].numpy().astype("uint32"), extra["rng_numpy_pos"], 0, 0.0)
            )
            import ast

            state = ast.literal_eval(extra["rng_python"])
            random.setstate(state)


# ---------------------------------------------------------------------------------------------------
# Trainer factory
# ---------------------------------------------------------------------------------------------------
def resolve_precision(precision: str, accelerator: str = "auto") -> str:
    """``auto``: bf16-mixed on GPUs that support it, else 16-mixed on CUDA, 32-true on CPU/MPS."""
    if precision != "auto":
        return "32-true" if precision == "32" else precision
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


def make_trainer(
    config: TrainConfig,
    out_dir: str | Path,
    *,
    callbacks: Sequence[Any] = (),
    progress_bar: bool = False,
    progress: Callable[[int], None] | None = None,
    resume_ckpt: Path | None = None,
) -> Any:
    """A Lightning Trainer for ``config`` writing checkpoints and logs under ``out_dir``.

    Best checkpoint (``checkpoints/best.ckpt``) by ``config.monitor`` and the last one (``last.ckpt``);
    early stopping when ``early_stopping_patience`` is set; CSV logs in ``logs/`` (TensorBoard/MLflow when
    asked and installed; see :mod:`rasterlearn.train_loggers`); ``progress`` is called once per finished
    epoch. ``resume_ckpt``: the checkpoint a resumed run starts from (its earlier CSV log rows are kept).
    """
    pl = _lightning()
    from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint

    out_dir = Path(out_dir)
    cbs: list[Any] = [
        ModelCheckpoint(
            dirpath=out_dir / CHECKPOINT_DIR,
            filename="best",
            monitor=config.monitor,
            mode=config.mode,
            save_top_k=1,
            save_last=True,
            auto_insert_metric_name=False,
            enable_version_counter=False,
        ),
    ]
    if config.early_stopping_patience:
        cbs.append(
            EarlyStopping(
                monitor=config.monitor,
                mode=config.mode,
                patience=config.early_stopping_patience,
                check_finite=False,
            )
        )
    if progress is not None:
        cbs.append(_EpochProgress(progress))
    if progress_bar:
        from lightning.pytorch.callbacks import RichProgressBar

        cbs.append(RichProgressBar())
    logger = build_logger(
        config.logger,
        out_dir,
        resume_ckpt=resume_ckpt,
        experiment=config.mlflow_experiment,
        run_name=config.run_name,
    )
    if (
        any(cb.__class__.__name__ == "LearningRateMonitor" for cb in callbacks) is False
        and config.scheduler != "none"
    ):
        cbs.append(LearningRateMonitor(logging_interval="epoch"))
    cbs.extend(callbacks)
    precision = resolve_precision(config.precision, config.accelerator)
    return pl.Trainer(
        accelerator=config.accelerator,
        devices=config.devices,
        strategy=config.strategy,
        num_nodes=config.num_nodes,
        precision=precision,
        max_epochs=config.epochs,
        gradient_clip_val=config.gradient_clip,
        deterministic=config.deterministic,
        accumulate_grad_batches=config.accumulate_grad_batches,
        callbacks=cbs,
        logger=logger,
        default_root_dir=str(out_dir),
        num_sanity_val_steps=0,
        enable_progress_bar=progress_bar,
        enable_model_summary=False,
        log_every_n_steps=1,
        limit_train_batches=config.limit_train_batches,
        limit_val_batches=config.limit_val_batches,
    )


class _EpochProgress(_lightning().Callback):  # type: ignore[misc]
    def __init__(self, progress: Callable[[int], None]) -> None:
        self.progress = progress

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        self.progress(1)


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


def _auto_workers(requested: int | None, accelerator: str = "auto") -> int:
    """DataLoader workers: as requested, else :func:`rasterlearn.data.default_workers` for the device."""
    if requested is not None:
        return requested
    gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    return default_workers("gpu" if gpu else "cpu")


def _loader(
    ds: ChipDataset, batch_size: int, workers: int, *, train: bool, seed: int, sampler: Any = None
) -> torch.utils.data.DataLoader:
    from torch.utils.data import DataLoader

    if sampler is None and train:
        sampler = EpochSampler(len(ds), shuffle=True, seed=seed)
    return DataLoader(
        ds,
        batch_size=batch_size,
        sampler=sampler,
        shuffle=False,
        num_workers=workers,
        drop_last=train and len(ds) > batch_size,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=workers > 0,
    )


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

    ckpt_dir = out_dir / CHECKPOINT_DIR
    last = ckpt_dir / "last.ckpt"
    ckpt_path: Path | None = None
    if last.exists() and resume:
        _check_resumable(last, config)
        ckpt_path = last
        log.info("Resuming from %s", last)
    elif resume:
        raise InputNotFoundError(f"Nothing to resume: {last} does not exist (run without --resume first)")
    elif ckpt_dir.exists() and any(ckpt_dir.glob("*.ckpt")) and not overwrite:
        raise OutputError(
            f"{out_dir} already holds checkpoints of a training run; use --resume to continue it or "
            f"--overwrite to start again"
        )
    elif overwrite and ckpt_dir.exists():
        for f in ckpt_dir.glob("*.ckpt"):
            f.unlink()

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
    out_dir.mkdir(parents=True, exist_ok=True)
    if is_global_zero():
        atomic_write_text(
            out_dir / "train_config.yaml", yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
        )
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

    trainer = make_trainer(
        config,
        out_dir,
        callbacks=callbacks,
        progress_bar=progress_bar,
        progress=progress,
        resume_ckpt=ckpt_path,
    )
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


def _fmt(v: Any) -> str:
    try:
        return f"{float(v):.4f}"
    except (TypeError, ValueError):
        return str(v)


def _check_resumable(last: Path, config: TrainConfig) -> None:
    ckpt = torch.load(str(last), map_location="cpu", weights_only=True)
    extra = ckpt.get("rasterlearn") or {}
    if extra.get("fingerprint") and extra["fingerprint"] != config.fingerprint():
        old = extra.get("config", {})
        new = config.model_dump(mode="json")
        diff = sorted(
            k for k in set(old) | set(new) if old.get(k) != new.get(k) and k not in _RESUMABLE_CHANGES
        )
        raise ConfigError(
            f"Cannot resume from {last}: options differ from that run ({', '.join(diff)}). Use the same "
            f"options, or --overwrite to start again."
        )


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
