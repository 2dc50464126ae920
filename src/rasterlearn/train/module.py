"""The LightningModule: a segmentation network, a loss, whole-split confusion-matrix metrics."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from rasterlearn.errors import ModelError
from rasterlearn.losses import build_loss
from rasterlearn.metrics import binary_foreground, metrics_from_confusion
from rasterlearn.models import (
    freeze_encoder,
)
from rasterlearn.train.config import TrainConfig
from rasterlearn.train.optim import _lightning, optimizers_for
from rasterlearn.train.resume import load_resume_state, save_resume_state

# one logger for the whole package, as before the split
log = logging.getLogger("rasterlearn.train")


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
        return optimizers_for(self)

    # -- exact resume: RNG states and history travel in the checkpoint ---------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        save_resume_state(self, checkpoint)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        load_resume_state(self, checkpoint)
