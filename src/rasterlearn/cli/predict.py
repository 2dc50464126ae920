"""``rasterlearn predict`` and ``rasterlearn vectorize`` (``evaluate`` is in ``cli/evaluate.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from rasterlearn.cli._app import app, console
from rasterlearn.cli._config import stage_options
from rasterlearn.cli._options import (
    AssetsOpt,
    CacheMbOpt,
    OverwriteOpt,
    ProgressOpt,
    SchedulerOpt,
    WorkersOpt,
    aoi_option,
    bands_option,
    batch_size_option,
    blocksize_option,
    config_option,
    device_option,
    image_option,
    io_threads_option,
    memory_mb_option,
    no_resume_option,
    nodata_policy_option,
    output_option,
    overwrite_option,
    stac_option,
)
from rasterlearn.cli._progress import announced_progress, progress_bar
from rasterlearn.errors import InputError
from rasterlearn.options import PredictOptions, VectorizeOptions
from rasterlearn.predict_plan import DEFAULT_MEMORY_MB
from rasterlearn.predict_run import run_predict

if TYPE_CHECKING:
    from rasterlearn.batch import ScenesResult

# -- predict's options (the shared concepts come from cli/_options.py) ---------------------------------------
_ModelDirArg = Annotated[Path, typer.Argument(help="Model package folder (model.json + model.safetensors).")]
_RastersArg = Annotated[
    list[str] | None,
    typer.Argument(
        metavar="RASTER...",
        help="Raster(s) to map (any GDAL format or URL, any size); several, a glob or a .txt list of paths "
        "with --out-dir; omit when --image is given.",
    ),
]
_OverlapOpt = Annotated[
    float, typer.Option(help="Fraction of the model's chip size shared by neighbouring windows.")
]
_ProbabilitiesOpt = Annotated[Path | None, typer.Option(help="Also write class probabilities (COG).")]
_VectorizeOpt = Annotated[
    Path | None,
    typer.Option(
        help="Also write the map as polygons (.gpkg, .geojson, .fgb); the background class is left out."
    ),
]
_BlendOpt = Annotated[
    Literal["hann", "center-crop", "none"], typer.Option(help="Window blending: hann, center-crop or none.")
]
_TtaOpt = Annotated[
    str | None,
    typer.Option(
        help="Test-time augmentation: comma list of hflip, vflip, rot90, rot180, rot270 (or flips, rotations, "
        "all)."
    ),
]
_ThresholdOpt = Annotated[
    float | None,
    typer.Option(help="Binary models: foreground probability threshold (default: the package's)."),
]
_ProbDtypeOpt = Annotated[
    Literal["uint8", "float32"],
    typer.Option(help="Probability storage: uint8 (x254, nodata 255) or float32."),
]
_NodataOpt = Annotated[float | None, typer.Option(help="Input nodata value when the raster declares none.")]
_ThreadsOpt = Annotated[int | None, typer.Option(help="CPU threads for the model (torch).")]
_AmpOpt = Annotated[bool, typer.Option(help="Mixed precision on CUDA.")]
_WindowOpt = Annotated[
    int | None,
    typer.Option(
        help="Inference window (px), a multiple of the network's output stride (32 for smp encoders); default: "
        "the largest window that tiles the raster evenly within --memory-mb. --overlap stays a fraction of the "
        "chip size."
    ),
]
_PrecisionOpt = Annotated[
    Literal["auto", "fp32", "bf16"],
    typer.Option(
        help="auto: fp16 autocast on CUDA (--amp), fp32 on CPU; bf16: CPU bf16 autocast, kept only when the CPU "
        "supports it natively and it agrees with fp32 on the first window."
    ),
]
_RuntimeOpt = Annotated[
    Literal["torch", "onnx"],
    typer.Option(
        help="torch, or onnx: export the network and run it with ONNX Runtime on the CPU (needs the onnx extra; "
        "measured 2.3x faster for a U-Net here)."
    ),
]
_AllowResolutionOpt = Annotated[
    bool,
    typer.Option(
        "--allow-resolution-mismatch",
        help="Predict although the pixel size is >25% off the model's training resolution.",
    ),
]
_AllowDtypeOpt = Annotated[
    bool,
    typer.Option(
        "--allow-dtype-mismatch",
        help="Predict although the raster's dtype and values are far from the training data's.",
    ),
]
_OutDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--out-dir", help="Map many scenes: OUT_DIR/<scene>.tif each, status in OUT_DIR/scenes.json."
    ),
]
_MosaicOpt = Annotated[bool, typer.Option("--mosaic", help="With --out-dir: also write OUT_DIR/mosaic.vrt.")]
_StacItemsOpt = Annotated[
    list[str] | None,
    stac_option(
        "Map a STAC item (path or URL) instead of RASTER: its --assets stacked on one grid. Repeat for several "
        "items (with --out-dir; OUT_DIR/stac/<item id>.vrt are the stacks)."
    ),
]
_BandsOpt = Annotated[
    str | None,
    bands_option(
        "Raster bands for the model (comma list of 1-based indexes or descriptions); default: matched by the "
        "package's band names."
    ),
]
_MemoryOpt = Annotated[
    float,
    memory_mb_option(
        "Working-memory budget (MB, on top of the imports): model activations, read-ahead and the score "
        "accumulator; sets the default --window and --batch-size."
    ),
]
_BatchSizeOpt = Annotated[
    int | None,
    batch_size_option(
        "Windows per model call (default: from --memory-mb; on CPU one large window per call)."
    ),
]
_AoiOpt = Annotated[
    str | None,
    aoi_option("Area of interest: a vector file, or 'left,bottom,right,top' in the raster's CRS."),
]
_ImagesOpt = Annotated[
    list[Path] | None,
    image_option(
        "Multi-date models: one raster per date, in training order (repeat: --image A --image B), instead "
        "of RASTER; later dates are resampled onto the first date's grid."
    ),
]
_NodataPolicyOpt = Annotated[
    Literal["all-valid", "any-valid"],
    nodata_policy_option("Multi-date input: all-valid (nodata in any date is nodata) or any-valid."),
]


@app.command()
def predict(
    ctx: typer.Context,
    model_dir: _ModelDirArg,
    rasters: _RastersArg = None,
    output: Annotated[Path | None, output_option("Class map to write (COG).")] = None,
    overlap: _OverlapOpt = 0.25,
    probabilities: _ProbabilitiesOpt = None,
    vectorize: _VectorizeOpt = None,
    blend: _BlendOpt = "hann",
    tta: _TtaOpt = None,
    batch_size: _BatchSizeOpt = None,
    aoi: _AoiOpt = None,
    threshold: _ThresholdOpt = None,
    prob_dtype: _ProbDtypeOpt = "uint8",
    bands: _BandsOpt = None,
    nodata: _NodataOpt = None,
    threads: _ThreadsOpt = None,
    io_threads: Annotated[int, io_threads_option("Reader threads.")] = 2,
    device: Annotated[str, device_option("auto, cpu, cuda, cuda:N or mps.")] = "auto",
    amp: _AmpOpt = True,
    blocksize: Annotated[int, blocksize_option("Output tile size (also the resume granularity).")] = 512,
    memory_mb: _MemoryOpt = DEFAULT_MEMORY_MB,
    cache_mb: CacheMbOpt = 16,
    window: _WindowOpt = None,
    precision: _PrecisionOpt = "auto",
    runtime: _RuntimeOpt = "torch",
    min_area: Annotated[float, typer.Option(help="--vectorize: drop polygons smaller than this.")] = 0.0,
    overwrite: Annotated[bool, overwrite_option("Replace existing outputs.")] = False,
    allow_resolution_mismatch: _AllowResolutionOpt = False,
    allow_dtype_mismatch: _AllowDtypeOpt = False,
    no_resume: Annotated[bool, no_resume_option("Discard a partial run instead of resuming it.")] = False,
    progress: ProgressOpt = "bar",
    config: Annotated[Path | None, config_option(PredictOptions)] = None,
    image: _ImagesOpt = None,
    nodata_policy: _NodataPolicyOpt = "all-valid",
    out_dir: _OutDirOpt = None,
    mosaic: _MosaicOpt = False,
    scheduler: SchedulerOpt = None,
    workers: WorkersOpt = None,
    stac: _StacItemsOpt = None,
    assets: AssetsOpt = None,
) -> None:
    """Map a raster with a trained model: seamless blended windows, bounded memory, resumable."""
    options = stage_options(ctx, PredictOptions)
    # the total (pixels of the extent(s), AOI-clipped) is announced by the library
    with progress_bar("predict", None, "px") as advance:
        res = run_predict(options, progress=advance)
    if res.scenes is not None:
        _print_scenes(res.scenes)
        failed = res.failure_message()
        if failed:
            raise InputError(failed)
        return
    one = res.one
    assert one is not None
    console.print(
        f"Wrote {one.map_path}"
        + (f" and {one.probabilities_path}" if one.probabilities_path else "")
        + f": {one.windows_predicted} windows predicted, {one.windows_skipped} skipped, "
        f"{one.blocks_resumed} blocks resumed, {one.pixels_per_second:,.0f} px/s"
    )
    if res.polygons is not None:
        console.print(f"Wrote {res.polygon_count} polygons to {res.polygons}")


def _print_scenes(res: ScenesResult) -> None:
    """The many-scene summary: one row per scene, then where the status file and the mosaic are."""
    from rich.table import Table

    table = Table(title=f"{len(res.scenes)} scene(s)")
    for col in ("scene", "status", "map", "seconds", "note"):
        table.add_column(col)
    for st in res.scenes:
        table.add_row(st.raster, st.status, st.output, f"{st.seconds:.1f}", st.error or "")
    console.print(table)
    console.print(
        f"Status of every scene in {res.summary_path}"
        + (f"; mosaic {res.mosaic_path}" if res.mosaic_path else "")
    )


@app.command("vectorize")
def vectorize_cmd(
    ctx: typer.Context,
    raster: Annotated[Path, typer.Argument(help="Class map (single band, integer codes).")],
    output: Annotated[Path, output_option("Polygons to write (.gpkg, .geojson, .fgb).")],
    min_area: Annotated[float, typer.Option(help="Drop polygons smaller than this (see --area-unit).")] = 0.0,
    area_unit: Annotated[
        Literal["map", "pixels"], typer.Option(help="Unit of --min-area: map (CRS units squared) or pixels.")
    ] = "map",
    simplify: Annotated[float | None, typer.Option(help="Simplification tolerance in map units.")] = None,
    exclude: Annotated[
        str | None, typer.Option(help="Comma list of class codes to leave out (e.g. 0).")
    ] = None,
    window_size: Annotated[int, typer.Option(help="Processing window (pixels).")] = 2048,
    overwrite: OverwriteOpt = False,
    progress: ProgressOpt = "bar",
    config: Annotated[Path | None, config_option(VectorizeOptions)] = None,
) -> None:
    """Turn a class map into polygons (class code, name, area), window by window with seams merged."""
    from rasterlearn import vectorize as stage

    options = stage_options(ctx, VectorizeOptions)
    with announced_progress("vectorize", "px") as advance:
        res = stage.run_vectorize(options, progress=advance)
    console.print(f"Wrote {res.count} polygons to {res.output}")
