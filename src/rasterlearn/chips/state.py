"""A chips job's state shared by its phases, and what every phase uses (labels of a scene, lock release)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd

from rasterlearn.chips.options import DROP_REASONS, ChipSettings
from rasterlearn.chips.scenes import Scene
from rasterlearn.chips.sources import load_label_areas, load_vector_labels
from rasterlearn.errors import ConfigError, InputError
from rasterlearn.grid import Grid
from rasterlearn.io.paths import check_outputs, release_lock
from rasterlearn.label_grid import LabelRaster
from rasterlearn.labels import ClassSchema, VectorLabels
from rasterlearn.options import ChipsOptions


@dataclass
class _SceneState:
    scene: Scene
    id: str
    grid: Grid
    bands: list[str]
    band_indexes: list[int]
    dtype: str
    nodata: float | None
    windows: int
    labels_note: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


_Phase = TypeVar("_Phase", bound=Callable[..., Any])


def _unlock_on_error(method: _Phase) -> _Phase:
    """A failing phase of a :class:`ChipJob` releases the output folder's lock (taken by ``prepare``)."""

    @functools.wraps(method)
    def run(self: _JobState, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except BaseException:
            release_lock(self.requested_out)
            raise

    return run  # type: ignore[return-value]


class _JobState:
    """The state of a :class:`rasterlearn.chips.ChipJob` that its phases share."""

    def __init__(
        self, scenes: Sequence[Scene], options: ChipsOptions, *, schema: ClassSchema | None = None
    ) -> None:
        if not scenes:
            raise InputError("No scenes: give --raster/--labels pairs or a --scenes CSV")
        if options.output is None:
            raise ConfigError("Give the dataset folder with -o/--output DIR")
        self.scenes = list(scenes)
        self.options = options
        self.requested_out = Path(options.output)
        inputs = [p for s in self.scenes for p in (s.image, s.labels, s.label_raster, *s.later_images)]
        check_outputs([*inputs, options.label_areas, options.schema_file], [self.requested_out])
        self.settings = ChipSettings.resolve(options)
        self.given_schema = self.settings.schema(options, schema)
        self.out = self.requested_out
        self.schema: ClassSchema | None = None
        self.states: list[_SceneState] = []
        self.candidates: pd.DataFrame | None = None
        self.plan: pd.DataFrame | None = None
        self.split_method: str = ""
        self.leaky = False
        self.dropped: dict[str, int] = dict.fromkeys(DROP_REASONS, 0)
        self.written = 0
        self.skipped = 0
        self.params: dict[str, Any] = {}
        self.params_hash = ""
        self._block_info: dict[str, Any] = {}
        self._vectors: dict[str, VectorLabels] = {}
        self._fresh: set[str] = set()  # chips written by this run

    def _attribute(self, st: _SceneState) -> str | None:
        return st.scene.attribute or self.options.attribute

    @property
    def n_windows(self) -> int:
        return sum(st.windows for st in self.states)

    def _open_labels(self, st: _SceneState, schema: ClassSchema | None) -> VectorLabels | LabelRaster:
        o, s = self.options, st.scene
        src: VectorLabels | LabelRaster
        if s.label_raster is not None:
            src = LabelRaster(s.label_raster, st.grid, band=o.label_band, unknown=o.unknown_classes)
            st.labels_note = src.note
            st.extra["label_alignment"] = src.alignment
        else:
            assert s.labels is not None
            if st.id in self._vectors:
                vec = self._vectors[st.id]
                if schema is not None and vec.schema is not schema:
                    vec.bind(schema)
                return vec
            attribute = self._attribute(st)
            gdf = load_vector_labels(
                s.labels, st.grid, attribute=attribute, layer=s.layer or o.layer, raster=str(s.image)
            )
            areas: Any = self.settings.label_areas
            if areas is not None and areas not in ("features", "extent"):
                areas = load_label_areas(areas, st.grid)
            src = VectorLabels(
                gdf,
                st.grid,
                attribute=attribute,
                burn_value=o.burn_value,
                all_touched=o.all_touched,
                overlap=o.overlap,
                priority=o.priority,
                label_areas=areas,
                unknown=o.unknown_classes,
                source=str(s.labels),
            )
            st.extra["features"] = len(src)
            self._vectors[st.id] = src
        if schema is not None:
            src.bind(schema)
        return src
