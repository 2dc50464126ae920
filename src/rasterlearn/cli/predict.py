"""``rasterlearn predict``, ``rasterlearn vectorize`` and ``rasterlearn evaluate``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

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
    parse_aoi,
    parse_bands,
    stac_option,
)
from rasterlearn.cli._progress import announced_progress, progress_bar
from rasterlearn.cli._scene import asset_names, resolve_raster
from rasterlearn.engine.executor import open_executor
from rasterlearn.errors import InputError, OutputError
from rasterlearn.options import PredictOptions, VectorizeOptions
from rasterlearn.predict_plan import DEFAULT_MEMORY_MB

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
    opts: dict[str, Any] = {
        "overlap": overlap,
        "blend": blend,
        "tta": tta,
        "batch_size": batch_size,
        "aoi": parse_aoi(aoi),
        "threshold": threshold,
        "prob_dtype": prob_dtype,
        "bands": parse_bands(bands),
        "nodata": nodata,
        "device": device,
        "amp": amp,
        "threads": threads,
        "io_threads": io_threads,
        "blocksize": blocksize,
        "memory_mb": memory_mb,
        "cache_mb": cache_mb,
        "window": window,
        "precision": precision,
        "runtime": runtime,
        "allow_resolution_mismatch": allow_resolution_mismatch,
        "allow_dtype_mismatch": allow_dtype_mismatch,
        "resume": not no_resume,
    }
    scene_kwargs: dict[str, dict[str, Any]] = {}
    if stac or assets:
        distributed = scheduler is not None or workers is not None
        rasters, scene_kwargs = _stac_inputs(
            stac, assets, bool(rasters or image), out_dir, output, distributed, opts
        )
    if out_dir is not None or (rasters is not None and len(rasters) > 1):
        out_dir = _many_scenes_dir(out_dir, rasters, bool(image), [output, probabilities, vectorize])
        scenes = list(rasters or []) if scene_kwargs else _expand_scenes(rasters or [])
        opts_all = {**opts, "scene_kwargs": scene_kwargs} if scene_kwargs else opts
        _predict_scenes(model_dir, scenes, out_dir, mosaic, overwrite, scheduler, workers, opts_all)
        return
    images, output = _one_scene_inputs(rasters, image, output)
    _predict_one(
        model_dir,
        images,
        output,
        probabilities,
        vectorize,
        min_area,
        overwrite,
        nodata_policy,
        opts,
        (scheduler, workers),
    )


def _many_scenes_dir(
    out_dir: Path | None, rasters: list[str] | None, image: bool, single_outputs: list[Path | None]
) -> Path:
    """The folder of a several-scene run; the options that only name one scene's outputs are refused."""
    if image or any(p is not None for p in single_outputs):
        raise InputError(
            "With several scenes (--out-dir) each map is OUT_DIR/<scene>.tif: drop -o, --probabilities, "
            "--vectorize and --image"
        )
    if out_dir is None:
        raise InputError(f"{len(rasters or [])} rasters given: name a folder for their maps with --out-dir")
    return out_dir


def _one_scene_inputs(
    rasters: list[str] | None, image: list[Path] | None, output: Path | None
) -> tuple[list[str | Path], Path]:
    """The input(s) of a one-scene run (one raster, or one per date) and its map, checked."""
    raster = rasters[0] if rasters else None
    if (raster is None) == (not image):
        raise InputError("Give the RASTER to map, or one --image per date of a multi-date model (not both)")
    if output is None:
        raise InputError("Name the class map to write with -o/--output (or map many scenes with --out-dir)")
    return (list(image) if image else [str(raster)]), output


def _predict_one(
    model_dir: Path,
    images: list[str | Path],
    output: Path,
    probabilities: Path | None,
    vectorize: Path | None,
    min_area: float,
    overwrite: bool,
    nodata_policy: str,
    opts: dict[str, Any],
    executor_opts: tuple[str | None, int | None] = (None, None),
) -> None:
    """One raster (or one multi-date stack) into one map, optionally polygons; with ``executor_opts``
    (scheduler, workers) its blocks are computed on dask workers, blended and written here."""
    from rasterlearn.io.paths import check_outputs
    from rasterlearn.predict import predict_package

    check_outputs([model_dir, *images, output, probabilities], [vectorize])
    if vectorize is not None and vectorize.exists() and not overwrite:
        raise InputError(f"{vectorize} exists; pass --overwrite or choose another name")
    for p in (output, probabilities):  # before a cluster is started for nothing
        if p is not None and p.exists() and not overwrite:
            raise OutputError(f"{p} exists; pass --overwrite or choose another name")
    # the total (pixels of the extent, AOI-clipped) is announced by predict_raster itself
    with open_executor(*executor_opts) as executor, progress_bar("predict", None, "px") as advance:
        res = predict_package(
            model_dir,
            images if len(images) > 1 else images[0],
            output,
            probabilities=probabilities,
            overwrite=overwrite,
            progress=advance,
            nodata_policy=nodata_policy,
            executor=executor,
            **opts,
        )
    console.print(
        f"Wrote {res.map_path}"
        + (f" and {res.probabilities_path}" if res.probabilities_path else "")
        + f": {res.windows_predicted} windows predicted, {res.windows_skipped} skipped, "
        f"{res.blocks_resumed} blocks resumed, {res.pixels_per_second:,.0f} px/s"
    )
    if vectorize is not None:
        from rasterlearn.class_maps import map_schema
        from rasterlearn.vectorize import vectorize_raster

        schema = map_schema(output)
        bg = schema.background if schema is not None and schema.background in schema.codes else None
        gdf = vectorize_raster(output, vectorize, min_area=min_area, exclude=None if bg is None else [bg])
        _style_polygons(vectorize, output)
        console.print(f"Wrote {len(gdf)} polygons to {vectorize}")


def _stac_inputs(
    items: list[str] | None,
    assets: str | None,
    raster_given: bool,
    out_dir: Path | None,
    output: Path | None,
    distributed: bool,
    opts: dict[str, Any],
) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """The rasters of ``--stac`` items and each one's provenance.

    One item without --out-dir: its stack (in memory, or ``stac/<id>.vrt`` beside the map for dask workers,
    which cannot see this process) with its provenance in ``opts["source"]``. Several: one VRT each under
    OUT_DIR/stac and the provenance per scene. ``--assets`` without ``--stac``, or ``--stac`` with RASTER or
    ``--image`` (``raster_given``), is refused."""
    from rasterlearn.io.stac import stac_scenes

    if not items:
        raise InputError("--assets needs --stac ITEM.json (the STAC item whose assets to stack)")
    if raster_given:
        raise InputError("Give the RASTER(s) to map or --stac ITEM.json, not both")

    if out_dir is None and len(items) == 1:
        dest = output.parent / "stac" if distributed and output is not None else None
        path, opts["source"] = resolve_raster(None, items[0], assets, dest_dir=dest)
        return [path], {}
    if out_dir is None:
        raise InputError(f"{len(items)} STAC items given: name a folder for their maps with --out-dir")
    stacks = stac_scenes(items, asset_names(assets), out_dir / "stac")
    return [st.path for st in stacks], {st.path: {"source": st.provenance()} for st in stacks}


def _expand_scenes(items: list[str]) -> list[str]:
    """Paths as given, globs expanded (sorted), and ``.txt`` files read as one path per line."""
    import glob

    out: list[str] = []
    for item in items:
        if item.lower().endswith(".txt") and Path(item).is_file():
            base = Path(item).parent
            for line in Path(item).read_text().splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    out.append(line if "://" in line or line.startswith("/") else str(base / line))
        elif any(ch in item for ch in "*?[") and "://" not in item:
            found = sorted(glob.glob(item))
            if not found:
                raise InputError(f"No raster matches {item!r}")
            out.extend(found)
        else:
            out.append(item)
    return out


def _predict_scenes(
    model_dir: Path,
    rasters: list[str],
    out_dir: Path,
    mosaic: bool,
    overwrite: bool,
    scheduler: str | None,
    workers: int | None,
    opts: dict[str, Any],
) -> None:
    from rich.table import Table

    from rasterlearn.batch import predict_scenes

    # the total is announced by predict_scenes once it has counted the scenes still to map
    with open_executor(scheduler, workers) as ex, progress_bar("predict", None, "px") as advance:
        res = predict_scenes(
            model_dir,
            rasters,
            out_dir,
            executor=ex,
            mosaic=mosaic,
            overwrite=overwrite,
            progress=advance,
            **opts,
        )
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
    if res.failed:
        raise InputError(
            f"{len(res.failed)} of {len(res.scenes)} scene(s) failed: "
            + "; ".join(f"{s.raster}: {s.error}" for s in res.failed)
            + ". The others were mapped; rerun the same command after fixing them (finished maps are skipped)"
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


def _style_polygons(polygons: Path, class_map: Path) -> None:
    """Polygons in a GeoPackage open categorized with the map's colours (:func:`rasterlearn.vectorize.style_polygons`)."""
    from rasterlearn.vectorize import style_polygons

    style_polygons(polygons, class_map)
