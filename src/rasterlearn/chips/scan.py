"""Chips phases *scan* (read every planned window, rasterize its labels, count pixels, write the chips that
pass the filters) and *write* (complete chips an interrupted run left missing)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from rasterlearn.chips.options import Progress
from rasterlearn.chips.split import apply_filters
from rasterlearn.chips.state import _JobState, _SceneState, _unlock_on_error
from rasterlearn.chips.store import _atomic_csv, _chip_id, _colormap, _write_tif
from rasterlearn.grid import Window, plan_tiles
from rasterlearn.io.raster import gdal_cache
from rasterlearn.io.validity import block_validity
from rasterlearn.label_grid import LabelRaster
from rasterlearn.labels import ClassSchema, apply_validity

# one logger for the whole stage, as before the split (log lines and --progress json name it)
log = logging.getLogger("rasterlearn.chips")


class _ScanPhases(_JobState):
    """Phases 2 (scan) and 4 (write) of a :class:`rasterlearn.chips.ChipJob`."""

    # -- phase 2: scan -------------------------------------------------------------------------------
    @_unlock_on_error
    def scan(self, progress: Progress | None = None) -> pd.DataFrame:
        """Read every planned window, rasterize its labels and count pixels (cached per scene)."""
        with gdal_cache(self.options.cache_mb):
            return self._scan_all(progress)

    def _scan_all(self, progress: Progress | None) -> pd.DataFrame:
        assert self.schema is not None
        frames = []
        for st in self.states:
            cache = self.out / ".scan" / f"{st.id}.csv"
            if cache.exists():
                df = pd.read_csv(cache, dtype={"scene": str})
                log.info("%s: scan results reused from an earlier run", st.id)
                if progress:
                    progress(st.windows)
            else:
                df = self._scan_scene(st, progress)
                _atomic_csv(cache, df)
            frames.append(df)
        table = pd.concat(frames, ignore_index=True)
        o = self.options
        table["reason"] = apply_filters(
            table,
            self.schema,
            min_annotated=o.min_annotated,
            max_nodata=o.max_nodata,
            class_proportion=self.settings.class_proportion,
        )
        self.candidates = table
        return table

    def _scan_scene(self, st: _SceneState, progress: Progress | None) -> pd.DataFrame:
        schema = self.schema
        assert schema is not None
        o = self.options
        codes = schema.codes
        rows = []
        labels = self._open_labels(st, schema)
        import rasterio.crs

        crs = None if st.grid.crs is None else rasterio.crs.CRS.from_wkt(st.grid.crs.to_wkt())
        cmap = _colormap(schema)
        try:
            with st.scene.open(st.band_indexes) as reader:
                for win in plan_tiles(st.grid, o.size, self.settings.stride, edge="pad"):
                    block = reader.read(win)
                    mask = apply_validity(labels.mask(win), block.valid, schema.ignore_index)
                    row = _window_row(st, win, mask, block.valid, schema, codes)
                    rows.append(row)
                    # a chip that passes the filters is written now (one read per window); the split only
                    # decides its manifest row, and chips the split drops (straddling) are removed again
                    reason = apply_filters(
                        pd.DataFrame([row]),
                        schema,
                        min_annotated=o.min_annotated,
                        max_nodata=o.max_nodata,
                        class_proportion=self.settings.class_proportion,
                    )
                    if reason.iloc[0] == "":
                        chip_id = _chip_id(st.id, win.row_off, win.col_off)
                        if not self._chip_done(chip_id):
                            self._write_chip(st, win, chip_id, block, mask, crs, reader.nodata, cmap)
                            self._fresh.add(chip_id)
                            self.written += 1
                    if progress:
                        progress(1)
        finally:
            if isinstance(labels, LabelRaster):
                labels.close()
        return pd.DataFrame(rows)

    def _write_chip(
        self,
        st: _SceneState,
        win: Window,
        chip_id: str,
        block: Any,
        mask: np.ndarray,
        crs: Any,
        nodata: float | None,
        cmap: Mapping[int, Any],
    ) -> None:
        """Write one chip's image, then its mask (each atomically). Chip files do not depend on the split."""
        assert self.schema is not None
        o, schema = self.options, self.schema
        transform = st.grid.window_transform(win)
        tags = {
            "RASTERLEARN_SCENE": st.id,
            "RASTERLEARN_WINDOW": f"{win.row_off},{win.col_off},{win.height},{win.width}",
        }
        _write_tif(
            self.out / "images" / f"{chip_id}.tif",
            block.data,
            transform=transform,
            crs=crs,
            nodata=nodata,
            descriptions=st.bands,
            compress=o.compress,
            tags=tags,
            valid=chip_mask(block.data, block.valid, nodata),
        )
        _write_tif(
            self.out / "masks" / f"{chip_id}.tif",
            mask[np.newaxis].astype(schema.mask_dtype, copy=False),
            transform=transform,
            crs=crs,
            nodata=schema.ignore_index,
            descriptions=["class"],
            colormap=cmap,
            compress=o.compress,
            tags=tags,
        )

    # -- phase 4: write ------------------------------------------------------------------------------
    @property
    def n_to_write(self) -> int:
        return 0 if self.plan is None else len(self.plan)

    @_unlock_on_error
    def write(self, progress: Progress | None = None) -> int:
        """Write every planned chip that is not on disk yet (image first, then mask; both atomic).

        Chips passing the filters are already written during :meth:`scan` (one read per window); this
        phase completes what an earlier, interrupted run left (scan results reused from ``.scan/``)."""
        with gdal_cache(self.options.cache_mb):
            return self._write_all(progress)

    def _chip_done(self, chip_id: str) -> bool:
        return (self.out / "images" / f"{chip_id}.tif").exists() and (
            self.out / "masks" / f"{chip_id}.tif"
        ).exists()

    def _write_all(self, progress: Progress | None) -> int:
        assert self.plan is not None and self.schema is not None
        import rasterio.crs

        schema = self.schema
        cmap = _colormap(schema)
        for st in self.states:
            rows = self.plan[self.plan["scene"] == st.id]
            if rows.empty:
                continue
            todo = [
                r
                for r in rows.itertuples(index=False)
                if not ((self.out / r.image).exists() and (self.out / r.mask).exists())
            ]
            self.skipped += sum(1 for cid in rows["chip_id"] if cid not in self._fresh) - len(todo)
            if progress and len(rows) > len(todo):
                progress(len(rows) - len(todo))
            if not todo:
                continue
            crs = None if st.grid.crs is None else rasterio.crs.CRS.from_wkt(st.grid.crs.to_wkt())
            labels = self._open_labels(st, schema)
            try:
                with st.scene.open(st.band_indexes) as reader:
                    nodata = reader.nodata
                    for r in todo:
                        win = Window(int(r.row_off), int(r.col_off), int(r.height), int(r.width))
                        block = reader.read(win)
                        mask = apply_validity(labels.mask(win), block.valid, schema.ignore_index)
                        self._write_chip(st, win, r.chip_id, block, mask, crs, nodata, cmap)
                        self.written += 1
                        if progress:
                            progress(1)
            finally:
                if isinstance(labels, LabelRaster):
                    labels.close()
        log.info("Wrote %d chips, %d already on disk", self.written, self.skipped)
        return self.written


def _window_row(
    st: _SceneState,
    win: Window,
    mask: np.ndarray,
    valid: np.ndarray,
    schema: ClassSchema,
    codes: Sequence[int],
) -> dict[str, Any]:
    total = win.height * win.width
    counts = np.bincount(mask.ravel(), minlength=max([*codes, schema.ignore_index]) + 1)
    ignore = int(counts[schema.ignore_index])
    labelled = total - ignore
    bg = int(counts[schema.background]) if schema.background is not None and schema.background in codes else 0
    minx, miny, maxx, maxy = st.grid.window_bounds(win)
    row: dict[str, Any] = {
        "scene": st.id,
        "row_off": win.row_off,
        "col_off": win.col_off,
        "height": win.height,
        "width": win.width,
        "minx": minx,
        "miny": miny,
        "maxx": maxx,
        "maxy": maxy,
        "nodata_fraction": 1.0 - float(valid.sum()) / total,
        "annotated_fraction": (labelled - bg) / total,
        "labelled_fraction": labelled / total,
    }
    for c in codes:
        row[f"px_{c}"] = int(counts[c])
    row["px_ignore"] = ignore
    return row


def chip_mask(data: np.ndarray, valid: np.ndarray, nodata: float | None) -> np.ndarray | None:
    """The internal mask a chip image is written with, so that reading the chip gives back the reader's
    validity ``valid``: none when every pixel is valid, or when the chip's ``nodata`` (with NaN/inf) already
    says exactly which pixels are invalid; else ``valid`` itself (a mask, an alpha band or another band's
    nodata made those pixels invalid, and GDAL's mask of the chip then holds them all)."""
    if valid.all():
        return None
    if nodata is None:
        return valid
    implied, _ = block_validity(data, [nodata] * data.shape[0])
    return None if np.array_equal(implied, valid) else valid
