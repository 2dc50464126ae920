"""Design-based estimators of map accuracy and class area with standard errors (pure numpy, no I/O).

One general stratified estimator (Stehman 2014, *Estimating area and map accuracy for stratified random
sampling when the strata are different from the map classes*, IJRS 35: 4923-4939, eqs. 2-3 and 25-28)
serves every design:

- stratified random sampling with strata = map classes, where it reduces exactly to the estimators of
  Olofsson et al. (2013, RSE 129: 122-131; 2014, RSE 148: 42-57): ``p̂_ij = W_i n_ij / n_i·``,
  ``V̂(Û_i) = Û_i(1 - Û_i)/(n_i· - 1)``, ``SE(p̂·k)² = Σ_i W_i² p_ik(1 - p_ik)/(n_i· - 1)``;
- stratified random sampling with other strata (Stehman 2014): each estimate is a stratified mean of an
  indicator (area proportions, error-matrix cells, overall accuracy) or a ratio of two stratified means
  (user's and producer's accuracy) with the linearised variance of a combined ratio estimator;
- simple random and systematic samples, post-stratified by the map classes with the map's pixel counts as
  stratum sizes (Olofsson et al. 2013 §2.2; systematic samples are analysed as if simple random, the usual
  and slightly conservative approximation).

Proportions are of the population of valid map pixels; areas are proportions times the total area.
Without the finite population correction (the default, as in the Olofsson papers) variances ignore
``1 - n_h/N_h``; with it they follow Stehman (2014).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

from rasterlearn.errors import InputError

__all__ = ["AccuracyEstimates", "estimate_accuracy", "estimate_from_counts", "z_value"]


def z_value(confidence: float = 0.95) -> float:
    """The two-sided standard normal critical value (1.959964 for 0.95)."""
    if not 0 < confidence < 1:
        raise InputError(f"The confidence level must lie between 0 and 1 (e.g. 0.95); got {confidence}")
    return NormalDist().inv_cdf(0.5 + confidence / 2)


@dataclass(frozen=True)
class AccuracyEstimates:
    """Estimates from one reference sample. Arrays are indexed by class (``K``) or stratum (``H``).

    Attributes:
        error_matrix: ``(K, K)`` estimated proportions of area, rows = map class, columns = reference class.
        counts: ``(K, K)`` sample counts, rows = map class, columns = reference class.
        overall, overall_se: overall accuracy and its standard error.
        users, users_se: user's accuracy per map class (NaN when no sample is mapped as the class).
        producers, producers_se: producer's accuracy per reference class (NaN when no sample is).
        area, area_se: estimated proportion of area per reference class and standard error.
        stratum_sizes, stratum_samples: ``N_h`` and ``n_h``.
        z: critical value of the confidence intervals; ``confidence`` its level; ``fpc`` whether the finite
            population correction was applied.
    """

    error_matrix: np.ndarray
    counts: np.ndarray
    overall: float
    overall_se: float
    users: np.ndarray
    users_se: np.ndarray
    producers: np.ndarray
    producers_se: np.ndarray
    area: np.ndarray
    area_se: np.ndarray
    stratum_sizes: np.ndarray
    stratum_samples: np.ndarray
    confidence: float
    z: float
    fpc: bool

    def interval(self, value: float, se: float) -> tuple[float | None, float | None]:
        """``value ± z·se`` (not clipped: a negative lower bound signals a poorly estimated quantity)."""
        if not (math.isfinite(value) and math.isfinite(se)):
            return None, None
        return value - self.z * se, value + self.z * se

    def summary(self, value: float, se: float, scale: float = 1.0) -> dict[str, Any]:
        """``{estimate, se, ci_low, ci_high, half_width}`` (scaled, e.g. to map units²); NaN → ``None``."""
        if not (math.isfinite(value) and math.isfinite(se)):
            return {"estimate": None, "se": None, "ci_low": None, "ci_high": None, "half_width": None}
        lo, hi = self.interval(value, se)
        assert lo is not None and hi is not None
        return {
            "estimate": value * scale,
            "se": se * scale,
            "ci_low": lo * scale,
            "ci_high": hi * scale,
            "half_width": self.z * se * scale,
        }


def _stratum_moments(h: np.ndarray, data: np.ndarray, n_h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-stratum means ``(H, Q)`` and deviations from them ``(n, Q)`` of the sample variables."""
    H = n_h.size
    sums = np.zeros((H, data.shape[1]))
    np.add.at(sums, h, data)
    means = sums / np.maximum(n_h, 1)[:, None]
    return means, data - means[h]


def _check_strata(stratum_sizes: np.ndarray, n_h: np.ndarray, names: Sequence[str] | None) -> None:
    def label(i: Any) -> str:
        return repr(names[i]) if names is not None else str(i)

    extra = np.flatnonzero((stratum_sizes <= 0) & (n_h > 0))
    if extra.size:
        raise InputError(
            f"Samples fall in strata without pixels ({', '.join(label(i) for i in extra)}): the samples do "
            f"not belong to this design; check the strata sizes and the samples' stratum values"
        )
    missing = np.flatnonzero((stratum_sizes > 0) & (n_h == 0))
    if missing.size:
        raise InputError(
            f"Strata {', '.join(label(i) for i in missing)} have pixels but no samples, so their share of "
            f"the area cannot be estimated; add samples there (at least 2 per stratum)"
        )
    single = np.flatnonzero((stratum_sizes > 1) & (n_h == 1))  # one sample of a one-pixel stratum: a census
    if single.size:
        raise InputError(
            f"Strata {', '.join(label(i) for i in single)} have only 1 sample: the variance within a stratum "
            f"needs at least 2; add samples there"
        )


def estimate_accuracy(
    stratum: Sequence[int] | np.ndarray,
    map_class: Sequence[int] | np.ndarray,
    ref_class: Sequence[int] | np.ndarray,
    stratum_sizes: Sequence[float] | np.ndarray,
    n_classes: int,
    *,
    confidence: float = 0.95,
    fpc: bool = False,
    stratum_names: Sequence[str] | None = None,
) -> AccuracyEstimates:
    """Accuracy and area estimates from a stratified random sample (Stehman 2014's general estimators).

    Args:
        stratum: stratum index ``0..H-1`` of each sample unit.
        map_class: map class index ``0..K-1`` of each unit.
        ref_class: reference class index ``0..K-1`` of each unit.
        stratum_sizes: ``N_h``, pixels (or area) of each stratum; only the proportions ``N_h / N`` matter
            unless ``fpc``.
        n_classes: ``K``.
        confidence: level of the confidence intervals (normal approximation).
        fpc: apply the finite population correction ``1 - n_h/N_h``.
        stratum_names: for error messages.

    Raises:
        InputError: a stratum with pixels but fewer than 2 samples (variance undefined), samples in a
            stratum without pixels, indexes out of range, or arrays of different lengths.
    """
    h = np.asarray(stratum, dtype="int64")
    m = np.asarray(map_class, dtype="int64")
    r = np.asarray(ref_class, dtype="int64")
    N_h = np.asarray(stratum_sizes, dtype="float64")
    K, H = int(n_classes), N_h.size
    if not (h.shape == m.shape == r.shape) or h.ndim != 1:
        raise InputError(f"stratum, map and reference arrays differ in length: {h.size}, {m.size}, {r.size}")
    if h.size == 0:
        raise InputError("No sample units to estimate from")
    for arr, top, what in ((h, H, "stratum"), (m, K, "map class"), (r, K, "reference class")):
        if arr.min() < 0 or arr.max() >= top:
            raise InputError(f"{what} indexes must lie in 0..{top - 1}; got {arr.min()}..{arr.max()}")
    n_h = np.bincount(h, minlength=H).astype("float64")
    _check_strata(N_h, n_h, stratum_names)
    W = N_h / N_h.sum()
    live = n_h > 0
    f = np.where(live & fpc, n_h / np.where(N_h > 0, N_h, 1), 0.0)
    # coefficient of each stratum's within-stratum (co)variance in the variance of a stratified mean
    c = np.where(live & (n_h > 1), W**2 * (1 - f) / np.maximum(n_h, 1) / np.maximum(n_h - 1, 1), 0.0)

    eye = np.eye(K, dtype="float64")
    ind_map, ind_ref = eye[m], eye[r]  # (n, K) indicators
    hit = ind_map * ind_ref  # unit correctly mapped as class k
    data = np.concatenate([ind_map, ind_ref, hit, (m == r)[:, None].astype("float64")], axis=1)
    means, dev = _stratum_moments(h, data, n_h)
    est = W @ means  # stratified means of every variable
    # Σ_h c_h Σ_{u in h} a_u b_u = variance/covariance terms of stratified means
    cw = c[h][:, None]

    def cov(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.sum(cw * a * b, axis=0)

    dm, dr, dy, doa = dev[:, :K], dev[:, K : 2 * K], dev[:, 2 * K : 3 * K], dev[:, 3 * K :]
    p_map, p_ref, p_hit, oa = est[:K], est[K : 2 * K], est[2 * K : 3 * K], float(est[3 * K])

    def ratio(x_est: np.ndarray, dx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with np.errstate(invalid="ignore", divide="ignore"):
            R = np.where(x_est > 0, p_hit / np.where(x_est > 0, x_est, 1), np.nan)
            Rz = np.nan_to_num(R)
            v = (cov(dy, dy) + Rz**2 * cov(dx, dx) - 2 * Rz * cov(dy, dx)) / np.where(
                x_est > 0, x_est, 1
            ) ** 2
        return R, np.where(x_est > 0, np.sqrt(np.maximum(v, 0)), np.nan)

    users, users_se = ratio(p_map, dm)
    producers, producers_se = ratio(p_ref, dr)
    # error matrix cells: stratified means of [m == i and r == j]
    per_stratum = np.zeros((H, K, K))
    np.add.at(per_stratum, (h, m, r), 1.0)
    cells = np.einsum("h,hij->ij", W / np.maximum(n_h, 1), per_stratum)
    counts = per_stratum.sum(axis=0).astype("int64")
    return AccuracyEstimates(
        error_matrix=cells,
        counts=counts,
        overall=oa,
        overall_se=float(math.sqrt(max(float(cov(doa, doa)[0]), 0.0))),
        users=users,
        users_se=users_se,
        producers=producers,
        producers_se=producers_se,
        area=p_ref,
        area_se=np.sqrt(np.maximum(cov(dr, dr), 0)),
        stratum_sizes=N_h,
        stratum_samples=n_h.astype("int64"),
        confidence=confidence,
        z=z_value(confidence),
        fpc=fpc,
    )


def estimate_from_counts(
    counts: Sequence[Sequence[int]] | np.ndarray,
    mapped: Sequence[float] | np.ndarray,
    *,
    confidence: float = 0.95,
    fpc: bool = False,
) -> AccuracyEstimates:
    """Olofsson et al. (2013, 2014): estimates from an error matrix of sample counts (rows = map classes =
    strata, columns = reference classes) and the mapped pixels (or area) of each class."""
    cm = np.asarray(counts, dtype="int64")
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or np.any(cm < 0):
        raise InputError(f"The error matrix must be square with non-negative counts; got shape {cm.shape}")
    K = cm.shape[0]
    rows, cols = np.divmod(np.repeat(np.arange(K * K), cm.ravel()), K)
    return estimate_accuracy(rows, rows, cols, mapped, K, confidence=confidence, fpc=fpc)
