"""Chip footprints in a common pixel space, for leakage-safe block splits of rotated grids.

The block split (:func:`rasterlearn.chips.block_split`) assigns square blocks to splits and drops chips
that touch blocks of two splits. On a north-up grid the chips' map bounds are their exact footprints. On a
rotated or sheared grid they are the axis-aligned envelopes of tilted squares: much larger than the chips
and overlapping their neighbours, so with map-space blocks most chips touch several blocks and are
dropped as straddling. Planned in the first scene's *pixel* space instead, a chip is exactly its window
and blocks follow the chip lattice, as on a north-up grid.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from rasterlearn.grid import Grid

__all__ = ["any_rotated", "pixel_space_bounds"]


def any_rotated(grids: Sequence[Grid]) -> bool:
    """Whether any grid has a rotated or sheared (non north-up) transform."""
    return any(not g.is_rectilinear for g in grids)


def pixel_space_bounds(
    scene_ids: Sequence[str],
    row_off: np.ndarray,
    col_off: np.ndarray,
    size: int,
    grids: Mapping[str, Grid],
    ref: Grid,
) -> np.ndarray:
    """(n, 4) chip footprints ``col0, row0, col1, row1`` in the pixel space of ``ref``.

    Chips of the reference grid are exactly their windows; chips of other grids (other transforms or
    CRSs) are the envelopes of their four corners mapped into ``ref``'s pixel space.
    """
    ids = np.asarray(scene_ids, dtype=object)
    r = np.asarray(row_off, dtype="float64")
    c = np.asarray(col_off, dtype="float64")
    out = np.empty((len(ids), 4), dtype="float64")
    inv = ~ref.transform
    for sid in dict.fromkeys(ids.tolist()):
        sel = ids == sid
        g = grids[sid]
        if g.transform == ref.transform and (g.crs == ref.crs):
            out[sel] = np.column_stack([c[sel], r[sel], c[sel] + size, r[sel] + size])
            continue
        cols = np.stack([c[sel], c[sel] + size, c[sel], c[sel] + size])
        rows = np.stack([r[sel], r[sel], r[sel] + size, r[sel] + size])
        t = g.transform
        x = t.a * cols + t.b * rows + t.c
        y = t.d * cols + t.e * rows + t.f
        if g.crs is not None and ref.crs is not None and not g.crs.equals(ref.crs):
            from pyproj import Transformer

            tr = Transformer.from_crs(g.crs, ref.crs, always_xy=True)
            x, y = tr.transform(x, y)
        pc = inv.a * x + inv.b * y + inv.c
        pr = inv.d * x + inv.e * y + inv.f
        out[sel] = np.column_stack([pc.min(0), pr.min(0), pc.max(0), pr.max(0)])
    return out
