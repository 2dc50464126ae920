"""Class schemas: codes, names, colours, the ignore code and the background code.

A :class:`ClassSchema` is the single description of the classes of a task. It travels with chips
(``dataset.json``), model packages (``model.json``) and class maps (colour table + category names).
Schemas load from YAML, from GDL-style colormap CSV files (``value,name,#RRGGBB``) or are inferred from
attribute values.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from rasterlearn._util import load_yaml
from rasterlearn.errors import AttributeNotFoundError, ConfigError, InputError, InputNotFoundError
from rasterlearn.grid import Grid, Window

__all__ = [
    "DEFAULT_IGNORE",
    "ClassInfo",
    "ClassSchema",
    "LabelAreasMode",
    "OverlapRule",
    "UnknownPolicy",
    "VectorLabels",
    "apply_validity",
    "crs_name",
    "default_color",
    "infer_schema",
    "is_null_label",
    "is_raster_path",
    "rasterize_window",
    "same_place",
    "values_to_codes",
]

log = logging.getLogger(__name__)

DEFAULT_IGNORE = 255

# A qualitative palette (Tableau-like, 20 colours) for classes without a colour.
_PALETTE = [
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
    "#aec7e8",
    "#ffbb78",
    "#98df8a",
    "#ff9896",
    "#c5b0d5",
    "#c49c94",
    "#f7b6d2",
    "#c7c7c7",
    "#dbdb8d",
    "#9edae5",
]


def default_color(code: int) -> str:
    """A distinct default colour for a class code (background 0 is black)."""
    if code == 0:
        return "#000000"
    return _PALETTE[(code - 1) % len(_PALETTE)]


@dataclass(frozen=True, slots=True)
class ClassInfo:
    """One class: integer ``code`` in masks/maps, human ``name`` and ``color`` ('#RRGGBB')."""

    code: int
    name: str
    color: str

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "name": self.name, "color": self.color}


@dataclass(frozen=True, slots=True)
class ClassSchema:
    """The classes of a task.

    Attributes:
        classes: the classes, sorted by code (background included when it is a real class).
        ignore_index: code for "not labelled / not valid"; skipped by losses and metrics (default 255).
        background: code of the background class, or ``None`` when there is none.
    """

    classes: tuple[ClassInfo, ...]
    ignore_index: int = DEFAULT_IGNORE
    background: int | None = 0
    source_values: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        classes = tuple(sorted(self.classes, key=lambda c: c.code))
        object.__setattr__(self, "classes", classes)
        codes = [c.code for c in classes]
        if not classes:
            raise InputError("A class schema needs at least one class")
        if len(set(codes)) != len(codes):
            raise InputError(f"Duplicate class codes in schema: {codes}")
        if any(c < 0 for c in codes):
            raise InputError(f"Class codes must be >= 0, got {codes}")
        if self.ignore_index in codes:
            raise InputError(
                f"The ignore code {self.ignore_index} is also a class code; choose another ignore "
                f"code (e.g. --ignore-index 65535)"
            )

    # -- views ----------------------------------------------------------------------------------
    @property
    def codes(self) -> list[int]:
        return [c.code for c in self.classes]

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.classes]

    @property
    def colors(self) -> list[str]:
        return [c.color for c in self.classes]

    @property
    def num_classes(self) -> int:
        """Number of classes including background (the model's output channels in multiclass mode)."""
        return len(self.classes)

    @property
    def is_contiguous(self) -> bool:
        """True when codes are exactly 0..N-1 (model outputs index classes directly)."""
        return self.codes == list(range(len(self.classes)))

    @property
    def mask_dtype(self) -> str:
        """uint8 while every code and the ignore code fit, else uint16."""
        top = max([*self.codes, self.ignore_index])
        if top <= 255:
            return "uint8"
        if top <= 65535:
            return "uint16"
        raise InputError(f"Class codes up to {top} do not fit a uint16 mask")

    def name_of(self, code: int) -> str:
        for c in self.classes:
            if c.code == code:
                return c.name
        raise KeyError(code)

    def code_of(self, value: Any) -> int:
        """Map an attribute value (name or number) to a class code."""
        key = str(value)
        if key in self.source_values:
            return self.source_values[key]
        for c in self.classes:
            if c.name == key:
                return c.code
        try:
            num = float(key)
        except ValueError:
            num = None
        if num is not None and num.is_integer() and int(num) in self.codes:
            return int(num)
        raise InputError(
            f"Label value {value!r} is not in the class schema ({self.describe()}). Add it to the "
            f"schema file or drop those features."
        )

    def lookup(self) -> tuple[np.ndarray, np.ndarray]:
        """(codes, indices): the map from codes to contiguous model indices 0..N-1."""
        codes = np.asarray(self.codes)
        return codes, np.arange(len(codes))

    def code_to_index(self, mask: np.ndarray) -> np.ndarray:
        """Map a mask of class codes to contiguous indices; the ignore code and unknown codes -> ignore."""
        if self.is_contiguous:
            out = mask.astype("int64", copy=True)
            out[(out < 0) | (out >= self.num_classes)] = self.ignore_index
            return out
        table = np.full(
            max([*self.codes, self.ignore_index, int(mask.max(initial=0))]) + 1,
            self.ignore_index,
            dtype="int64",
        )
        table[self.codes] = np.arange(self.num_classes)
        return table[mask.astype("int64")]

    def index_to_code(self, index: np.ndarray) -> np.ndarray:
        return np.asarray(self.codes)[index]

    def describe(self) -> str:
        return ", ".join(f"{c.code}={c.name}" for c in self.classes)

    def colormap(self) -> dict[int, str]:
        return {c.code: c.color for c in self.classes}

    def category_names(self) -> dict[int, str]:
        return {c.code: c.name for c in self.classes}

    # -- (de)serialisation ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "classes": [c.to_dict() for c in self.classes],
            "ignore_index": self.ignore_index,
            "background": self.background,
        }
        if self.source_values:
            d["source_values"] = dict(self.source_values)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ClassSchema:
        unknown = set(data) - {"classes", "ignore_index", "background", "source_values"}
        if unknown:
            raise ConfigError(
                f"Unknown keys in class schema: {sorted(unknown)}; allowed: classes, ignore_index, "
                f"background, source_values"
            )
        raw = data.get("classes")
        if not raw:
            raise ConfigError("A class schema needs a non-empty 'classes' list")
        classes = []
        if isinstance(raw, Mapping):  # {code: name} shorthand
            raw = [{"code": k, "name": v} for k, v in raw.items()]
        for item in raw:
            if not isinstance(item, Mapping) or "code" not in item:
                raise ConfigError(f"Each class needs at least a 'code' (and 'name', 'color'); got {item!r}")
            extra = set(item) - {"code", "name", "color"}
            if extra:
                raise ConfigError(
                    f"Unknown keys {sorted(extra)} in class {item!r}; allowed: code, name, color"
                )
            code = int(item["code"])
            classes.append(
                ClassInfo(
                    code,
                    str(item.get("name", f"class_{code}")),
                    str(item.get("color") or default_color(code)),
                )
            )
        return cls(
            tuple(classes),
            int(data.get("ignore_index", DEFAULT_IGNORE)),
            None if data.get("background", 0) is None else int(data.get("background", 0)),
            {str(k): int(v) for k, v in (data.get("source_values") or {}).items()},
        )

    @classmethod
    def load(cls, path: str | Path) -> ClassSchema:
        """Load a schema from YAML/JSON (``classes: [{code, name, color}]``) or a GDL colormap CSV."""
        p = Path(path)
        if not p.exists():
            raise InputNotFoundError(f"Class schema file not found: {p}")
        if p.suffix.lower() == ".csv":
            return cls.from_csv(p)
        data = load_yaml(p)
        if not isinstance(data, Mapping):
            raise ConfigError(f"{p} must hold a mapping with a 'classes' list")
        return cls.from_dict(data)

    @classmethod
    def from_csv(cls, path: str | Path, ignore_index: int = DEFAULT_IGNORE) -> ClassSchema:
        """A GDL-style colormap CSV: columns value, name, colour ('#RRGGBB'); a header row is optional."""
        classes = []
        with open(path, newline="", encoding="utf-8") as fh:
            for row in csv.reader(fh):
                if not row or row[0].strip().startswith("#"):
                    continue
                head = row[0].strip()
                if not head.lstrip("-").isdigit():
                    continue  # header
                code = int(head)
                name = row[1].strip() if len(row) > 1 and row[1].strip() else f"class_{code}"
                color = row[2].strip() if len(row) > 2 and row[2].strip() else default_color(code)
                classes.append(ClassInfo(code, name, color))
        if not classes:
            raise ConfigError(f"No classes found in {path}; expected rows 'value,name,#RRGGBB'")
        return cls(tuple(classes), ignore_index)

    @classmethod
    def infer(
        cls,
        values: Iterable[Any],
        *,
        background: int | None = 0,
        background_name: str = "background",
        ignore_index: int = DEFAULT_IGNORE,
        names: Mapping[int, str] | None = None,
    ) -> ClassSchema:
        """Infer a schema from attribute values.

        Numeric values become codes (names from ``names`` or ``class_<code>``); text values become codes
        1..N in sorted order with their text as names. A background class (code ``background``) is added
        unless it is ``None`` or already present.
        """
        uniq = {v for v in values if not is_null_label(v)}
        if not uniq:
            raise InputError(
                "No label values to infer classes from (the attribute is empty, blank or all null)"
            )
        numeric = all(_is_int_like(v) for v in uniq)
        classes: list[ClassInfo] = []
        source: dict[str, int] = {}
        if numeric:
            for num in sorted({int(float(v)) for v in uniq}):
                classes.append(ClassInfo(num, (names or {}).get(num, f"class_{num}"), default_color(num)))
        else:
            code = 1 if background == 0 else 0
            for text in sorted(str(v) for v in uniq):
                if background is not None and code == background:
                    code += 1  # text classes never take the background code
                classes.append(ClassInfo(code, text, default_color(code)))
                source[text] = code
                code += 1
        if background is not None and background not in {c.code for c in classes}:
            classes.append(ClassInfo(background, background_name, default_color(background)))
        if max(c.code for c in classes) >= DEFAULT_IGNORE and ignore_index == DEFAULT_IGNORE:
            ignore_index = 65535
            log.info(
                "Class codes reach %d: masks are uint16 and the ignore code is 65535",
                max(c.code for c in classes),
            )
        schema = cls(tuple(classes), ignore_index, background, source)
        log.info("Inferred %d classes: %s", schema.num_classes, schema.describe())
        return schema

    @classmethod
    def binary(
        cls, name: str = "foreground", color: str = "#e31a1c", ignore_index: int = DEFAULT_IGNORE
    ) -> ClassSchema:
        return cls((ClassInfo(0, "background", "#000000"), ClassInfo(1, name, color)), ignore_index, 0)

    def with_names(self, names: Sequence[str]) -> ClassSchema:
        if len(names) != self.num_classes:
            raise InputError(f"{len(names)} names for {self.num_classes} classes")
        return ClassSchema(
            tuple(ClassInfo(c.code, n, c.color) for c, n in zip(self.classes, names, strict=True)),
            self.ignore_index,
            self.background,
            self.source_values,
        )


def _is_int_like(v: Any) -> bool:
    if isinstance(v, bool):
        return False
    if isinstance(v, int | np.integer):
        return True
    if isinstance(v, float | np.floating):
        return float(v).is_integer()
    if isinstance(v, str):
        try:
            return float(v).is_integer()
        except ValueError:
            return False
    return False


# =================================================================================================
# Rasterizing labels onto a grid, window by window
# =================================================================================================

OverlapRule = Literal["last", "priority"]
UnknownPolicy = Literal["error", "ignore"]
LabelAreasMode = Literal["features", "extent"]

_RASTER_SUFFIXES = {".tif", ".tiff", ".vrt", ".img", ".jp2", ".png", ".asc", ".nc"}


def is_raster_path(path: str | Path) -> bool:
    """True when ``path`` looks like a raster (by extension), e.g. a pre-rasterized label raster."""
    return Path(str(path)).suffix.lower() in _RASTER_SUFFIXES


def apply_validity(mask: np.ndarray, valid: np.ndarray, ignore_index: int) -> np.ndarray:
    """Set ``ignore_index`` where ``valid`` is False (image nodata -> ignore), in place; returns ``mask``."""
    if valid.shape != mask.shape:
        raise InputError(f"validity mask {valid.shape} does not match label mask {mask.shape}")
    mask[~valid] = ignore_index
    return mask


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


def infer_schema(
    values: Iterable[Any],
    *,
    sparse: bool = False,
    ignore_index: int | None = None,
    background: int | None = 0,
) -> ClassSchema:
    """Infer a schema from label values (see :meth:`ClassSchema.infer`).

    Args:
        values: attribute values (numbers or text) or label raster values.
        sparse: labels only exist inside the labelled features (no background anywhere): no background
            class is added, and text classes are numbered from 0.
        ignore_index: the ignore code (default 255, or 65535 when codes reach 255).
        background: background code for dense labels.
    """
    kwargs: dict[str, Any] = {"background": None if sparse else background}
    if ignore_index is not None:
        kwargs["ignore_index"] = ignore_index
    return ClassSchema.infer(values, **kwargs)


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
        keep = np.array([not _is_null(v) for v in raw], dtype=bool)
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


def is_null_label(v: Any) -> bool:
    """Whether an attribute value means "no label": None, NaN, pandas NA, or an empty/whitespace string.

    Empty strings are how many tools (QGIS, shapefiles, CSV exports) store a missing text value; they
    are never a class named "".
    """
    if v is None:
        return True
    if isinstance(v, str):
        return v.strip() == ""
    import pandas as pd

    null = pd.isna(v)  # NaN, NaT, pandas NA
    return bool(null) if isinstance(null, bool | np.bool_) else False


_is_null = is_null_label


def values_to_codes(
    raw: np.ndarray,
    valid: np.ndarray,
    schema: ClassSchema,
    *,
    unknown: UnknownPolicy = "error",
    source: str = "label raster",
) -> np.ndarray:
    """Map raw label-raster values to schema codes; invalid pixels and (with ``unknown="ignore"``) values
    outside the schema become the ignore code.

    Raises:
        InputError: a non-integer value, or a value not in the schema with ``unknown="error"``.
    """
    out = np.full(raw.shape, schema.ignore_index, dtype=schema.mask_dtype)
    if not valid.any():
        return out
    uniq, inv = np.unique(raw[valid], return_inverse=True)
    table = np.empty(len(uniq), dtype="int64")
    for i, v in enumerate(uniq.tolist()):
        if isinstance(v, float) and not v.is_integer():
            raise InputError(
                f"{source} holds the non-integer label value {v}; label rasters must hold integer "
                f"class values"
            )
        key = int(v)
        try:
            table[i] = schema.code_of(key)
        except InputError:
            if unknown == "error":
                raise InputError(
                    f"{source}: label value {key} is not in the class schema ({schema.describe()}). "
                    f"Add it to the schema, or pass unknown='ignore' (CLI: --unknown-classes ignore) "
                    f"to treat it as ignore."
                ) from None
            log.warning("%s: label value %d is not in the schema; treated as ignore", source, key)
            table[i] = schema.ignore_index
    out[valid] = table[inv.reshape(-1)].astype(out.dtype)
    return out


def same_place(a: Grid, b: Grid, tolerance_px: float = 0.25) -> bool:
    """Whether grid ``b``'s CRS description puts ``a``'s corners and centre within ``tolerance_px`` pixels of
    where ``a``'s CRS puts them (the same grid described by two CRS definitions)."""
    from pyproj import Transformer

    if a.crs is None or b.crs is None:
        return a.crs is None and b.crs is None
    try:
        tr = Transformer.from_crs(a.crs, b.crs, always_xy=True)
    except Exception:
        return False
    left, bottom, right, top = a.bounds
    xs = np.array([left, right, left, right, (left + right) / 2])
    ys = np.array([top, top, bottom, bottom, (top + bottom) / 2])
    tx, ty = tr.transform(xs, ys)
    shift = np.hypot(np.asarray(tx) - xs, np.asarray(ty) - ys)
    if not np.all(np.isfinite(shift)):
        return False
    return bool(shift.max() <= tolerance_px * min(a.res))


def crs_name(crs: Any) -> str:
    """A short human name of a CRS (``EPSG:xxxx (name)`` when it has a code)."""
    if crs is None:
        return "(none)"
    epsg = crs.to_epsg()
    return f"EPSG:{epsg} ({crs.name})" if epsg else repr(crs.name)
