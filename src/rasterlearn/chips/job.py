"""The chips job: :class:`ChipJob` (its phases in explicit steps) and :func:`make_chips` (all of them)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from rasterlearn._util import atomic_write_json, file_identity
from rasterlearn.chips.finish import ChipResult, _FinishPhase
from rasterlearn.chips.options import FORMAT, Compression, Progress, SplitMethod, keyword_options
from rasterlearn.chips.scan import _ScanPhases
from rasterlearn.chips.scenes import Scene, _unique_ids
from rasterlearn.chips.split import _SplitPhase
from rasterlearn.chips.state import _SceneState, _unlock_on_error
from rasterlearn.chips.store import _PARAMS_FILE, _file_identity, _resolve_out
from rasterlearn.engine.journal import fingerprint
from rasterlearn.errors import InputError, InputNotFoundError
from rasterlearn.grid import plan_tiles
from rasterlearn.io.paths import acquire_lock
from rasterlearn.label_grid import LabelRaster
from rasterlearn.labels import ClassSchema, LabelAreasMode, OverlapRule, UnknownPolicy, crs_name, infer_schema

# one logger for the whole stage, as before the split (log lines and --progress json name it)
log = logging.getLogger("rasterlearn.chips")


class ChipJob(_ScanPhases, _SplitPhase, _FinishPhase):
    """A chips job in explicit phases, so callers can show progress per phase: ``ChipJob(scenes, options,
    schema=None)`` for :class:`~rasterlearn.options.ChipsOptions` (its ``output`` is the dataset folder) and a
    class schema object when the options name no schema file.

    :func:`run_chips` (the stage function) and ``make_chips`` (its keyword form) run ``prepare() -> scan() ->
    split() -> write() -> finish()`` (:meth:`run`); see their arguments.
    """

    def run(self, progress: Progress | None = None) -> ChipResult:
        """Every phase in order: ``prepare() -> scan() -> split() -> write() -> finish()``."""
        self.prepare()
        self.scan(progress)
        self.split()
        self.write(progress)
        return self.finish()

    # -- phase 1: inputs, schema, output folder ---------------------------------------------------
    @_unlock_on_error
    def prepare(self) -> ChipJob:
        """Check the inputs, fix the class schema and the output folder; takes the folder's lock (released by
        :meth:`finish`, or taken over as stale once this process ends)."""
        acquire_lock(self.requested_out)
        o = self.options
        ids = _unique_ids(self.scenes)
        for s, sid in zip(self.scenes, ids, strict=True):
            s.id = sid
            for img in (s.image, *s.later_images):
                if not img.exists():
                    raise InputNotFoundError(f"Raster not found: {img}")
            if s.labels is None and s.label_raster is None:
                raise InputError(
                    f"Scene {s.image} has no labels: give a vector (--labels) or a label raster "
                    f"(--label-raster)"
                )
        first_bands: list[str] | None = None
        for s in self.scenes:
            if s.timesteps != self.scenes[0].timesteps:
                raise InputError(
                    f"Scene {s.image} has {s.timesteps} date(s) but {self.scenes[0].image} has "
                    f"{self.scenes[0].timesteps}; every scene of a dataset must have the same dates count"
                )
            with s.open(self.settings.bands) as r:
                st = _SceneState(
                    s,
                    s.id or s.image.stem,
                    r.grid,
                    r.band_names,
                    r.band_indexes,
                    r.dtype,
                    r.nodata,
                    len(plan_tiles(r.grid, o.size, self.settings.stride, edge="pad")),
                )
            if first_bands is None:
                first_bands = st.bands
            elif len(st.bands) != len(first_bands):
                raise InputError(
                    f"{s.image} has {len(st.bands)} selected bands but {self.scenes[0].image} has "
                    f"{len(first_bands)}; every scene must give the same bands (use --bands)"
                )
            self._check_grid(st)
            self.states.append(st)
        schema = self._schema()
        self.schema = schema
        self._make_params()
        self.out = _resolve_out(self.requested_out, self.params_hash, o.overwrite)
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "images").mkdir(exist_ok=True)
        (self.out / "masks").mkdir(exist_ok=True)
        (self.out / ".scan").mkdir(exist_ok=True)
        atomic_write_json(
            self.out / _PARAMS_FILE, {"params_hash": self.params_hash, "params": self.params}, default=str
        )
        log.info(
            "Chip dataset %s (parameters %s), %d scene(s), %d candidate windows, schema: %s",
            self.out,
            self.params_hash,
            len(self.states),
            self.n_windows,
            schema.describe(),
        )
        return self

    def _schema(self) -> ClassSchema:
        """The given class schema (with the ignore code asked for), else one inferred from the label values."""
        o = self.options
        values: list[Any] = []
        sparse = self.settings.label_areas == "features"
        # label values for schema inference (vectors are read again per scene at scan time)
        given = self.given_schema
        if given is None:
            for st in self.states:
                src = self._open_labels(st, None)
                try:
                    values.extend(src.values())
                finally:
                    if isinstance(src, LabelRaster):
                        src.close()
            if any(st.scene.label_raster is not None for st in self.states) and not sparse:
                schema = infer_schema(
                    values, background=0 if 0 in values else None, ignore_index=o.ignore_index
                )
            elif all(self._attribute(st) is None for st in self.states) and len(set(values)) == 1:
                v = int(values[0])
                base = ClassSchema.binary(ignore_index=o.ignore_index or 255) if v == 1 else None
                schema = base or infer_schema(values, sparse=sparse, ignore_index=o.ignore_index)
            else:
                schema = infer_schema(values, sparse=sparse, ignore_index=o.ignore_index)
        else:
            schema = given
            if o.ignore_index is not None and o.ignore_index != schema.ignore_index:
                schema = replace(schema, ignore_index=int(o.ignore_index))
        return schema

    def _check_grid(self, st: _SceneState) -> None:
        g, size = st.grid, self.options.size
        if g.height < size or g.width < size:
            log.warning(
                "%s is %dx%d px, smaller than one %d px chip: its chips are padded with nodata/ignore",
                st.scene.image,
                g.width,
                g.height,
                size,
            )
        if g.is_geographic:
            log.warning(
                "%s has a geographic CRS (%s): pixel sizes are in degrees, so block sizes are in degrees and "
                "a pixel's ground size varies with latitude; consider projecting the raster (e.g. UTM)",
                st.scene.image,
                crs_name(g.crs),
            )
        if g.crs is None:
            log.warning("%s has no CRS: chips are georeferenced by pixel transform only", st.scene.image)
        if not g.is_rectilinear:
            log.warning("%s has a rotated/sheared transform; chips keep it", st.scene.image)

    def _make_params(self) -> None:
        """The dataset's parameters and their hash (its fingerprint: a dataset of the same hash is resumed):
        the options less the output-neutral ones, resolved (:meth:`ChipSettings.record`), with the scenes'
        file identities and the class schema's content."""
        assert self.schema is not None
        self.params = {
            "format": FORMAT,
            "scenes": [
                {
                    "id": st.id,
                    "image": _file_identity(st.scene.image),
                    "labels": _file_identity(st.scene.labels or st.scene.label_raster),
                    "attribute": self._attribute(st),
                    "split": st.scene.split,
                    "layer": st.scene.layer,
                    "metadata": st.scene.metadata,
                    **(
                        {
                            "later_images": [file_identity(p) for p in st.scene.later_images],
                            "nodata_policy": st.scene.nodata_policy,
                        }
                        if st.scene.later_images
                        else {}
                    ),
                    **({"nodata": st.scene.nodata} if st.scene.nodata is not None else {}),
                }
                for st in self.states
            ],
            **self.settings.record(self.options),
            "schema": self.schema.to_dict(),
        }
        self.params_hash = fingerprint(self.params)


def make_chips(
    scenes: Sequence[Scene],
    out: str | Path,
    *,
    size: int = 256,
    stride: int | None = None,
    bands: Sequence[int | str] | None = None,
    attribute: str | None = None,
    burn_value: int = 1,
    layer: str | None = None,
    schema: ClassSchema | str | Path | None = None,
    ignore_index: int | None = None,
    all_touched: bool = False,
    overlap: OverlapRule = "last",
    priority: Sequence[int] | None = None,
    label_areas: LabelAreasMode | str | Path | None = None,
    unknown: UnknownPolicy = "error",
    label_band: int = 1,
    split_method: SplitMethod = "auto",
    val: float = 0.15,
    test: float = 0.15,
    block_size: int | None = None,
    min_annotated: float = 0.0,
    max_nodata: float = 100.0,
    class_proportion: Mapping[int, float] | str | None = None,
    seed: int = 0,
    compress: Compression = "deflate",
    stats_sample: int = 200_000,
    stats_windows: int = 256,
    overwrite: bool = False,
    cache_mb: int = 64,
    progress: Progress | None = None,
) -> ChipResult:
    """Cut scenes and their labels into a chip dataset (see the module docstring for the layout).

    Args:
        scenes: images with vector labels or label rasters (see :class:`Scene`, :func:`read_scenes_csv`).
        out: dataset folder. Same parameters: resumed (finished chips skipped). Other parameters: a new
            folder ``<out>-<hash>`` is written instead, unless ``overwrite``.
        size, stride: chip size and step in pixels (stride < size: overlapping chips). Edge chips are padded
            with nodata (image) and ignore (mask), never dropped.
        bands: 1-based band indexes or descriptions (default: all but alpha).
        attribute: class attribute of the vector labels (numbers, or text mapped by the schema); ``None``
            burns ``burn_value``.
        layer: vector layer name.
        schema: a :class:`ClassSchema` or a YAML/CSV file; default: inferred from the label values.
        ignore_index: the ignore code (default: the schema's, 255; 65535 when codes reach 255).
        all_touched, overlap, priority, label_areas, unknown: rasterization rules
            (see :class:`rasterlearn.labels.VectorLabels`); ``label_areas`` may also be a polygon file.
        label_band: band of label rasters.
        split_method: ``auto`` (``scene`` when every scene has a split, else ``blocks``), ``blocks``,
            ``random``, ``stratified`` or ``scene``.
        val, test: fractions of chips for validation and test (trn gets the rest).
        block_size: spatial block size in pixels for ``blocks`` (default 4 x size).
        min_annotated: minimum percent of non-background labelled pixels per chip.
        max_nodata: maximum percent of nodata pixels per chip (chips without any valid pixel always go).
        class_proportion: ``{code: minimum percent of the chip's labelled pixels}``.
        seed: seed of splits and statistics sampling.
        compress: chip compression.
        stats_sample, stats_windows: pixels per band and trn windows per scene sampled for statistics.
        overwrite: replace an existing dataset in ``out``.
        cache_mb: GDAL block cache while reading (bounds memory; does not change the output).
        progress: called with the number of windows scanned / chips written (scan total + write total).

    Raises:
        InputError and subclasses for bad inputs (see :mod:`rasterlearn.errors`), OutputError.
    """
    options, given = keyword_options(
        out,
        size=size,
        stride=stride,
        bands=bands,
        attribute=attribute,
        burn_value=burn_value,
        layer=layer,
        schema=schema,
        ignore_index=ignore_index,
        all_touched=all_touched,
        overlap=overlap,
        priority=priority,
        label_areas=label_areas,
        unknown=unknown,
        label_band=label_band,
        split_method=split_method,
        val=val,
        test=test,
        block_size=block_size,
        min_annotated=min_annotated,
        max_nodata=max_nodata,
        class_proportion=class_proportion,
        seed=seed,
        compress=compress,
        stats_sample=stats_sample,
        stats_windows=stats_windows,
        overwrite=overwrite,
        cache_mb=cache_mb,
    )
    return ChipJob(scenes, options, schema=given).run(progress)
