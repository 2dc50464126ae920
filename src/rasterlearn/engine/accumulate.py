"""The accumulate step of the engine: Σw·x and Σw over overlapping tiles, a band of rows emitted when complete.

Streaming stages cut a raster into overlapping tiles (predict's windows, embed's tiles) and merge what the
compute step returns for each tile into one value per output pixel. :class:`WeightedAccumulator` holds the
rows in flight -- ``cap`` rows of ``width`` columns starting at row ``base`` and column ``col0`` -- and
hands finished rows out from the top (:meth:`WeightedAccumulator.take`) so that memory depends on neither
the height nor the width of the raster. Tiles may reach past the buffer on any side (pad tiles past the
grid, seam tiles past a column stripe, rows already emitted): they are cropped to it.

Merge modes (how values of overlapping tiles combine; each mode keeps its own float32 arithmetic, so the
bytes of every stage's outputs do not depend on which stage's code the accumulator came from):

* ``blend``: Σw·x with caller-supplied weights that form a partition of unity (predict's blended class
  probabilities, :func:`rasterlearn.predict_blend.axis_weights`). The weighted sum *is* the result, so Σw is
  not stored and nothing is divided.
* ``average``: Σx / n (every tile weight 1).
* ``first``: the first tile that covers a pixel wins.
* ``center``: the last tile wins (for crops that partition the grid, such as embed's tile centres).

Validity is merged per pixel: ``or`` (a pixel is valid when any tile says so) or ``replace`` (the latest
tile's mask; predict's masks depend on the pixel only, so this equals ``or`` there, and keeps its bytes).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

__all__ = ["MergeMode", "ValidMerge", "WeightedAccumulator"]

MergeMode = Literal["blend", "average", "first", "center"]
ValidMerge = Literal["or", "replace"]
MERGE_MODES = ("blend", "average", "first", "center")

Weights = np.ndarray | tuple[np.ndarray, np.ndarray] | None
"""A tile's weights: a (h, w) array, a separable pair (row profile, column profile) or None (weight 1)."""


class WeightedAccumulator:
    """Rows in flight of a merged raster: per-pixel sums of ``channels`` values, weights and validity.

    Args:
        channels: values per pixel (classes, feature dimensions).
        width: columns held, starting at absolute column ``col0``.
        cap: rows held, starting at absolute row ``base`` (grows with :meth:`reserve`).
        merge: see the module docstring.
        valid_merge: ``or`` or ``replace`` (see the module docstring).
        nodata: the value :meth:`take` gives pixels that are invalid or that no tile covered (not in
            ``blend`` mode, whose values are returned as summed).
    """

    def __init__(
        self,
        channels: int,
        width: int,
        cap: int,
        *,
        merge: MergeMode = "average",
        base: int = 0,
        col0: int = 0,
        valid_merge: ValidMerge = "or",
        nodata: float = float("nan"),
    ) -> None:
        if merge not in MERGE_MODES:
            raise ValueError(f"merge must be one of {', '.join(MERGE_MODES)}; got {merge!r}")
        self.channels, self.width, self.cap = channels, width, cap
        self.merge, self.valid_merge, self.nodata = merge, valid_merge, nodata
        self.base, self.col0 = base, col0
        self.sum = np.zeros((channels, cap, width), dtype="float32")
        # blend: the weights sum to 1 by construction, so Σw is not held
        self.weight = None if merge == "blend" else np.zeros((cap, width), dtype="float32")
        self.valid = np.zeros((cap, width), dtype=bool)

    @property
    def nbytes(self) -> int:
        """Bytes held by the buffers."""
        w = 0 if self.weight is None else self.weight.nbytes
        return int(self.sum.nbytes + w + self.valid.nbytes)

    def reserve(self, stop: int) -> None:
        """Grow the buffer (zeros below) so that rows up to absolute row ``stop`` fit."""
        grow = stop - self.base - self.cap
        if grow <= 0:
            return
        self.sum = np.concatenate(
            [self.sum, np.zeros((self.channels, grow, self.width), dtype="float32")], axis=1
        )
        if self.weight is not None:
            self.weight = np.concatenate([self.weight, np.zeros((grow, self.width), dtype="float32")])
        self.valid = np.concatenate([self.valid, np.zeros((grow, self.width), dtype=bool)])
        self.cap += grow

    def add(
        self,
        values: np.ndarray | None,
        valid: np.ndarray | None,
        row: int,
        col: int,
        *,
        weights: Weights = None,
        crop: tuple[slice, slice] | None = None,
    ) -> None:
        """Merge one tile whose top-left pixel is at absolute (``row``, ``col``).

        Args:
            values: (channels, h, w) values, or None to merge the tile's validity only (a tile that was
                not computed, e.g. one without a valid pixel).
            valid: (h, w) validity, or None (validity unchanged).
            weights: ``blend`` mode: the tile's weights, (h, w) or a separable (h,), (w,) pair.
            crop: the part of the tile to merge (e.g. its centre), in tile coordinates; default all of it.
        """
        ref = values[0] if values is not None else valid
        if ref is None:
            return
        rs, cs = crop if crop is not None else (slice(0, ref.shape[0]), slice(0, ref.shape[1]))
        r0 = row + (rs.start or 0) - self.base
        c0 = col + (cs.start or 0) - self.col0
        h = len(range(*rs.indices(ref.shape[0])))
        w = len(range(*cs.indices(ref.shape[1])))
        top, left = max(0, -r0), max(0, -c0)
        bottom, right = min(h, self.cap - r0), min(w, self.width - c0)
        if bottom <= top or right <= left:
            return
        # tile coordinates of the part inside the buffer, and the buffer's slices
        tr = slice((rs.start or 0) + top, (rs.start or 0) + bottom)
        tc = slice((cs.start or 0) + left, (cs.start or 0) + right)
        br, bc = slice(r0 + top, r0 + bottom), slice(c0 + left, c0 + right)
        if valid is not None:
            if self.valid_merge == "replace":
                self.valid[br, bc] = valid[tr, tc]
            else:
                self.valid[br, bc] |= valid[tr, tc]
        if values is not None:
            self._merge(values[:, tr, tc], br, bc, _crop_weights(weights, tr, tc))

    def _merge(self, f: np.ndarray, br: slice, bc: slice, w: np.ndarray | None) -> None:
        """Merge cropped values ``f`` into buffer rows ``br`` and columns ``bc``."""
        if self.merge == "blend":
            if w is None:
                raise ValueError("blend mode needs the tile's weights")
            self.sum[:, br, bc] += f * w
            return
        assert self.weight is not None
        if self.merge == "average":
            self.sum[:, br, bc] += f
            self.weight[br, bc] += 1.0
        elif self.merge == "first":
            empty = self.weight[br, bc] == 0
            self.sum[:, br, bc] = np.where(empty[None], f, self.sum[:, br, bc])
            self.weight[br, bc] = np.where(empty, 1.0, self.weight[br, bc])
        else:  # center: the kept regions partition the grid
            self.sum[:, br, bc] = f
            self.weight[br, bc] = 1.0

    def take(self, rows: int) -> tuple[np.ndarray, np.ndarray]:
        """The first ``rows`` rows, finished (see :meth:`peek`); the buffer then shifts up by ``rows``
        (:meth:`drop`)."""
        out = self.peek(rows)
        self.drop(rows)
        return out

    def peek(self, rows: int, skip: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Rows ``skip`` to ``skip + rows`` of the buffer, finished, without shifting it: ``(values
        (channels, rows, width), validity (rows, width))``, copies.

        ``blend``: Σw·x as summed (also where invalid). Other modes: Σw·x / Σw, and ``nodata`` where a pixel
        is invalid or no tile covered it (such pixels are also invalid).
        """
        r = slice(skip, skip + rows)
        if self.weight is None:
            return self.sum[:, r].copy(), self.valid[r].copy()
        w = self.weight[r]
        ok = (w > 0) & self.valid[r]
        out = np.full((self.channels, rows, self.width), self.nodata, dtype="float32")
        np.divide(self.sum[:, r], w[None], out=out, where=ok[None])
        return out, ok

    def drop(self, rows: int) -> None:
        """Forget the first ``rows`` rows: the buffer shifts up (zeros below) and ``base`` moves down."""
        if rows <= 0:
            return
        keep = self.cap - rows
        self.sum[:, :keep] = self.sum[:, rows:]
        self.sum[:, keep:] = 0
        if self.weight is not None:
            self.weight[:keep] = self.weight[rows:]
            self.weight[keep:] = 0
        self.valid[:keep] = self.valid[rows:]
        self.valid[keep:] = False
        self.base += rows


def _crop_weights(weights: Weights, tr: slice, tc: slice) -> np.ndarray | None:
    """The weights of the tile part ``[tr, tc]``: a separable pair's outer product is formed on that part
    only (each weight is one float32 product either way)."""
    if weights is None:
        return None
    if isinstance(weights, tuple):
        wr, wc = weights
        return wr[tr][:, None] * wc[tc][None, :]
    return weights[tr, tc]
