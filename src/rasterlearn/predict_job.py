"""Setting up a prediction: the phases of :func:`rasterlearn.predict.predict_raster` before the first window.

:func:`open_job` turns the options into a :class:`PredictJob`, in this order:

1. :func:`check_options`: the options and outputs (nothing is opened yet);
2. :func:`decoder_of`: the model's task and classes -> how blended scores become map and probabilities;
3. :func:`make_runner`: device, precision, runtime and TTA of the model (:mod:`rasterlearn.predict_runtime`);
4. :func:`open_reader`: the input raster(s), the bands feeding the model, the input nodata value, the
   imagery checks (:mod:`rasterlearn.predict_inputs`, :func:`rasterlearn.compat.check_imagery`);
5. :func:`plan_job`: the extent (AOI), the window/batch/stripe plan (:mod:`rasterlearn.predict_plan`), the
   tiling and the window weights (:mod:`rasterlearn.predict_blend`), the bf16 check;
6. :func:`provenance`: the resume fingerprint (the options model less its output-neutral fields,
   :meth:`JobOptions.as_options`, plus the resolved ``parameters`` and the inputs' identities) and the
   outputs' tags;
7. :func:`open_writers`: the class map and probability :class:`~rasterlearn.io.writer.BlockWriter` (resumed
   when the fingerprint matches).

The job then runs in :func:`rasterlearn.predict_stream.run_job`.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rasterlearn._util import file_identity
from rasterlearn.class_maps import class_map_style
from rasterlearn.compat import check_imagery
from rasterlearn.engine import journal
from rasterlearn.engine.events import report_total
from rasterlearn.engine.executor import BlockExecutor
from rasterlearn.errors import InputError, ModelError, OutputError
from rasterlearn.grid import TilePlan, Window, column_stripes, plan_tiles
from rasterlearn.io.aoi import resolve_aoi
from rasterlearn.io.paths import check_outputs
from rasterlearn.io.raster import ImageReader
from rasterlearn.predict_blend import PROB_UINT8_MAX, Decoder, WindowWeights
from rasterlearn.predict_chunks import ChunkMasking, is_local
from rasterlearn.predict_inputs import assumed_nodata, open_input, stack_provenance
from rasterlearn.predict_options import JobOptions
from rasterlearn.predict_plan import InferencePlan, activation_bytes_per_px, output_stride, plan_inference
from rasterlearn.predict_runtime import ModelRunner, parse_tta

if TYPE_CHECKING:
    from rasterlearn.io.writer import BlockWriter

__all__ = ["JobOptions", "PredictJob", "open_job"]

log = logging.getLogger("rasterlearn.predict")


@dataclass
class PredictJob:
    """A prediction ready to run: the open reader, model runner, plan, weights and writers.

    ``plan`` is the tiling of the extent (windows on one regular lattice, edge windows padded),
    ``stripes`` the column stripes ``[cs, ce)`` the accumulator is processed in, ``masking`` what turns read
    windows into a batch (normalization and the validity policy), ``fingerprint`` the resume fingerprint.
    """

    opts: JobOptions
    output: Path
    prob_path: Path | None
    rasters: list[str | Path]
    reader: ImageReader
    runner: ModelRunner
    runner_settings: dict[str, Any]
    n_out: int
    decoder: Decoder
    masking: ChunkMasking
    extent: Window
    iplan: InferencePlan
    plan: TilePlan
    weights: WindowWeights
    stripes: list[tuple[int, int]]
    parameters: dict[str, Any]
    fingerprint: str
    map_writer: BlockWriter
    prob_writer: BlockWriter | None

    @property
    def writers(self) -> list[BlockWriter]:
        """The open writers, class map first."""
        return [w for w in (self.map_writer, self.prob_writer) if w is not None]


def open_job(
    model: Any,
    meta: Any,
    rasters: list[str | Path],
    output: Path,
    opts: JobOptions,
    progress: Callable[[int], None] | None,
) -> PredictJob:
    """Check the options, open the input and the outputs and plan the windows (the phases listed in the
    module docstring); ``progress`` receives the job's total (the extent's pixels) once it is known."""
    prob_path = Path(opts.probabilities) if opts.probabilities is not None else None
    check_options(rasters, output, prob_path, opts)
    tta_names = ("identity", *parse_tta(opts.tta))
    decoder, n_out = decoder_of(meta, opts)
    runner, runner_settings = make_runner(model, meta.task, n_out, tta_names, opts)
    reader, band_idx, in_nodata, compat_notes = open_reader(rasters, meta, opts)
    area = None if opts.aoi is None else resolve_aoi(opts.aoi, reader.grid)
    extent, aoi_geom = (reader.grid.window, None) if area is None else (area.window, area.geometry)
    report_total(progress, extent.height * extent.width)
    iplan, plan, weights, stripes = plan_job(runner, meta, reader, extent, opts)
    masking = ChunkMasking(meta.norm, reader.grid, in_nodata, aoi_geom)
    parameters = {
        "overlap": opts.overlap,
        "overlap_px": iplan.overlap_px,
        "chip_size": int(meta.chip_size),
        "window": list(iplan.window),
        "stride": list(iplan.stride),
        "blend": opts.blend,
        "blend_note": "class probabilities (softmax/sigmoid) are blended, not logits",
        "tta": list(tta_names[1:]),
        "threshold": decoder.threshold if meta.task == "binary" else None,
        "bands": band_idx,
        "prob_dtype": opts.prob_dtype if prob_path else None,
        "blocksize": opts.blocksize,
        "aoi": None
        if opts.aoi is None
        else (str(opts.aoi) if isinstance(opts.aoi, str | Path) else "geometry/extent"),
        "extent": extent.to_tuple(),
        "input_nodata": in_nodata,
        "precision": runner.precision,
        "runtime": runner.runtime,
        **({"accepted_mismatches": compat_notes} if compat_notes else {}),
    }
    fingerprint, tags = provenance(meta, rasters, reader, runner, iplan, parameters, masking, prob_path, opts)
    map_writer, prob_writer = open_writers(
        output, prob_path, reader, meta, decoder, n_out, fingerprint, tags, opts
    )
    return PredictJob(
        opts,
        output,
        prob_path,
        rasters,
        reader,
        runner,
        runner_settings,
        n_out,
        decoder,
        masking,
        extent,
        iplan,
        plan,
        weights,
        stripes,
        parameters,
        fingerprint,
        map_writer,
        prob_writer,
    )


def check_options(rasters: list[str | Path], output: Path, prob_path: Path | None, opts: JobOptions) -> None:
    """Refuse bad option values and outputs that are inputs or exist (without ``overwrite``)."""
    check_outputs([*rasters, opts.aoi], [output, prob_path])
    if not 0.0 <= opts.overlap < 1.0:
        raise InputError(f"overlap must be a fraction in [0, 1), got {opts.overlap}")
    if opts.blend not in ("hann", "center-crop", "none"):
        raise InputError(f"blend must be one of 'hann', 'center-crop', 'none'; got {opts.blend!r}")
    if opts.prob_dtype not in ("uint8", "float32"):
        raise InputError(f"prob_dtype must be 'uint8' or 'float32'; got {opts.prob_dtype!r}")
    if opts.batch_size is not None and opts.batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {opts.batch_size}")
    if opts.blocksize % 16 or opts.blocksize <= 0:
        raise InputError(f"blocksize must be a positive multiple of 16, got {opts.blocksize}")
    if prob_path is not None and prob_path.resolve() == output.resolve():
        raise InputError("The probability raster and the class map must be different files")
    for p in (output, prob_path):
        if p is not None and p.exists() and not opts.overwrite:
            raise OutputError(f"{p} exists; pass overwrite=True (CLI: --overwrite) or choose another name")


def decoder_of(meta: Any, opts: JobOptions) -> tuple[Decoder, int]:
    """The :class:`~rasterlearn.predict_blend.Decoder` of the model's task and classes, and the number of
    probability bands (binary: 1)."""
    schema = meta.class_schema
    task = meta.task
    if task not in ("multiclass", "binary"):
        raise ModelError(f"Unknown task {task!r} in the model package; expected 'multiclass' or 'binary'")
    n_out = 1 if task == "binary" else schema.num_classes
    if task == "binary" and schema.num_classes != 2:
        raise ModelError(
            f"A binary model needs a 2-class schema (background, foreground); got {schema.describe()}"
        )
    thr = float(meta.threshold if opts.threshold is None else opts.threshold)
    if not 0.0 <= thr <= 1.0:
        raise InputError(f"threshold must be within [0, 1], got {thr}")
    codes = np.asarray(schema.codes)
    map_dtype = "uint8" if codes.max() <= 254 else "uint16"
    map_nodata = 255 if map_dtype == "uint8" else 65535
    if map_nodata in codes:
        raise InputError(
            f"Class code {map_nodata} collides with the map's nodata value; renumber the classes"
        )
    return Decoder(task, codes, thr, map_dtype, map_nodata, opts.prob_dtype), n_out


def make_runner(
    model: Any, task: str, n_out: int, tta_names: tuple[str, ...], opts: JobOptions
) -> tuple[ModelRunner, dict[str, Any]]:
    """The :class:`~rasterlearn.predict_runtime.ModelRunner` and the settings that rebuild it on a worker."""
    import torch

    if opts.threads:
        torch.set_num_threads(int(opts.threads))
    device = opts.device
    dev = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)
    runner_settings: dict[str, Any] = {
        "n_out": n_out,
        "task": task,
        "tta": tta_names,
        "device": str(dev),
        "precision": opts.precision,
        "amp": opts.amp,
        "runtime": opts.runtime,
    }
    runner = ModelRunner(model, **runner_settings)
    runner_settings["channels_last"] = runner.channels_last
    return runner, runner_settings


def open_reader(
    rasters: list[str | Path], meta: Any, opts: JobOptions
) -> tuple[ImageReader, list[int], float | None, Any]:
    """The input reader, the bands feeding the model, the assumed input nodata value and the accepted
    imagery mismatches (:func:`rasterlearn.compat.check_imagery`); workers must be able to read the input."""
    norm = meta.norm
    reader, band_idx = open_input(rasters, meta, opts.bands, opts.nodata_policy)
    if reader.count != norm.bands:
        reader.close()
        raise ModelError(
            f"The model's normalization covers {norm.bands} bands but {reader.count} are selected"
        )
    in_nodata = assumed_nodata(reader, rasters[0], opts.nodata, meta)
    try:
        compat_notes = check_imagery(
            meta,
            reader,
            allow_resolution_mismatch=opts.allow_resolution_mismatch,
            allow_dtype_mismatch=opts.allow_dtype_mismatch,
        )
        if opts.executor is not None:
            for r in rasters:  # workers read their own windows: one line when they cannot
                opts.executor.check_readable(str(r))
    except InputError:
        reader.close()
        raise
    return reader, band_idx, in_nodata, compat_notes


def plan_job(
    runner: ModelRunner, meta: Any, reader: ImageReader, extent: Window, opts: JobOptions
) -> tuple[InferencePlan, TilePlan, WindowWeights, list[tuple[int, int]]]:
    """The window/batch/stripe plan, the tiling of the extent, the window weights and the column stripes;
    logs the plan and runs the bf16 check on the first window when bf16 was asked for on the CPU."""
    bs = opts.blocksize
    iplan = _plan_windows(runner, meta, extent, opts)
    (wh, ww), ov_px = iplan.window, iplan.overlap_px
    plan = plan_tiles(reader.grid, (wh, ww), iplan.stride, edge="pad", extent=extent)
    row_offs, col_offs = plan.row_offsets, plan.col_offsets
    weights = WindowWeights(row_offs, col_offs, (wh, ww), iplan.stride, extent, opts.blend)
    e_c0, e_c1 = extent.col_off, extent.col_stop
    width = iplan.stripe_width
    stripes = [(e_c0, e_c1)] if width >= e_c1 - e_c0 else column_stripes(e_c0, e_c1, width, bs)
    log.info(
        "Windows %dx%d px (%s; chip %d, output stride %d), overlap %d px, batch %d, %d window(s), "
        "%d column stripe(s); planned working memory %.0f MB of memory_mb=%g",
        wh,
        ww,
        "--window" if iplan.window_source == "option" else "from the memory budget",
        int(meta.chip_size),
        iplan.output_stride,
        ov_px,
        iplan.batch_size,
        len(row_offs) * len(col_offs),
        len(stripes),
        iplan.estimated_mb,
        opts.memory_mb,
    )
    if not (runner.cuda or runner.requested != "bf16"):
        runner.choose_precision(_probe_batch(reader, meta.norm, row_offs[0], col_offs[0], wh, ww))
    return iplan, plan, weights, stripes


def _plan_windows(runner: ModelRunner, meta: Any, extent: Window, opts: JobOptions) -> InferencePlan:
    """The window/batch/stripe plan of a job: the model's measured activation memory and output stride
    fed to :func:`rasterlearn.predict_plan.plan_inference` (the one place where windows are planned)."""
    import torch

    s = output_stride(runner.model, int(meta.chip_size))
    bpp = activation_bytes_per_px(
        runner.net,
        meta.norm.bands,
        stride=s,
        device=runner.dev,
        channels_last=runner.channels_last,
        autocast=runner.autocast() if runner.precision != "fp32" else None,
    )
    device_mb = None
    if runner.cuda:
        free, _total = torch.cuda.mem_get_info(runner.dev)
        device_mb = 0.6 * free / 2**20
    return plan_inference(
        extent_shape=(extent.height, extent.width),
        chip_size=int(meta.chip_size),
        overlap=opts.overlap,
        bands=meta.norm.bands,
        n_out=runner.n_out,
        act_bytes_per_px=bpp,
        out_stride=s,
        memory_mb=opts.memory_mb,
        blocksize=opts.blocksize,
        window=opts.window,
        batch_size=opts.batch_size,
        device_type=runner.dev.type,
        device_memory_mb=device_mb,
        io_threads=opts.io_threads,
    )


def _probe_batch(reader: ImageReader, norm: Any, row: int, col: int, wh: int, ww: int) -> Any:
    """The first window of the job (at most 512 px square), normalized: the bf16 check's input."""
    import torch

    win = Window(row, col, min(wh, 512), min(ww, 512))
    block = reader.read(win)
    return torch.from_numpy(norm.apply(block.data, block.valid)[np.newaxis])


def provenance(
    meta: Any,
    rasters: list[str | Path],
    reader: ImageReader,
    runner: ModelRunner,
    iplan: InferencePlan,
    parameters: dict[str, Any],
    masking: ChunkMasking,
    prob_path: Path | None,
    opts: JobOptions,
) -> tuple[str, dict[str, Any]]:
    """The resume fingerprint and the outputs' tags.

    The fingerprint holds the options model of the job (:meth:`JobOptions.as_options`) less its
    ``output_neutral`` fields, what those options resolved to (``parameters``: window and stride from
    ``memory_mb``, band indexes, input nodata, precision...), the identities of the raster(s) and the model
    and the STAC source. The tags' ``parameters`` and ``inference`` entries are the resolved values and the
    output-neutral settings (provenance only, not in the fingerprint)."""
    from rasterlearn import __version__

    inference = {
        "window_source": iplan.window_source,
        "output_stride": iplan.output_stride,
        "batch_size": iplan.batch_size,
        "memory_mb": opts.memory_mb,
        "stripe_width": iplan.stripe_width,
        "device": str(runner.dev),
        "channels_last": runner.channels_last,
        **({"conv_bn": runner.fuse_note} if runner.fuse_note else {}),
        **({"precision_note": runner.precision_note} if runner.precision_note else {}),
        **_executor_provenance(opts.executor),
    }
    model_ident = opts.model_id or f"sha256:{_model_digest(runner.model)}"
    source = opts.source
    options = opts.as_options()
    fp_src = {
        "raster": file_identity(rasters[0]),  # path, size, mtime (URL, size, ETag for HTTP inputs)
        "model": model_ident,
        # the options model (less its output-neutral fields) and what it resolved to (window, stride, bands...)
        "options": journal.without(options.model_dump(mode="json"), options.neutral_fields()),
        "params": parameters,
        "prob": str(prob_path),
        "aoi_wkt": None if masking.aoi_geom is None else masking.aoi_geom.wkt,
        "version": __version__,
        **stack_provenance(rasters, reader, identity=True),
        **({"source": dict(source)} if source else {}),
    }
    tags = {
        "rasterlearn_version": __version__,
        "source": str(rasters[0]),
        "model": model_ident,
        "model_arch": f"{meta.arch}/{meta.encoder}",
        "task": meta.task,
        "parameters": parameters,
        "inference": inference,
        "classes": meta.class_schema.to_dict(),
        **stack_provenance(rasters, reader),
        **(dict(source) if source else {}),
    }
    return journal.fingerprint(fp_src, length=64), tags


def _model_digest(model: Any) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _executor_provenance(executor: BlockExecutor | None) -> dict[str, Any]:
    """The executor's entries of the ``inference`` tag (output-neutral, not in the fingerprint); none for
    the local executor, so local outputs keep their metadata."""
    if is_local(executor):
        return {}
    client = getattr(executor, "client", None)
    workers = len(client.nthreads()) if client is not None else None
    return {"executor": getattr(executor, "name", type(executor).__name__), "executor_workers": workers}


def open_writers(
    output: Path,
    prob_path: Path | None,
    reader: ImageReader,
    meta: Any,
    decoder: Decoder,
    n_out: int,
    fingerprint: str,
    tags: dict[str, Any],
    opts: JobOptions,
) -> tuple[BlockWriter, BlockWriter | None]:
    """The class map writer and, with ``prob_path``, the probability writer (resumed when the journal's
    fingerprint matches)."""
    from rasterlearn.io.writer import BlockWriter

    schema, grid, bs, codes = meta.class_schema, reader.grid, opts.blocksize, decoder.codes
    map_writer = BlockWriter(
        output,
        grid,
        1,
        decoder.map_dtype,
        nodata=decoder.map_nodata,
        band_descriptions=["class"],
        tags={**tags, "product": "class map"},
        **class_map_style(schema),
        blocksize=bs,
        resume=opts.resume,
        fingerprint=fingerprint + ":map",
        overwrite=True,
    )
    if prob_path is None:
        return map_writer, None
    binary = meta.task == "binary"
    prob_dtype = opts.prob_dtype
    names = [f"p({schema.names[1]})"] if binary else [f"p({nm})" for nm in schema.names]
    scale = 1.0 / PROB_UINT8_MAX if prob_dtype == "uint8" else 1.0
    prob_writer = BlockWriter(
        prob_path,
        grid,
        n_out,
        prob_dtype,
        nodata=255 if prob_dtype == "uint8" else float("nan"),
        band_descriptions=names,
        tags={**tags, "product": "class probabilities", "probability_scale": scale},
        band_tags=[{"class_code": int(c)} for c in (codes[1:] if binary else codes)],
        scales=[scale] * n_out,
        offsets=[0.0] * n_out,
        blocksize=bs,
        resume=opts.resume,
        fingerprint=fingerprint + ":prob",
        overwrite=True,
    )
    return map_writer, prob_writer
