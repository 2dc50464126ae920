"""Training options: :class:`TrainConfig` and :func:`load_train_config`."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from rasterlearn._util import load_yaml
from rasterlearn.data import (
    AugmentConfig,
    augment_preset,
)
from rasterlearn.engine import journal
from rasterlearn.errors import ConfigError, InputNotFoundError
from rasterlearn.losses import build_loss
from rasterlearn.models import (
    ChannelStrategy,
)

CHECKPOINT_DIR = "checkpoints"


class TrainConfig(BaseModel):
    """All training options (YAML ``--config`` files use these keys; unknown keys are errors)."""

    model_config = ConfigDict(extra="forbid")

    output_neutral: ClassVar[frozenset[str]] = frozenset({"num_workers", "sample_chips"})
    """Options that cannot change the trained model or its report's figures: left out of the pipeline's
    train stage hash (:mod:`rasterlearn.engine.journal`)."""
    extendable: ClassVar[str] = "epochs"
    """The option a finished run can be extended by: raised, training resumes from its last checkpoint."""
    resume_neutral: ClassVar[frozenset[str]] = frozenset(
        {
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
    )
    """Options that may change when a run is resumed (``train --resume``): left out of :meth:`fingerprint`,
    which the checkpoint records; everything else must match that run's."""

    @classmethod
    def neutral_fields(cls) -> frozenset[str]:
        """:attr:`output_neutral`, as on the stage options models (:mod:`rasterlearn.options`)."""
        return cls.output_neutral

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
        """The journal's fingerprint of the options a resumed run must share (less :attr:`resume_neutral`)."""
        d = self.model_dump(mode="json")
        if d.get("temporal") is None:  # single-date runs keep the fingerprint they had before the option
            d.pop("temporal", None)
        return journal.fingerprint(d, neutral=self.resume_neutral)


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
