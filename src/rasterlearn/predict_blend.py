"""Blending of :func:`rasterlearn.predict.predict_raster`: window weights in, class maps and probabilities out.

* :func:`axis_weights`: the normalized 1-D weight profiles of the windows along one axis (``hann``,
  ``center-crop``, ``none``; see :mod:`rasterlearn.predict`). 2-D weights are their outer products
  (:class:`WindowWeights`), and the weights of all windows covering a pixel sum to 1, so the blended
  scores are the ``blend`` mode of :class:`rasterlearn.engine.accumulate.WeightedAccumulator`: Σw·x.
* :class:`Decoder`: blended scores and validity of a finished block -> the class map (argmax, or the
  threshold of a binary model) and the probability bands (uint8 x 254 or float32), nodata where invalid.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from rasterlearn.errors import InputError
from rasterlearn.grid import Window
from rasterlearn.metrics import binary_foreground

__all__ = ["PROB_UINT8_MAX", "BlendMode", "Decoder", "ProbDtype", "WindowWeights", "axis_weights"]

BlendMode = Literal["hann", "center-crop", "none"]
ProbDtype = Literal["uint8", "float32"]
PROB_UINT8_MAX = 254  # uint8 probabilities are scaled to 0..254; 255 is nodata


def _profile(size: int, overlap: int, blend: BlendMode) -> np.ndarray:
    """Un-normalized 1-D weight profile of one window (before border correction)."""
    w = np.ones(size, dtype="float64")
    if overlap <= 0 or blend == "none":
        return w
    if blend == "center-crop":
        lo = overlap // 2
        hi = overlap - lo
        w[:] = 0.0
        w[lo : size - hi] = 1.0
        return w
    if blend == "hann":
        margin = overlap // 4
        ramp = overlap - 2 * margin  # >= 1 because overlap >= 1
        i = np.arange(size, dtype="float64")
        left = np.clip((i - margin + 0.5) / ramp, 0.0, 1.0)
        left[i < margin] = 0.0
        left = np.sin(0.5 * np.pi * left) ** 2
        return left * left[::-1]
    raise InputError(f"blend must be one of 'hann', 'center-crop', 'none'; got {blend!r}")


def axis_weights(
    offsets: Sequence[int], size: int, stride: int, start: int, stop: int, blend: BlendMode = "hann"
) -> list[np.ndarray]:
    """Normalized 1-D weights of every window along one axis.

    Args:
        offsets: window start offsets (global pixel coordinates) on a regular lattice.
        size: window length; ``stride``: the lattice step (overlap is ``size - stride``).
        start, stop: the extent covered along this axis (pixels outside get weight 0).
        blend: weight profile (see the module docstring).

    Returns:
        One array of ``size`` weights per window. For every pixel in ``[start, stop)`` the weights of all
        windows covering it sum to exactly 1 (up to float rounding); 2-D weights are outer products.

    Raises:
        InputError: a pixel of the extent would get no weight (cannot happen for a valid plan).
    """
    overlap = max(0, size - stride)
    base = _profile(size, overlap, blend)
    half = size // 2
    raw = []
    for k, _off in enumerate(offsets):
        w = base.copy()
        if k == 0:
            w[:half] = 1.0  # border correction: the extent's first pixels get full weight
        if k == len(offsets) - 1:
            w[half:] = 1.0
        raw.append(w)
    total = np.zeros(stop - start, dtype="float64")
    for off, w in zip(offsets, raw, strict=True):
        a, b = max(off, start), min(off + size, stop)
        if b > a:
            total[a - start : b - start] += w[a - off : b - off]
    if (total <= 0).any():
        bad = int(np.flatnonzero(total <= 0)[0]) + start
        raise InputError(
            f"Pixel {bad} is covered by no window weight; the tiling plan does not cover the extent"
        )
    out = []
    for off, w in zip(offsets, raw, strict=True):
        nw = np.zeros(size, dtype="float64")
        a, b = max(off, start), min(off + size, stop)
        if b > a:
            nw[a - off : b - off] = w[a - off : b - off] / total[a - start : b - start]
        out.append(nw.astype("float32"))
    return out


class WindowWeights:
    """The separable weights of every window of a tiling plan (float32 row and column profiles)."""

    def __init__(
        self,
        row_offsets: Sequence[int],
        col_offsets: Sequence[int],
        window: tuple[int, int],
        stride: tuple[int, int],
        extent: Window,
        blend: BlendMode,
    ) -> None:
        (wh, ww), (sh, sw) = window, stride
        self.rows = axis_weights(row_offsets, wh, sh, extent.row_off, extent.row_stop, blend)
        self.cols = axis_weights(col_offsets, ww, sw, extent.col_off, extent.col_stop, blend)
        self._row_index = {r: i for i, r in enumerate(row_offsets)}
        self._col_index = {c: j for j, c in enumerate(col_offsets)}

    def of(self, win: Window) -> tuple[np.ndarray, np.ndarray]:
        """(row profile, column profile) of the window at ``win``'s origin."""
        return self.rows[self._row_index[win.row_off]], self.cols[self._col_index[win.col_off]]


@dataclass(frozen=True)
class Decoder:
    """Turns blended scores (C, h, w) and validity (h, w) into the class map and probability bands.

    ``codes``: the class codes (argmax index -> code; binary: background, foreground), ``threshold``: a
    binary model's foreground threshold, ``map_dtype``/``map_nodata``: the class map's, ``prob_dtype``: the
    probability raster's (uint8: probability x :data:`PROB_UINT8_MAX`, nodata 255; float32: nodata NaN).
    """

    task: str
    codes: np.ndarray
    threshold: float
    map_dtype: str
    map_nodata: int
    prob_dtype: ProbDtype

    def class_map(self, scores: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """The class codes (1, h, w) of the scores; ``map_nodata`` where invalid."""
        codes = self.codes
        if self.task == "binary":
            cls = np.where(binary_foreground(scores[0], self.threshold), codes[1], codes[0])
            cls = cls.astype(self.map_dtype)
        else:
            cls = codes[np.argmax(scores, axis=0)].astype(self.map_dtype)
        cls[~valid] = self.map_nodata
        return cls[np.newaxis]

    def probabilities(self, scores: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """The probability bands of the scores in ``prob_dtype``, nodata where invalid."""
        if self.prob_dtype == "uint8":
            pr = np.rint(np.clip(scores, 0.0, 1.0) * PROB_UINT8_MAX).astype("uint8")
            pr[:, ~valid] = 255
        else:
            pr = scores.astype("float32", copy=True)
            pr[:, ~valid] = np.nan
        return pr
