"""Imbalance-aware training choices from the chip statistics: class weights, the loss, a balanced sampler.

Everything here reads the per-chip class pixel counts that ``rasterlearn chips`` already stores in
``manifest.csv`` (``px_<code>`` columns, trn split); nothing re-reads the chips.

The automatic rule (``loss: auto``, ``class_weights: auto``, the defaults):

* the data are **imbalanced** when the rarest class that has training pixels holds less than half of its
  fair share, i.e. its pixel frequency ``f_min < 0.5 / K`` (``K`` classes with pixels). A binary scene whose
  target covers 20 % of the pixels is imbalanced (0.20 < 0.25); five classes of 12-30 % each are not;
* imbalanced data get **CE + Dice** (``ce+dice``: the Dice term is a per-class mean, so a rare class counts
  as much as the common one) and **inverse square-root frequency class weights** ``sqrt(1 / (K f_c))``
  capped at :data:`AUTO_WEIGHT_CAP`;
* balanced data keep plain cross-entropy without weights.

``sampler: balanced`` draws training chips with replacement, each with probability proportional to its
rare-class content ``w_i = sum_c p_ic * r_c`` (``p_ic`` the share of class ``c`` among chip ``i``'s labelled
pixels, ``r_c = 1 / (K f_c)`` capped at :data:`SAMPLER_WEIGHT_CAP`): chips holding rare classes are drawn
more often (minority oversampling), an epoch keeps the same number of chips.

Each decision is logged and returned as a JSON-friendly record that :func:`rasterlearn.train.train` stores
in ``model.json`` (``training.imbalance``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import Sampler

from rasterlearn.errors import ConfigError, InputError
from rasterlearn.labels import ClassSchema
from rasterlearn.losses import class_weights_from_counts

__all__ = [
    "AUTO_WEIGHT_CAP",
    "IMBALANCE_SHARE",
    "SAMPLER_WEIGHT_CAP",
    "BalancedChipSampler",
    "ImbalanceChoice",
    "balanced_sampler",
    "chip_sampling_weights",
    "class_frequencies",
    "is_imbalanced",
    "resolve_imbalance",
]

log = logging.getLogger(__name__)

IMBALANCE_SHARE = 0.5  # imbalanced when the rarest class has < IMBALANCE_SHARE of its fair share 1/K
AUTO_WEIGHT_CAP = 10.0  # cap of the automatic inverse-sqrt class weights
SAMPLER_WEIGHT_CAP = 50.0  # cap of the per-class rarity used by the balanced sampler
AUTO_LOSS = "ce+dice"


@dataclass
class ImbalanceChoice:
    """What the imbalance logic decided (stored in the model package as ``training.imbalance``)."""

    loss: str | dict[str, float]
    class_weights: list[float] | None
    imbalanced: bool
    frequencies: dict[str, float]
    rule: str
    sampler: str = "shuffle"
    chip_weights: list[float] | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "loss": self.loss,
            "class_weights": self.class_weights,
            "imbalanced": self.imbalanced,
            "class_frequencies": self.frequencies,
            "rule": self.rule,
            "sampler": self.sampler,
        }
        if self.chip_weights is not None:
            w = np.asarray(self.chip_weights)
            d["sampler_weights"] = {
                "min": float(w.min()),
                "max": float(w.max()),
                "mean": float(w.mean()),
            }
        return d


def class_frequencies(counts: Sequence[float] | np.ndarray) -> np.ndarray:
    """Pixel frequency of each class (0 for classes without pixels); all zero when nothing is labelled."""
    c = np.asarray(counts, dtype="float64")
    total = c.sum()
    return c / total if total > 0 else np.zeros_like(c)


def is_imbalanced(counts: Sequence[float] | np.ndarray, share: float = IMBALANCE_SHARE) -> bool:
    """Whether the rarest class with pixels holds less than ``share`` of its fair share ``1/K``."""
    f = class_frequencies(counts)
    present = f[f > 0]
    if present.size < 2:
        return False
    return bool(present.min() < share / present.size)


def _explicit_weights(value: Any, schema: ClassSchema, counts: np.ndarray) -> list[float] | None:
    if isinstance(value, list):
        if len(value) != schema.num_classes:
            raise ConfigError(
                f"class_weights has {len(value)} values for {schema.num_classes} classes ({schema.describe()})"
            )
        return [float(v) for v in value]
    if value == "none":
        return None
    if counts.sum() == 0:
        raise InputError(
            "the manifest has no px_<code> class counts for the trn split; cannot compute class weights "
            "(set class_weights: none, or re-create the chips)"
        )
    return class_weights_from_counts(counts, value)


def resolve_imbalance(
    loss: str | Mapping[str, float],
    class_weights: str | list[float],
    schema: ClassSchema,
    counts: Sequence[float] | np.ndarray,
    *,
    task: str = "multiclass",
) -> ImbalanceChoice:
    """Decide the loss and the class weights from the trn pixel ``counts`` (schema order).

    ``loss="auto"`` and ``class_weights="auto"`` follow the module's rule; explicit values are kept (and
    still logged with the class frequencies, so a user sees the imbalance they chose to ignore).
    """
    c = np.asarray(counts, dtype="float64")
    freq = class_frequencies(c)
    imbalanced = is_imbalanced(c)
    present = int((c > 0).sum())
    names = schema.names
    frequencies = {n: round(float(f), 6) for n, f in zip(names, freq, strict=True)}
    fmin = float(freq[c > 0].min()) if present else 0.0
    rule = (
        f"imbalanced when the rarest class frequency < {IMBALANCE_SHARE:g}/K (K = {present} classes with "
        f"pixels: threshold {IMBALANCE_SHARE / max(present, 1):.3f}; rarest here {fmin:.4f}) -> "
        f"{AUTO_LOSS} + inverse-sqrt class weights capped at {AUTO_WEIGHT_CAP:g}; else ce, no weights"
    )
    if loss == "auto":
        chosen_loss: str | dict[str, float] = AUTO_LOSS if imbalanced else "ce"
    else:
        chosen_loss = loss if isinstance(loss, str) else dict(loss)
    if class_weights == "auto":
        weights = (
            class_weights_from_counts(c, "inverse_sqrt", max_weight=AUTO_WEIGHT_CAP)
            if imbalanced and c.sum() > 0
            else None
        )
    else:
        weights = _explicit_weights(class_weights, schema, c)
    choice = ImbalanceChoice(chosen_loss, weights, imbalanced, frequencies, rule)
    log.info(
        "Class frequencies (trn pixels): %s -> %s",
        ", ".join(f"{n} {100 * f:.1f} %" for n, f in frequencies.items()),
        "imbalanced" if imbalanced else "balanced enough",
    )
    log.info(
        "Loss %s%s, class weights %s%s",
        chosen_loss,
        " (auto)" if loss == "auto" else "",
        "none"
        if weights is None
        else ", ".join(f"{n}={w:.3g}" for n, w in zip(names, weights, strict=False)),
        " (auto)" if class_weights == "auto" else "",
    )
    if imbalanced and loss != "auto" and class_weights in ("none", "auto") and chosen_loss == "ce":
        log.warning(
            "The training pixels are imbalanced (rarest class %.2f %%) but the loss is plain 'ce': a rare "
            "class may never be predicted. Consider loss 'auto' (%s with class weights) or --sampler balanced.",
            100 * fmin,
            AUTO_LOSS,
        )
    if task == "binary" and weights is not None and len(weights) != 2:
        raise ConfigError(f"binary task needs 2 class weights (background, foreground); got {len(weights)}")
    return choice


def chip_sampling_weights(
    chip_counts: np.ndarray, cap: float = SAMPLER_WEIGHT_CAP
) -> tuple[np.ndarray, np.ndarray]:
    """Per-chip draw weights from a ``(chips, classes)`` pixel-count matrix, and the class rarities used.

    ``w_i = sum_c p_ic r_c`` with ``p_ic`` chip ``i``'s share of class ``c`` and ``r_c = 1/(K f_c)`` (capped);
    a chip without labelled pixels gets the smallest positive weight so that it can still be drawn.
    """
    m = np.asarray(chip_counts, dtype="float64")
    if m.ndim != 2 or m.shape[0] == 0:
        raise InputError("chip class counts must be a non-empty (chips, classes) matrix")
    totals = m.sum(axis=0)
    present = totals > 0
    if not present.any():
        raise InputError(
            "no chip of the trn split has labelled pixels in the manifest (px_<code> columns); "
            "the balanced sampler needs them (use --sampler shuffle or re-create the chips)"
        )
    freq = totals / totals.sum()
    rarity = np.zeros_like(freq)
    rarity[present] = np.minimum(1.0 / (present.sum() * freq[present]), cap)
    labelled = m.sum(axis=1)
    share = np.divide(m, labelled[:, None], out=np.zeros_like(m), where=labelled[:, None] > 0)
    w = share @ rarity
    floor = w[w > 0].min() if (w > 0).any() else 1.0
    return np.where(w > 0, w, floor), rarity


class BalancedChipSampler(Sampler):
    """Draws ``len(weights)`` chips per epoch with replacement, proportional to ``weights``.

    Yields ``(index, sample_seed)`` pairs like :class:`rasterlearn.data.EpochSampler` (draws seeded by
    ``seed + epoch``; Lightning calls :meth:`set_epoch`), so augmentation and resumes stay reproducible.
    """

    def __init__(self, weights: Sequence[float] | np.ndarray, *, seed: int = 0) -> None:
        w = torch.as_tensor(np.asarray(weights, dtype="float64"))
        if w.ndim != 1 or len(w) == 0 or not torch.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
            raise InputError("sampler weights must be a non-empty list of finite, non-negative numbers")
        self.weights = w
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.weights)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        n = len(self.weights)
        order = torch.multinomial(self.weights, n, replacement=True, generator=g)
        seeds = torch.randint(0, 2**62, (n,), generator=g)
        yield from zip(order.tolist(), seeds.tolist(), strict=True)


def balanced_sampler(
    rows: Sequence[Mapping[str, str]], schema: ClassSchema, *, seed: int = 0
) -> tuple[BalancedChipSampler, np.ndarray]:
    """A :class:`BalancedChipSampler` over manifest ``rows`` (their ``px_<code>`` columns); logs the effect."""
    m = np.array(
        [[float(r.get(f"px_{code}") or 0) for code in schema.codes] for r in rows], dtype="float64"
    ).reshape(len(rows), schema.num_classes)
    weights, rarity = chip_sampling_weights(m)
    rare = int(np.argmax(rarity))
    holds = m[:, rare] > 0
    if holds.any() and (~holds).any():
        log.info(
            "Balanced sampler: %d of %d trn chips hold the rarest class %r; they are drawn %.1fx as often as "
            "the others on average",
            int(holds.sum()),
            len(rows),
            schema.names[rare],
            float(weights[holds].mean() / weights[~holds].mean()),
        )
    else:
        log.info(
            "Balanced sampler: chip weights %.3g-%.3g from their rare-class content",
            weights.min(),
            weights.max(),
        )
    return BalancedChipSampler(weights, seed=seed), weights
