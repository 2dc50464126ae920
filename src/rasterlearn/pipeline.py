"""A whole run in one YAML file: scenes, classes, chips, training, prediction, evaluation, features.

:class:`RunConfig` is the file's schema (pydantic, every section ``extra="forbid"``: a typo is an error that
names the key and its section). :func:`run_pipeline` composes the library stages::

    chips ─> train ─> predict (+ vectorize) ─> evaluate ─┐
    features (embed ─> PCA ─> k-means ─> similarity) ────┴─> report.html

Stage cache. Each stage's *canonical parameters* (its section, the identities of its input files and the
hashes of the stages it depends on) are hashed. A stage lives in ``OUT/<stage>/`` with a ``stage.json``
that records the hash, the parameters and ``"status": "running"`` while it runs, then ``"complete"`` with
its outputs (each version written to a temporary name and renamed). On the next run a complete stage
with the same hash is skipped; a stage with another hash is cleared and re-run, and so is every stage
after it (their hashes include it). A stage interrupted while running resumes with its own mechanism:
chips skip finished chips, training continues from ``train/checkpoints/last.ckpt``, prediction continues
from the last committed block of each map, embedding from its last committed strip.

Held-out scenes: scenes whose ``split`` is ``tst`` are not cut into chips; they are predicted and
evaluated whole (train on one scene, evaluate on another). Scenes that are chipped are evaluated inside
the footprint of their ``tst`` chips (spatial blocks never seen in training) when there are some.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from rasterlearn._util import atomic_write_json, load_yaml
from rasterlearn._util import file_identity as _stat_identity
from rasterlearn.errors import ConfigError, InputError, InputNotFoundError, OutputError
from rasterlearn.io.paths import check_outputs, output_lock
from rasterlearn.train import TrainConfig

__all__ = [
    "STAGES",
    "ChipsSection",
    "ClassesSection",
    "EvaluateSection",
    "FeaturesSection",
    "PredictSection",
    "ReportSection",
    "RunConfig",
    "RunResult",
    "SceneEntry",
    "StageCache",
    "StageRecord",
    "canonical_hash",
    "init_config",
    "load_config",
    "run_pipeline",
]

log = logging.getLogger(__name__)

STAGES = ("chips", "train", "predict", "evaluate", "features")
STAGE_FILE = "stage.json"
RUN_FORMAT = "rasterlearn-run/1"
Progress = Callable[[str, int], None]


# =================================================================================================
# Configuration
# =================================================================================================
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
    """Options of :func:`rasterlearn.chips.make_chips`."""

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


# =================================================================================================
# init: a commented template
# =================================================================================================
TEMPLATE = """\
# rasterlearn run configuration: `rasterlearn run THIS_FILE.yaml`
# Every section is optional except `scenes`; unknown keys are errors. Relative paths are resolved from
# the folder of this file. Stages are cached: re-running skips finished stages, changing a section re-runs
# that stage and the ones after it, and an interrupted run resumes where it stopped.

name: my_run
out: runs/my_run                      # output folder (stage folders, maps, report.html)

# Scenes: a geo-deep-learning CSV (image, metadata, labels, attribute, split) or an inline list.
# split: trn/val put a whole scene into that split; tst holds the scene out: it is not chipped but
# mapped and evaluated whole. Scenes without a split are split spatially into blocks.
scenes:
  - image: data/scene_a.tif
    labels: data/labels.gpkg          # vector labels (or a label raster: .tif)
  - image: data/scene_b.tif
    labels: data/labels.gpkg
    split: tst
# scenes: data/scenes.csv

classes:
  attribute: class                    # class attribute of the vector labels (none: burn burn_value)
  # file: classes.yaml                # class schema (classes: [{code, name, color}]) or GDL colormap CSV
  # classes: {0: background, 1: building}
  # ignore_index: 255
  # background: 0

chips:
  size: 256                           # chip size in pixels
  stride: 128                         # step between chips (< size: overlapping chips)
  split_method: auto                  # auto | blocks | random | stratified | scene
  val: 0.15                           # fraction of chips for validation
  test: 0.15                          # fraction of chips held out for testing (spatial blocks)
  min_annotated: 0                    # percent of non-background labelled pixels a chip needs
  max_nodata: 100                     # percent of nodata pixels a chip may have
  # bands: [1, 2, 3]
  seed: 0

train:                                # every `rasterlearn train` option (see docs/training)
  arch: unet
  encoder: resnet18
  pretrained: null                    # e.g. imagenet (downloads once); null = random initialisation
  loss: auto                          # auto (ce+dice if imbalanced, else ce) | ce | dice | focal ... or {ce: 0.5, dice: 0.5}
  class_weights: auto                 # auto | none | inverse | inverse_sqrt | median
  sampler: shuffle                    # shuffle | balanced (chips holding rare classes drawn more often)
  baseline: true                      # compare with a per-pixel random forest on the same chips
  epochs: 20
  batch_size: 8
  lr: 0.001
  augment: flips                      # none | flips | geometric | full
  seed: 42

predict:
  scenes: auto                        # auto (held-out scenes, else all) | heldout | all | [scene ids]
  overlap: 0.25                       # fraction of the chip shared by neighbouring windows
  blend: hann                         # hann | center-crop | none
  tta: null                           # e.g. flips
  batch_size: 8
  probabilities: false                # also write per-class probability rasters
  vectorize: true                     # polygons of the map (GeoPackage)
  min_area: 0                         # drop smaller polygons (map units squared)

evaluate:
  region: auto                        # auto | scene | test_chips
  test_chips: true                    # also score the model on the tst chips

features:                             # foundation-model features: embed -> PCA -> k-means -> similarity
  enabled: false
  model: vit_small_patch14_dinov2.lvd142m
  pretrained: true                    # downloads once; or give checkpoint: weights.safetensors
  size: 224
  pca_components: 3
  clusters: 8
  # references: data/reference_points.gpkg

report:
  enabled: true
  sample_chips: 6
"""


def init_config(path: str | Path, *, overwrite: bool = False) -> Path:
    """Write the commented :data:`TEMPLATE` to ``path`` (refuses to replace a file unless ``overwrite``)."""
    p = Path(path)
    if p.exists() and not overwrite:
        raise OutputError(f"{p} exists; choose another name or pass overwrite=True (CLI: --overwrite)")
    if p.suffix.lower() not in (".yaml", ".yml"):
        raise InputError(f"Run configs are YAML files; use a .yaml name, got {p.name}")
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp")
    tmp.write_text(TEMPLATE, encoding="utf-8")
    os.replace(tmp, p)
    return p


# =================================================================================================
# Stage cache
# =================================================================================================
def _canonical(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return _canonical(value.model_dump(mode="json"))
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def canonical_hash(params: Any) -> str:
    """A 16-hex-digit hash of canonical JSON (sorted keys, paths as strings, 2.0 == 2)."""
    text = json.dumps(_canonical(params), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def file_identity(path: str | Path | None) -> dict[str, Any] | None:
    """Path, size and modification time of an input (changes when the file changes)."""
    if path is None:
        return None
    p = Path(path)
    if not p.exists():
        raise InputNotFoundError(f"Input not found: {p}")
    return _stat_identity(p)


def _write_stage_json(path: Path, data: Any) -> None:
    atomic_write_json(path, data, default=str, fsync=True)


@dataclass
class StageRecord:
    """What ``stage.json`` says about a stage."""

    name: str
    hash: str
    status: Literal["running", "complete"]
    params: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    started: str | None = None
    finished: str | None = None
    seconds: float | None = None
    runs: int = 1


class StageCache:
    """Stage folders ``root/<stage>/`` with a ``stage.json`` completion record.

    ``state(name, hash)`` is ``complete`` (same hash, finished: skip), ``partial`` (same hash, interrupted:
    resume), ``stale`` (another hash: clear and re-run) or ``new``.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def folder(self, name: str) -> Path:
        return self.root / name

    def record(self, name: str) -> StageRecord | None:
        p = self.folder(name) / STAGE_FILE
        if not p.exists():
            return None
        try:
            d = json.loads(p.read_text(encoding="utf-8"))
            return StageRecord(**{k: d[k] for k in StageRecord.__dataclass_fields__ if k in d})
        except (json.JSONDecodeError, TypeError, KeyError) as exc:
            log.warning("Unreadable %s (%s); the stage will be re-run", p, exc)
            return None

    def state(self, name: str, stage_hash: str) -> Literal["complete", "partial", "stale", "new"]:
        rec = self.record(name)
        folder = self.folder(name)
        if rec is None:
            return "stale" if folder.exists() and any(folder.iterdir()) else "new"
        if rec.hash != stage_hash:
            return "stale"
        return "complete" if rec.status == "complete" else "partial"

    def begin(self, name: str, stage_hash: str, params: dict[str, Any]) -> Path:
        """Prepare the folder (cleared when stale) and mark the stage as running."""
        folder = self.folder(name)
        state = self.state(name, stage_hash)
        rec = self.record(name)
        runs = 1
        if state == "stale":
            if rec is None and not self._owned(folder):
                raise OutputError(
                    f"{folder} exists but was not written by a rasterlearn run (no {STAGE_FILE}); "
                    f"choose another 'out' folder or remove it"
                )
            log.warning(
                "Stage %s: parameters changed (hash %s -> %s); clearing %s and running it again",
                name,
                rec.hash if rec else "?",
                stage_hash,
                folder,
            )
            shutil.rmtree(folder)
        elif state == "partial" and rec is not None:
            runs = rec.runs + 1
            why = "was reopened" if rec.finished else "was interrupted"  # reopened: see StageCache.reopen
            log.info("Stage %s %s; resuming it (attempt %d)", name, why, runs)
        folder.mkdir(parents=True, exist_ok=True)
        rec = StageRecord(name, stage_hash, "running", params=_canonical(params), started=_now(), runs=runs)
        _write_stage_json(folder / STAGE_FILE, {"format": RUN_FORMAT, **rec.__dict__})
        return folder

    def _owned(self, folder: Path) -> bool:
        return not folder.exists() or not any(folder.iterdir())

    def finish(
        self,
        name: str,
        outputs: dict[str, Any],
        summary: dict[str, Any] | None = None,
        seconds: float | None = None,
    ) -> StageRecord:
        """Mark a running stage complete (atomic rewrite of ``stage.json``)."""
        rec = self.record(name)
        if rec is None:
            raise OutputError(f"Stage {name} was never begun in {self.root}")
        rec.status = "complete"
        rec.outputs = _canonical(outputs)
        rec.summary = _canonical(summary or {})
        rec.finished = _now()
        rec.seconds = seconds
        _write_stage_json(self.folder(name) / STAGE_FILE, {"format": RUN_FORMAT, **rec.__dict__})
        return rec

    def reopen(self, name: str) -> None:
        """Mark a complete stage as running again (its outputs kept): the next run of it resumes."""
        rec = self.record(name)
        if rec is None:
            raise OutputError(f"Stage {name} was never begun in {self.root}")
        rec.status = "running"
        _write_stage_json(self.folder(name) / STAGE_FILE, {"format": RUN_FORMAT, **rec.__dict__})

    def invalidate(self, name: str) -> None:
        """Forget a stage (its folder is removed)."""
        folder = self.folder(name)
        if folder.exists() and (folder / STAGE_FILE).exists():
            shutil.rmtree(folder)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# =================================================================================================
# Scenes
# =================================================================================================
@dataclass
class ResolvedScene:
    id: str
    image: Path
    labels: Path | None
    label_raster: Path | None
    attribute: str | None
    layer: str | None
    split: str | None

    @property
    def has_labels(self) -> bool:
        return self.labels is not None or self.label_raster is not None

    @property
    def heldout(self) -> bool:
        return self.split == "tst"

    def identity(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "image": file_identity(self.image),
            "labels": file_identity(self.labels),
            "label_raster": file_identity(self.label_raster),
            "attribute": self.attribute,
            "layer": self.layer,
            "split": self.split,
        }

    def to_chips_scene(self) -> Any:
        from rasterlearn.chips import Scene

        return Scene(
            image=self.image,
            labels=self.labels,
            label_raster=self.label_raster,
            attribute=self.attribute,
            split=self.split,
            layer=self.layer,
            id=self.id,
        )


def _sanitize(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


def resolve_scenes(cfg: RunConfig) -> list[ResolvedScene]:
    """The config's scenes with absolute paths and unique ids (files must exist)."""
    from rasterlearn.chips import read_scenes_csv
    from rasterlearn.labels import is_raster_path

    out: list[ResolvedScene] = []
    if isinstance(cfg.scenes, str):
        csv_path = _resolve(cfg, cfg.scenes)
        assert csv_path is not None
        for s in read_scenes_csv(csv_path):
            out.append(
                ResolvedScene(s.id or "", s.image, s.labels, s.label_raster, s.attribute, s.layer, s.split)
            )
    else:
        for i, e in enumerate(cfg.scenes):
            image = _resolve(cfg, e.image)
            labels = _resolve(cfg, e.labels)
            label_raster = _resolve(cfg, e.label_raster)
            for what, p in (("image", image), ("labels", labels), ("label_raster", label_raster)):
                if p is not None and not p.exists():
                    raise InputNotFoundError(
                        f"scenes[{i}].{what}: {p} not found (relative paths are resolved from {_base(cfg)})"
                    )
            if labels is not None and label_raster is None and is_raster_path(labels):
                label_raster, labels = labels, None
            assert image is not None
            out.append(ResolvedScene(e.id or "", image, labels, label_raster, e.attribute, e.layer, e.split))
    seen: dict[str, int] = {}
    for rs in out:
        base = _sanitize(rs.id or rs.image.stem)
        n = seen.get(base, 0)
        seen[base] = n + 1
        rs.id = base if n == 0 else f"{base}_{n + 1}"
        if rs.attribute is None and rs.labels is not None:
            rs.attribute = cfg.classes.attribute
    if len({rs.id for rs in out}) != len(out):
        raise ConfigError(f"Scene ids are not unique: {[rs.id for rs in out]}; give each scene an 'id'")
    return out


# =================================================================================================
# The run
# =================================================================================================
@dataclass
class RunResult:
    """What :func:`run_pipeline` did."""

    out: Path
    stages: dict[str, StageRecord]
    ran: list[str]
    skipped: list[str]
    report: Path | None
    seconds: float

    def metrics(self) -> dict[str, Any]:
        """Headline metrics: validation mIoU, test-chip mIoU and each map's mIoU/OA."""
        out: dict[str, Any] = {}
        tr = self.stages.get("train")
        if tr is not None:
            out.update({k: v for k, v in tr.summary.items() if k.startswith("val_")})
        ev = self.stages.get("evaluate")
        if ev is not None:
            out.update(ev.summary)
        return out


class _Runner:
    def __init__(self, cfg: RunConfig, out: Path, progress: Progress | None, force: Sequence[str]) -> None:
        self.cfg = cfg
        self.out = out
        self.cache = StageCache(out)
        self.progress = progress
        self.force = set(force)
        self.records: dict[str, StageRecord] = {}
        self.ran: list[str] = []
        self.skipped: list[str] = []
        self.scenes = resolve_scenes(cfg)
        # fail before hours of training: scene selections are checked up front
        if cfg.predict.enabled:
            self.predict_scenes()
        if cfg.features.enabled:
            self.feature_scenes()

    def cb(self, stage: str) -> Callable[[int], None] | None:
        if self.progress is None:
            return None
        progress = self.progress

        def advance(n: int = 1) -> None:
            progress(stage, int(n))

        return advance

    def stage(
        self,
        name: str,
        params: dict[str, Any],
        body: Callable[[Path], tuple[dict[str, Any], dict[str, Any]]],
        unhashed: dict[str, Any] | None = None,
    ) -> StageRecord:
        """Skip, resume or (re)run stage ``name``: ``params`` make its hash; ``unhashed`` parameters are
        recorded in ``stage.json`` beside them but do not make the stage stale (see :meth:`run_train`)."""
        h = canonical_hash(params)
        state = self.cache.state(name, h)
        if name in self.force and state == "complete":
            state = "stale"
            self.cache.invalidate(name)
        if state == "complete":
            rec = self.cache.record(name)
            assert rec is not None
            log.info("Stage %s: up to date (hash %s), skipped", name, h)
            self.skipped.append(name)
            self.records[name] = rec
            return rec
        log.info("Stage %s: %s (hash %s)", name, "resuming" if state == "partial" else "running", h)
        t0 = time.perf_counter()
        folder = self.cache.begin(name, h, {**params, **(unhashed or {})})
        outputs, summary = body(folder)
        rec = self.cache.finish(name, outputs, summary, round(time.perf_counter() - t0, 2))
        log.info("Stage %s: complete in %.1f s", name, rec.seconds or 0.0)
        self.ran.append(name)
        self.records[name] = rec
        return rec

    # -- chips -----------------------------------------------------------------------------------
    def chip_scenes(self) -> list[ResolvedScene]:
        scenes = [s for s in self.scenes if s.has_labels and not s.heldout]
        if not scenes:
            raise ConfigError(
                "No scene to cut into training chips: every scene is held out (split: tst) or has no "
                "labels. Give at least one labelled scene without split or with split trn/val."
            )
        return scenes

    def schema_arg(self) -> Any:
        c = self.cfg.classes
        if c.file is not None:
            return _resolve(self.cfg, c.file)
        d = c.schema_dict()
        if d is not None:
            from rasterlearn.labels import ClassSchema

            return ClassSchema.from_dict(d)
        return None

    def run_chips(self) -> StageRecord:
        scenes = self.chip_scenes()
        c = self.cfg.classes
        params = {
            "scenes": [s.identity() for s in scenes],
            "classes": c.model_dump(mode="json")
            | {"file": file_identity(_resolve(self.cfg, c.file)) if c.file else None},
            "chips": self.cfg.chips.model_dump(mode="json"),
        }

        def body(folder: Path) -> tuple[dict[str, Any], dict[str, Any]]:
            from rasterlearn.chips import make_chips

            ch = self.cfg.chips
            label_areas = ch.label_areas
            if label_areas not in (None, "features", "extent"):
                label_areas = str(_resolve(self.cfg, label_areas))
            res = make_chips(
                [s.to_chips_scene() for s in scenes],
                folder / "dataset",
                size=ch.size,
                stride=ch.stride,
                bands=ch.bands,
                attribute=c.attribute,
                burn_value=c.burn_value,
                schema=self.schema_arg(),
                ignore_index=c.ignore_index,
                all_touched=ch.all_touched,
                overlap=ch.overlap,
                priority=ch.priority,
                label_areas=label_areas,
                unknown=ch.unknown,
                split_method=ch.split_method,
                val=ch.val,
                test=ch.test,
                block_size=ch.block_size,
                min_annotated=ch.min_annotated,
                max_nodata=ch.max_nodata,
                class_proportion=ch.class_proportion,
                seed=ch.seed,
                compress=ch.compress,
                progress=self.cb("chips"),
            )
            summary = {
                "chips": len(res.manifest),
                **{f"chips_{k}": int(v) for k, v in res.splits.items()},
            }
            return {"dataset": str(res.out)}, summary

        return self.stage("chips", params, body)

    # -- train -----------------------------------------------------------------------------------
    def run_train(self, chips: StageRecord) -> StageRecord:
        t = self.cfg.train
        cfg_json = t.model_dump(mode="json")
        for k in ("num_workers", "sample_chips"):
            cfg_json.pop(k, None)
        if t.weights:
            cfg_json["weights"] = file_identity(_resolve(self.cfg, t.weights))
        # epochs are not part of the hash: more epochs continue the training from its last checkpoint (as
        # ``train --resume`` does), fewer start it again
        epochs = cfg_json.pop("epochs")
        params = {"upstream": {"chips": _token(chips)}, "train": cfg_json}
        self._train_epochs_changed(canonical_hash(params), epochs)

        def body(folder: Path) -> tuple[dict[str, Any], dict[str, Any]]:
            from rasterlearn.train import train

            config = t
            if t.weights:
                config = t.model_copy(update={"weights": str(_resolve(self.cfg, t.weights))})
            last = folder / "checkpoints" / "last.ckpt"
            resume = _usable_checkpoint(last)
            if resume:
                log.info("Training resumes from %s", last)
            res = train(
                chips.outputs["dataset"],
                folder,
                config,
                resume=resume,
                overwrite=not resume,
                progress=self.cb("train"),
            )
            m = res.metrics
            summary = {
                "val_mean_iou": m.get("mean_iou"),
                "val_overall_accuracy": m.get("overall_accuracy"),
                "val_kappa": m.get("kappa"),
                "val_warnings": len(m.get("warnings") or []),
                "epochs_trained": res.epochs_trained,
            }
            return {"package": str(folder), "files": {k: str(v) for k, v in res.files.items()}}, summary

        return self.stage("train", params, body, unhashed={"epochs": epochs})

    def _train_epochs_changed(self, stage_hash: str, epochs: int) -> None:
        """A finished or interrupted training of the same options with another ``epochs``: resume it when
        raised (the stage is reopened), clear it when lowered (its model trained longer than asked)."""
        rec = self.cache.record("train")
        if rec is None or rec.hash != stage_hash or "train" in self.force:
            return
        before = rec.params.get("epochs")
        if before is None or int(before) == int(epochs):
            return
        if epochs > before:
            log.info(
                "Stage train: epochs raised from %d to %d; training continues from its last checkpoint",
                before,
                epochs,
            )
            if rec.status == "complete":
                self.cache.reopen("train")
        else:
            log.warning("Stage train: epochs lowered from %d to %d; training starts again", before, epochs)
            self.cache.invalidate("train")

    # -- predict ---------------------------------------------------------------------------------
    def predict_scenes(self) -> list[ResolvedScene]:
        sel = self.cfg.predict.scenes
        if isinstance(sel, list):
            by_id = {s.id: s for s in self.scenes}
            missing = [x for x in sel if x not in by_id]
            if missing:
                raise ConfigError(f"predict.scenes: unknown scene ids {missing}; scenes are {list(by_id)}")
            return [by_id[x] for x in sel]
        held = [s for s in self.scenes if s.heldout]
        if sel == "heldout":
            if not held:
                raise ConfigError("predict.scenes is 'heldout' but no scene has split: tst")
            return held
        if sel == "all":
            return list(self.scenes)
        return held or list(self.scenes)

    def run_predict(self, train: StageRecord) -> StageRecord:
        p = self.cfg.predict
        scenes = self.predict_scenes()
        pj = p.model_dump(mode="json")
        for k in ("device", "batch_size", "memory_mb"):
            pj.pop(k, None)
        params = {
            "upstream": {"train": _token(train)},
            "scenes": [{"id": s.id, "image": file_identity(s.image)} for s in scenes],
            "predict": pj,
        }

        def body(folder: Path) -> tuple[dict[str, Any], dict[str, Any]]:
            from rasterlearn.models import load_metadata
            from rasterlearn.predict import predict_package

            package = Path(train.outputs["package"])
            meta = load_metadata(package)
            schema = meta.class_schema
            outputs: dict[str, Any] = {"maps": {}, "probabilities": {}, "polygons": {}}
            summary: dict[str, Any] = {"scenes": len(scenes)}
            for s in scenes:
                map_path = folder / f"{s.id}.tif"
                prob_path = folder / f"{s.id}_probabilities.tif" if p.probabilities else None
                if map_path.exists() and (prob_path is None or prob_path.exists()):
                    log.info("Map of %s already complete: %s", s.id, map_path)
                else:
                    res = predict_package(
                        package,
                        s.image,
                        map_path,
                        probabilities=prob_path,
                        overlap=p.overlap,
                        blend=p.blend,
                        tta=p.tta,
                        batch_size=p.batch_size,
                        threshold=p.threshold,
                        prob_dtype=p.prob_dtype,
                        device=p.device,
                        blocksize=p.blocksize,
                        memory_mb=p.memory_mb,
                        window=p.window,
                        overwrite=False,
                        resume=True,
                        progress=self.cb("predict"),
                    )
                    summary[f"{s.id}_px_per_s"] = round(res.pixels_per_second, 1)
                    summary[f"{s.id}_blocks_resumed"] = res.blocks_resumed
                outputs["maps"][s.id] = str(map_path)
                if prob_path is not None:
                    outputs["probabilities"][s.id] = str(prob_path)
                if p.vectorize:
                    outputs["polygons"][s.id] = str(
                        self._vectorize(map_path, folder / f"{s.id}.gpkg", schema)
                    )
            return outputs, summary

        return self.stage("predict", params, body)

    def _vectorize(self, map_path: Path, out: Path, schema: Any) -> Path:
        from rasterlearn.vectorize import vectorize_raster

        p = self.cfg.predict
        if out.exists():
            return out
        exclude: list[int] | None
        if p.exclude == "background":
            exclude = [schema.background] if schema.background is not None else None
        else:
            exclude = p.exclude
        vectorize_raster(map_path, out, min_area=p.min_area, simplify=p.simplify, exclude=exclude)
        return out

    # -- evaluate --------------------------------------------------------------------------------
    def run_evaluate(
        self, chips: StageRecord, train: StageRecord, predict: StageRecord | None
    ) -> StageRecord:
        e = self.cfg.evaluate
        params = {
            "upstream": {
                "chips": _token(chips),
                "train": _token(train),
                "predict": _token(predict) if predict else None,
            },
            "evaluate": e.model_dump(mode="json"),
        }

        def body(folder: Path) -> tuple[dict[str, Any], dict[str, Any]]:
            from rasterlearn.models import load_metadata

            package = Path(train.outputs["package"])
            meta = load_metadata(package)
            dataset = Path(chips.outputs["dataset"])
            outputs: dict[str, Any] = {"maps": {}}
            summary: dict[str, Any] = {}
            if e.test_chips and int(chips.summary.get("chips_tst", 0)) > 0:
                from rasterlearn.train import evaluate_model

                m = evaluate_model(package, dataset, split="tst", out=folder / "test_chips.json")
                outputs["test_chips"] = str(folder / "test_chips.json")
                summary["test_chips_mean_iou"] = m.get("mean_iou")
                summary["test_chips_overall_accuracy"] = m.get("overall_accuracy")
                summary["test_chips_kappa"] = m.get("kappa")
            maps = predict.outputs.get("maps", {}) if predict else {}
            by_id = {s.id: s for s in self.scenes}
            for sid, map_path in maps.items():
                s = by_id[sid]
                if not s.has_labels:
                    log.info("Scene %s has no labels; its map is not evaluated", sid)
                    continue
                aoi, region = self._region(s, dataset)
                if aoi is False:
                    continue
                from rasterlearn.evaluate import evaluate_map

                out_json = folder / f"{sid}.json"
                truth = s.labels or s.label_raster
                assert truth is not None
                m = evaluate_map(
                    map_path,
                    truth,
                    attribute=s.attribute if s.labels is not None else None,
                    layer=s.layer,
                    schema=meta.class_schema,
                    unlabelled=e.unlabelled,
                    aoi=aoi,
                    all_touched=e.all_touched,
                    output=out_json,
                )
                outputs["maps"][sid] = {"metrics": str(out_json), "region": region}
                summary[f"{sid}_mean_iou"] = m.get("mean_iou")
                summary[f"{sid}_overall_accuracy"] = m.get("overall_accuracy")
                summary[f"{sid}_kappa"] = m.get("kappa")
                summary[f"{sid}_min_class_iou"] = min(
                    (
                        float(pc.get("iou") or 0.0)
                        for pc in m.get("per_class", {}).values()
                        if pc.get("support")
                    ),
                    default=None,
                )
                summary[f"{sid}_region"] = region
            return outputs, summary

        return self.stage("evaluate", params, body)

    def _region(self, s: ResolvedScene, dataset: Path) -> tuple[Any, str]:
        """The evaluation region of a scene: whole (held out), its tst chips, or whole (with a warning)."""
        mode = self.cfg.evaluate.region
        if mode == "scene" or (mode == "auto" and s.heldout):
            return None, "scene" + (" (held out)" if s.heldout else " (includes training areas)")
        import pandas as pd
        from shapely.geometry import box
        from shapely.ops import unary_union

        man = pd.read_csv(dataset / "manifest.csv")
        rows = man[(man["split"] == "tst") & (man["scene"].astype(str) == s.id)]
        if rows.empty:
            if mode == "test_chips":
                log.warning("Scene %s has no tst chips; evaluate.region test_chips skips it", s.id)
                return False, "none"
            log.warning(
                "Scene %s was used for training and has no tst chips: its metrics include training areas "
                "(set chips.test > 0 or hold a scene out with split: tst)",
                s.id,
            )
            return None, "scene (includes training areas)"
        geom = unary_union([box(r.minx, r.miny, r.maxx, r.maxy) for r in rows.itertuples()])
        return geom, f"tst chips ({len(rows)})"

    # -- features --------------------------------------------------------------------------------
    def feature_scenes(self) -> list[ResolvedScene]:
        f = self.cfg.features
        if f.scenes == "all":
            return list(self.scenes)
        by_id = {s.id: s for s in self.scenes}
        missing = [x for x in f.scenes if x not in by_id]
        if missing:
            raise ConfigError(f"features.scenes: unknown scene ids {missing}; scenes are {list(by_id)}")
        return [by_id[x] for x in f.scenes]

    def run_features(self) -> StageRecord:
        f = self.cfg.features
        scenes = self.feature_scenes()
        fj = f.model_dump(mode="json")
        for k in ("device", "batch_size"):
            fj.pop(k, None)
        refs = _resolve(self.cfg, f.references)
        fj["checkpoint"] = file_identity(_resolve(self.cfg, f.checkpoint)) if f.checkpoint else None
        fj["references"] = file_identity(refs) if refs else None
        params = {"scenes": [{"id": s.id, "image": file_identity(s.image)} for s in scenes], "features": fj}

        def body(folder: Path) -> tuple[dict[str, Any], dict[str, Any]]:
            from rasterlearn.embed import embed
            from rasterlearn.features.cluster import cluster_raster
            from rasterlearn.features.reduce import reduce_raster
            from rasterlearn.features.similarity import similarity_raster

            outputs: dict[str, Any] = {}
            summary: dict[str, Any] = {
                "model": f.model,
                "pretrained": bool(f.pretrained and not f.checkpoint),
            }
            for s in scenes:
                o: dict[str, Any] = {}
                feat = folder / f"{s.id}_features.tif"
                if not feat.exists():
                    res = embed(
                        s.image,
                        f.model,
                        output=feat,
                        checkpoint=_resolve(self.cfg, f.checkpoint),
                        pretrained=f.pretrained,
                        seed=f.seed,
                        model_kwargs=f.model_kwargs or None,
                        bands=f.bands,
                        size=f.size,
                        stride=f.stride,
                        input_size=f.input_size,
                        layer=f.layer,
                        normalization=f.normalization,
                        storage=f.storage,
                        device=f.device,
                        batch_size=f.batch_size,
                        cache_dir=folder / "embed_sessions",
                        progress=self.cb("features"),
                    )
                    summary[f"{s.id}_dim"] = res.dim
                    summary[f"{s.id}_weights_sha256"] = res.parameters.get("weights_sha256")
                o["features"] = str(feat)
                if f.pca_components:
                    pca = folder / f"{s.id}_pca.tif"
                    if not pca.exists():
                        r = reduce_raster(feat, pca, method="pca", components=f.pca_components, seed=f.seed)
                        ev = r.explained_variance_ratio
                        if ev:
                            summary[f"{s.id}_pca_explained"] = round(float(sum(ev)), 4)
                    o["pca"] = str(pca)
                if f.clusters:
                    clu = folder / f"{s.id}_clusters.tif"
                    if not clu.exists():
                        cluster_raster(feat, clu, method="kmeans", clusters=f.clusters, seed=f.seed)
                    o["clusters"] = str(clu)
                if refs is not None:
                    sim = folder / f"{s.id}_similarity.tif"
                    if not sim.exists():
                        similarity_raster(feat, refs, sim, mode=f.similarity_mode, seed=f.seed)
                    o["similarity"] = str(sim)
                outputs[s.id] = o
            return outputs, summary

        return self.stage("features", params, body)

    # -- all -------------------------------------------------------------------------------------
    def run(self, stages: Sequence[str] | None) -> RunResult:
        t0 = time.perf_counter()
        want = set(stages or STAGES)
        unknown = want - set(STAGES)
        if unknown:
            raise ConfigError(f"Unknown stages {sorted(unknown)}; stages are {', '.join(STAGES)}")
        self.out.mkdir(parents=True, exist_ok=True)
        self._write_config()
        supervised = bool(want & {"chips", "train", "predict", "evaluate"})
        if supervised:
            chips = self.run_chips()
            train = self.run_train(chips) if want & {"train", "predict", "evaluate"} else None
            predict = (
                self.run_predict(train)
                if train is not None and self.cfg.predict.enabled and want & {"predict", "evaluate"}
                else None
            )
            if train is not None and self.cfg.evaluate.enabled and "evaluate" in want:
                self.run_evaluate(chips, train, predict)
        if self.cfg.features.enabled and "features" in want:
            self.run_features()
        report = None
        if self.cfg.report.enabled:
            report = self.write_report()
        result = RunResult(
            self.out, dict(self.records), self.ran, self.skipped, report, time.perf_counter() - t0
        )
        _write_stage_json(
            self.out / "run.json",
            {
                "format": RUN_FORMAT,
                "name": self.cfg.name,
                "finished": _now(),
                "stages": {k: {"hash": r.hash, "status": r.status} for k, r in self.records.items()},
                "ran": self.ran,
                "skipped": self.skipped,
                "metrics": result.metrics(),
                "report": str(report) if report else None,
            },
        )
        return result

    def _write_config(self) -> None:
        data = self.cfg.model_dump(mode="json")
        text = "# the validated configuration of this run (defaults filled in)\n" + yaml.safe_dump(
            data, sort_keys=False
        )
        tmp = self.out / ".config.yaml.tmp"
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, self.out / "config.yaml")

    def write_report(self) -> Path:
        from rasterlearn.run_report import ReportInputs, write_run_report

        r = self.records
        chips = r.get("chips")
        train = r.get("train")
        predict = r.get("predict")
        evaluate = r.get("evaluate")
        features = r.get("features")
        by_id = {s.id: s for s in self.scenes}
        inputs = ReportInputs(
            title=self.cfg.report.title or f"rasterlearn run: {self.cfg.name}",
            dataset=Path(chips.outputs["dataset"]) if chips else None,
            train_dir=Path(train.outputs["package"]) if train else None,
            scenes=[
                {
                    "id": s.id,
                    "image": str(s.image),
                    "labels": str(s.labels or s.label_raster or ""),
                    "split": s.split or "",
                    "role": "held out" if s.heldout else ("training" if s.has_labels else "mapped"),
                }
                for s in self.scenes
            ],
            maps={k: Path(v) for k, v in (predict.outputs.get("maps", {}) if predict else {}).items()},
            images={sid: by_id[sid].image for sid in (predict.outputs.get("maps", {}) if predict else {})},
            polygons={
                k: Path(v) for k, v in (predict.outputs.get("polygons", {}) if predict else {}).items()
            },
            test_chips=Path(evaluate.outputs["test_chips"])
            if evaluate and "test_chips" in evaluate.outputs
            else None,
            map_metrics={
                k: (Path(v["metrics"]), v["region"])
                for k, v in (evaluate.outputs.get("maps", {}) if evaluate else {}).items()
            },
            features={
                k: {kk: Path(vv) for kk, vv in v.items()}
                for k, v in (features.outputs if features else {}).items()
            },
            features_note=_features_note(features) if features else "",
            stages={k: {"hash": v.hash, "seconds": v.seconds, "runs": v.runs} for k, v in r.items()},
            config=self.cfg.model_dump(mode="json"),
            sample_chips=self.cfg.report.sample_chips,
            quicklook_size=self.cfg.report.quicklook_size,
        )
        return write_run_report(self.out, inputs)


def _token(rec: StageRecord) -> str:
    """What downstream stages depend on: the upstream hash *and* its completion time, so that an upstream
    stage that ran again (forced, or cleared by hand) re-runs what follows even with equal parameters."""
    return canonical_hash([rec.hash, rec.finished])


def _usable_checkpoint(path: Path) -> bool:
    """Whether ``path`` is a loadable Lightning checkpoint (a kill while it was written leaves it broken)."""
    if not path.exists():
        return False
    import torch

    try:
        torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated file fails in several ways (EOFError, RuntimeError, ...)
        log.warning("Checkpoint %s is unreadable (%s); training starts again", path, exc)
        path.unlink()
        return False
    return True


def _features_note(rec: StageRecord) -> str:
    model = rec.summary.get("model")
    pretrained = rec.summary.get("pretrained")
    return f"Backbone {model} ({'pretrained weights' if pretrained else 'random initialisation or local checkpoint'})."


def run_pipeline(
    config: RunConfig | str | Path | Mapping[str, Any],
    *,
    out: str | Path | None = None,
    stages: Sequence[str] | None = None,
    force: Sequence[str] = (),
    progress: Progress | None = None,
) -> RunResult:
    """Run (or resume, or bring up to date) the whole pipeline of a run config.

    Args:
        config: a :class:`RunConfig`, a YAML path or a parsed mapping.
        out: output folder (default: the config's ``out``).
        stages: only these stages (and what they need); default all enabled stages.
        force: stages to re-run even when up to date; the stages after them run again too.
        progress: ``progress(stage, n)`` callback: chips/windows, epochs, pixels, tiles finished.

    Returns:
        :class:`RunResult` with each stage's record, what ran and what was skipped, and the report path.
    """
    cfg = config if isinstance(config, RunConfig) else load_config(config)
    out_dir = Path(out) if out is not None else out_dir_of(cfg)
    source = None if isinstance(config, RunConfig | Mapping) else config
    scenes = [p for s in resolve_scenes(cfg) for p in (s.image, s.labels, s.label_raster)]
    check_outputs([source, *scenes], [out_dir])
    runner = _Runner(cfg, out_dir, progress, force)
    with output_lock(out_dir):  # a second run into the same folder refuses
        return runner.run(stages)
