"""Chips phase *finish*: manifest, candidates table, band statistics and ``dataset.json``."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rasterlearn._util import atomic_write_json, json_default
from rasterlearn.chips.options import FORMAT, SPLITS
from rasterlearn.chips.state import _JobState, _unlock_on_error
from rasterlearn.chips.store import _atomic_csv
from rasterlearn.errors import EmptyInputError
from rasterlearn.grid import Window
from rasterlearn.io.paths import release_lock
from rasterlearn.io.raster import BandStats, band_statistics, gdal_cache
from rasterlearn.normalize import Normalization

# one logger for the whole stage, as before the split (log lines and --progress json name it)
log = logging.getLogger("rasterlearn.chips")


@dataclass
class ChipResult:
    """What a chips job produced."""

    out: Path
    manifest: pd.DataFrame
    dataset: dict[str, Any]
    written: int
    skipped: int

    @property
    def splits(self) -> dict[str, int]:
        return dict(self.dataset["splits"])


class _FinishPhase(_JobState):
    """Phase 5 (manifest, statistics, dataset.json) of a :class:`rasterlearn.chips.ChipJob`."""

    # -- phase 5: manifest, statistics, dataset.json -----------------------------------------------
    @_unlock_on_error
    def finish(self) -> ChipResult:
        assert self.plan is not None and self.schema is not None and self.candidates is not None
        o, schema = self.options, self.schema
        px_cols = [f"px_{c}" for c in schema.codes]
        cols = [
            "chip_id",
            "image",
            "mask",
            "scene",
            "split",
            "row_off",
            "col_off",
            "height",
            "width",
            "minx",
            "miny",
            "maxx",
            "maxy",
            "nodata_fraction",
            "annotated_fraction",
            "labelled_fraction",
            *px_cols,
            "px_ignore",
        ]
        manifest = self.plan[cols].copy()
        _atomic_csv(self.out / "manifest.csv", manifest)
        _atomic_csv(self.out / "candidates.csv", self.candidates)
        with gdal_cache(o.cache_mb):
            stats = self._statistics(manifest)
        ref = self.states[0]
        crs = ref.grid.crs
        dtypes = sorted({st.dtype for st in self.states})
        dtype = str(np.result_type(*[np.dtype(d) for d in dtypes]))
        if len(dtypes) > 1:
            log.warning(
                "Scenes have different dtypes %s; chips keep each scene's dtype, dataset dtype is %s",
                dtypes,
                dtype,
            )
        counts = manifest["split"].value_counts()
        scenes = self._scene_records(manifest)
        dataset: dict[str, Any] = {
            "format": FORMAT,
            "params": self.params,
            "params_hash": self.params_hash,
            "chip_size": o.size,
            "stride": self.settings.stride,
            "bands": ref.bands,
            "band_indexes": ref.band_indexes,
            "timesteps": ref.scene.timesteps,
            "dtype": dtype,
            "nodata": ref.nodata,
            "mask_dtype": schema.mask_dtype,
            "schema": schema.to_dict(),
            "statistics": [s.to_dict() for s in stats],
            "normalization": Normalization.from_stats([s.to_dict() for s in stats], "zscore").to_dict(),
            "crs": None if crs is None else crs.to_wkt(),
            "epsg": ref.grid.epsg,
            "resolution": list(ref.grid.res),
            "crs_units": None if crs is None or not crs.axis_info else crs.axis_info[0].unit_name,
            "scenes": scenes,
            "splits": {s: int(counts.get(s, 0)) for s in SPLITS},
            "split_method": self.split_method,
            "leaky": self.leaky,
            "blocks": self._block_info or None,
            "dropped": dict(self.dropped),
            "candidates": len(self.candidates),
            "edge": "pad",
            "filters": {
                "min_annotated": o.min_annotated,
                "max_nodata": o.max_nodata,
                "class_proportion": {str(k): v for k, v in self.settings.class_proportion.items()},
            },
        }
        atomic_write_json(self.out / "dataset.json", dataset, default=json_default)
        log.info(
            "Dataset ready: %s (%s)", self.out, ", ".join(f"{k} {v}" for k, v in dataset["splits"].items())
        )
        release_lock(self.requested_out)
        return ChipResult(self.out, manifest, dataset, self.written, self.skipped)

    def _scene_records(self, manifest: pd.DataFrame) -> list[dict[str, Any]]:
        """Each scene's entry of ``dataset.json``: its inputs, grid, bands and chip counts."""
        assert self.candidates is not None
        scenes = []
        for st in self.states:
            d = st.scene.to_dict()
            d.update(
                {
                    "id": st.id,
                    "dtype": st.dtype,
                    "nodata": st.nodata,
                    "bands": st.bands,
                    "epsg": st.grid.epsg,
                    "crs": None if st.grid.crs is None else st.grid.crs.to_wkt(),
                    "resolution": list(st.grid.res),
                    "shape": [st.grid.height, st.grid.width],
                    "attribute": self._attribute(st),
                    "labels_note": st.labels_note,
                    "chips": int((manifest["scene"] == st.id).sum()),
                    "candidates": int((self.candidates["scene"] == st.id).sum()),
                    **st.extra,
                }
            )
            scenes.append(d)
        return scenes

    def _statistics(self, manifest: pd.DataFrame) -> list[BandStats]:
        """Nodata-aware band statistics over the trn chips' valid pixels (sampled windows, seeded)."""
        o = self.options
        chosen = manifest[manifest["split"] == "trn"]
        if chosen.empty:
            log.warning("No trn chips: band statistics are computed on all chips")
            chosen = manifest
        rng = np.random.default_rng(o.seed)
        parts: list[list[BandStats]] = []
        for st in self.states:
            rows = chosen[chosen["scene"] == st.id]
            if rows.empty:
                continue
            if len(rows) > o.stats_windows:
                rows = rows.iloc[np.sort(rng.choice(len(rows), o.stats_windows, replace=False))]
            wins = []
            for r in rows.itertuples(index=False):
                w = Window(int(r.row_off), int(r.col_off), int(r.height), int(r.width)).clip(*st.grid.shape)
                if not w.is_empty:
                    wins.append(w)
            with st.scene.open(st.band_indexes) as reader:
                try:
                    parts.append(
                        band_statistics(reader, sample_size=o.stats_sample, windows=wins, seed=o.seed)
                    )
                except EmptyInputError:
                    log.warning("%s: no valid pixel in its trn chips for statistics", st.id)
        if not parts:
            raise EmptyInputError("No valid pixels in the training chips to compute band statistics")
        return combine_stats(parts, self.states[0].bands)


def combine_stats(parts: Sequence[Sequence[BandStats]], names: Sequence[str]) -> list[BandStats]:
    """Pool per-scene statistics: exact count/mean/std/min/max; p2/p98 as count-weighted means (approximate)."""
    out = []
    for k, name in enumerate(names):
        items = [p[k] for p in parts]
        n = np.array([s.count for s in items], dtype="float64")
        mean = np.array([s.mean for s in items])
        std = np.array([s.std for s in items])
        total = n.sum()
        m = float((n * mean).sum() / total)
        var = float((n * (std**2 + (mean - m) ** 2)).sum() / total)
        out.append(
            BandStats(
                name,
                int(total),
                m,
                math.sqrt(max(var, 0.0)),
                min(s.min for s in items),
                max(s.max for s in items),
                float((n * [s.p2 for s in items]).sum() / total),
                float((n * [s.p98 for s in items]).sum() / total),
            )
        )
    return out
