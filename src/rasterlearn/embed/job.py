"""The embed stage (:func:`embed`) as named phases over one checked :class:`~rasterlearn.embed.request.EmbedRequest`.

1. *inputs* (:func:`_resolve_inputs`): the bands, the backbone (built unless given), its weights' digest;
2. *session* (:func:`_open_session`): the parameters that change the result, their hash and folder, the
   index; a complete session whose output is up to date ends the job here (:func:`_completed`);
3. *source* (:func:`_open_source`): the raster as read (reprojected when asked), on this process or an
   executor, the device, the feature layout and the normalization;
4. *plan* (:func:`rasterlearn.embed.layout._plan_features`): tiles, feature grid, strips and stripes;
5. *stream* (:func:`_stream`): tiles encoded and merged into strips committed to the writer
   (:func:`rasterlearn.embed_stream.run_stripes`), locally or on the executor's workers;
6. *finish* (:func:`_finish`): storage conversion, the final file, ``result.json`` and the index.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rasterlearn._signals import interrupt_on_sigterm
from rasterlearn.embed.backbones import Backbone, _pick_device, load_backbone
from rasterlearn.embed.layout import (
    FeatureLayout,
    FeaturePlan,
    _keep_slices,
    _plan_features,
    _resolve_extent,
    feature_layout,
)
from rasterlearn.embed.output import _feature_tags, _finish_output, _open_writer
from rasterlearn.embed.request import DeviceName, EmbedRequest, MergeMode, NormMode, Storage
from rasterlearn.embed.session import (
    _completed_record,
    _session_parameters,
    _update_index,
    _write_json,
    session_hash,
)
from rasterlearn.embed.source import _input_normalization, _WarpedSource
from rasterlearn.embed_stream import StreamJob, StreamStats, encoder, run_stripes
from rasterlearn.engine.executor import BlockExecutor, LocalExecutor
from rasterlearn.engine.journal import canonical
from rasterlearn.errors import ModelError
from rasterlearn.grid import Bounds, Grid, Window
from rasterlearn.io.raster import RasterReader, gdal_cache
from rasterlearn.io.writer import BlockWriter
from rasterlearn.normalize import Normalization
from rasterlearn.weights import state_digest

log = logging.getLogger("rasterlearn.embed")


@dataclass
class EmbedResult:
    """What :func:`embed` produced."""

    path: Path
    session: Path
    session_id: str
    grid: Grid
    dim: int
    tiles: int
    tiles_skipped: int
    resumed: bool
    seconds: float
    model_seconds: float
    parameters: dict[str, Any] = field(default_factory=dict)
    stripes: int = 1
    peak_buffer_mb: float = 0.0


@dataclass(frozen=True)
class _Inputs:
    """What the job encodes with: the bands (indexes and names), the backbone, the keywords that rebuild it
    on an executor's workers (``None`` when the caller gave it), the weights' digest, whether they are random."""

    band_indexes: list[int]
    band_names: list[str]
    backbone: Backbone
    build: dict[str, Any] | None
    digest: str
    random_weights: bool


@dataclass(frozen=True)
class _Session:
    """The session: its folder under the cache, hash, parameters, final output and ``result.json``."""

    cache: Path
    sid: str
    folder: Path
    params: dict[str, Any]
    final: Path
    record: Path


@dataclass(frozen=True)
class _Source:
    """Where the tiles come from and how they go in: the path read (a warped VRT when reprojected), its
    reader, the executor, the device, the layout, the backbone on the device and the normalization."""

    path: str
    reader: RasterReader
    executor: BlockExecutor
    remote: bool
    device: torch.device
    layout: FeatureLayout
    backbone: Backbone
    norm: Normalization
    value_scale: float | None
    stats_meta: Any


def _resolve_inputs(req: EmbedRequest) -> _Inputs:
    """Phase *inputs*: the raster's bands, the backbone (built from ``model`` unless given) and its digest;
    random weights are logged loudly."""
    with RasterReader(req.raster, req.bands) as probe:
        band_indexes = probe.band_indexes
        in_names = probe.band_names
    backbone, build = req.backbone, None
    if backbone is None:
        build = {
            "checkpoint": None if req.checkpoint is None else str(Path(req.checkpoint).resolve()),
            "in_chans": len(band_indexes),
            "input_size": req.input_size or req.size,
            "layer": req.layer,
            "model_kwargs": req.model_kwargs,
            "seed": req.seed,
        }
        backbone = load_backbone(
            req.model,
            checkpoint=req.checkpoint,
            in_chans=len(band_indexes),
            input_size=req.input_size or req.size,
            layer=req.layer,
            pretrained=req.pretrained,
            model_kwargs=req.model_kwargs,
            seed=req.seed,
        )
    digest = state_digest(backbone)
    random_weights = bool(getattr(backbone, "random_weights", False))
    if random_weights:
        log.warning(
            "RANDOM WEIGHTS: %s has no pretrained weights or checkpoint here; its features come from a "
            "random network (seed %d, weights %s). They are reproducible with the same seed, but carry no "
            "learned meaning; give --checkpoint or pretrained weights for real features.",
            req.model,
            req.seed,
            digest,
        )
    return _Inputs(band_indexes, in_names, backbone, build, digest, random_weights)


def _open_session(req: EmbedRequest, inputs: _Inputs) -> _Session:
    """Phase *session*: hash the parameters, create the session folder with ``parameters.json`` and mark
    the session running in the index."""
    cache = req.cache
    params = _session_parameters(req, inputs.band_indexes, inputs.digest)
    sid = session_hash(params)
    folder = cache / sid
    folder.mkdir(parents=True, exist_ok=True)
    _write_json(folder / "parameters.json", {"session": sid, **canonical(params)})
    final = req.out_path if req.out_path is not None else folder / "features.tif"
    _update_index(
        cache,
        sid,
        {
            "input": str(req.raster.resolve()),
            "model": req.model,
            "output": str(final.resolve()),
            "status": "running",
            "updated": time.strftime("%Y-%m-%dT%H:%M:%S"),
        },
    )
    return _Session(cache, sid, folder, params, final, folder / "result.json")


def _completed(req: EmbedRequest, sess: _Session) -> EmbedResult | None:
    """The result of a complete session whose output is up to date (nothing to do), when resuming."""
    rec = _completed_record(sess.record, sess.sid, sess.final) if req.resume else None
    if rec is None:
        return None
    log.info("Session %s is complete and %s is up to date; nothing to do", sess.sid, sess.final)
    _update_index(sess.cache, sess.sid, {"status": "complete"})
    return EmbedResult(
        sess.final,
        sess.folder,
        sess.sid,
        Grid.from_dict(rec["grid"]),
        rec["dim"],
        rec["tiles"],
        rec["tiles_skipped"],
        True,
        0.0,
        0.0,
        sess.params,
    )


def _open_source(req: EmbedRequest, inputs: _Inputs, sess: _Session) -> _Source:
    """Phase *source*: the raster as read (a warped VRT in the session folder when reprojected; workers must
    be able to read it), the device, the feature layout (checked against a ViT's fixed input size) and the
    normalization."""
    raster = req.raster
    source = str(raster)
    if req.target_crs is not None or req.resolution is not None:
        source = str(
            _WarpedSource.build(
                str(raster), sess.folder / "source.vrt", req.target_crs, req.resolution, req.resampling
            )
        )
    executor = req.executor or LocalExecutor()
    remote = not isinstance(executor, LocalExecutor)
    if remote:  # workers open the raster themselves: an absolute path, and say now when they cannot
        source = str(Path(source).resolve()) if Path(source).exists() else source
        executor.check_readable(source)
    reader = RasterReader(source, inputs.band_indexes)
    dev = _pick_device(str(req.device))
    lay = feature_layout(req.size, req.stride, inputs.backbone.stride, req.input_size)
    backbone = inputs.backbone
    if backbone.family == "vit" and backbone.fixed_size is not None and backbone.fixed_size != lay.input_size:
        raise ModelError(
            f"{req.model} was built for {backbone.fixed_size} px inputs, but tiles go in at "
            f"{lay.input_size} px; build it with input_size={lay.input_size}"
        )
    backbone = backbone.to(dev).eval()
    norm, value_scale, stats_meta = _input_normalization(req.normalization, backbone, reader, req.value_scale)
    return _Source(source, reader, executor, remote, dev, lay, backbone, norm, value_scale, stats_meta)


def _stream(
    req: EmbedRequest, inputs: _Inputs, sess: _Session, src: _Source, plan: FeaturePlan
) -> tuple[BlockWriter, StreamStats]:
    """Phase *stream*: encode every tile and commit the merged strips to the writer. When it fails or is
    cancelled, the committed strips are kept for a resume and the session is marked interrupted."""
    lay, dim, nrows, ncols = src.layout, src.backbone.dim, plan.nrows, plan.ncols
    tags = _feature_tags(
        req,
        sess.sid,
        inputs.digest,
        inputs.random_weights,
        src.backbone,
        lay,
        src.norm,
        src.value_scale,
        src.stats_meta,
        inputs.band_names,
    )
    writer = _open_writer(req, sess.folder, sess.sid, plan, dim, tags)
    merge = req.merge
    job = StreamJob(
        reader=src.reader,
        encode=encoder(src.backbone, lay, src.device),
        norm=src.norm,
        keep=lambda i, j: _keep_slices(merge, lay, i, j, nrows, ncols),
        writer=writer,
        row_offsets=plan.tiles.row_offsets,
        col_offsets=plan.tiles.col_offsets,
        size=req.size,
        feat_size=lay.feat_size,
        feat_stride=lay.feat_stride,
        width=plan.grid.width,
        height=plan.grid.height,
        dim=dim,
        blocksize=plan.blocksize,
        stripes=plan.stripes,
        merge=merge,
        min_valid_fraction=req.min_valid_fraction,
        batch_size=req.batch_size,
        workers=req.workers,
        pause_s=req.pause_s,
        nodata=float("nan"),
    )
    ok = False
    try:
        tiles = None
        if src.remote:
            from rasterlearn.embed_remote import executor_tiles

            tiles = executor_tiles(
                src.executor,
                job,
                sess.sid,
                req.model,
                inputs.digest,
                lay,
                str(req.device),
                src.path,
                inputs.build,
                src.backbone,
            )
        streamed = run_stripes(job, req.progress, tiles)
        ok = True
    finally:
        if not ok:
            with contextlib.suppress(Exception):
                writer.abort(keep_partial=True)
            _update_index(
                sess.cache, sess.sid, {"status": "interrupted", "updated": time.strftime("%Y-%m-%dT%H:%M:%S")}
            )
        src.reader.close()
    return writer, streamed


def _finish(
    req: EmbedRequest,
    sess: _Session,
    src: _Source,
    plan: FeaturePlan,
    writer: BlockWriter,
    streamed: StreamStats,
    t_start: float,
) -> EmbedResult:
    """Phase *finish*: close the writer, write the final output (converted to its storage), record the
    session's ``result.json`` (what a rerun checks) and mark it complete in the index."""
    sid, final, dim, fgrid = sess.sid, sess.final, src.backbone.dim, plan.grid
    tiles = plan.nrows * plan.ncols
    resumed = streamed.strips_resumed > 0
    if resumed:
        log.info("Resumed session %s: %d feature strips were already written", sid, streamed.strips_resumed)
    tiles_skipped, model_seconds = streamed.tiles_skipped, streamed.model_seconds
    produced = writer.close()
    _finish_output(produced, final, req.storage, req.overwrite)
    seconds = time.perf_counter() - t_start
    result = EmbedResult(
        final,
        sess.folder,
        sid,
        fgrid,
        dim,
        tiles,
        tiles_skipped,
        resumed,
        seconds,
        model_seconds,
        sess.params,
        stripes=len(plan.stripes),
        peak_buffer_mb=streamed.peak_buffer_bytes / 2**20,
    )
    _write_json(
        sess.record,
        {
            "session": sid,
            "output": str(final.resolve()),
            "output_mtime_ns": final.stat().st_mtime_ns,
            "grid": fgrid.to_dict(),
            "dim": dim,
            "tiles": tiles,
            "tiles_skipped": tiles_skipped,
            "seconds": seconds,
            "model_seconds": model_seconds,
            "blocksize": plan.blocksize,
            "stripes": len(plan.stripes),
            "stripe_width": plan.stripe_width,
            "executor": src.executor.name,  # output-neutral: recorded here, not in the session hash or the tags
        },
    )
    _update_index(sess.cache, sid, {"status": "complete", "updated": time.strftime("%Y-%m-%dT%H:%M:%S")})
    log.info(
        "Encoded %d tiles (%d empty skipped) into %s: %dx%d feature pixels x %d features in %.1f s",
        tiles,
        tiles_skipped,
        final,
        fgrid.width,
        fgrid.height,
        dim,
        seconds,
    )
    return result


def _run(req: EmbedRequest, t_start: float) -> EmbedResult:
    """The phases of :func:`embed` in order (see the module's docstring)."""
    inputs = _resolve_inputs(req)
    sess = _open_session(req, inputs)
    done = _completed(req, sess)
    if done is not None:
        return done
    src = _open_source(req, inputs, sess)
    area = _resolve_extent(src.reader.grid, req.extent, req.extent_crs)
    plan = _plan_features(
        src.reader.grid,
        area,
        src.layout,
        src.backbone.dim,
        req.memory_mb,
        req.batch_size,
        req.workers,
        len(inputs.band_indexes),
        src.reader.dtype,
        req.progress,
    )
    writer, streamed = _stream(req, inputs, sess, src, plan)
    return _finish(req, sess, src, plan, writer, streamed, t_start)


def _streaming_job(fn: Callable[..., EmbedResult]) -> Callable[..., EmbedResult]:
    """Run ``fn`` with GDAL's block cache bounded by its ``cache_mb`` keyword (GDAL's default, 5 % of RAM,
    keeps every decoded input block: gigabytes on a large raster) and SIGTERM stopping it like Ctrl-C."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> EmbedResult:
        with gdal_cache(int(kwargs.get("cache_mb", 64))), interrupt_on_sigterm():
            return fn(*args, **kwargs)

    return wrapper


@_streaming_job
def embed(
    raster: str | Path,
    model: str,
    *,
    output: str | Path | None = None,
    checkpoint: str | Path | None = None,
    pretrained: bool = True,
    seed: int = 0,
    model_kwargs: dict[str, Any] | None = None,
    bands: Sequence[int | str] | None = None,
    size: int = 224,
    stride: int | None = None,
    input_size: int | None = None,
    layer: int | None = None,
    normalization: NormMode = "image",
    value_scale: float | None = None,
    merge: MergeMode = "average",
    storage: Storage = "float32",
    min_valid_fraction: float = 0.5,
    extent: Window | Bounds | str | Path | None = None,
    extent_crs: str | None = None,
    target_crs: str | None = None,
    resolution: float | None = None,
    resampling: str = "bilinear",
    device: DeviceName = "auto",
    batch_size: int = 8,
    workers: int = 1,
    pause_s: float = 0.0,
    memory_mb: float = 256.0,
    cache_mb: int = 64,
    cache_dir: str | Path | None = None,
    resume: bool = True,
    overwrite: bool = True,
    backbone: Backbone | None = None,
    progress: Callable[[int], None] | None = None,
    executor: BlockExecutor | None = None,
    provenance: Mapping[str, Any] | None = None,
) -> EmbedResult:
    """Encode a raster into a feature raster (one band per feature) with a timm backbone.

    Args:
        raster: any GDAL raster, any number of bands and dtype.
        model: timm name, ``hf-hub:`` name or one of :data:`RECOMMENDED_MODELS`.
        output: the final COG (default: ``features.tif`` in the session folder).
        checkpoint: local weights (``.safetensors``/``.pth``) for ``model``; no download then.
        pretrained: download pretrained weights when no checkpoint is given. Without both, the network
            has random weights: a loud warning is logged, and ``seed`` makes it reproducible.
        seed: seed of the random weights (only used without pretrained weights and checkpoint). The
            digest of the weights used is part of the session hash and the output's tags
            (``rasterlearn_weights_sha256``), so a resumed run never mixes two networks.
        model_kwargs: extra ``timm.create_model`` arguments (JSON-able; part of the session hash).
        bands: 1-based indexes or descriptions of the bands to encode (default: all but alpha).
        size: tile size in raster pixels; stride: step between tiles (default ``size``: no overlap).
        input_size: model input size (tiles resized to it; default ``size``).
        layer: ViT block / CNN stage index (default: last).
        normalization: ``image`` (nodata-aware z-score from the raster's sampled statistics), ``model`` (the
            model's mean/std after dividing by ``value_scale``) or ``none``.
        merge: ``average`` (true mean of overlapping tiles), ``first`` or ``center`` (each tile's centre).
        storage: ``float32``, ``float16`` (half-float GeoTIFF) or ``uint16`` (scale/offset per band recorded).
        min_valid_fraction: a feature pixel is nodata when less than this fraction of its input footprint is
            valid (input nodata and outside the raster are invalid).
        extent: a window, bounds (in ``extent_crs`` or the raster CRS) or a vector file whose extent is used.
        target_crs, resolution: read the raster reprojected (GDAL warped VRT) to this CRS / resolution.
        device: ``auto``, ``cpu``, ``cuda``, ``mps``; batch_size: tiles per forward pass.
        workers: reader threads prefetching tile rows; pause_s: sleep between batches (thermal throttling).
        memory_mb: budget for the feature rows and tile rows held in memory (sets the strip height and, on
            wide rasters, the width of the column stripes; ``EmbedResult.peak_buffer_mb`` is what was held).
        cache_mb: GDAL block cache while the job runs (bounded so memory does not grow with the raster).
        cache_dir: where sessions live (default: ``embed_sessions`` beside ``output``, else ``./embed_sessions``).
        resume: continue an interrupted session with the same parameters.
        backbone: an already-built :class:`Backbone` (then ``model`` only names it).
        progress: called with the number of tiles finished, after every tile row of every stripe (also
            when all its tiles were empty); a cancellation raised from it stops the job resumably.
        executor: where tiles are read and encoded (default: this process). A dask executor
            (:func:`rasterlearn.engine.executor.open_executor`) runs them on its workers
            (:mod:`rasterlearn.embed_remote`): the raster and the checkpoint must be readable there. The
            features are the same and the session too: a job interrupted on one executor resumes on another.
        provenance: what the output records about where the raster came from beyond its path (a STAC item's
            id and asset hrefs: :meth:`rasterlearn.io.stac.StacStack.provenance`): tags of the features and
            part of the session hash.

    Tiles without any valid pixel are not encoded (counted in ``tiles_skipped``). Ctrl-C or SIGTERM stop
    the job after the batch in flight; the strips written so far are kept and a rerun resumes from them.

    Returns:
        :class:`EmbedResult` with the output path, session folder and feature grid.
    """
    arguments = dict(locals())  # every parameter above, by name (nothing else is bound yet)
    t_start = time.perf_counter()
    return _run(EmbedRequest.from_call(arguments), t_start)
