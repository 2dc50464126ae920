"""Chip filters and leakage-safe splits: pure functions on the candidates table, and the *split* phase."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from rasterlearn.chip_blocks import any_rotated, pixel_space_bounds
from rasterlearn.chips.options import DROP_REASONS, SPLITS
from rasterlearn.chips.state import _JobState, _unlock_on_error
from rasterlearn.chips.store import _chip_id
from rasterlearn.errors import ConfigError, EmptyInputError
from rasterlearn.labels import ClassSchema

# one logger for the whole stage, as before the split (log lines and --progress json name it)
log = logging.getLogger("rasterlearn.chips")


def apply_filters(
    table: pd.DataFrame,
    schema: ClassSchema,
    *,
    min_annotated: float = 0.0,
    max_nodata: float = 100.0,
    class_proportion: Mapping[int, float] | None = None,
) -> pd.Series:
    """The first failing filter of each candidate chip ("" = kept).

    Order: ``empty`` (no valid image pixel), ``nodata`` (nodata percent > ``max_nodata``), ``unlabelled``
    (every pixel is ignore), ``annotated`` (percent of non-background labelled pixels < ``min_annotated``,
    geo-deep-learning's ``min_annot_perc``), ``class_proportion`` (a listed class covers less than its
    percent of the chip's labelled pixels).
    """
    reasons = pd.Series("", index=table.index, dtype=object)
    fails = filter_failures(
        table, schema, min_annotated=min_annotated, max_nodata=max_nodata, class_proportion=class_proportion
    )
    for name in reversed(list(fails)):
        reasons[fails[name]] = name
    return reasons


def filter_failures(
    table: pd.DataFrame,
    schema: ClassSchema,
    *,
    min_annotated: float = 0.0,
    max_nodata: float = 100.0,
    class_proportion: Mapping[int, float] | None = None,
) -> dict[str, pd.Series]:
    """Each filter's verdict on every candidate, independently of the others (True = fails)."""
    px = table["height"] * table["width"]
    labelled = table["labelled_fraction"] * px
    out = {
        "empty": table["nodata_fraction"] >= 1.0,
        "nodata": table["nodata_fraction"] * 100.0 > max_nodata + 1e-9,
        "unlabelled": labelled <= 0,
        "annotated": table["annotated_fraction"] * 100.0 < min_annotated - 1e-9,
    }
    prop = pd.Series(False, index=table.index)
    for code, pct in (class_proportion or {}).items():
        if code not in schema.codes:
            raise ConfigError(
                f"class_proportion names class {code}, which is not in the schema ({schema.describe()})"
            )
        share = np.divide(table[f"px_{code}"], labelled, out=np.zeros(len(table)), where=labelled > 0) * 100.0
        prop |= share < pct - 1e-9
    out["class_proportion"] = prop
    return out


def _split_counts(n: int, fractions: Mapping[str, float]) -> dict[str, int]:
    """Largest-remainder integer counts per split summing to ``n``."""
    raw = {s: fractions.get(s, 0.0) * n for s in SPLITS}
    counts = {s: math.floor(v) for s, v in raw.items()}
    rest = n - sum(counts.values())
    for s in sorted(SPLITS, key=lambda s: raw[s] - counts[s], reverse=True)[:rest]:
        counts[s] += 1
    return counts


def random_split(n: int, fractions: Mapping[str, float], seed: int) -> np.ndarray:
    """Split ``n`` items at random (seeded) into trn/val/tst with the given fractions."""
    counts = _split_counts(n, fractions)
    labels = np.array(
        ["trn"] * counts["trn"] + ["val"] * counts["val"] + ["tst"] * counts["tst"], dtype=object
    )
    rng = np.random.default_rng(seed)
    return labels[rng.permutation(n)] if n else labels


def stratified_split(keys: Sequence[Any], fractions: Mapping[str, float], seed: int) -> np.ndarray:
    """Split items at random within each stratum (``keys``) so every stratum follows the fractions."""
    keys_arr = np.asarray([str(k) for k in keys], dtype=object)
    out = np.empty(len(keys_arr), dtype=object)
    for i, key in enumerate(sorted(set(keys_arr.tolist()))):
        idx = np.flatnonzero(keys_arr == key)
        out[idx] = random_split(len(idx), fractions, seed + 7919 * (i + 1))
    return out


def block_split(
    bounds: np.ndarray,
    block: tuple[float, float],
    fractions: Mapping[str, float],
    seed: int,
) -> tuple[np.ndarray, dict[tuple[int, int], str]]:
    """Leakage-safe spatial split by blocks.

    Args:
        bounds: (n, 4) chip footprints ``minx, miny, maxx, maxy`` in one CRS.
        block: block width and height in CRS units (offsets from the blocks' origin; y may run either way).
        fractions: target share of chips per split.
        seed: random seed of the block order.

    Returns:
        The split of each chip (``"straddle"`` for chips touching blocks of two splits) and the split of
        each block. Blocks are visited in a seeded random order and each goes to the split furthest below
        its target share of chips (chips counted in the block holding their centre).
    """
    n = len(bounds)
    bw, bh = block
    if n == 0:
        return np.empty(0, dtype=object), {}
    b = np.asarray(bounds, dtype="float64")
    eps_x, eps_y = 1e-7 * bw, 1e-7 * bh
    ix0 = np.floor(b[:, 0] / bw + 1e-9).astype(int)
    ix1 = np.floor((b[:, 2] - eps_x) / bw).astype(int)
    iy0 = np.floor(b[:, 1] / bh + 1e-9).astype(int)
    iy1 = np.floor((b[:, 3] - eps_y) / bh).astype(int)
    cx = np.floor(((b[:, 0] + b[:, 2]) / 2) / bw).astype(int)
    cy = np.floor(((b[:, 1] + b[:, 3]) / 2) / bh).astype(int)
    weight: dict[tuple[int, int], int] = {}
    for key in zip(cx.tolist(), cy.tolist(), strict=True):
        weight[key] = weight.get(key, 0) + 1
    touched = set(weight)
    for i in range(n):
        for x in range(ix0[i], ix1[i] + 1):
            for y in range(iy0[i], iy1[i] + 1):
                touched.add((x, y))
    blocks = sorted(touched)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(blocks))
    assigned: dict[tuple[int, int], str] = {}
    count = dict.fromkeys(SPLITS, 0)
    total = 0
    active = [s for s in SPLITS if fractions.get(s, 0.0) > 0]
    # the first blocks seed every requested split (largest share first), so no requested split stays empty
    # while there are at least as many blocks as splits; the rest go to the split furthest below its target
    unseeded = sorted(active, key=lambda s: -fractions[s])
    for k in order:
        key = blocks[k]
        w = weight.get(key, 0)
        if w == 0:
            continue
        total += w
        if unseeded:
            best = unseeded.pop(0)
        else:
            best = max(active, key=lambda s: (fractions[s] * total - count[s], fractions[s]))
        assigned[key] = best
        count[best] += w
    # blocks that hold no chip centre but are reached by chips take the most common split of those chips
    # (ties: the first split in trn, val, tst order), so every touched block has one split
    votes: dict[tuple[int, int], dict[str, int]] = {}
    for i in range(n):
        home = assigned[(int(cx[i]), int(cy[i]))]
        for x in range(ix0[i], ix1[i] + 1):
            for y in range(iy0[i], iy1[i] + 1):
                if (x, y) not in assigned:
                    v = votes.setdefault((x, y), {})
                    v[home] = v.get(home, 0) + 1
    for key, v in votes.items():
        assigned[key] = max(SPLITS, key=lambda s: (v.get(s, 0), -SPLITS.index(s)))
    # a chip is kept only when every block it touches has its home block's split: blocks are disjoint,
    # so chips of two splits never share a pixel
    out = np.empty(n, dtype=object)
    for i in range(n):
        home = assigned[(int(cx[i]), int(cy[i]))]
        same = all(
            assigned[(x, y)] == home for x in range(ix0[i], ix1[i] + 1) for y in range(iy0[i], iy1[i] + 1)
        )
        out[i] = home if same else "straddle"
    return out, assigned


def _strata(kept: pd.DataFrame, schema: ClassSchema) -> list[str]:
    """Stratum of each chip: the rarest (by total pixels) non-background class present, else 'background'."""
    fg = [c for c in schema.codes if c != schema.background]
    totals = {c: int(kept[f"px_{c}"].sum()) for c in fg}
    order = sorted(fg, key=lambda c: totals[c])
    out = []
    for row in kept[[f"px_{c}" for c in order]].to_numpy():
        present = [c for c, v in zip(order, row, strict=True) if v > 0]
        out.append(str(present[0]) if present else "background")
    return out


class _SplitPhase(_JobState):
    """Phase 3 (split) of a :class:`rasterlearn.chips.ChipJob`."""

    # -- phase 3: split ------------------------------------------------------------------------------
    @_unlock_on_error
    def split(self) -> pd.DataFrame:
        """Assign kept chips to trn/val/tst (removing chips the split drops); returns the chip plan."""
        assert self.candidates is not None and self.schema is not None
        o = self.options
        table = self.candidates
        for r in DROP_REASONS[:-1]:
            self.dropped[r] = int((table["reason"] == r).sum())
        kept = table[table["reason"] == ""].copy()
        if kept.empty:
            raise EmptyInputError(
                f"No chip passed the filters ({self._drop_text()} of {len(table)} candidates). "
                f"Relax --min-annotated/--max-nodata/--class-proportion, or check that the labels "
                f"cover the raster."
            )
        fractions = {"trn": 1.0 - o.val - o.test, "val": o.val, "tst": o.test}
        method = self._assign_splits(kept, fractions)
        straddle = kept["split"] == "straddle"
        self.dropped["straddle"] = int(straddle.sum())
        if straddle.any():
            log.info(
                "Dropped %d of %d chips straddling split blocks of two splits (they would share pixels "
                "across splits); a larger --block-size or a stride dividing it keeps more",
                int(straddle.sum()),
                len(kept),
            )
        plan = kept[~straddle].copy()
        if plan.empty:
            raise EmptyInputError("Every chip straddles two splits; use a larger --block-size")
        counts = plan["split"].value_counts()
        for s, frac in fractions.items():
            if frac > 0 and counts.get(s, 0) == 0:
                log.warning(
                    "The %s split is empty (%d blocks/chips in all); use a smaller --block-size, more "
                    "scenes, or another --split-method",
                    s,
                    len(plan),
                )
        plan["chip_id"] = [
            _chip_id(sc, r, c)
            for sc, r, c in zip(plan["scene"], plan["row_off"], plan["col_off"], strict=True)
        ]
        for sc, r, c in kept.loc[straddle.to_numpy(), ["scene", "row_off", "col_off"]].itertuples(
            index=False
        ):
            for sub in ("images", "masks"):  # written during the scan, dropped by the split
                (self.out / sub / f"{_chip_id(sc, r, c)}.tif").unlink(missing_ok=True)
        plan["image"] = "images/" + plan["chip_id"] + ".tif"
        plan["mask"] = "masks/" + plan["chip_id"] + ".tif"
        self.plan = plan.reset_index(drop=True)
        # the candidates table records every decision (the analyze stage reads it)
        table = table.copy()
        table["split"] = ""
        table.loc[kept.index, "split"] = kept["split"]
        table.loc[kept.index[straddle.to_numpy()], "reason"] = "straddle"
        self.candidates = table
        log.info(
            "Splits (%s): %s; dropped: %s",
            method,
            ", ".join(f"{k} {v}" for k, v in counts.items()),
            self._drop_text(),
        )
        return self.plan

    def _assign_splits(self, kept: pd.DataFrame, fractions: Mapping[str, float]) -> str:
        """Write each kept chip's split (or ``straddle``) into ``kept["split"]``; returns the method used."""
        assert self.schema is not None
        o = self.options
        method = o.split_method
        if method == "auto":
            method = "scene" if all(st.scene.split for st in self.states) else "blocks"
        self.split_method = method
        overlapping = self.settings.stride < o.size
        if method == "scene":
            missing = [st.scene.image.name for st in self.states if not st.scene.split]
            if missing:
                raise ConfigError(
                    f"split_method 'scene' needs a split (trn/val/tst) for every scene; missing for "
                    f"{missing}. Add a split column to the scenes CSV or use --split-method blocks."
                )
            by_id = {st.id: st.scene.split for st in self.states}
            kept["split"] = kept["scene"].map(by_id)
            self._warn_scene_overlap()
        elif method == "blocks":
            kept["split"] = self._block_split(kept, fractions)
        elif method in ("random", "stratified"):
            if method == "random":
                kept["split"] = random_split(len(kept), fractions, o.seed)
            else:
                kept["split"] = stratified_split(_strata(kept, self.schema), fractions, o.seed)
            if overlapping:
                self.leaky = True
                log.warning(
                    "LEAKY SPLIT: %s split of overlapping chips (stride %d < size %d): trn and val chips "
                    "share pixels, so validation scores will be optimistic. Use --split-method blocks for a "
                    "leakage-safe split.",
                    method,
                    self.settings.stride,
                    o.size,
                )
        else:  # pragma: no cover - checked in _check_options
            raise ConfigError(f"unknown split method {method!r}")
        return method

    def _drop_text(self) -> str:
        return ", ".join(f"{k} {v}" for k, v in self.dropped.items() if v) or "none dropped"

    def _block_split(self, kept: pd.DataFrame, fractions: Mapping[str, float]) -> np.ndarray:
        o = self.options
        if o.block_size:
            return self._block_split_at(kept, fractions, int(o.block_size))
        # default block size: the largest of 4, 3, 2 chip sizes whose split gives every requested split a
        # share of at least half its target (small scenes have few large blocks); logged and recorded
        wanted = {s: f for s, f in fractions.items() if f > 0}
        splits = np.empty(0)
        for factor in (4, 3, 2):
            splits = self._block_split_at(kept, fractions, factor * o.size)
            kept_splits = splits[splits != "straddle"]
            n = max(1, len(kept_splits))
            if all((kept_splits == s).sum() / n >= 0.5 * f for s, f in wanted.items()):
                break
        if self._block_info["block_size_px"] != 4 * o.size:
            log.info(
                "Split blocks of %d px (not the default %d): larger blocks could not give every split its share "
                "of chips in these scenes",
                self._block_info["block_size_px"],
                4 * o.size,
            )
        return splits

    def _block_split_at(
        self, kept: pd.DataFrame, fractions: Mapping[str, float], block_px: int
    ) -> np.ndarray:
        o = self.options
        ref = self.states[0].grid
        if block_px < o.size:
            raise ConfigError(f"block_size ({block_px} px) must be at least the chip size ({o.size} px)")
        if any_rotated([st.grid for st in self.states]):
            return self._pixel_block_split(kept, fractions, block_px)
        bw, bh = block_px * ref.res[0], block_px * ref.res[1]
        bounds = kept[["minx", "miny", "maxx", "maxy"]].to_numpy(dtype="float64").copy()
        from rasterlearn.io.vector import transform_bounds

        for st in self.states[1:]:
            if st.grid.crs is not None and ref.crs is not None and not st.grid.crs.equals(ref.crs):
                sel = (kept["scene"] == st.id).to_numpy()
                for i in np.flatnonzero(sel):
                    bounds[i] = transform_bounds(tuple(bounds[i]), st.grid.crs, ref.crs)
        # blocks are anchored at the first scene's top-left corner, so they follow its chip lattice when the
        # block size is a multiple of the stride; y runs downwards like rows
        x0, y0 = ref.transform.c, ref.transform.f
        local = np.column_stack([bounds[:, 0] - x0, y0 - bounds[:, 3], bounds[:, 2] - x0, y0 - bounds[:, 1]])
        splits, blocks = block_split(local, (bw, bh), fractions, o.seed)
        self._block_info = {
            "block_size_px": block_px,
            "block_size_crs": [bw, bh],
            "blocks": len(blocks),
            "blocks_per_split": {s: sum(1 for v in blocks.values() if v == s) for s in SPLITS},
        }
        return splits

    def _pixel_block_split(
        self, kept: pd.DataFrame, fractions: Mapping[str, float], block_px: int
    ) -> np.ndarray:
        # rotated grids: map-space envelopes of tilted chips overlap, so blocks are planned in the first
        # scene's pixel space, where a chip is exactly its window (see rasterlearn.chip_blocks)
        ref = self.states[0].grid
        local = pixel_space_bounds(
            kept["scene"].tolist(),
            kept["row_off"].to_numpy(),
            kept["col_off"].to_numpy(),
            int(self.options.size),
            {st.id: st.grid for st in self.states},
            ref,
        )
        splits, blocks = block_split(local, (float(block_px), float(block_px)), fractions, self.options.seed)
        self._block_info = {
            "block_size_px": block_px,
            "block_size_crs": [block_px * ref.res[0], block_px * ref.res[1]],
            "blocks": len(blocks),
            "blocks_per_split": {s: sum(1 for v in blocks.values() if v == s) for s in SPLITS},
            "block_space": "pixels (rotated grid)",
        }
        log.info("Rotated/sheared grid: split blocks of %d px are planned in pixel space", block_px)
        return splits

    def _warn_scene_overlap(self) -> None:
        from shapely.geometry import box

        from rasterlearn.io.vector import transform_bounds

        ref = self.states[0].grid.crs
        foot = []
        for st in self.states:
            b = st.grid.bounds
            if ref is not None and st.grid.crs is not None and not st.grid.crs.equals(ref):
                b = transform_bounds(b, st.grid.crs, ref)
            foot.append(box(*b))
        for i, sa in enumerate(self.states):
            for j in range(i + 1, len(self.states)):
                sb = self.states[j]
                if sa.scene.split != sb.scene.split and foot[i].intersection(foot[j]).area > 0:
                    self.leaky = True
                    log.warning(
                        "LEAKY SPLIT: scenes %s (%s) and %s (%s) overlap spatially",
                        sa.id,
                        sa.scene.split,
                        sb.id,
                        sb.scene.split,
                    )
