"""Sample sizes and allocations for probability samples of a class map (pure numpy, no I/O).

Formulas from Olofsson et al. (2014), *Good practices for estimating area and assessing accuracy of land
change*, Remote Sensing of Environment 148: 42-57 (eq. 13 for the sample size), and Cochran (1977) for
Neyman allocation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np

from rasterlearn.errors import InputError

__all__ = [
    "Allocation",
    "allocate",
    "inclusion_probabilities",
    "sample_size",
    "systematic_step",
]

Allocation = Literal["proportional", "equal", "neyman"]


def _check_ua(users_accuracies: float | Sequence[float] | np.ndarray, k: int) -> np.ndarray:
    ua = np.broadcast_to(np.asarray(users_accuracies, dtype="float64"), (k,)).copy()
    if np.any((ua <= 0) | (ua >= 1)) or not np.all(np.isfinite(ua)):
        raise InputError(
            f"Expected user's accuracies must lie strictly between 0 and 1; got {ua.tolist()} "
            f"(e.g. --expected-ua 0.8 or --expected-ua '1=0.7,2=0.9')"
        )
    return ua


def sample_size(
    weights: Sequence[float] | np.ndarray,
    users_accuracies: float | Sequence[float] | np.ndarray = 0.8,
    target_se: float = 0.01,
) -> int:
    """Total sample size for a target standard error of overall accuracy (Olofsson et al. 2014, eq. 13).

    ``n = (Σ W_i S_i / S(Ô))²`` with ``S_i = sqrt(U_i (1 - U_i))``, where ``W_i`` are the mapped area
    proportions of the strata, ``U_i`` the expected user's accuracies and ``S(Ô)`` the target standard
    error of overall accuracy. Rounded up. The paper's example (W = 0.02, 0.015, 0.32, 0.645; U = 0.7, 0.6,
    0.9, 0.95; S(Ô) = 0.01) gives 641.

    Raises:
        InputError: weights that are negative or sum to zero, accuracies outside (0, 1), target_se <= 0.
    """
    w = np.asarray(weights, dtype="float64")
    if w.ndim != 1 or w.size == 0 or np.any(w < 0) or w.sum() <= 0:
        raise InputError(f"Stratum weights must be non-negative and not all zero; got {w.tolist()}")
    if not target_se > 0:
        raise InputError(f"The target standard error must be positive (e.g. 0.01); got {target_se}")
    w = w / w.sum()
    s = np.sqrt(_check_ua(users_accuracies, w.size) * (1 - _check_ua(users_accuracies, w.size)))
    return math.ceil(float((w * s).sum() / target_se) ** 2 - 1e-9)


def _round_to_total(share: np.ndarray, total: int, cap: np.ndarray) -> np.ndarray:
    """Integers proportional to ``share`` summing to ``total`` (largest remainders), each <= ``cap``."""
    out = np.zeros(share.size, dtype="int64")
    free = cap > 0
    remaining = total
    while remaining > 0 and free.any():
        s = np.where(free, share, 0.0)
        if s.sum() <= 0:
            s = free.astype("float64")
        raw = s / s.sum() * remaining
        add = np.minimum(np.floor(raw).astype("int64"), cap - out)
        left = remaining - int(add.sum())
        frac = np.where(free & (out + add < cap), raw - np.floor(raw), -1.0)
        for i in np.argsort(-frac, kind="stable")[:left]:
            if frac[i] >= 0:
                add[i] += 1
        if add.sum() == 0:
            break
        out += add
        remaining = total - int(out.sum())
        free = out < cap
    return out


def allocate(
    n: int,
    counts: Sequence[int] | np.ndarray,
    method: Allocation = "proportional",
    *,
    min_per_class: int = 0,
    users_accuracies: float | Sequence[float] | np.ndarray = 0.8,
) -> np.ndarray:
    """Split a total sample size ``n`` among strata of ``counts`` pixels.

    ``proportional``: ``n_h ∝ N_h``; ``equal``: the same number in every stratum; ``neyman``:
    ``n_h ∝ N_h S_h`` with ``S_h = sqrt(U_h (1 - U_h))`` from the expected user's accuracies (optimal for
    overall accuracy, Cochran 1977 §5.5). Strata whose share falls below ``min_per_class`` get that minimum
    (Olofsson et al. 2014 recommend 50-100 for small classes) and the rest is shared among the others by the
    same rule. No stratum gets more samples than it has pixels; empty strata get none. The result sums to
    ``min(n, Σ N_h)``.

    Raises:
        InputError: ``n`` < 1, negative counts, an unknown method, or a minimum that does not fit in ``n``.
    """
    cnt = np.asarray(counts, dtype="int64")
    if n < 1:
        raise InputError(f"The sample size must be at least 1; got {n}")
    if cnt.ndim != 1 or np.any(cnt < 0):
        raise InputError(f"Stratum pixel counts must be non-negative; got {cnt.tolist()}")
    if method not in ("proportional", "equal", "neyman"):
        raise InputError(f"allocation must be 'proportional', 'equal' or 'neyman'; got {method!r}")
    if min_per_class < 0:
        raise InputError(f"min_per_class must be >= 0; got {min_per_class}")
    present = cnt > 0
    total = min(int(n), int(cnt.sum()))
    floor_n = np.minimum(cnt, min_per_class) * present
    if floor_n.sum() > total:
        raise InputError(
            f"A minimum of {min_per_class} samples in each of the {int(present.sum())} strata needs "
            f"{int(floor_n.sum())} samples, more than the total of {total}; raise --n or lower "
            f"--min-per-class"
        )
    if method == "proportional":
        share = cnt.astype("float64")
    elif method == "equal":
        share = present.astype("float64")
    else:
        ua = _check_ua(users_accuracies, cnt.size)
        share = cnt * np.sqrt(ua * (1 - ua))
    fixed = np.zeros(cnt.size, dtype=bool)  # strata held at the minimum
    while True:
        others = present & ~fixed
        rest = total - int(floor_n[fixed].sum())
        part = _round_to_total(np.where(others, share, 0.0), rest, np.where(others, cnt, 0))
        low = others & (part < floor_n)
        if not low.any():
            break
        fixed |= low
    out = np.where(fixed, floor_n, part)
    left = total - int(out.sum())
    if left > 0:  # every stratum is capped or at its minimum: the rest goes where pixels remain
        out += _round_to_total(np.where(present, share, 0.0) + 1e-12, left, cnt - out)
    return out


def inclusion_probabilities(
    allocation: Sequence[int] | np.ndarray, counts: Sequence[int] | np.ndarray
) -> np.ndarray:
    """Per-stratum inclusion probability of a pixel, ``π_h = n_h / N_h`` (0 for empty strata).

    ``Σ_h N_h π_h = n``: summed over the population, the probabilities give the sample size.
    """
    a = np.asarray(allocation, dtype="float64")
    c = np.asarray(counts, dtype="float64")
    return np.divide(a, c, out=np.zeros_like(a), where=c > 0)


def systematic_step(valid_pixels: int, n: int) -> int:
    """Lattice spacing (pixels) of a systematic sample of about ``n`` points among ``valid_pixels``."""
    if n < 1 or valid_pixels < 1:
        raise InputError(
            f"A systematic sample needs n >= 1 and valid pixels; got n={n}, pixels={valid_pixels}"
        )
    return max(1, math.floor(math.sqrt(valid_pixels / n)))
