"""``rasterlearn embed | embed-models | reduce | cluster | similarity | classify``: foundation-model features
and their analysis. Heavy libraries are imported inside the commands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from rasterlearn.cli._app import app, console
from rasterlearn.cli._config import stage_options
from rasterlearn.cli._options import (
    AoiCrsOpt,
    AssetsOpt,
    CacheMbOpt,
    LayerOpt,
    ProgressOpt,
    SchedulerOpt,
    StacOpt,
    WorkersOpt,
    aoi_option,
    attribute_option,
    bands_option,
    batch_size_option,
    config_option,
    device_option,
    former_spellings,
    io_threads_option,
    labels_option,
    memory_mb_option,
    no_resume_option,
    output_option,
    seed_option,
)
from rasterlearn.cli._progress import progress_bar
from rasterlearn.options import (
    ClassifyOptions,
    ClusterOptions,
    EmbedOptions,
    ReduceOptions,
    SimilarityOptions,
)

# -- options of several feature commands ----------------------------------------------------------------------
BandsOpt = Annotated[str | None, bands_option("Bands by 1-based index or description, e.g. '4,3,2'.")]
OutOpt = Annotated[Path, output_option("Output GeoTIFF (COG).")]
FeatureRasterArg = Annotated[
    str, typer.Argument(help="Feature raster or any multi-band raster (a file, URL or /vsi... path).")
]
ParamsOpt = Annotated[str | None, typer.Option("--params", help="JSON estimator arguments.")]
NoStandardizeOpt = Annotated[bool, typer.Option("--no-standardize", help="Do not z-score bands first.")]
SeedOpt = Annotated[int, seed_option()]
RateOpt = Annotated[float, typer.Option("--rate", help="Fraction of polygon pixels sampled.")]
MaxPerFeatureOpt = Annotated[int, typer.Option("--max-per-feature", help="Cap of pixels per polygon.")]
TrustModelOpt = Annotated[
    bool,
    typer.Option(
        "--trust-model",
        help="Allow --model to hold a pickled estimator (runs code from it): only for folders you created.",
    ),
]

# -- embed's own options -------------------------------------------------------------------------------------
_EmbedModelOpt = Annotated[
    str,
    typer.Option(
        "--model",
        "-m",
        help="timm model name, hf-hub:org/name, or a recommended model (see 'rasterlearn embed-models').",
    ),
]
_EmbedRasterArg = Annotated[
    str | None,
    typer.Argument(help="Input raster (any bands, any dtype; a file, URL or /vsi... path); or --stac."),
]
_TileSizeOpt = Annotated[int, typer.Option("--size", help="Tile size in raster pixels.")]
_TileStrideOpt = Annotated[int | None, typer.Option("--stride", help="Step between tiles (default: --size).")]
_CheckpointOpt = Annotated[
    Path | None, typer.Option("--checkpoint", help="Local .safetensors/.pth weights (no download).")
]
_InputSizeOpt = Annotated[
    int | None,
    typer.Option("--input-size", help="Model input size; tiles are resized to it (default: --size)."),
]
_BlockLayerOpt = Annotated[
    int | None, typer.Option("--layer", help="ViT block / CNN stage index (default: last).")
]
_NormalizationOpt = Annotated[
    Literal["image", "model", "none"],
    typer.Option("--normalization", help="image (nodata-aware statistics), model (its mean/std) or none."),
]
_ValueScaleOpt = Annotated[
    float | None,
    typer.Option(
        "--value-scale", help="With --normalization model: divide values by this first (default: dtype max)."
    ),
]
_MergeOpt = Annotated[
    Literal["average", "first", "center"],
    typer.Option("--merge", help="Overlap merge: average, first or center."),
]
_StorageOpt = Annotated[
    Literal["float32", "float16", "uint16"],
    typer.Option("--storage", help="float32, float16 or uint16 (scale/offset)."),
]
_MinValidOpt = Annotated[
    float, typer.Option("--min-valid", help="Min valid fraction of a feature pixel's footprint.")
]
_EmbedAoiOpt = Annotated[
    str | None,
    aoi_option("Area of interest: a vector file, or 'left,bottom,right,top' (formerly --extent)."),
]
_TargetCrsOpt = Annotated[
    str | None, typer.Option("--target-crs", help="Read the raster reprojected to this CRS.")
]
_ResolutionOpt = Annotated[
    float | None, typer.Option("--resolution", help="Read at this resolution (target CRS units).")
]
_ResamplingOpt = Annotated[str, typer.Option("--resampling", help="Resampling for reprojected reading.")]
_EmbedIoThreadsOpt = Annotated[int, io_threads_option("Reader threads prefetching tile rows (this process).")]
_PauseOpt = Annotated[float, typer.Option("--pause", help="Seconds to sleep between batches.")]
_NoPretrainedOpt = Annotated[bool, typer.Option("--no-pretrained", help="Random weights (testing).")]
_WeightsSeedOpt = Annotated[
    int, seed_option("Seed of the random weights with --no-pretrained (reproducible features).")
]
_ModelKwargsOpt = Annotated[
    str | None, typer.Option("--model-kwargs", help="JSON arguments for timm.create_model.")
]
_SessionDirOpt = Annotated[
    Path | None,
    typer.Option("--cache-dir", help="Session folder (default: embed_sessions/ beside the output)."),
]
_EmbedMemoryOpt = Annotated[
    float,
    memory_mb_option(
        "Budget for feature and tile rows held in memory (strip height; column stripes on wide rasters)."
    ),
]


@app.command(
    "embed", context_settings=former_spellings(extent="aoi", extent_crs="aoi-crs", read_threads="io-threads")
)
def embed_cmd(
    ctx: typer.Context,
    model: _EmbedModelOpt,
    output: OutOpt,
    raster: _EmbedRasterArg = None,
    size: _TileSizeOpt = 224,
    stride: _TileStrideOpt = None,
    checkpoint: _CheckpointOpt = None,
    input_size: _InputSizeOpt = None,
    layer: _BlockLayerOpt = None,
    bands: BandsOpt = None,
    normalization: _NormalizationOpt = "image",
    value_scale: _ValueScaleOpt = None,
    merge: _MergeOpt = "average",
    storage: _StorageOpt = "float32",
    min_valid: _MinValidOpt = 0.5,
    aoi: _EmbedAoiOpt = None,
    aoi_crs: AoiCrsOpt = None,
    target_crs: _TargetCrsOpt = None,
    resolution: _ResolutionOpt = None,
    resampling: _ResamplingOpt = "bilinear",
    device: Annotated[str, device_option("auto, cpu, cuda, cuda:1, mps.")] = "auto",
    batch_size: Annotated[int, batch_size_option("Tiles per forward pass.")] = 8,
    io_threads: _EmbedIoThreadsOpt = 1,
    pause: _PauseOpt = 0.0,
    no_pretrained: _NoPretrainedOpt = False,
    seed: _WeightsSeedOpt = 0,
    model_kwargs: _ModelKwargsOpt = None,
    cache_dir: _SessionDirOpt = None,
    no_resume: Annotated[bool, no_resume_option("Start afresh instead of resuming.")] = False,
    memory_mb: _EmbedMemoryOpt = 256.0,
    cache_mb: CacheMbOpt = 64,
    progress: ProgressOpt = "bar",
    config: Annotated[Path | None, config_option(EmbedOptions)] = None,
    scheduler: SchedulerOpt = None,
    workers: WorkersOpt = None,
    stac: StacOpt = None,
    assets: AssetsOpt = None,
) -> None:
    """Encode a raster into a feature raster (one band per feature) with a foundation model.

    With --workers N or --scheduler ADDRESS the tiles are read and encoded on dask workers (the raster and
    the checkpoint must be readable there); the features are the same as without."""
    from rasterlearn.embed import run_embed

    options = stage_options(ctx, EmbedOptions)
    with progress_bar("embed", None, "tiles") as advance:
        res = run_embed(options, progress=advance)
    g = res.grid
    console.print(
        f"Wrote {res.path}: {g.width}x{g.height} feature pixels x {res.dim} features "
        f"(pixel {g.res[0]:g} x {g.res[1]:g}); session {res.session}"
    )


@app.command("embed-models")
def embed_models_cmd() -> None:
    """List recommended backbones with their patch size and feature dimension."""
    from rich.table import Table

    from rasterlearn.embed import RECOMMENDED_MODELS

    table = Table(title="recommended backbones (any timm name also works)", box=None, padding=(0, 1))
    width = max(len(m.name) for m in RECOMMENDED_MODELS.values())
    table.add_column("name", no_wrap=True, min_width=width)  # names are copied: never truncated
    for col in ("family", "patch", "dim", "size"):  # patch/stride, feature dimension, default tile size
        table.add_column(col, no_wrap=True)
    table.add_column("notes", overflow="fold", min_width=12)
    for m in RECOMMENDED_MODELS.values():
        table.add_row(m.name, m.family, str(m.patch_size), str(m.feature_dim), str(m.default_size), m.notes)
    console.print(table)


@app.command("reduce")
def reduce_cmd(
    ctx: typer.Context,
    raster: FeatureRasterArg,
    output: OutOpt,
    method: Annotated[
        str,
        typer.Option(
            "--method",
            help="pca, incremental_pca, truncated_svd, fast_ica, umap, "
            "isomap, lle or an sklearn decomposition/manifold class name.",
        ),
    ] = "pca",
    components: Annotated[int, typer.Option("--components", "-k", help="Output bands.")] = 3,
    params: ParamsOpt = None,
    no_standardize: NoStandardizeOpt = False,
    bands: BandsOpt = None,
    sample_size: Annotated[
        int | None, typer.Option("--sample-size", help="Pixels sampled for fitting.")
    ] = None,
    seed: SeedOpt = 0,
    model: Annotated[
        Path | None, typer.Option("--model", help="Apply a fitted reducer folder (OUT.model).")
    ] = None,
    model_out: Annotated[
        Path | None, typer.Option("--model-out", help="Where to save the fitted reducer.")
    ] = None,
    progress: ProgressOpt = "bar",
    config: Annotated[Path | None, config_option(ReduceOptions)] = None,
    scheduler: SchedulerOpt = None,
    workers: WorkersOpt = None,
    trust_model: TrustModelOpt = False,
) -> None:
    """Reduce a raster's bands (PCA by default), fitted on a sample, applied block by block."""
    from rasterlearn.features import feature_blocks
    from rasterlearn.features.reduce import run_reduce

    options = stage_options(ctx, ReduceOptions)
    with progress_bar("reduce", feature_blocks(options), "blocks") as advance:
        res = run_reduce(options, progress=advance)
    evr = res.explained_variance_ratio
    extra = f"; explained variance {', '.join(f'{v:.3f}' for v in evr)} (total {sum(evr):.3f})" if evr else ""
    console.print(f"Wrote {res.path}; model {res.model_path}{extra}")


@app.command("cluster")
def cluster_cmd(
    ctx: typer.Context,
    raster: FeatureRasterArg,
    output: OutOpt,
    method: Annotated[
        str,
        typer.Option(
            "--method",
            help="kmeans, minibatch_kmeans, hdbscan, gmm, "
            "agglomerative, birch or an sklearn.cluster class name.",
        ),
    ] = "kmeans",
    clusters: Annotated[
        int, typer.Option("--clusters", "-k", help="Number of clusters (ignored by hdbscan).")
    ] = 8,
    params: ParamsOpt = None,
    no_standardize: NoStandardizeOpt = False,
    bands: BandsOpt = None,
    sample_size: Annotated[int, typer.Option("--sample-size", help="Pixels sampled for fitting.")] = 100_000,
    seed: SeedOpt = 0,
    model: Annotated[Path | None, typer.Option("--model", help="Apply a fitted clustering folder.")] = None,
    model_out: Annotated[
        Path | None, typer.Option("--model-out", help="Where to save the clustering.")
    ] = None,
    progress: ProgressOpt = "bar",
    config: Annotated[Path | None, config_option(ClusterOptions)] = None,
    scheduler: SchedulerOpt = None,
    workers: WorkersOpt = None,
) -> None:
    """Cluster a raster into a class map (1..K, 0 = nodata) with colour table; sizes in OUT.clusters.json."""
    from rasterlearn.features import feature_blocks
    from rasterlearn.features.cluster import run_cluster

    options = stage_options(ctx, ClusterOptions)
    with progress_bar("cluster", feature_blocks(options), "blocks") as advance:
        res = run_cluster(options, progress=advance)
    sizes = ", ".join(f"{k}: {v}" for k, v in res.sizes.items())
    console.print(f"Wrote {res.path} ({res.clusters.k} clusters; pixels {sizes}); report {res.report_path}")


@app.command("similarity")
def similarity_cmd(
    ctx: typer.Context,
    raster: FeatureRasterArg,
    references: Annotated[
        Path, typer.Option("--references", "-r", help="Reference points/polygons (any CRS).")
    ],
    output: OutOpt,
    mode: Annotated[
        Literal["mean", "max"],
        typer.Option("--mode", help="mean (mean reference vector) or max (best reference)."),
    ] = "mean",
    rate: RateOpt = 1.0,
    max_per_feature: MaxPerFeatureOpt = 1000,
    standardize: Annotated[
        bool, typer.Option("--standardize", help="z-score bands before comparing.")
    ] = False,
    layer: LayerOpt = None,
    bands: BandsOpt = None,
    progress: ProgressOpt = "bar",
    config: Annotated[Path | None, config_option(SimilarityOptions)] = None,
    scheduler: SchedulerOpt = None,
    workers: WorkersOpt = None,
) -> None:
    """Cosine similarity of every pixel to reference features (float32, NaN nodata)."""
    from rasterlearn.features import feature_blocks
    from rasterlearn.features.similarity import run_similarity

    options = stage_options(ctx, SimilarityOptions)
    with progress_bar("similarity", feature_blocks(options), "blocks") as advance:
        res = run_similarity(options, progress=advance)
    console.print(f"Wrote {res.path} (references: {res.n_pixels} pixels from {res.n_features} features)")


@app.command("classify")
def classify_cmd(
    ctx: typer.Context,
    raster: FeatureRasterArg,
    output: OutOpt,
    labels: Annotated[Path | None, labels_option("Labelled points/polygons (any CRS).")] = None,
    attribute: Annotated[str | None, attribute_option("Label column (text or numbers).")] = None,
    method: Annotated[
        str,
        typer.Option(
            "--method",
            help="random_forest, extra_trees, gradient_boosting, "
            "hist_gradient_boosting, knn, ... or an sklearn class name.",
        ),
    ] = "random_forest",
    params: ParamsOpt = None,
    task: Annotated[
        Literal["auto", "classification", "regression"],
        typer.Option("--task", help="auto, classification or regression."),
    ] = "auto",
    cv: Annotated[
        Literal["spatial", "fold", "random", "none"] | None,
        typer.Option("--cv", help="spatial (default), fold, random or none."),
    ] = None,
    folds: Annotated[int, typer.Option("--folds", help="Number of folds.")] = 5,
    block_size: Annotated[
        float | None, typer.Option("--block-size", help="Spatial CV block side (CRS units).")
    ] = None,
    fold_column: Annotated[
        str | None, typer.Option("--fold-column", help="Column giving each feature's fold.")
    ] = None,
    test_labels: Annotated[
        Path | None, typer.Option("--test-labels", help="Separate validation layer.")
    ] = None,
    rate: RateOpt = 1.0,
    max_per_feature: MaxPerFeatureOpt = 2000,
    layer: LayerOpt = None,
    bands: BandsOpt = None,
    seed: SeedOpt = 0,
    model: Annotated[
        Path | None, typer.Option("--model", help="Apply a trained model folder (no training).")
    ] = None,
    model_out: Annotated[Path | None, typer.Option("--model-out", help="Where to save the model.")] = None,
    metrics_out: Annotated[
        Path | None, typer.Option("--metrics", help="Metrics JSON (default OUT.metrics.json).")
    ] = None,
    progress: ProgressOpt = "bar",
    config: Annotated[Path | None, config_option(ClassifyOptions)] = None,
    scheduler: SchedulerOpt = None,
    workers: WorkersOpt = None,
    trust_model: TrustModelOpt = False,
) -> None:
    """Train a classifier/regressor on labelled features, validate it (spatial k-fold), and map the raster."""
    from rasterlearn.features import feature_blocks
    from rasterlearn.features.classify import run_classify

    options = stage_options(ctx, ClassifyOptions)
    with progress_bar("classify", feature_blocks(options), "blocks") as advance:
        res = run_classify(options, progress=advance)
    _print_classify(res)


def _print_classify(res: Any) -> None:
    """The validation summary, the files written and the sample counts of a classify run."""
    m = res.metrics
    if m.get("validation", {}).get("valid") is False:
        console.print(
            f"Validation impossible: {m['validation']['reason']}. No validation metrics reported. "
            f"Remedy: {m['validation']['remedy']}."
        )
    elif "overall_accuracy" in m:
        console.print(
            f"Validation ({m['validation']['type']}): overall accuracy {m['overall_accuracy']:.3f}, "
            f"kappa {m['kappa'] if m['kappa'] is None else round(m['kappa'], 3)}"
        )
    elif "rmse" in m:
        console.print(
            f"Validation ({m['validation']['type']}): MAE {m['mae']:.4g}, RMSE {m['rmse']:.4g}, R² {m['r2']}"
        )
    console.print(
        f"Wrote {res.path}; model {res.model_path}"
        + (f"; metrics {res.metrics_path}" if res.metrics_path else "")
    )
    if m:
        console.print_json(json.dumps({k: m[k] for k in ("samples", "features") if k in m}))
