"""The class schema value type: :class:`ClassSchema` (codes, names, colours, the ignore code and the
background code), :class:`ClassInfo`, default colours, schema inference from label values and the test for
"no label" attribute values."""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from rasterlearn._util import load_yaml
from rasterlearn.errors import ConfigError, InputError, InputNotFoundError

log = logging.getLogger("rasterlearn.labels")  # one logger for the package, as before the split

# what to do with label values that are not in the schema
UnknownPolicy = Literal["error", "ignore"]

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
