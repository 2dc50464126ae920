"""The run config: :class:`RunConfig` and its sections (pydantic, ``extra="forbid"``), loading and
its errors, paths relative to the config."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from rasterlearn._util import load_yaml
from rasterlearn.errors import ConfigError, InputNotFoundError
from rasterlearn.train import TrainConfig


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SceneEntry(_Section):
    """One image with its labels (labels are optional for scenes that are only mapped)."""

    image: str = Field(description="raster path (relative paths: from the config file's folder)")
    labels: str | None = Field(None, description="vector labels, or a label raster by extension")
    label_raster: str | None = Field(None, description="a pre-rasterized label raster")
    attribute: str | None = Field(None, description="class attribute (default: classes.attribute)")
    layer: str | None = None
    split: Literal["trn", "val", "tst"] | None = Field(
        None, description="trn/val: whole scene to that split; tst: held out, mapped and evaluated whole"
    )
    id: str | None = Field(None, description="scene id (default: the image file stem)")

    @field_validator("split", mode="before")
    @classmethod
    def _split(cls, v: Any) -> Any:
        from rasterlearn.chips import normalize_split

        return normalize_split(v)


class ClassEntry(_Section):
    code: int
    name: str | None = None
    color: str | None = None


class ClassesSection(_Section):
    """The class schema: a file, an inline list, or nothing (inferred from the labels)."""

    file: str | None = Field(None, description="class schema YAML or GDL colormap CSV")
    classes: list[ClassEntry] | dict[int, str] | None = Field(None, description="inline classes")
    ignore_index: int | None = None
    background: int | None = 0
    source_values: dict[str, int] = Field(default_factory=dict, description="label text -> code")
    attribute: str | None = Field(None, description="default class attribute of the vector labels")
    burn_value: int = Field(1, description="code burned when there is no attribute")

    def schema_dict(self) -> dict[str, Any] | None:
        if self.classes is None:
            return None
        items = (
            [{"code": k, "name": v} for k, v in self.classes.items()]
            if isinstance(self.classes, dict)
            else [c.model_dump(exclude_none=True) for c in self.classes]
        )
        d: dict[str, Any] = {"classes": items, "background": self.background}
        if self.ignore_index is not None:
            d["ignore_index"] = self.ignore_index
        if self.source_values:
            d["source_values"] = dict(self.source_values)
        return d


class ChipsSection(_Section):
    """The run YAML's chips section: mapped onto :class:`rasterlearn.options.ChipsOptions` for
    :func:`rasterlearn.chips.run_chips` in one place (``_Stages.chips_options``)."""

    size: int = Field(256, gt=0)
    stride: int | None = Field(None, gt=0)
    bands: list[int | str] | None = None
    split_method: Literal["auto", "blocks", "random", "stratified", "scene"] = "auto"
    val: float = Field(0.15, ge=0, lt=1)
    test: float = Field(0.15, ge=0, lt=1)
    block_size: int | None = Field(None, gt=0)
    min_annotated: float = Field(0.0, ge=0, le=100)
    max_nodata: float = Field(100.0, ge=0, le=100)
    class_proportion: dict[int, float] | None = None
    all_touched: bool = False
    overlap: Literal["last", "priority"] = "last"
    priority: list[int] | None = None
    label_areas: str | None = Field(None, description="'features', 'extent' or a polygon file")
    unknown: Literal["error", "ignore"] = "error"
    seed: int = 0
    compress: Literal["deflate", "lzw", "zstd", "none"] = "deflate"


class PredictSection(_Section):
    """Options of :func:`rasterlearn.predict.predict_package` and of vectorizing its maps."""

    enabled: bool = True
    scenes: Literal["auto", "heldout", "all"] | list[str] = Field(
        "auto", description="auto: held-out (tst) scenes if any, else all; or a list of scene ids"
    )
    overlap: float = Field(0.25, ge=0, lt=1)
    blend: Literal["hann", "center-crop", "none"] = "hann"
    tta: str | list[str] | None = None
    batch_size: int | None = Field(None, ge=1, description="default: from memory_mb")
    probabilities: bool = False
    prob_dtype: Literal["uint8", "float32"] = "uint8"
    threshold: float | None = None
    device: str = "auto"
    blocksize: int = Field(512, gt=0, multiple_of=16)
    memory_mb: float = Field(560.0, gt=0)
    window: int | None = Field(None, gt=0, description="inference window (px); default: from memory_mb")
    vectorize: bool = True
    min_area: float = Field(0.0, ge=0, description="vectorize: drop smaller polygons (map units²)")
    simplify: float | None = Field(None, ge=0)
    exclude: list[int] | Literal["background"] | None = Field(
        "background", description="class codes not vectorized (default: the background class)"
    )


class EvaluateSection(_Section):
    """Whole-map evaluation against the labels, and the test chips' metrics."""

    enabled: bool = True
    region: Literal["auto", "scene", "test_chips"] = Field(
        "auto",
        description="auto: held-out scenes whole, chipped scenes inside their tst chips (if any)",
    )
    test_chips: bool = Field(True, description="also score the model on the tst chips")
    unlabelled: Literal["auto", "background", "ignore"] = "auto"
    all_touched: bool = False


class FeaturesSection(_Section):
    """Options of the feature workflow: embed -> PCA -> k-means -> similarity."""

    enabled: bool = False
    scenes: Literal["all"] | list[str] = "all"
    model: str = "vit_small_patch14_dinov2.lvd142m"
    checkpoint: str | None = None
    pretrained: bool = True
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    bands: list[int | str] | None = None
    size: int = Field(224, gt=0)
    stride: int | None = Field(None, gt=0)
    input_size: int | None = Field(None, gt=0)
    layer: int | None = None
    normalization: Literal["image", "model", "none"] = "image"
    storage: Literal["float32", "float16", "uint16"] = "float32"
    batch_size: int = Field(8, ge=1)
    device: str = "auto"
    pca_components: int = Field(3, ge=0, description="0: no PCA")
    clusters: int = Field(8, ge=0, description="k-means clusters (0: no clustering)")
    references: str | None = Field(None, description="points/polygons for the similarity map")
    similarity_mode: Literal["mean", "max"] = "max"
    seed: int = 0


class ReportSection(_Section):
    enabled: bool = True
    title: str | None = None
    sample_chips: int = Field(6, ge=0)
    quicklook_size: int = Field(1024, ge=64)


class RunConfig(_Section):
    """One whole run (see ``rasterlearn init`` for a commented template)."""

    name: str = "run"
    out: str | None = Field(None, description="output folder (default: <config folder>/<config stem>)")
    scenes: str | list[SceneEntry] = Field(description="a scenes CSV (geo-deep-learning layout) or a list")
    classes: ClassesSection = Field(default_factory=lambda: ClassesSection.model_validate({}))
    chips: ChipsSection = Field(default_factory=lambda: ChipsSection.model_validate({}))
    train: TrainConfig = Field(default_factory=lambda: TrainConfig.model_validate({}))
    predict: PredictSection = Field(default_factory=lambda: PredictSection.model_validate({}))
    evaluate: EvaluateSection = Field(default_factory=lambda: EvaluateSection.model_validate({}))
    features: FeaturesSection = Field(default_factory=lambda: FeaturesSection.model_validate({}))
    report: ReportSection = Field(default_factory=lambda: ReportSection.model_validate({}))

    @field_validator("scenes")
    @classmethod
    def _scenes(cls, v: Any) -> Any:
        if isinstance(v, list) and not v:
            raise ValueError("at least one scene is needed")
        return v


def _is_type_tag(part: str) -> bool:
    """Union branch names pydantic puts into error locations (``str``, ``list[SceneEntry]``, ...)."""
    return "[" in part or part in ("str", "int", "float", "bool", "none") or part.startswith("function-")


def _format_errors(exc: ValidationError, source: str) -> str:
    errors = list(exc.errors())
    cleaned = [[str(x) for x in e["loc"] if not _is_type_tag(str(x))] for e in errors]
    keep = []
    for i, e in enumerate(errors):
        raw = [str(x) for x in e["loc"]]
        # a union branch that does not match at all, while another branch has a precise error: drop it
        if (
            raw
            and _is_type_tag(raw[-1])
            and any(
                j != i and cleaned[j][: len(cleaned[i])] == cleaned[i] and len(cleaned[j]) > len(cleaned[i])
                for j in range(len(errors))
            )
        ):
            continue
        keep.append((e, cleaned[i]))
    msgs = []
    for e, loc in keep:
        if e["type"] == "extra_forbidden":
            key = loc[-1]
            section = ".".join(loc[:-1]) or "top level"
            allowed = _allowed_keys(loc[:-1])
            msgs.append(
                f"unknown key {key!r} in section {section!r}"
                + (f" (allowed: {', '.join(allowed)})" if allowed else "")
            )
        else:
            msgs.append(f"{'.'.join(loc) or 'config'}: {e['msg']}")
    return f"Invalid run config {source}: " + "; ".join(msgs)


def _allowed_keys(loc: Sequence[str]) -> list[str]:
    model: Any = RunConfig
    for part in loc:
        if part.isdigit():
            continue
        f = getattr(model, "model_fields", {}).get(part)
        if f is None:
            return []
        ann = f.annotation
        cands = [ann, *getattr(ann, "__args__", ())]
        for c in list(cands):
            cands.extend(getattr(c, "__args__", ()))
        model = next((c for c in cands if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if model is None:
            return []
    return sorted(getattr(model, "model_fields", {}))


def load_config(path: str | Path | Mapping[str, Any], *, base_dir: str | Path | None = None) -> RunConfig:
    """Read and validate a run config (YAML file, or an already parsed mapping).

    Relative paths inside the file are later resolved from the file's folder (``base_dir`` for mappings).

    Raises:
        InputNotFoundError: the file does not exist.
        ConfigError: invalid YAML, unknown keys (named with their section) or invalid values.
    """
    if isinstance(path, Mapping):
        data: Any = dict(path)
        source = "(mapping)"
        base = Path(base_dir) if base_dir else Path.cwd()
    else:
        p = Path(path)
        if not p.exists():
            raise InputNotFoundError(
                f"Run config not found: {p} (write a template with 'rasterlearn init {p}')"
            )
        data = load_yaml(p)
        source = str(p)
        base = p.resolve().parent
        if not isinstance(data, Mapping):
            raise ConfigError(f"{p} must hold a mapping with the sections scenes, classes, chips, train, ...")
    try:
        cfg = RunConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, source)) from exc
    cfg._base_dir = base  # type: ignore[attr-defined]
    cfg._source = source  # type: ignore[attr-defined]
    return cfg


def _base(cfg: RunConfig) -> Path:
    return Path(getattr(cfg, "_base_dir", Path.cwd()))


def _resolve(cfg: RunConfig, p: str | None) -> Path | None:
    if p is None:
        return None
    q = Path(p).expanduser()
    return q if q.is_absolute() else (_base(cfg) / q)


def out_dir_of(cfg: RunConfig) -> Path:
    """The run's output folder (``out``, else ``<config folder>/<name>``)."""
    return _resolve(cfg, cfg.out or cfg.name) or Path(cfg.name)
