"""Every rasterlearn Processing algorithm as data, and the CLI argument list built from plain values.

Pure Python (no QGIS): :data:`ALGORITHMS` declares each algorithm's parameters (kind, CLI option, default)
and how its outputs are styled; :func:`build_args` turns plain parameter values (paths as text, numbers,
lists of band numbers, extents as tuples) into the ``rasterlearn`` argument list. The QGIS side
(``algorithms/base.py``) only converts QGIS parameters to these values and back.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ALGORITHMS", "AlgoSpec", "P", "build_args", "spec_by_id"]

INPUT_KINDS = (
    "raster",
    "vector",
    "field",
    "bands",
    "file",
    "folder",
    "int",
    "float",
    "bool",
    "enum",
    "string",
    "extent",
    "crs",
)
OUTPUT_KINDS = ("out_raster", "out_vector", "out_file", "out_folder")


@dataclass(frozen=True)
class P:
    """One parameter: QGIS name, label, kind, and the CLI option it becomes (``None``: positional)."""

    name: str
    label: str
    kind: str
    flag: str | None = None
    default: Any = None
    optional: bool = False
    options: tuple[str, ...] = ()
    parent: str | None = None
    minimum: float | None = None
    maximum: float | None = None
    invert: str | None = None  # bool: the flag emitted when the value is False (e.g. --no-standardize)
    advanced: bool = False
    file_filter: str = ""
    help: str = ""
    overwrite_flag: str | None = None  # output: the flag that replaces an existing output


@dataclass(frozen=True)
class AlgoSpec:
    """One Processing algorithm: id, display name, group, CLI command, parameters and output styling."""

    id: str
    name: str
    group: str
    command: tuple[str, ...]
    params: tuple[P, ...]
    help: str
    styles: Mapping[str, str] = field(default_factory=dict)  # output name -> classes|probability|rgb|polygons
    progress: bool = True  # accepts --progress json
    device: str | None = None  # '--device' or '--accelerator' when the command runs a network
    extra: tuple[str, ...] = ()
    one_of: tuple[tuple[str, ...], ...] = ()  # groups of parameters of which exactly one must be given


def _out(name: str, label: str, kind: str, flag: str | None, **kw: Any) -> P:
    return P(name, label, kind, flag, **kw)


_RASTER = P("INPUT", "Input raster", "raster", None)
_BANDS = P("BANDS", "Bands (default: all)", "bands", "--bands", optional=True, parent="INPUT")
_SEED = P("SEED", "Random seed", "int", "--seed", default=0, advanced=True)
_STD = P("STANDARDIZE", "Z-score bands first", "bool", None, default=True, invert="--no-standardize")

ALGORITHMS: tuple[AlgoSpec, ...] = (
    AlgoSpec(
        "embed",
        "Encoder (foundation-model features)",
        "Features",
        ("embed",),
        (
            _RASTER,
            P(
                "MODEL",
                "Model (timm name, hf-hub:org/name)",
                "string",
                "--model",
                "vit_small_patch14_dinov2.lvd142m",
            ),
            P("SIZE", "Tile size (pixels)", "int", "--size", 224, minimum=8),
            P("STRIDE", "Stride (pixels; default: tile size)", "int", "--stride", optional=True, minimum=1),
            _BANDS,
            P(
                "NORMALIZATION",
                "Normalization",
                "enum",
                "--normalization",
                "image",
                options=("image", "model", "none"),
            ),
            P("EXTENT", "Extent (default: whole raster)", "extent", "--extent", optional=True),
            P(
                "TARGET_CRS",
                "Read the raster reprojected to this CRS",
                "crs",
                "--target-crs",
                optional=True,
                advanced=True,
            ),
            P(
                "RESOLUTION",
                "Read at this resolution (target CRS units)",
                "float",
                "--resolution",
                optional=True,
                minimum=0.0,
                advanced=True,
            ),
            P(
                "CHECKPOINT",
                "Local weights (.safetensors/.pth)",
                "file",
                "--checkpoint",
                optional=True,
                advanced=True,
            ),
            P("BATCH_SIZE", "Tiles per batch", "int", "--batch-size", 8, minimum=1, advanced=True),
            P(
                "MEMORY_MB",
                "Memory for feature rows (MB; sets the strip height = resume granularity)",
                "float",
                "--memory-mb",
                optional=True,
                minimum=1.0,
                advanced=True,
            ),
            P(
                "NO_PRETRAINED",
                "Random weights (testing only)",
                "bool",
                "--no-pretrained",
                False,
                advanced=True,
            ),
            _out("OUTPUT", "Feature raster", "out_raster", "--output"),
        ),
        "Encode a raster into a georeferenced feature raster (one band per feature) with a foundation model "
        "(DINOv2 and any timm or hf-hub model). Sessions resume after a cancel.",
        styles={"OUTPUT": "rgb"},
        device="--device",
    ),
    AlgoSpec(
        "reduce",
        "Dimension reduction",
        "Features",
        ("reduce",),
        (
            _RASTER,
            P(
                "METHOD",
                "Method",
                "enum",
                "--method",
                "pca",
                options=("pca", "incremental_pca", "truncated_svd", "fast_ica", "umap"),
            ),
            P("COMPONENTS", "Output bands", "int", "--components", 3, minimum=1),
            _BANDS,
            _STD,
            P(
                "SAMPLE_SIZE",
                "Pixels sampled for fitting",
                "int",
                "--sample-size",
                optional=True,
                minimum=10,
                advanced=True,
            ),
            _SEED,
            _out("OUTPUT", "Reduced raster", "out_raster", "--output"),
        ),
        "Reduce a raster's bands (PCA, UMAP, ...), fitted on a sample and applied block by block.",
        styles={"OUTPUT": "rgb"},
    ),
    AlgoSpec(
        "cluster",
        "Clustering",
        "Features",
        ("cluster",),
        (
            _RASTER,
            P(
                "METHOD",
                "Method",
                "enum",
                "--method",
                "kmeans",
                options=("kmeans", "minibatch_kmeans", "hdbscan", "gmm", "agglomerative", "birch"),
            ),
            P("CLUSTERS", "Number of clusters (not hdbscan)", "int", "--clusters", 8, minimum=2),
            _BANDS,
            _STD,
            P(
                "SAMPLE_SIZE",
                "Pixels sampled for fitting",
                "int",
                "--sample-size",
                100_000,
                minimum=10,
                advanced=True,
            ),
            _SEED,
            _out("OUTPUT", "Cluster map", "out_raster", "--output"),
        ),
        "Cluster a raster's pixels into a class map (1..K, 0 = nodata) with a colour table and legend.",
        styles={"OUTPUT": "classes"},
    ),
    AlgoSpec(
        "similarity",
        "Similarity",
        "Features",
        ("similarity",),
        (
            _RASTER,
            P("REFERENCES", "Reference points or polygons", "vector", "--references"),
            P("MODE", "Mode", "enum", "--mode", "mean", options=("mean", "max")),
            P("STANDARDIZE", "Z-score bands first", "bool", "--standardize", False),
            _BANDS,
            _out("OUTPUT", "Similarity raster", "out_raster", "--output"),
        ),
        "Cosine similarity of every pixel to the features under reference points or polygons.",
        styles={"OUTPUT": "probability"},
    ),
    AlgoSpec(
        "classify",
        "Machine learning (classify)",
        "Features",
        ("classify",),
        (
            _RASTER,
            P("LABELS", "Labelled points or polygons", "vector", "--labels"),
            P("ATTRIBUTE", "Label field", "field", "--attribute", parent="LABELS"),
            P(
                "METHOD",
                "Method",
                "enum",
                "--method",
                "random_forest",
                options=(
                    "random_forest",
                    "extra_trees",
                    "gradient_boosting",
                    "hist_gradient_boosting",
                    "knn",
                ),
            ),
            P("CV", "Validation", "enum", "--cv", "spatial", options=("spatial", "fold", "random", "none")),
            P("FOLDS", "Folds", "int", "--folds", 5, minimum=2),
            _BANDS,
            _SEED,
            _out("OUTPUT", "Class map", "out_raster", "--output"),
            _out(
                "METRICS",
                "Validation metrics (JSON)",
                "out_file",
                "--metrics",
                optional=True,
                file_filter="JSON (*.json)",
            ),
        ),
        "Train a random forest (or another scikit-learn estimator) on labelled pixels, validate it with spatial "
        "k-fold and map the raster.",
        styles={"OUTPUT": "classes"},
    ),
    AlgoSpec(
        "chips",
        "Training chips from labels",
        "Supervised",
        ("chips",),
        (
            P("INPUT", "Image raster", "raster", "--raster"),
            P("LABELS", "Label polygons", "vector", "--labels"),
            P(
                "ATTRIBUTE",
                "Class field (empty: burn 1)",
                "field",
                "--attribute",
                optional=True,
                parent="LABELS",
            ),
            P("SIZE", "Chip size (pixels)", "int", "--size", 256, minimum=8),
            P("STRIDE", "Stride (pixels; default: chip size)", "int", "--stride", optional=True, minimum=1),
            P("BANDS", "Bands (default: all)", "bands", "--bands", optional=True, parent="INPUT"),
            P(
                "SPLIT",
                "Split",
                "enum",
                "--split-method",
                "auto",
                options=("auto", "blocks", "random", "stratified"),
            ),
            P("VAL", "Validation fraction", "float", "--val", 0.15, minimum=0.0, maximum=0.95),
            P("TEST", "Test fraction", "float", "--test", 0.15, minimum=0.0, maximum=0.95),
            P(
                "BLOCK_SIZE",
                "Spatial split block size (pixels)",
                "int",
                "--block-size",
                optional=True,
                minimum=1,
                advanced=True,
            ),
            P(
                "MIN_ANNOTATED",
                "Min % labelled pixels per chip",
                "float",
                "--min-annotated",
                optional=True,
                minimum=0.0,
                maximum=100.0,
                advanced=True,
            ),
            P(
                "MAX_NODATA",
                "Max % nodata pixels per chip",
                "float",
                "--max-nodata",
                optional=True,
                minimum=0.0,
                maximum=100.0,
                advanced=True,
            ),
            P(
                "ALL_TOUCHED",
                "Burn every pixel a polygon touches",
                "bool",
                "--all-touched",
                False,
                advanced=True,
            ),
            _SEED,
            _out("OUTPUT", "Chip dataset folder", "out_folder", "--out", overwrite_flag="--overwrite"),
        ),
        "Rasterize labels window by window and cut image/mask chips (window, stride), with leakage-safe "
        "train/validation/test splits (spatial blocks or percentages) and filters.",
    ),
    AlgoSpec(
        "analyze",
        "Analyze chips",
        "Supervised",
        ("analyze",),
        (
            P("DATASET", "Chip dataset folder", "folder", None),
            _out("OUTPUT", "Report folder", "out_folder", "--out", optional=True),
        ),
        "Class proportions per split, chips dropped per filter and a filter-threshold search.",
    ),
    AlgoSpec(
        "train",
        "Train",
        "Supervised",
        ("train",),
        (
            P("DATASET", "Chip dataset folder", "folder", None),
            P(
                "ARCH",
                "Architecture",
                "enum",
                "--arch",
                "unet",
                options=(
                    "unet",
                    "unetplusplus",
                    "manet",
                    "linknet",
                    "fpn",
                    "pspnet",
                    "deeplabv3",
                    "deeplabv3plus",
                    "pan",
                    "upernet",
                    "segformer",
                    "dpt",
                ),
            ),
            P("ENCODER", "Encoder", "string", "--encoder", "resnet18"),
            P("EPOCHS", "Epochs", "int", "--epochs", 20, minimum=0),
            P("BATCH_SIZE", "Batch size", "int", "--batch-size", 8, minimum=1),
            P("LR", "Learning rate", "float", "--lr", optional=True, minimum=0.0, advanced=True),
            P(
                "TASK",
                "Task",
                "enum",
                "--task",
                optional=True,
                options=("multiclass", "binary"),
                advanced=True,
            ),
            P(
                "AUGMENT",
                "Augmentation",
                "enum",
                "--augment",
                optional=True,
                options=("none", "flips", "geometric", "full"),
                advanced=True,
            ),
            P(
                "WEIGHTS",
                "Start from weights (package folder or file)",
                "file",
                "--weights",
                optional=True,
                advanced=True,
            ),
            P("RESUME", "Resume an interrupted run", "bool", "--resume", False),
            _SEED,
            _out("OUTPUT", "Model folder", "out_folder", "--out"),
        ),
        "Train a segmentation model (U-Net, DeepLabV3+, SegFormer, ...) on a chip dataset; writes a model "
        "package, checkpoints and a report. Cancel keeps the last checkpoint: rerun with 'Resume'.",
        device="--accelerator",
    ),
    AlgoSpec(
        "predict",
        "Predict",
        "Supervised",
        ("predict",),
        (
            P("MODEL", "Model package folder", "folder", None),
            P("INPUT", "Input raster", "raster", None),
            P("EXTENT", "Extent (default: whole raster)", "extent", "--aoi", optional=True),
            P("OVERLAP", "Window overlap (fraction)", "float", "--overlap", 0.25, minimum=0.0, maximum=0.9),
            P("BLEND", "Blending", "enum", "--blend", "hann", options=("hann", "center-crop", "none")),
            P(
                "TTA",
                "Test-time augmentation",
                "enum",
                "--tta",
                optional=True,
                options=("flips", "rotations", "all"),
            ),
            P(
                "THRESHOLD",
                "Probability threshold (binary models)",
                "float",
                "--threshold",
                optional=True,
                minimum=0.0,
                maximum=1.0,
            ),
            P(
                "BANDS",
                "Bands (default: by the model's band names)",
                "bands",
                "--bands",
                optional=True,
                parent="INPUT",
                advanced=True,
            ),
            P("BATCH_SIZE", "Windows per batch", "int", "--batch-size", 8, minimum=1, advanced=True),
            P(
                "BLOCKSIZE",
                "Output tile size (also the resume granularity)",
                "int",
                "--blocksize",
                512,
                minimum=16,
                advanced=True,
            ),
            _out("OUTPUT", "Class map", "out_raster", "--output", overwrite_flag="--overwrite"),
            _out("PROBABILITIES", "Probabilities", "out_raster", "--probabilities", optional=True),
            _out("POLYGONS", "Polygons", "out_vector", "--vectorize", optional=True),
        ),
        "Map a raster with a trained model package: blended sliding windows with overlap, test-time "
        "augmentation, probability threshold, probabilities and polygons. Resumes after a cancel.",
        styles={"OUTPUT": "classes", "PROBABILITIES": "probability", "POLYGONS": "polygons"},
        device="--device",
    ),
    AlgoSpec(
        "evaluate",
        "Evaluate",
        "Supervised",
        ("evaluate",),
        (
            P("INPUT", "Class map", "raster", None),
            P("TRUTH", "Ground truth polygons (or a truth raster below)", "vector", "--truth", optional=True),
            P("ATTRIBUTE", "Class field (polygons)", "field", "--attribute", optional=True, parent="TRUTH"),
            P(
                "TRUTH_RASTER",
                "Ground truth raster (instead of polygons)",
                "raster",
                "--truth",
                optional=True,
            ),
            P(
                "TRUTH_NAMES",
                "Names of the truth's class codes, e.g. 1=developed,2=forest (when its codes differ from the map's)",
                "string",
                "--truth-names",
                optional=True,
            ),
            P(
                "CLASS_MATCH",
                "Match truth and map classes by",
                "enum",
                "--class-match",
                "auto",
                options=("auto", "name", "code"),
                advanced=True,
            ),
            P(
                "UNLABELLED",
                "Pixels outside polygons (polygon truth)",
                "enum",
                "--unlabelled",
                "auto",
                options=("auto", "background", "ignore"),
            ),
            P(
                "ALL_TOUCHED",
                "Burn every pixel a polygon touches",
                "bool",
                "--all-touched",
                False,
                advanced=True,
            ),
            P("EXTENT", "Extent (default: whole map)", "extent", "--aoi", optional=True),
            _out(
                "OUTPUT",
                "Metrics (JSON; CSV and PNG beside it)",
                "out_file",
                "--output",
                file_filter="JSON (*.json)",
            ),
        ),
        "Compare a class map with ground truth (polygons with a class field, or a label raster) over the whole "
        "scene or an extent: confusion matrix, per-class IoU/F1, producer's/user's accuracy, kappa.",
        one_of=(("TRUTH", "TRUTH_RASTER"),),
    ),
    AlgoSpec(
        "vectorize",
        "Vectorize",
        "Supervised",
        ("vectorize",),
        (
            P("INPUT", "Class map", "raster", None),
            P("MIN_AREA", "Minimum polygon area", "float", "--min-area", 0.0, minimum=0.0),
            P("AREA_UNIT", "Area unit", "enum", "--area-unit", "map", options=("map", "pixels")),
            P(
                "SIMPLIFY",
                "Simplification tolerance (map units)",
                "float",
                "--simplify",
                optional=True,
                minimum=0.0,
            ),
            P("EXCLUDE", "Class codes to leave out (e.g. 0)", "string", "--exclude", optional=True),
            _out("OUTPUT", "Polygons", "out_vector", "--output", overwrite_flag="--overwrite"),
        ),
        "Turn a class map into polygons with class code, name and area; seams between windows are merged.",
        styles={"OUTPUT": "polygons"},
    ),
    AlgoSpec(
        "info",
        "Raster info",
        "Tools",
        ("info", "--json"),
        (
            P("INPUT", "Raster", "raster", None),
            P("STATS", "Band statistics (sampled)", "bool", "--stats", False),
            _out(
                "OUTPUT", "Description (JSON)", "out_file", None, optional=True, file_filter="JSON (*.json)"
            ),
        ),
        "Grid, CRS, resolution, bands, nodata, block layout and optional statistics of a raster.",
        progress=False,
    ),
)


def spec_by_id(algo_id: str) -> AlgoSpec:
    for spec in ALGORITHMS:
        if spec.id == algo_id:
            return spec
    raise KeyError(f"unknown rasterlearn algorithm {algo_id!r}")


def _text(p: P, value: Any) -> str | None:
    if (
        value is None
        or (isinstance(value, str) and value == "")
        or (isinstance(value, Sequence | tuple) and not isinstance(value, str) and len(value) == 0)
    ):
        return None
    if p.kind == "bands":
        return ",".join(str(int(b)) for b in value)
    if p.kind == "extent":
        return ",".join(repr(float(v)) for v in value)
    if p.kind == "float":
        return repr(float(value))
    if p.kind == "int":
        return str(int(value))
    return str(value)


def build_args(
    spec: AlgoSpec,
    values: Mapping[str, Any],
    *,
    device: str | None = None,
    progress_json: bool = True,
) -> list[str]:
    """The argument list after the executable for ``spec`` with plain ``values`` (missing = CLI default).

    Outputs that exist already get the command's overwrite flag (QGIS asked the user before), so a
    partial run (nothing under the final name) still resumes.
    """
    args: list[str] = list(spec.command)
    positional: list[str] = []
    for p in spec.params:
        if p.flag is None and p.kind != "bool" and p.kind in OUTPUT_KINDS:
            continue  # an output the plugin writes itself (info's JSON)
        value = values.get(p.name, p.default)
        if p.kind == "bool":
            if value and p.flag:
                args.append(p.flag)
            elif not value and p.invert:
                args.append(p.invert)
            continue
        text = _text(p, value)
        if text is None:
            continue
        if p.flag is None:
            positional.append(text)
            continue
        args += [p.flag, text]
        if (
            p.kind in OUTPUT_KINDS
            and p.overwrite_flag
            and os.path.exists(text)
            and p.overwrite_flag not in args
        ):
            args.append(p.overwrite_flag)
    if spec.device and device and device != "auto":
        dev = device
        if spec.device == "--accelerator":
            dev = "gpu" if device.startswith("cuda") else device
        args += [spec.device, dev]
    if spec.progress and progress_json:
        args += ["--progress", "json"]
    return args + positional
