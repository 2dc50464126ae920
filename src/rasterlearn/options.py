"""Typed options of every streaming stage: one pydantic model per command, the keys of its ``--config`` YAML.

Each model lists the options of one command (``rasterlearn chips``, ``predict``, ``embed``, ``reduce``,
``cluster``, ``similarity``, ``classify``, ``evaluate``, ``vectorize``) under the command line's own names
in snake_case (``--memory-mb`` is ``memory_mb``), with the command line's defaults, and also its positional
arguments (``model``, ``raster``, ``map``), so one YAML file is a complete job description::

    # predict.yaml                      rasterlearn predict --config predict.yaml
    model: runs/unet
    raster: scene.tif
    output: map.tif
    overlap: 0.5
    aoi: [500000, 4000000, 500640, 4000640]   # a list where the command line takes a comma list

Models refuse unknown keys (``extra="forbid"``): a typo is an error naming the file, the key and the valid
keys, never a silently ignored option. Precedence when the CLI reads a file: options given on the command
line, then the file, then these defaults. ``tests/test_config.py`` checks for every command that each
command-line option has a field here with the same default, and the reverse (``chips`` reads its
command-line defaults from :class:`ChipsOptions`; the other commands keep theirs in the signature, where
the test holds them equal to the model's).

The training options are :class:`rasterlearn.train.TrainConfig` (``rasterlearn train --config``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, TypeVar

from pydantic import AliasChoices, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from rasterlearn.errors import ConfigError, InputError, InputNotFoundError
from rasterlearn.predict_plan import DEFAULT_MEMORY_MB

N = TypeVar("N", int, float)

__all__ = [
    "STAGE_OPTIONS",
    "ChipsOptions",
    "ClassifyOptions",
    "ClusterOptions",
    "EmbedOptions",
    "EvaluateOptions",
    "PredictOptions",
    "ReduceOptions",
    "SimilarityOptions",
    "StageOptions",
    "VectorizeOptions",
    "describe_validation_error",
    "load_options",
    "option_keys",
    "parse_bands",
    "parse_numbers",
]


def _comma_join(value: Any) -> Any:
    """A YAML list where the command line takes a comma list (``bands: [4, 3, 2]`` = ``--bands 4,3,2``)."""
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return value


def _as_list(value: Any) -> Any:
    """One value where a list is expected (``raster: a.tif`` = ``raster: [a.tif]``)."""
    if isinstance(value, str | Path):
        return [value]
    return value


def _json_text(value: Any) -> Any:
    """A YAML mapping where the command line takes JSON text (``params: {n_estimators: 50}``)."""
    if isinstance(value, Mapping):
        import json

        return json.dumps(dict(value))
    return value


JsonText = Annotated[str | None, BeforeValidator(_json_text)]
"""JSON arguments on the command line; JSON text or a YAML mapping in a file."""


def _names_text(value: Any) -> Any:
    """A YAML mapping of class names (``{1: developed, 2: water}``) as ``1=developed,2=water``."""
    if isinstance(value, Mapping):
        return ",".join(f"{k}={v}" for k, v in value.items())
    return value


CommaList = Annotated[str | None, BeforeValidator(_comma_join)]
"""A comma-separated list on the command line; a string or a YAML list in a file."""
Extent = Annotated[str | None, BeforeValidator(_comma_join)]
"""An area of interest: a vector file, or ``left,bottom,right,top`` (a YAML list of four numbers)."""


def parse_bands(bands: str | None) -> list[int | str] | None:
    """A ``bands`` option (``4,3,2`` or ``red,nir``), the one parser of every stage: whole numbers are 1-based
    indexes (``-1`` too, so the reader refuses it as an index), other items band descriptions; empty items
    are skipped; ``None`` or ``""``: all bands."""
    if not bands:
        return None
    items = [b.strip() for b in bands.split(",") if b.strip()]
    return [int(b) if b.lstrip("-").isdigit() else b for b in items]


def parse_numbers(
    text: str | None, key: str, kind: Callable[[str], N], what: str = "numbers", example: str = "0,255"
) -> list[N] | None:
    """A comma list of numbers (``ignore: 0,255``, ``exclude: 0``) as ``kind`` (``int`` or ``float``); empty
    items are skipped; ``None`` or ``""``: none. Anything else is one :class:`InputError` naming ``key``."""
    if not text:
        return None
    try:
        return [kind(v.strip()) for v in text.split(",") if v.strip()]
    except ValueError:
        raise InputError(f"{key}: {text!r} is not a comma list of {what}; give e.g. {example}") from None


class StageOptions(BaseModel):
    """Base of the stage models: unknown keys are errors; ``cli_names`` maps a field to its CLI parameter."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    command: ClassVar[str] = ""
    cli_names: ClassVar[dict[str, str]] = {}
    """Fields whose command-line parameter has another Python name (``model`` -> ``model_dir``)."""
    output_neutral: ClassVar[frozenset[str]] = frozenset()
    """The options that cannot change the output's bytes (memory, threads, workers, device...): left out of
    the job's fingerprint (:func:`rasterlearn.engine.journal.fingerprint`), so changing them resumes an
    interrupted job instead of restarting it. Declared once here; the stage's fingerprint code and the
    pipeline's stage hash take them from here. May also name library keywords without a CLI option."""

    @classmethod
    def neutral_fields(cls) -> frozenset[str]:
        """:attr:`output_neutral`: the options left out of this stage's fingerprint."""
        return cls.output_neutral

    def require(self, *names: str) -> list[Any]:
        """The values of the fields ``names``; one that is not given is a :class:`ConfigError` naming it and
        saying where to give it (the command line, the ``--config`` file, the Python model)."""
        missing = [n for n in names if getattr(self, n) is None]
        if missing:
            field = type(self).model_fields[missing[0]]
            key = field.alias or missing[0]
            raise ConfigError(
                f"rasterlearn {self.command}: {', '.join(missing)} not given; pass it on the command line or as "
                f"'{key}:' in the --config file (Python: {type(self).__name__}({key}=...))"
            )
        return [getattr(self, n) for n in names]

    def fingerprint(self, **inputs: str | Path | None) -> str:
        """The journal's fingerprint of these options (less :meth:`neutral_fields`), with the identities
        of ``inputs`` (role -> file) when given."""
        from rasterlearn.engine.journal import fingerprint

        return fingerprint(self.model_dump(mode="json"), neutral=self.neutral_fields(), inputs=inputs or None)


# -- options shared by several commands (one name per concept) ------------------------------------------------
_OUTPUT = "Output file."
_BANDS = "Bands by 1-based index or description, e.g. '4,3,2' (default: all / matched by name)."
_AOI = "Area of interest: a vector file, or 'left,bottom,right,top' in the raster's CRS."
_DEVICE = "auto, cpu, cuda, cuda:N or mps."
_SCHEDULER = "Address of a running dask.distributed scheduler (tcp://HOST:8786) computing the blocks."
_WORKERS = "Compute blocks on a dask LocalCluster of N worker processes started for this job."
_MEMORY = "GDAL block cache bound during the job (MB)."


def _files(value: Any) -> Any:
    """Input files: none given (``None``, the command line's default) is an empty list; one file a list of one."""
    return [] if value is None else _as_list(value)


def _comma_items(value: Any) -> Any:
    """A list of values, each of which may be a comma list (``--bands 4,3 --bands 2``), or one comma list; empty
    is ``None``."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple):
        return value
    items: list[Any] = []
    for item in value:
        items += [v.strip() for v in item.split(",") if v.strip()] if isinstance(item, str) else [item]
    return items or None


def _proportions(value: Any) -> Any:
    """``"1:5,2:10"`` (class code: minimum percent, the command line's form) as a mapping; empty is ``None``."""
    if not isinstance(value, str):
        return value
    items: dict[str, str] = {}
    for part in value.split(","):
        if part.strip():
            code, sep, percent = part.partition(":")
            if not sep:
                raise ValueError(f"class proportion {part.strip()!r} must be 'code:percent', e.g. '1:5,2:10'")
            items[code.strip()] = percent.strip()
    return items or None


Files = Annotated[list[Path], BeforeValidator(_files)]
"""Input files (chips): a YAML list or one file; none is an empty list."""
CommaItems = Annotated[list[int | str] | None, BeforeValidator(_comma_items)]
"""Bands (chips): a YAML list or comma lists, each value an index or a name."""
CommaInts = Annotated[list[int] | None, BeforeValidator(_comma_items)]
"""Class codes (chips): a YAML list or a comma list."""


class ChipsOptions(StageOptions):
    """Options of ``rasterlearn chips`` and of :func:`rasterlearn.chips.run_chips` (the command line reads its
    defaults from here). The fields from ``size`` on are in the order ``dataset.json`` records them."""

    command: ClassVar[str] = "chips"
    output_neutral: ClassVar[frozenset[str]] = frozenset({"overwrite", "cache_mb"})

    raster: Files = Field(default_factory=list, description="image rasters, paired with labels")
    image: Files = Field(default_factory=list, description="one raster per date of one scene")
    nodata_policy: Literal["all-valid", "any-valid"] = Field(
        "all-valid", description="multi-date scenes: all-valid or any-valid"
    )
    labels: Files = Field(default_factory=list, description="vector labels for each raster")
    label_raster: Files = Field(default_factory=list, description="pre-rasterized label rasters")
    scenes: Path | None = Field(None, description="scenes CSV instead of raster/labels")
    output: Path | None = Field(
        None, validation_alias=AliasChoices("output", "out"), description="dataset folder to write"
    )
    size: int = Field(256, gt=0, description="chip size in pixels")
    stride: int | None = Field(None, gt=0, description="step between chips (default: size)")
    bands: CommaItems = Field(None, description="bands by 1-based index or description")
    attribute: str | None = Field(None, description="class attribute of the labels")
    burn_value: int = Field(1, description="class code burned when there is no attribute")
    layer: str | None = Field(None, description="vector layer name")
    schema_file: Path | None = Field(None, alias="schema", description="class schema YAML or colormap CSV")
    ignore_index: int | None = Field(None, ge=0, description="ignore code in masks (default: 255)")
    all_touched: bool = Field(False, description="burn every pixel a geometry touches")
    overlap: Literal["last", "priority"] = Field("last", description="overlapping features: last or priority")
    priority: CommaInts = Field(None, description="class codes from highest to lowest priority")
    label_areas: str | None = Field(None, description="label only inside: features, extent or a polygon file")
    unknown_classes: Literal["error", "ignore"] = Field("error", description="label values not in the schema")
    label_band: int = Field(1, ge=1, description="band of label rasters")
    split_method: Literal["auto", "blocks", "random", "stratified", "scene"] = Field(
        "auto", description="how chips are split into trn/val/tst"
    )
    val: float = Field(0.15, ge=0.0, lt=1.0, description="validation fraction")
    test: float = Field(0.15, ge=0.0, lt=1.0, description="test fraction")
    block_size: int | None = Field(None, gt=0, description="spatial split block size (default: 4 x size)")
    min_annotated: float = Field(0.0, ge=0.0, le=100.0, description="min percent of labelled pixels per chip")
    max_nodata: float = Field(100.0, ge=0.0, le=100.0, description="max percent of nodata pixels per chip")
    class_proportion: Annotated[dict[int, float] | None, BeforeValidator(_proportions)] = Field(
        None, description="min percent per class"
    )
    seed: int = Field(0, description="random seed of splits and statistics")
    compress: Literal["deflate", "lzw", "zstd", "none"] = Field("deflate", description="chip compression")
    stats_sample: int = Field(200_000, gt=0, description="pixels sampled for band statistics (file only)")
    stats_windows: int = Field(
        256, gt=0, description="trn windows per scene sampled for statistics (file only)"
    )
    overwrite: bool = Field(False, description="replace an existing dataset")
    cache_mb: int = Field(64, gt=0, description=_MEMORY + " (file only)")


class PredictOptions(StageOptions):
    """Options of ``rasterlearn predict``."""

    command: ClassVar[str] = "predict"
    cli_names: ClassVar[dict[str, str]] = {"model": "model_dir", "raster": "rasters"}
    output_neutral: ClassVar[frozenset[str]] = frozenset(
        {
            "batch_size",
            "memory_mb",
            "device",
            "threads",
            "io_threads",
            "cache_mb",
            "scheduler",
            "workers",
            "no_resume",
            "overwrite",
        }
    )

    model: Path | None = Field(None, description="model package folder (model.json + model.safetensors)")
    raster: Annotated[list[str] | None, BeforeValidator(_as_list)] = Field(
        None, description="raster(s) to map; several with out_dir"
    )
    output: Path | None = Field(None, description="class map to write (COG)")
    overlap: float = Field(0.25, description="fraction of the chip size shared by neighbouring windows")
    probabilities: Path | None = Field(None, description="also write class probabilities (COG)")
    vectorize: Path | None = Field(None, description="also write the map as polygons")
    blend: Literal["hann", "center-crop", "none"] = Field("hann", description="window blending")
    tta: CommaList = Field(None, description="test-time augmentation: hflip, vflip, rot90, ... or flips, all")
    batch_size: int | None = Field(None, description="windows per model call (default: from memory_mb)")
    aoi: Extent = Field(None, description=_AOI)
    threshold: float | None = Field(None, description="binary models: foreground probability threshold")
    prob_dtype: Literal["uint8", "float32"] = Field("uint8", description="probability storage")
    bands: CommaList = Field(None, description=_BANDS)
    nodata: float | None = Field(None, description="input nodata value when the raster declares none")
    threads: int | None = Field(None, description="CPU threads for the model (torch)")
    io_threads: int = Field(2, description="reader threads")
    device: str = Field("auto", description=_DEVICE)
    amp: bool = Field(True, description="mixed precision on CUDA")
    blocksize: int = Field(512, description="output tile size (also the resume granularity)")
    memory_mb: float = Field(DEFAULT_MEMORY_MB, description="working-memory budget (MB)")
    cache_mb: int = Field(16, description=_MEMORY)
    window: int | None = Field(None, description="inference window (px); default: from memory_mb")
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="numeric precision")
    runtime: Literal["torch", "onnx"] = Field("torch", description="torch or onnx (ONNX Runtime on CPU)")
    min_area: float = Field(0.0, description="vectorize: drop polygons smaller than this")
    overwrite: bool = Field(False, description="replace existing outputs")
    allow_resolution_mismatch: bool = Field(False, description="predict although the pixel size differs >25%")
    allow_dtype_mismatch: bool = Field(
        False, description="predict although dtype/values differ from training"
    )
    no_resume: bool = Field(False, description="discard a partial run instead of resuming it")
    image: list[Path] | None = Field(None, description="multi-date models: one raster per date")
    nodata_policy: Literal["all-valid", "any-valid"] = Field("all-valid", description="multi-date input")
    out_dir: Path | None = Field(None, description="map many scenes: OUT_DIR/<scene>.tif each")
    mosaic: bool = Field(False, description="with out_dir: also write OUT_DIR/mosaic.vrt")
    scheduler: str | None = Field(None, description=_SCHEDULER)
    workers: int | None = Field(None, ge=1, description=_WORKERS)
    stac: list[str] | None = Field(
        None, description="STAC item(s) to map instead of raster: their assets stacked on one grid"
    )
    assets: str | None = Field(None, description="with stac: the item's assets, in band order (B04,B03,B02)")


class EmbedOptions(StageOptions):
    """Options of ``rasterlearn embed``."""

    command: ClassVar[str] = "embed"
    output_neutral: ClassVar[frozenset[str]] = frozenset(
        {
            "device",
            "batch_size",
            "io_threads",
            "pause",
            "memory_mb",
            "cache_mb",
            "scheduler",
            "workers",
            "no_resume",
            "cache_dir",
            "output",  # where the finished features are moved; the session lives in cache_dir
        }
    )

    raster: str | None = Field(None, description="input raster (a file, URL or /vsi... path)")
    model: str | None = Field(None, description="timm model name, hf-hub:org/name or a recommended model")
    output: Path | None = Field(None, description=_OUTPUT)
    size: int = Field(224, description="tile size in raster pixels")
    stride: int | None = Field(None, description="step between tiles (default: size)")
    checkpoint: Path | None = Field(None, description="local .safetensors/.pth weights (no download)")
    input_size: int | None = Field(None, description="model input size (default: size)")
    layer: int | None = Field(None, description="ViT block / CNN stage index (default: last)")
    bands: CommaList = Field(None, description=_BANDS)
    normalization: Literal["image", "model", "none"] = Field("image", description="input normalization")
    value_scale: float | None = Field(None, description="with normalization model: divide values first")
    merge: Literal["average", "first", "center"] = Field("average", description="overlap merge")
    storage: Literal["float32", "float16", "uint16"] = Field("float32", description="feature storage")
    min_valid: float = Field(0.5, description="min valid fraction of a feature pixel's footprint")
    aoi: Extent = Field(None, description=_AOI + " (formerly --extent)")
    aoi_crs: str | None = Field(None, description="CRS of aoi bounds (formerly --extent-crs)")
    target_crs: str | None = Field(None, description="read the raster reprojected to this CRS")
    resolution: float | None = Field(None, description="read at this resolution (target CRS units)")
    resampling: str = Field("bilinear", description="resampling for reprojected reading")
    device: str = Field("auto", description=_DEVICE)
    batch_size: int = Field(8, description="tiles per forward pass")
    io_threads: int = Field(1, description="reader threads prefetching tile rows in this process")
    pause: float = Field(0.0, description="seconds to sleep between batches")
    no_pretrained: bool = Field(False, description="random weights (testing)")
    seed: int = Field(0, description="seed of the random weights with no_pretrained")
    model_kwargs: JsonText = Field(None, description="arguments for timm.create_model (JSON or a mapping)")
    cache_dir: Path | None = Field(None, description="session folder (default: beside the output)")
    no_resume: bool = Field(False, description="start afresh instead of resuming")
    memory_mb: float = Field(256.0, description="budget for feature and tile rows held in memory (MB)")
    cache_mb: int = Field(64, description=_MEMORY)
    scheduler: str | None = Field(None, description=_SCHEDULER)
    workers: int | None = Field(None, ge=1, description=_WORKERS)
    stac: str | None = Field(None, description="a STAC item to encode instead of raster")
    assets: str | None = Field(None, description="with stac: the item's assets, in band order (B04,B03,B02)")


class _FeatureOptions(StageOptions):
    """Options shared by reduce, cluster, similarity and classify."""

    output_neutral: ClassVar[frozenset[str]] = frozenset({"scheduler", "workers"})

    raster: str | None = Field(None, description="feature raster or any multi-band raster")
    output: Path | None = Field(None, description=_OUTPUT)
    bands: CommaList = Field(None, description=_BANDS)
    scheduler: str | None = Field(None, description=_SCHEDULER)
    workers: int | None = Field(None, ge=1, description=_WORKERS)


class ReduceOptions(_FeatureOptions):
    """Options of ``rasterlearn reduce``."""

    command: ClassVar[str] = "reduce"
    output_neutral: ClassVar[frozenset[str]] = _FeatureOptions.output_neutral | {"trust_model"}

    method: str = Field("pca", description="pca, incremental_pca, truncated_svd, fast_ica, umap, ...")
    components: int = Field(3, description="output bands")
    params: JsonText = Field(None, description="estimator arguments (JSON or a mapping)")
    no_standardize: bool = Field(False, description="do not z-score bands first")
    sample_size: int | None = Field(None, description="pixels sampled for fitting")
    seed: int = Field(0, description="random seed")
    model: Path | None = Field(None, description="apply a fitted reducer folder")
    model_out: Path | None = Field(None, description="where to save the fitted reducer")
    trust_model: bool = Field(False, description="allow a pickled estimator in model (your own folders only)")


class ClusterOptions(_FeatureOptions):
    """Options of ``rasterlearn cluster``."""

    command: ClassVar[str] = "cluster"

    method: str = Field("kmeans", description="kmeans, minibatch_kmeans, hdbscan, gmm, ...")
    clusters: int = Field(8, description="number of clusters (ignored by hdbscan)")
    params: JsonText = Field(None, description="estimator arguments (JSON or a mapping)")
    no_standardize: bool = Field(False, description="do not z-score bands first")
    sample_size: int = Field(100_000, description="pixels sampled for fitting")
    seed: int = Field(0, description="random seed")
    model: Path | None = Field(None, description="apply a fitted clustering folder")
    model_out: Path | None = Field(None, description="where to save the clustering")


class SimilarityOptions(_FeatureOptions):
    """Options of ``rasterlearn similarity``."""

    command: ClassVar[str] = "similarity"

    references: Path | None = Field(None, description="reference points/polygons (any CRS)")
    mode: Literal["mean", "max"] = Field("mean", description="mean reference vector or best reference")
    rate: float = Field(1.0, description="fraction of polygon pixels sampled")
    max_per_feature: int = Field(1000, description="cap of pixels per polygon")
    standardize: bool = Field(False, description="z-score bands before comparing")
    layer: str | None = Field(None, description="vector layer name")
    seed: int = Field(0, description="random seed of the reference sampling (file only)")


class ClassifyOptions(_FeatureOptions):
    """Options of ``rasterlearn classify``."""

    command: ClassVar[str] = "classify"
    output_neutral: ClassVar[frozenset[str]] = _FeatureOptions.output_neutral | {"trust_model"}
    cli_names: ClassVar[dict[str, str]] = {"metrics": "metrics_out"}

    labels: Path | None = Field(None, description="labelled points/polygons (any CRS)")
    attribute: str | None = Field(None, description="label column (text or numbers)")
    method: str = Field(
        "random_forest", description="random_forest, extra_trees, knn, ... or an sklearn class"
    )
    params: JsonText = Field(None, description="estimator arguments (JSON or a mapping)")
    task: Literal["auto", "classification", "regression"] = Field("auto", description="estimator task")
    cv: Literal["spatial", "fold", "random", "none"] | None = Field(None, description="validation (spatial)")
    folds: int = Field(5, description="number of folds")
    block_size: float | None = Field(None, description="spatial CV block side (CRS units)")
    fold_column: str | None = Field(None, description="column giving each feature's fold")
    test_labels: Path | None = Field(None, description="separate validation layer")
    rate: float = Field(1.0, description="fraction of polygon pixels sampled")
    max_per_feature: int = Field(2000, description="cap of pixels per polygon")
    layer: str | None = Field(None, description="vector layer name")
    seed: int = Field(0, description="random seed")
    model: Path | None = Field(None, description="apply a trained model folder (no training)")
    model_out: Path | None = Field(None, description="where to save the model")
    metrics: Path | None = Field(None, description="metrics JSON (default OUT.metrics.json)")
    trust_model: bool = Field(False, description="allow a pickled estimator in model (your own folders only)")


class EvaluateOptions(StageOptions):
    """Options of ``rasterlearn evaluate``."""

    command: ClassVar[str] = "evaluate"
    output_neutral: ClassVar[frozenset[str]] = frozenset({"scheduler", "workers"})
    cli_names: ClassVar[dict[str, str]] = {"map": "map_path"}

    map: Path | None = Field(None, description="predicted class map")
    truth: Path | None = Field(None, description="ground truth: a vector layer or a label raster")
    output: Path | None = Field(None, description="metrics JSON (CSV and PNG beside it)")
    attribute: str | None = Field(None, description="vector truth: the attribute holding the class")
    layer: str | None = Field(None, description="vector truth: layer name")
    schema_: Path | None = Field(None, alias="schema", description="class schema when the map names none")
    truth_classes: Path | None = Field(None, description="names of the truth's class codes (YAML/CSV)")
    truth_names: Annotated[str | None, BeforeValidator(_names_text)] = Field(
        None, description="inline names of the truth's codes: '1=a,2=b' or a mapping"
    )
    class_match: Literal["auto", "name", "code"] = Field("auto", description="how truth meets map classes")
    unlabelled: Literal["auto", "background", "ignore"] = Field("auto", description="pixels outside polygons")
    aoi: Extent = Field(None, description=_AOI)
    ignore: CommaList = Field(None, description="extra truth values to ignore")
    all_touched: bool = Field(False, description="vector truth: burn every pixel a polygon touches")
    scheduler: str | None = Field(None, description=_SCHEDULER)
    workers: int | None = Field(None, ge=1, description=_WORKERS)


class VectorizeOptions(StageOptions):
    """Options of ``rasterlearn vectorize``."""

    command: ClassVar[str] = "vectorize"
    output_neutral: ClassVar[frozenset[str]] = frozenset({"overwrite"})

    raster: Path | None = Field(None, description="class map (single band, integer codes)")
    output: Path | None = Field(None, description="polygons to write (.gpkg, .geojson, .fgb)")
    min_area: float = Field(0.0, description="drop polygons smaller than this (see area_unit)")
    area_unit: Literal["map", "pixels"] = Field("map", description="unit of min_area")
    simplify: float | None = Field(None, description="simplification tolerance in map units")
    exclude: CommaList = Field(None, description="class codes to leave out, e.g. [0]")
    window_size: int = Field(2048, description="processing window (pixels)")
    overwrite: bool = Field(False, description="replace an existing output")


STAGE_OPTIONS: dict[str, type[StageOptions]] = {
    m.command: m
    for m in (
        ChipsOptions,
        PredictOptions,
        EmbedOptions,
        ReduceOptions,
        ClusterOptions,
        SimilarityOptions,
        ClassifyOptions,
        EvaluateOptions,
        VectorizeOptions,
    )
}
"""Command name -> its options model."""


def option_keys(model: type[BaseModel]) -> list[str]:
    """The keys a file may use for ``model``: field names, or their alias where they have one."""
    return sorted(f.alias or name for name, f in model.model_fields.items())


def describe_validation_error(exc: ValidationError, model: type[BaseModel]) -> str:
    """One line for all problems of ``exc``: unknown keys with the valid keys, wrong values with the expectation."""
    parts: list[str] = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            parts.append(f"unknown key '{key}' (valid keys: {', '.join(option_keys(model))})")
        else:
            parts.append(f"'{key}': {err['msg'][:1].lower()}{err['msg'][1:]} (got {err['input']!r})")
    return "; ".join(parts)


M = TypeVar("M", bound=BaseModel)


def load_options(path: str | Path, model: type[M]) -> M:
    """Read a YAML options file (``yaml.safe_load``) and validate it with ``model``.

    Raises:
        InputNotFoundError: the file does not exist.
        ConfigError: the file is not a mapping, has an unknown key or a value of the wrong type; the
            one-line message names the file, the key and the valid keys or the expected type.
    """
    from rasterlearn._util import load_yaml

    p = Path(path)
    if not p.is_file():
        raise InputNotFoundError(
            f"Config file not found: {p} (--config takes a YAML file of option: value lines)"
        )
    data = load_yaml(p)
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"{p}: expected a mapping of option names to values (key: value lines), got a "
            f"{type(data).__name__}; valid keys: {', '.join(option_keys(model))}"
        )
    try:
        return model.model_validate(dict(data))
    except ValidationError as exc:
        raise ConfigError(f"{p}: {describe_validation_error(exc, model)}") from exc
