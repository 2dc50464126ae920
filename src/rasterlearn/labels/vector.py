"""Vector labels rasterized onto a grid, window by window: :class:`VectorLabels` (features in memory with a
spatial index, overlap rules, label areas) and :func:`rasterize_window`."""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import numpy as np

from rasterlearn.errors import AttributeNotFoundError, InputError
from rasterlearn.grid import Grid, Window
from rasterlearn.labels.schema import ClassSchema, UnknownPolicy, is_null_label

log = logging.getLogger("rasterlearn.labels")  # one logger for the package, as before the split

OverlapRule = Literal["last", "priority"]
LabelAreasMode = Literal["features", "extent"]


def rasterize_window(
    geometries: Sequence[Any],
    values: Sequence[int] | np.ndarray,
    grid: Grid,
    window: Window,
    *,
    fill: int,
    dtype: str,
    all_touched: bool = False,
) -> np.ndarray:
    """Burn ``geometries`` (in ``grid``'s CRS) with ``values`` into a ``window`` of ``grid``.

    Later geometries overwrite earlier ones (painter's order). Returns a ``(height, width)`` array.
    """
    from rasterio import features

    shape = (window.height, window.width)
    if len(geometries) == 0:
        return np.full(shape, fill, dtype=dtype)
    with count_skipped_shapes():
        return features.rasterize(
            zip(geometries, (int(v) for v in values), strict=True),
            out_shape=shape,
            transform=grid.window_transform(window),
            fill=fill,
            all_touched=all_touched,
            dtype=dtype,
        )


@contextlib.contextmanager
def count_skipped_shapes() -> Iterator[None]:
    """Turn rasterio's ``ShapeSkipWarning`` (one per empty/invalid geometry) into one log line."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    skipped = 0
    for w in caught:
        if type(w.message).__name__ == "ShapeSkipWarning":
            skipped += 1
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if skipped:
        log.warning("%d feature%s with empty geometry skipped", skipped, "" if skipped == 1 else "s")


def _codes_for_values(
    values: Sequence[Any], schema: ClassSchema, unknown: UnknownPolicy, source: str
) -> tuple[np.ndarray, dict[str, int]]:
    """Codes for each value; unknown values raise (``error``) or get -1 (``ignore``), counted by value."""
    cache: dict[Any, int] = {}
    missing: dict[str, int] = {}
    out = np.empty(len(values), dtype="int64")
    for i, v in enumerate(values):
        if v not in cache:
            try:
                cache[v] = schema.code_of(v)
            except InputError:
                cache[v] = -1
        code = cache[v]
        if code < 0:
            missing[str(v)] = missing.get(str(v), 0) + 1
        out[i] = code
    if missing and unknown == "error":
        listed = ", ".join(f"{k!r} ({n} features)" for k, n in sorted(missing.items()))
        raise InputError(
            f"{source}: label values {listed} are not in the class schema ({schema.describe()}). Add them to "
            f"the schema file, or pass unknown='ignore' (CLI: --unknown-classes ignore) to drop those "
            f"features."
        )
    return out, missing


class VectorLabels:
    """Vector labels placed on a raster grid, rasterized one window at a time.

    Features are kept in memory (in the grid's CRS) with a spatial index (shapely STRtree); every call of
    :meth:`mask` selects only the features intersecting the window and burns them with
    ``rasterio.features.rasterize``. The raster itself is never materialised, so memory does not grow
    with the scene size.

    Overlap rule: ``"last"`` (default) burns features in file order, so a later feature wins where
    features overlap. ``"priority"`` burns classes in priority order: ``priority`` lists class codes from
    the highest priority (wins) to the lowest; codes not listed rank below the listed ones, higher codes
    before lower ones; the default priority (no list) is "higher code wins". Within one class, file order
    applies.

    Label areas (incomplete/sparse annotation): with ``label_areas="features"`` only pixels covered by a
    labelled feature are labelled and everything else is ``ignore``; ``"extent"`` labels the bounding
    box of all features (background inside, ignore outside); a GeoDataFrame of polygons labels only
    inside those polygons. Without label areas every pixel not covered by a feature is background.

    Args:
        features: a GeoDataFrame already in ``grid``'s CRS (see :func:`load_vector_labels`).
        grid: the raster grid that masks are made for.
        attribute: column with class values (numbers, or text mapped via the schema); ``None`` burns
            ``burn_value`` for every feature.
        burn_value: the constant code when ``attribute`` is ``None``.
        all_touched: burn every pixel a geometry touches (GDAL ALL_TOUCHED), not only pixel centres.
        overlap: ``"last"`` or ``"priority"`` (see above).
        priority: class codes from highest to lowest priority, for ``overlap="priority"``.
        label_areas: ``None``, ``"features"``, ``"extent"`` or a GeoDataFrame of polygons (grid CRS).
        unknown: values not in the schema: ``"error"`` (default) or ``"ignore"`` (features dropped, logged).
        source: name of the input for messages.
    """

    def __init__(
        self,
        features: Any,
        grid: Grid,
        *,
        attribute: str | None = None,
        burn_value: int = 1,
        all_touched: bool = False,
        overlap: OverlapRule = "last",
        priority: Sequence[int] | None = None,
        label_areas: LabelAreasMode | Any | None = None,
        unknown: UnknownPolicy = "error",
        source: str | None = None,
    ) -> None:
        import shapely

        if overlap not in ("last", "priority"):
            raise InputError(f"overlap must be 'last' or 'priority', got {overlap!r}")
        if unknown not in ("error", "ignore"):
            raise InputError(f"unknown must be 'error' or 'ignore', got {unknown!r}")
        self.grid = grid
        self.attribute = attribute
        self.burn_value = int(burn_value)
        self.all_touched = bool(all_touched)
        self.overlap = overlap
        self.priority = None if priority is None else [int(p) for p in priority]
        self.unknown = unknown
        self.source = source or str(getattr(features, "attrs", {}).get("source", "labels"))
        self.schema: ClassSchema | None = None
        if attribute is not None and attribute not in features.columns:
            cols = [c for c in features.columns if c != features.geometry.name]
            raise AttributeNotFoundError(
                f"Attribute {attribute!r} not found in {self.source}. Available "
                f"attributes: {', '.join(map(str, cols)) or '(none)'}"
            )
        geoms = np.asarray(features.geometry.values, dtype=object)
        raw = list(features[attribute]) if attribute is not None else [self.burn_value] * len(geoms)
        keep = np.array([not is_null_label(v) for v in raw], dtype=bool)
        self.n_null = int((~keep).sum())
        if self.n_null:
            log.warning(
                "%s: %d features have no value (null, empty or blank) in %r and are skipped",
                self.source,
                self.n_null,
                attribute,
            )
        self._geoms = geoms[keep]
        self._raw = [v for v, k in zip(raw, keep, strict=True) if k]
        self._codes = np.zeros(len(self._geoms), dtype="int64")
        self._order = np.arange(len(self._geoms))
        self._pos = self._order.copy()
        self.n_unknown = 0
        self._tree = shapely.STRtree(self._geoms)
        # label areas
        self.label_areas_mode: str | None = None
        self._areas: np.ndarray | None = None
        self._area_tree: Any = None
        if label_areas is not None:
            if isinstance(label_areas, str) and label_areas in ("features", "extent"):
                self.label_areas_mode = label_areas
                if label_areas == "extent" and len(self._geoms):
                    self._areas = np.asarray([shapely.box(*shapely.total_bounds(self._geoms))], dtype=object)
            elif hasattr(label_areas, "geometry"):
                self.label_areas_mode = "polygons"
                self._areas = np.asarray(label_areas.geometry.values, dtype=object)  # type: ignore[union-attr]
            else:
                raise InputError(
                    f"label_areas must be 'features', 'extent' or a polygon layer; got {label_areas!r}"
                )
            if self._areas is not None:
                self._area_tree = shapely.STRtree(self._areas)

    # -- schema ----------------------------------------------------------------------------------
    def values(self) -> list[Any]:
        """The distinct label values (attribute values, or the burn value)."""
        seen: dict[Any, None] = {}
        for v in self._raw:
            seen.setdefault(v, None)
        return list(seen)

    def bind(self, schema: ClassSchema) -> VectorLabels:
        """Map every feature's value to a class code of ``schema`` (unknown values per ``unknown``)."""
        codes, missing = _codes_for_values(self._raw, schema, self.unknown, self.source)
        self.n_unknown = int(sum(missing.values()))
        if missing:
            log.warning(
                "%s: dropped %d features whose values %s are not in the schema",
                self.source,
                self.n_unknown,
                sorted(missing),
            )
        self.schema = schema
        self._codes = codes
        if self.overlap == "priority":
            rank = self._rank_table(schema)
            ranks = np.array([rank.get(int(c), -1) for c in codes])
            # burn low priority first, highest last (it wins); stable keeps file order within a class
            self._order = np.argsort(-ranks, kind="stable")
        else:
            self._order = np.arange(len(codes))
        self._pos = np.empty(len(self._order), dtype="int64")
        self._pos[self._order] = np.arange(len(self._order))
        return self

    def _rank_table(self, schema: ClassSchema) -> dict[int, int]:
        """Code -> rank (0 = highest priority)."""
        listed = list(self.priority or [])
        unknown = [p for p in listed if p not in schema.codes]
        if unknown:
            raise InputError(
                f"priority lists codes {unknown} that are not in the schema ({schema.describe()})"
            )
        rest = sorted((c for c in schema.codes if c not in listed), reverse=True)
        return {c: i for i, c in enumerate([*listed, *rest])}

    # -- rasterizing -----------------------------------------------------------------------------
    def _require_schema(self) -> ClassSchema:
        if self.schema is None:
            raise InputError("VectorLabels.bind(schema) must be called before rasterizing")
        return self.schema

    def mask(self, window: Window) -> np.ndarray:
        """The label mask (class codes, ``schema.mask_dtype``) of ``window`` on the grid (boundless)."""
        import shapely

        schema = self._require_schema()
        dtype = schema.mask_dtype
        wbox = shapely.box(*self.grid.window_bounds(window))
        hits = self._tree.query(wbox, predicate="intersects")
        if hits.size:
            hits = hits[self._codes[hits] >= 0]
            # burn in the burn order (file order or priority order): the last one burned wins
            hits = hits[np.argsort(self._pos[hits], kind="stable")]
        background = schema.background if schema.background is not None else schema.ignore_index
        fill = schema.ignore_index if self.label_areas_mode == "features" else background
        out = rasterize_window(
            self._geoms[hits],
            self._codes[hits],
            self.grid,
            window,
            fill=fill,
            dtype=dtype,
            all_touched=self.all_touched,
        )
        if self._area_tree is not None:
            inside = self._inside_areas(window, wbox)
            out[~inside] = schema.ignore_index
        return out

    def _inside_areas(self, window: Window, wbox: Any) -> np.ndarray:
        assert self._areas is not None
        hits = self._area_tree.query(wbox, predicate="intersects")
        inside = rasterize_window(
            self._areas[hits],
            np.ones(len(hits), dtype="int64"),
            self.grid,
            window,
            fill=0,
            dtype="uint8",
            all_touched=False,
        )
        return inside.astype(bool)

    def __len__(self) -> int:
        return len(self._geoms)

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "vector",
            "source": self.source,
            "attribute": self.attribute,
            "burn_value": None if self.attribute else self.burn_value,
            "features": len(self),
            "null_values": self.n_null,
            "unknown_values": self.n_unknown,
            "all_touched": self.all_touched,
            "overlap": self.overlap,
            "priority": self.priority,
            "label_areas": self.label_areas_mode,
        }
