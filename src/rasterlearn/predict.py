"""Streaming, seamless sliding-window inference from any raster to COG class maps and probabilities.

How a map is made:

* **Windows.** The extent (whole raster or AOI) is tiled with :func:`rasterlearn.grid.plan_tiles`. The
  window is *not* the chip size: :func:`rasterlearn.predict_plan.plan_inference` chooses the largest window
  that tiles the extent evenly within ``memory_mb`` (a multiple of the network's output stride, at least
  the chip size; the model's activation memory per pixel is measured once), or takes ``window``. The
  overlap is a fraction of the chip size (the context the model was trained with). Edge windows are
  *padded* past the raster (read boundless, nodata-filled), never shifted, so every window sits on the
  same regular lattice.
* **Blending.** Each window's class *probabilities* (softmax, or sigmoid for binary models; logits are
  never blended) are multiplied by a weight window and summed. The weights are separable (row profile x
  column profile) and are divided by the exact sum of all overlapping copies, so they form a partition of
  unity at every pixel: a constant model gives exactly its constant everywhere, including the outermost
  rows and columns. Profiles (see :func:`axis_weights`):

  - ``hann``: a cosine (Hann) taper across the overlap, with a dead margin of ``overlap // 4`` pixels at
    each window edge (where a CNN lacks context and zero padding distorts its output). Windows touching
    the extent's border are *border-corrected*: their outward half is flat (weight 1), so the raster's
    outer pixels get full weight rather than the near-zero tail of a taper.
  - ``center-crop``: each pixel comes from the one window whose central ``stride`` x ``stride`` part holds
    it (border windows extend to the edge).
  - ``none``: flat weights, i.e. the plain mean of every window covering the pixel.

* **Bounded memory.** Weighted scores are accumulated only for the band of rows that the current batch
  touches (``blocksize + window`` rows, more when a batch spans window rows); finished row-blocks
  (multiples of the writer's block size) are handed to a writer thread and dropped. Rasters too wide for
  ``memory_mb`` are processed in column stripes (windows straddling a stripe seam are predicted for both
  stripes, so results are identical; the planner prefers smaller windows to stripes), so peak memory
  depends on neither the height nor the width of the raster.
* **Overlapped I/O.** Reader threads (one :class:`~rasterlearn.io.raster.RasterReader` handle each) read
  and normalize batches ahead of the model; a writer thread turns finished blocks into outputs. The model
  runs through :class:`rasterlearn.predict_runtime.ModelRunner` (inference mode, channels-last, optional
  checked bf16 on CPU; on CUDA pinned batches copied with ``non_blocking=True`` under fp16 autocast).
* **Executors.** With ``executor`` (a dask.distributed cluster) each batch of windows is read, normalized
  and run through the model on a worker (:mod:`rasterlearn.predict_chunks`); the worker returns window
  probabilities and this process blends, writes and commits as above, so outputs are byte-identical.
* **Nodata.** Windows without a single valid pixel are skipped; output pixels are nodata wherever any
  model band is nodata in the input, or outside the AOI polygon.
* **Resume.** Progress is committed per output block through :class:`~rasterlearn.io.writer.BlockWriter`
  with a fingerprint of the job: model weights, raster identity, the options as
  :class:`~rasterlearn.options.PredictOptions` less its ``output_neutral`` fields (batch size, memory budget,
  threads, device...) and what they resolved to (the ``parameters`` tag: window, stride, bands, precision). Killing the process at any point and
  re-running the same job finishes it and yields a file identical to an uninterrupted run.

The phases live in their own modules: :mod:`rasterlearn.predict_job` (options, model runner, input, plan,
provenance, writers), :mod:`rasterlearn.predict_stream` (stripes, batches, accumulation, the writer
thread), :mod:`rasterlearn.predict_blend` (window weights, scores to class map and probabilities),
:mod:`rasterlearn.predict_plan`, :mod:`rasterlearn.predict_runtime`, :mod:`rasterlearn.predict_chunks` and
:mod:`rasterlearn.predict_inputs`; :func:`predict_raster` drives them. The stage around it, from one
:class:`~rasterlearn.options.PredictOptions` (many scenes, STAC items, polygons), is
:func:`rasterlearn.predict_run.run_predict`, re-exported here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from rasterlearn._util import file_sha256
from rasterlearn.engine.executor import BlockExecutor
from rasterlearn.io.paths import check_outputs
from rasterlearn.io.raster import gdal_cache
from rasterlearn.io.stack import NodataPolicy
from rasterlearn.predict_blend import BlendMode, ProbDtype, axis_weights
from rasterlearn.predict_inputs import as_raster_list, resolve_bands
from rasterlearn.predict_job import PredictJob, open_job
from rasterlearn.predict_options import JobOptions
from rasterlearn.predict_plan import DEFAULT_MEMORY_MB, PREDICT_CACHE_MB
from rasterlearn.predict_run import PredictRunResult, run_predict
from rasterlearn.predict_runtime import TTA_CHOICES, Precision, Runtime, parse_tta
from rasterlearn.predict_stream import run_job

__all__ = [
    "TTA_CHOICES",
    "BlendMode",
    "PredictResult",
    "PredictRunResult",
    "axis_weights",
    "parse_tta",
    "predict_package",
    "predict_raster",
    "resolve_bands",
    "run_predict",
]

log = logging.getLogger(__name__)


@dataclass
class PredictResult:
    """What :func:`predict_raster` produced."""

    map_path: Path
    probabilities_path: Path | None
    windows_total: int
    windows_predicted: int
    windows_skipped: int
    blocks_resumed: int
    pixels: int
    seconds: float
    parameters: dict[str, Any] = field(default_factory=dict)

    @property
    def pixels_per_second(self) -> float:
        return self.pixels / self.seconds if self.seconds > 0 else float("nan")


# -- the job -----------------------------------------------------------------------------------------


def _gdal_cache(fn: Callable[..., PredictResult]) -> Callable[..., PredictResult]:
    """Run ``fn`` with GDAL's block cache bounded by its ``cache_mb`` keyword (GDAL's default, 5 % of RAM,
    lets decoded input blocks pile up with the raster's size)."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> PredictResult:
        with gdal_cache(int(kwargs.get("cache_mb", PREDICT_CACHE_MB))):
            return fn(*args, **kwargs)

    return wrapper


@_gdal_cache
def predict_raster(
    model: Any,
    meta: Any,
    raster: str | Path | Sequence[str | Path],
    output: str | Path,
    *,
    probabilities: str | Path | None = None,
    overlap: float = 0.25,
    window: int | Sequence[int] | None = None,
    blend: BlendMode = "hann",
    tta: str | Sequence[str] | None = None,
    batch_size: int | None = None,
    aoi: Any = None,
    threshold: float | None = None,
    prob_dtype: ProbDtype = "uint8",
    bands: Sequence[int | str] | None = None,
    nodata: float | None = None,
    device: str = "auto",
    amp: bool = True,
    precision: Precision = "auto",
    runtime: Runtime = "torch",
    threads: int | None = None,
    io_threads: int = 2,
    blocksize: int = 512,
    memory_mb: float = DEFAULT_MEMORY_MB,
    cache_mb: int = PREDICT_CACHE_MB,
    overwrite: bool = False,
    resume: bool = True,
    commit_every_s: float = 0.0,
    model_id: str | None = None,
    allow_resolution_mismatch: bool = False,
    allow_dtype_mismatch: bool = False,
    progress: Callable[[int], None] | None = None,
    nodata_policy: NodataPolicy = "all-valid",
    source: Mapping[str, Any] | None = None,
    executor: BlockExecutor | None = None,
) -> PredictResult:
    """Predict a class map (and optionally class probabilities) for a whole raster, block by block.

    The stage API is :func:`rasterlearn.predict_run.run_predict` (one options model, many scenes, STAC
    items, polygons); this is its kernel for one model already in memory. The keyword options (``overlap``,
    ``window``, ``tta``, ... ``executor``) are the fields of :class:`rasterlearn.predict_options.JobOptions` and
    documented there, once; most are fields of :class:`rasterlearn.options.PredictOptions` as well, from
    which the resume fingerprint is built whichever way the job is called.

    Args:
        model: a segmentation ``nn.Module`` mapping (B, bands, n, n) to (B, classes, n, n) logits (binary
            models: one logit channel).
        meta: its :class:`rasterlearn.models.ModelMetadata` (bands, normalization, class schema, chip size,
            task, threshold).
        raster: input raster (any GDAL format); outputs use its grid, CRS and transform. A multi-date model
            (see :mod:`rasterlearn.models_temporal`) takes one raster per date, in training order: they are
            read as one stack on the first date's grid (:mod:`rasterlearn.predict_inputs`).
        output: class map path (COG, uint8, or uint16 when a class code exceeds 254; nodata 255/65535).
        progress: called with the number of extent pixels finished: after every window row (their scores
            are final; the block rows holding them are committed as they fill), so small runs move early.

    Returns:
        A :class:`PredictResult` with paths, window counts and throughput.

    Raises:
        InputError: bad options, missing bands, rasters the model cannot read.
        ModelError: the model's output does not match its metadata.
        OutputError: an output exists and ``overwrite`` is False.
    """
    args = locals()  # the keyword options: one per JobOptions field (tests/test_predict_run.py checks it)
    opts = JobOptions(**{f.name: args[f.name] for f in fields(JobOptions)})
    t0 = time.perf_counter()
    job = open_job(model, meta, as_raster_list(raster), Path(output), opts, progress)
    counts = run_job(job, progress)
    return _result(job, counts, time.perf_counter() - t0)


def _result(job: PredictJob, counts: dict[str, int], seconds: float) -> PredictResult:
    """The finished job's :class:`PredictResult` (and its log line)."""
    extent_px = job.extent.height * job.extent.width
    log.info(
        "Predicted %s: %d windows run, %d skipped (nodata/outside AOI), %d blocks resumed; %.0f px/s",
        job.output,
        counts["predicted"],
        counts["skipped"],
        counts["resumed"],
        extent_px / max(seconds, 1e-9),
    )
    return PredictResult(
        job.output,
        job.prob_path,
        counts["total"],
        counts["predicted"],
        counts["skipped"],
        counts["resumed"],
        extent_px,
        seconds,
        job.parameters,
    )


def predict_package(
    package: str | Path, raster: str | Path | Sequence[str | Path], output: str | Path, **kwargs: Any
) -> PredictResult:
    """:func:`predict_raster` with a model package folder (see :func:`rasterlearn.models.load_package`)."""
    from rasterlearn.models import load_package

    check_outputs(
        [package, *as_raster_list(raster), kwargs.get("aoi")], [output, kwargs.get("probabilities")]
    )
    pkg = load_package(package)
    digest = file_sha256(Path(package) / "model.safetensors")[:16]
    kwargs.setdefault("model_id", f"{Path(package).resolve().name}@sha256:{digest}")
    return predict_raster(pkg.model, pkg.meta, raster, output, **kwargs)
