"""Chips options: the options model as a job's settings (resolved, checked across fields) and as the
parameters a dataset records; the dataset format and split names."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from rasterlearn._util import file_identity
from rasterlearn.errors import ConfigError, InputNotFoundError
from rasterlearn.labels import ClassSchema
from rasterlearn.options import ChipsOptions, describe_validation_error

FORMAT = "rasterlearn-chips/1"
SPLITS = ("trn", "val", "tst")
SplitMethod = Literal["auto", "blocks", "random", "stratified", "scene"]
Compression = Literal["deflate", "lzw", "zstd", "none"]
DROP_REASONS = ("empty", "nodata", "unlabelled", "annotated", "class_proportion", "straddle")
Progress = Callable[[int], None]


def parse_class_proportion(value: str | Mapping[Any, Any] | None) -> dict[int, float]:
    """``"1:5,2:10"`` or ``{1: 5, 2: 10}`` (class code -> minimum percent) to a dict."""
    if value is None or value == "" or value == {}:
        return {}
    items: list[tuple[Any, Any]]
    if isinstance(value, Mapping):
        items = list(value.items())
    else:
        items = []
        for part in str(value).split(","):
            if not part.strip():
                continue
            if ":" not in part:
                raise ConfigError(f"class proportion {part!r} must be 'code:percent', e.g. '1:5,2:10'")
            k, v = part.split(":", 1)
            items.append((k, v))
    out: dict[int, float] = {}
    for k, v in items:
        try:
            code, pct = int(str(k).strip()), float(str(v).strip())
        except ValueError as exc:
            raise ConfigError(f"class proportion {k}:{v} must be an integer code and a percent") from exc
        if not 0 <= pct <= 100:
            raise ConfigError(f"class proportion for class {code} must be a percent in 0..100, got {pct}")
        out[code] = pct
    return out


# -- the options model (rasterlearn.options.ChipsOptions) as a job's settings and its recorded parameters ------
KEYWORD_NAMES = {"unknown": "unknown_classes"}
"""``make_chips`` keywords that the options model names otherwise."""
RESOLVED_FIELDS = frozenset(
    {"raster", "image", "nodata_policy", "labels", "label_raster", "scenes", "output", "schema_file"}
)
"""Fields recorded as what they resolve to rather than as given: the scenes (their files' identities, dates
and splits under ``scenes``), the dataset folder (it holds the record) and the class schema (its content)."""
RECORD_NAMES = {"unknown_classes": "unknown"}
"""Fields recorded under another name in ``dataset.json``'s ``params`` (their name before the options model;
renaming them would change every dataset's parameters hash)."""


def validate_options(values: Mapping[str, Any], where: str = "chips options") -> ChipsOptions:
    """``values`` as :class:`ChipsOptions`; a refused value is one :class:`ConfigError` line naming it."""
    try:
        return ChipsOptions.model_validate(dict(values))
    except ValidationError as exc:
        raise ConfigError(f"Invalid {where}: {describe_validation_error(exc, ChipsOptions)}") from exc


def keyword_options(out: str | Path, **keywords: Any) -> tuple[ChipsOptions, ClassSchema | None]:
    """:func:`rasterlearn.chips.make_chips`'s keywords as :class:`ChipsOptions` (``None`` = the default), and
    a class schema given as a :class:`ClassSchema` or a mapping (the model takes a file)."""
    values = {KEYWORD_NAMES.get(k, k): v for k, v in keywords.items() if v is not None}
    given: ClassSchema | None = None
    schema = values.pop("schema", None)
    if isinstance(schema, ClassSchema):
        given = schema
    elif isinstance(schema, Mapping):
        given = ClassSchema.from_dict(schema)
    elif schema is not None:
        values["schema"] = schema
    if isinstance(values.get("label_areas"), Path):
        values["label_areas"] = str(values["label_areas"])
    return validate_options({**values, "output": out}), given


@dataclass(frozen=True)
class ChipSettings:
    """What a job's :class:`ChipsOptions` leave open, resolved and checked across fields."""

    stride: int
    """The step between chips (the chip size when the options give none)."""
    bands: list[int | str] | None
    """Band indexes as numbers (``"4"`` is band 4), names as text."""
    label_areas: str | None
    """``features``, ``extent``, an absolute polygon file path, or ``None``."""
    class_proportion: dict[int, float]
    """Class code -> minimum percent of a chip's labelled pixels."""

    @classmethod
    def resolve(cls, o: ChipsOptions) -> ChipSettings:
        stride = o.size if o.stride is None else o.stride
        if stride > o.size:
            raise ConfigError(
                f"stride ({stride}) is larger than the chip size ({o.size}): pixels between chips "
                f"would never be used; use a stride <= {o.size}"
            )
        if o.val + o.test >= 1.0:
            raise ConfigError(
                f"val ({o.val}) + test ({o.test}) leave no training chips; keep their sum below 1"
            )
        bands = None
        if o.bands is not None:
            bands = [int(b) if isinstance(b, int) or str(b).strip().isdigit() else str(b) for b in o.bands]
        la = o.label_areas
        if la is not None and la not in ("features", "extent"):
            if not Path(la).exists():
                raise InputNotFoundError(
                    f"label_areas {la!r} is neither 'features', 'extent' nor an existing polygon file"
                )
            la = str(Path(la).resolve())
        return cls(stride, bands, la, parse_class_proportion(o.class_proportion))

    def schema(self, o: ChipsOptions, given: ClassSchema | None = None) -> ClassSchema | None:
        """The class schema asked for: ``given`` (an object), the options' schema file, or ``None`` (inferred)."""
        if given is not None and o.schema_file is not None:
            raise ConfigError(
                f"A class schema is given twice (an object and the file {o.schema_file}); give one of them"
            )
        return ClassSchema.load(o.schema_file) if o.schema_file is not None else given

    def record(self, o: ChipsOptions) -> dict[str, Any]:
        """The options part of a chip dataset's parameters (``dataset.json``'s ``params``, the source of its
        fingerprint): every field of ``o`` but the output-neutral ones (:meth:`ChipsOptions.neutral_fields`)
        and :data:`RESOLVED_FIELDS`, with the values resolved here; a label-areas file as its identity."""
        dump = o.model_dump(mode="json", exclude=set(o.neutral_fields() | RESOLVED_FIELDS))
        record = {RECORD_NAMES.get(k, k): v for k, v in dump.items()}
        la = self.label_areas
        record.update(
            stride=self.stride,
            bands=self.bands,
            class_proportion=self.class_proportion,
            label_areas=la if la in (None, "features", "extent") else file_identity(la),
        )
        return record
