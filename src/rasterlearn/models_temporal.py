"""Change and time-series models over multi-date stacks (``T`` dates x ``C`` bands as ``T*C`` channels).

Two modes, both taking the same ``(batch, T*C, H, W)`` input as any model (bands date by date, as
:class:`rasterlearn.io.stack.StackReader` and multi-date chips give them), so training, prediction, the model
package and export need nothing new:

* ``early`` (early fusion): the dates are stacked as channels of a plain smp model with ``T*C`` inputs.
* ``siamese``: one smp/timm encoder with shared weights encodes every date; at every encoder stage the
  features are fused (``T = 2``: absolute difference ``|f_a - f_b|``; ``T > 2``: temporal mean pooling) and
  the architecture's own decoder and head map them to classes. Any registered architecture and encoder
  works, since the fused features have the shapes the decoder expects.

:func:`rasterlearn.models.create_model` builds them when given ``temporal=`` and ``timesteps=`` (the model
package stores both in ``model_kwargs``, so :func:`rasterlearn.models.load_package` rebuilds them).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from rasterlearn.errors import ConfigError, ModelError

__all__ = [
    "TEMPORAL_MODES",
    "SiameseChangeModel",
    "TemporalMode",
    "create_temporal_model",
    "model_timesteps",
    "temporal_model_kwargs",
]

log = logging.getLogger(__name__)

TemporalMode = Literal["early", "siamese"]
TEMPORAL_MODES: tuple[str, ...] = ("early", "siamese")


class SiameseChangeModel(nn.Module):
    """A shared encoder applied to every date, stage-wise fusion, and the wrapped model's decoder and head.

    Args:
        net: an smp segmentation model built for ``C`` input channels (one date).
        timesteps: number of dates ``T``; inputs have ``T*C`` channels, date by date.
    """

    def __init__(self, net: nn.Module, timesteps: int) -> None:
        super().__init__()
        if timesteps < 2:
            raise ModelError(f"A siamese model needs at least two dates; got timesteps={timesteps}")
        self.net = net
        self.timesteps = int(timesteps)

    @property
    def encoder(self) -> nn.Module:
        """The shared encoder (so encoder freezing works as for single-date models)."""
        net: Any = self.net
        enc: nn.Module = net.encoder
        return enc

    def fuse(self, features: Sequence[torch.Tensor], batch: int) -> list[torch.Tensor]:
        """Per stage: ``|f_0 - f_1|`` for two dates, the mean over dates otherwise."""
        out = []
        for f in features:
            f = f.reshape(self.timesteps, batch, *f.shape[1:])
            out.append((f[0] - f[1]).abs() if self.timesteps == 2 else f.mean(dim=0))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, tc, h, w = x.shape
        t = self.timesteps
        if tc % t:
            raise ModelError(f"Input has {tc} channels, not a multiple of the model's {t} dates")
        # (b, t*c, h, w) -> (t*b, c, h, w): one encoder pass over every date of every sample
        xs = x.reshape(b, t, tc // t, h, w).transpose(0, 1).reshape(t * b, tc // t, h, w)
        net: Any = self.net
        if hasattr(net, "check_input_shape") and not torch.jit.is_tracing():
            net.check_input_shape(xs)
        feats = net.encoder(xs)
        masks: torch.Tensor = net.segmentation_head(net.decoder(self.fuse(feats, b)))
        return masks


def temporal_model_kwargs(
    model_kwargs: Mapping[str, Any], temporal: str | None, timesteps: int, source: str = "the dataset"
) -> dict[str, Any]:
    """Model arguments for data of ``timesteps`` dates: adds ``temporal`` and ``timesteps``.

    Multi-date data without a ``temporal`` choice gets early fusion (logged). A temporal mode on
    single-date data is a :class:`ConfigError`.
    """
    kw = dict(model_kwargs)
    temporal = temporal or kw.get("temporal")
    if timesteps <= 1:
        if temporal:
            raise ConfigError(
                f"--temporal {temporal} needs multi-date chips, but {source} has one date; create chips "
                f"with one --image per date (rasterlearn chips --image A.tif --image B.tif ...)"
            )
        return kw
    if temporal is None:
        log.info("%s has %d dates: stacked as channels (early fusion; --temporal siamese)", source, timesteps)
        temporal = "early"
    if temporal not in TEMPORAL_MODES:
        raise ConfigError(f"temporal must be one of {', '.join(TEMPORAL_MODES)}; got {temporal!r}")
    kw.update(temporal=temporal, timesteps=int(timesteps))
    return kw


def model_timesteps(model_kwargs: Mapping[str, Any]) -> int:
    """Number of dates a model package expects (1 for single-date models)."""
    return int(model_kwargs.get("timesteps", 1) or 1)


def create_temporal_model(
    arch: str,
    encoder: str,
    in_channels: int,
    classes: int,
    weights: str | Path | None = None,
    *,
    temporal: str,
    timesteps: int = 2,
    rgb_bands: Sequence[int] | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build an ``early`` or ``siamese`` model for ``in_channels = T*C`` inputs (see the module docstring).

    Other arguments are those of :func:`rasterlearn.models.create_model` (weights initialise the shared
    encoder of a siamese model, adapted to ``C`` bands).
    """
    from rasterlearn.models import create_model

    t = int(timesteps)
    if temporal not in TEMPORAL_MODES:
        raise ModelError(f"temporal must be one of {', '.join(TEMPORAL_MODES)}; got {temporal!r}")
    if t < 1 or in_channels % t:
        raise ModelError(
            f"{in_channels} input channels cannot be split into {t} dates of equal band count; check the "
            f"model's timesteps"
        )
    if temporal == "early":
        model = create_model(arch, encoder, in_channels, classes, weights, rgb_bands=rgb_bands, **kwargs)
        model.init_info = {**getattr(model, "init_info", {}), "temporal": "early", "timesteps": t}  # type: ignore[assignment]
        return model
    c = in_channels // t
    rgb = list(rgb_bands) if rgb_bands is not None and all(i < c for i in rgb_bands) else None
    net = create_model(arch, encoder, c, classes, weights, rgb_bands=rgb, **kwargs)
    model = SiameseChangeModel(net, t)
    model.init_info = {**getattr(net, "init_info", {}), "temporal": "siamese", "timesteps": t}  # type: ignore[assignment]
    return model
