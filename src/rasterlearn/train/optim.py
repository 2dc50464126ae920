"""How the optimisation runs: Lightning set-up, optimizer and learning-rate schedule, precision and the
Lightning Trainer (checkpoints, early stopping, loggers, progress)."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from rasterlearn.train.config import CHECKPOINT_DIR, TrainConfig
from rasterlearn.train_loggers import build_logger

if TYPE_CHECKING:
    from rasterlearn.train.module import SegmentationModule

# one logger for the whole package, as before the split
log = logging.getLogger("rasterlearn.train")


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


def optimizers_for(module: SegmentationModule) -> Any:
    """The optimizer and learning-rate schedule of ``module`` from its config (its ``configure_optimizers``)."""
    c = module.config
    params = list(module.model.parameters())
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
        total = int(module.trainer.estimated_stepping_batches)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=c.lr, total_steps=max(1, total))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, mode=c.mode, factor=c.gamma, patience=c.plateau_patience, min_lr=c.min_lr
    )
    return {
        "optimizer": opt,
        "lr_scheduler": {"scheduler": sched, "monitor": c.monitor, "interval": "epoch"},
    }


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
