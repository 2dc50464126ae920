"""Segmentation losses that honour an ignore index, for multiclass (softmax) and binary (sigmoid) models.

Every loss takes ``logits`` ``(N, C, H, W)`` and an integer ``target`` ``(N, H, W)`` of contiguous class
indices, where pixels equal to ``ignore_index`` (nodata, unlabelled) contribute nothing. A binary model has
``C == 1`` and targets in ``{0, 1, ignore}``. Losses are built by name with :func:`build_loss`, e.g.
``"ce"``, ``"dice"``, ``"ce+dice"`` or ``{"ce": 1.0, "lovasz": 0.5}``; :func:`list_losses` names them all.
Class weights come from pixel counts with :func:`class_weights_from_counts`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rasterlearn.errors import ConfigError

__all__ = [
    "BCELoss",
    "CombinedLoss",
    "CrossEntropyLoss",
    "DiceLoss",
    "FocalLoss",
    "FocalTverskyLoss",
    "JaccardLoss",
    "LovaszLoss",
    "TverskyLoss",
    "build_loss",
    "class_weights_from_counts",
    "list_losses",
]

log = logging.getLogger(__name__)

ClassWeightMethod = Literal["none", "inverse", "inverse_sqrt", "median"]


class _SegLoss(nn.Module):
    """Base: stores ``ignore_index`` and optional per-class ``weight``; prepares probabilities."""

    weight: torch.Tensor | None  # non-persistent buffer (follows the module's device)

    def __init__(self, ignore_index: int = 255, weight: Sequence[float] | torch.Tensor | None = None) -> None:
        super().__init__()
        self.ignore_index = int(ignore_index)
        w = None if weight is None else torch.as_tensor(weight, dtype=torch.float32)
        self.register_buffer("weight", w, persistent=False)

    def _valid(self, target: torch.Tensor) -> torch.Tensor:
        return target != self.ignore_index

    def _probs_onehot(
        self, logits: torch.Tensor, target: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(probs, onehot, valid) as (N, K, P), (N, K, P), (N, 1, P); binary models use K = 1 (foreground)."""
        n, c = logits.shape[:2]
        logits = logits.float().reshape(n, c, -1)
        tgt = target.reshape(n, -1)
        valid = self._valid(tgt)
        safe = torch.where(valid, tgt, torch.zeros_like(tgt))
        if c == 1:
            probs = torch.sigmoid(logits)
            onehot = (safe == 1).unsqueeze(1).to(probs.dtype)
        else:
            probs = logits.softmax(dim=1)
            onehot = F.one_hot(safe.clamp(0, c - 1), c).permute(0, 2, 1).to(probs.dtype)
        v = valid.unsqueeze(1).to(probs.dtype)
        return probs * v, onehot * v, v

    def _class_mean(self, per_class: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """Mean over classes present in truth or prediction (weighted when class weights are set)."""
        w = present.to(per_class.dtype)
        if self.weight is not None and self.weight.numel() == per_class.numel():
            w = w * self.weight.to(per_class.device)
        if w.sum() == 0:
            return per_class.sum() * 0.0
        return (per_class * w).sum() / w.sum()


class CrossEntropyLoss(_SegLoss):
    """Cross-entropy with class weights, ignore index and label smoothing (BCE for 1-channel models)."""

    def __init__(
        self,
        ignore_index: int = 255,
        weight: Sequence[float] | torch.Tensor | None = None,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__(ignore_index, weight)
        self.label_smoothing = float(label_smoothing)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if logits.shape[1] == 1:
            return _masked_bce(logits, target, self.ignore_index, self.weight, self.label_smoothing)
        if not self._valid(target).any():
            return logits.sum() * 0.0
        w = None if self.weight is None else self.weight.to(logits.device)
        return F.cross_entropy(
            logits.float(),
            target.long(),
            weight=w,
            ignore_index=self.ignore_index,
            label_smoothing=self.label_smoothing,
        )


def _masked_bce(
    logits: torch.Tensor,
    target: torch.Tensor,
    ignore_index: int,
    weight: torch.Tensor | None,
    smoothing: float = 0.0,
) -> torch.Tensor:
    valid = target != ignore_index
    if not valid.any():
        return logits.sum() * 0.0
    x = logits[:, 0].float()[valid]
    y = (target[valid] == 1).float()
    if smoothing:
        y = y * (1 - smoothing) + 0.5 * smoothing
    pos_weight = None
    if weight is not None and weight.numel() == 2:  # [background, foreground] class weights
        pos_weight = (weight[1] / weight[0].clamp_min(1e-12)).to(x.device)
    elif weight is not None and weight.numel() == 1:
        pos_weight = weight.to(x.device)
    return F.binary_cross_entropy_with_logits(x, y, pos_weight=pos_weight)


class BCELoss(_SegLoss):
    """Binary cross-entropy on a 1-channel (sigmoid) model; ``weight`` = [background, foreground]."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if logits.shape[1] != 1:
            raise ConfigError("the 'bce' loss needs a binary model with 1 output channel (task 'binary')")
        return _masked_bce(logits, target, self.ignore_index, self.weight)


class FocalLoss(_SegLoss):
    """Focal loss ``-(1-p_t)^gamma log p_t`` (Lin 2017); ``weight`` acts as the per-class alpha."""

    def __init__(
        self,
        ignore_index: int = 255,
        weight: Sequence[float] | torch.Tensor | None = None,
        gamma: float = 2.0,
    ) -> None:
        super().__init__(ignore_index, weight)
        self.gamma = float(gamma)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        valid = self._valid(target)
        if not valid.any():
            return logits.sum() * 0.0
        safe = torch.where(valid, target, torch.zeros_like(target)).long()
        lg = logits.float()
        if lg.shape[1] == 1:
            y = (safe == 1).float()
            logp_pos = F.logsigmoid(lg[:, 0])
            logp_neg = F.logsigmoid(-lg[:, 0])
            logpt = torch.where(y > 0, logp_pos, logp_neg)
        else:
            logpt = lg.log_softmax(dim=1).gather(1, safe.unsqueeze(1)).squeeze(1)
        loss = -((1 - logpt.exp()).clamp_min(0) ** self.gamma) * logpt
        if self.weight is not None:
            w = self.weight.to(loss.device)
            idx = safe if lg.shape[1] > 1 or w.numel() == 2 else torch.zeros_like(safe)
            loss = loss * w[idx.clamp(0, w.numel() - 1)]
        return loss[valid].mean()


class _OverlapLoss(_SegLoss):
    """Base of the soft overlap losses: a per-class term over the batch, averaged over present classes."""

    def __init__(
        self,
        ignore_index: int = 255,
        weight: Sequence[float] | torch.Tensor | None = None,
        smooth: float = 1.0,
    ) -> None:
        super().__init__(ignore_index, weight)
        self.smooth = float(smooth)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        p, t, _ = self._probs_onehot(logits, target)
        return self._class_mean(self._per_class(p, t), t.sum(dim=(0, 2)) > 0)

    def _per_class(self, p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Loss per class ``(K,)`` from probabilities and one-hot truth ``(N, K, P)`` (invalid pixels 0)."""
        raise NotImplementedError


class DiceLoss(_OverlapLoss):
    """Soft Dice loss ``1 - 2|P∩T| / (|P|+|T|)`` per class over the batch, averaged over present classes."""

    def _per_class(self, p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        inter = (p * t).sum(dim=(0, 2))
        card = p.sum(dim=(0, 2)) + t.sum(dim=(0, 2))
        dice = (2 * inter + self.smooth) / (card + self.smooth)
        return 1 - dice


class JaccardLoss(_OverlapLoss):
    """Soft Jaccard (IoU) loss ``1 - |P∩T| / |P or T|`` per class, averaged over present classes."""

    def _per_class(self, p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        inter = (p * t).sum(dim=(0, 2))
        union = p.sum(dim=(0, 2)) + t.sum(dim=(0, 2)) - inter
        iou = (inter + self.smooth) / (union + self.smooth)
        return 1 - iou


class TverskyLoss(_OverlapLoss):
    """Tversky loss (Salehi 2017): ``alpha`` weighs false positives, ``beta`` false negatives."""

    def __init__(
        self,
        ignore_index: int = 255,
        weight: Sequence[float] | torch.Tensor | None = None,
        alpha: float = 0.3,
        beta: float = 0.7,
        smooth: float = 1.0,
        gamma: float = 1.0,
    ) -> None:
        super().__init__(ignore_index, weight, smooth)
        self.alpha, self.beta, self.gamma = float(alpha), float(beta), float(gamma)

    def _per_class(self, p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        tp = (p * t).sum(dim=(0, 2))
        fp = (p * (1 - t)).sum(dim=(0, 2))
        fn = ((1 - p) * t).sum(dim=(0, 2))
        ti = (tp + self.smooth) / (tp + self.alpha * fp + self.beta * fn + self.smooth)
        return (1 - ti).clamp_min(0) ** self.gamma


class FocalTverskyLoss(TverskyLoss):
    """Focal Tversky loss (Abraham 2019): Tversky loss raised to ``gamma`` (default 0.75)."""

    def __init__(
        self,
        ignore_index: int = 255,
        weight: Sequence[float] | torch.Tensor | None = None,
        alpha: float = 0.3,
        beta: float = 0.7,
        smooth: float = 1.0,
        gamma: float = 0.75,
    ) -> None:
        super().__init__(ignore_index, weight, alpha, beta, smooth, gamma)


def _lovasz_grad(gt_sorted: torch.Tensor) -> torch.Tensor:
    gts = gt_sorted.sum()
    intersection = gts - gt_sorted.cumsum(0)
    union = gts + (1 - gt_sorted).cumsum(0)
    jaccard = 1.0 - intersection / union
    if gt_sorted.numel() > 1:
        jaccard[1:] = jaccard[1:] - jaccard[:-1]
    return jaccard


class LovaszLoss(_SegLoss):
    """Lovász-softmax (Berman 2018): a convex surrogate of the Jaccard index, over the whole batch.

    Binary models use the Lovász hinge on the foreground logit.
    """

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        c = logits.shape[1]
        tgt = target.reshape(-1)
        valid = self._valid(tgt)
        if not valid.any():
            return logits.sum() * 0.0
        lg = logits.float().permute(0, 2, 3, 1).reshape(-1, c)[valid]
        tgt = tgt[valid].long()
        if c == 1:
            signs = 2.0 * (tgt == 1).float() - 1.0
            errors = 1.0 - lg[:, 0] * signs
            errors_sorted, perm = torch.sort(errors, descending=True)
            grad = _lovasz_grad((tgt[perm] == 1).float())
            return torch.dot(F.relu(errors_sorted), grad)
        probs = lg.softmax(dim=1)
        losses, present = [], []
        for k in range(c):
            fg = (tgt == k).float()
            errors = (fg - probs[:, k]).abs()
            errors_sorted, perm = torch.sort(errors, descending=True)
            losses.append(torch.dot(errors_sorted, _lovasz_grad(fg[perm])))
            present.append(fg.sum() > 0)
        return self._class_mean(torch.stack(losses), torch.stack(present))


class CombinedLoss(nn.Module):
    """Weighted sum of losses, e.g. ``CE + Dice``; ``parts`` maps a name to ``(weight, loss)``."""

    def __init__(self, parts: Mapping[str, tuple[float, nn.Module]]) -> None:
        super().__init__()
        self.names = list(parts)
        self.weights = [float(w) for w, _ in parts.values()]
        self.losses = nn.ModuleList([m for _, m in parts.values()])

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        total = logits.sum() * 0.0
        for w, loss in zip(self.weights, self.losses, strict=True):
            total = total + w * loss(logits, target)
        return total


_LOSSES: dict[str, Callable[..., nn.Module]] = {
    "ce": CrossEntropyLoss,
    "bce": BCELoss,
    "focal": FocalLoss,
    "dice": DiceLoss,
    "jaccard": JaccardLoss,
    "tversky": TverskyLoss,
    "focal_tversky": FocalTverskyLoss,
    "lovasz": LovaszLoss,
}
_ALIASES = {
    "cross_entropy": "ce",
    "crossentropy": "ce",
    "iou": "jaccard",
    "focaltversky": "focal_tversky",
    "lovasz_softmax": "lovasz",
}


def list_losses() -> list[str]:
    """Names accepted by :func:`build_loss` (combine with ``+``, e.g. ``ce+dice``)."""
    return list(_LOSSES)


def build_loss(
    spec: str | Mapping[str, float] = "ce",
    *,
    ignore_index: int = 255,
    class_weights: Sequence[float] | None = None,
    params: Mapping[str, Mapping[str, Any]] | None = None,
) -> nn.Module:
    """Build a loss from a name (``"ce"``), a sum (``"ce+dice"``, ``"0.5*ce+dice"``) or ``{name: weight}``.

    Args:
        spec: loss name(s); see :func:`list_losses`.
        ignore_index: target value skipped everywhere.
        class_weights: per-class weights (used by ce, bce, focal; dice/jaccard/tversky/lovasz weigh their
            per-class terms with them).
        params: extra arguments per loss name, e.g. ``{"ce": {"label_smoothing": 0.1}, "focal": {"gamma": 2}}``.
    """
    parts: dict[str, float] = {}
    if isinstance(spec, str):
        for term in spec.replace(" ", "").split("+"):
            if not term:
                continue
            factor, _, name = term.rpartition("*")
            try:
                parts[name.lower()] = float(factor) if factor else 1.0
            except ValueError as exc:
                raise ConfigError(f"Bad loss term {term!r} in {spec!r}; write e.g. 'ce+0.5*dice'") from exc
    else:
        parts = {str(k).lower(): float(v) for k, v in spec.items()}
    if not parts:
        raise ConfigError(f"Empty loss specification {spec!r}; choose from {', '.join(_LOSSES)}")
    params = {(_ALIASES.get(k.lower(), k.lower())): dict(v) for k, v in (params or {}).items()}
    built: dict[str, tuple[float, nn.Module]] = {}
    for raw, w in parts.items():
        name = _ALIASES.get(raw, raw)
        if name not in _LOSSES:
            raise ConfigError(f"Unknown loss {raw!r}; choose from {', '.join(_LOSSES)} (combine with '+')")
        try:
            built[name] = (
                w,
                _LOSSES[name](ignore_index=ignore_index, weight=class_weights, **params.get(name, {})),
            )
        except TypeError as exc:
            raise ConfigError(f"Bad parameters for loss {name!r}: {exc}") from exc
    unknown = set(params) - set(built)
    if unknown:
        raise ConfigError(f"Loss parameters given for {sorted(unknown)}, which are not in the loss {spec!r}")
    if len(built) == 1 and next(iter(built.values()))[0] == 1.0:
        return next(iter(built.values()))[1]
    return CombinedLoss(built)


def class_weights_from_counts(
    counts: Sequence[float] | np.ndarray, method: ClassWeightMethod = "inverse", max_weight: float = 50.0
) -> list[float] | None:
    """Per-class loss weights from pixel counts (e.g. the manifest's ``px_<code>`` columns of the trn split).

    ``inverse``: ``total / (K * count)``; ``inverse_sqrt``: its square root; ``median``: median frequency
    balancing ``median(freq) / freq`` (Eigen & Fergus 2015). Classes without pixels get weight 0 (they cannot
    be learned; logged) and weights are capped at ``max_weight``. ``none`` returns ``None``.
    """
    if method == "none":
        return None
    c = np.asarray(counts, dtype="float64")
    if c.ndim != 1 or c.size == 0:
        raise ConfigError("class counts must be a non-empty 1-D list")
    present = c > 0
    if not present.any():
        raise ConfigError("no labelled pixels in the class counts; cannot compute class weights")
    freq = c / c.sum()
    w = np.zeros_like(freq)
    if method == "inverse":
        w[present] = 1.0 / (present.sum() * freq[present])
    elif method == "inverse_sqrt":
        w[present] = np.sqrt(1.0 / (present.sum() * freq[present]))
    elif method == "median":
        w[present] = np.median(freq[present]) / freq[present]
    else:
        raise ConfigError(
            f"class weight method must be none, inverse, inverse_sqrt or median; got {method!r}"
        )
    if (~present).any():
        log.warning(
            "Classes at positions %s have no training pixels: weight 0", np.flatnonzero(~present).tolist()
        )
    if (w > max_weight).any():
        log.info("Class weights capped at %g", max_weight)
    return [float(v) for v in np.minimum(w, max_weight)]
