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
  with a fingerprint of the job (model weights, raster, the output-changing parameters: window, overlap,
  blend, TTA, precision, ...; not batch size, memory budget, threads). Killing the process at any point and
  re-running the same job finishes it and yields a file identical to an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from rasterlearn._util import file_identity, file_sha256
from rasterlearn.class_maps import class_map_style
from rasterlearn.compat import check_imagery
from rasterlearn.engine import journal
from rasterlearn.engine.events import report_total
from rasterlearn.engine.executor import BlockExecutor
from rasterlearn.errors import InputError, ModelError, OutputError
from rasterlearn.grid import Window, column_stripes, plan_tiles
from rasterlearn.io.aoi import resolve_aoi
from rasterlearn.io.paths import check_outputs
from rasterlearn.io.raster import ImageReader, RasterReader, gdal_cache
from rasterlearn.io.stack import NodataPolicy
from rasterlearn.metrics import binary_foreground
from rasterlearn.predict_chunks import ChunkJob, ChunkMasking, ReaderSpec, chunk_results, is_local
from rasterlearn.predict_inputs import as_raster_list, model_timesteps_of, open_stack_input, stack_provenance
from rasterlearn.predict_plan import (
    DEFAULT_MEMORY_MB,
    PREDICT_CACHE_MB,
    InferencePlan,
    activation_bytes_per_px,
    output_stride,
    plan_inference,
)
from rasterlearn.predict_runtime import ModelRunner, Precision, Runtime

__all__ = [
    "TTA_CHOICES",
    "BlendMode",
    "PredictResult",
    "axis_weights",
    "parse_tta",
    "predict_package",
    "predict_raster",
    "resolve_bands",
]

log = logging.getLogger(__name__)

BlendMode = Literal["hann", "center-crop", "none"]
ProbDtype = Literal["uint8", "float32"]
TTA_CHOICES = ("hflip", "vflip", "rot90", "rot180", "rot270")
_TTA_GROUPS = {
    "flips": ("hflip", "vflip"),
    "rotations": ("rot90", "rot180", "rot270"),
    "all": TTA_CHOICES,
    "none": (),
}
PROB_UINT8_MAX = 254  # uint8 probabilities are scaled to 0..254; 255 is nodata


# -- pure kernels -------------------------------------------------------------------------------


def _profile(size: int, overlap: int, blend: BlendMode) -> np.ndarray:
    """Un-normalized 1-D weight profile of one window (before border correction)."""
    w = np.ones(size, dtype="float64")
    if overlap <= 0 or blend == "none":
        return w
    if blend == "center-crop":
        lo = overlap // 2
        hi = overlap - lo
        w[:] = 0.0
        w[lo : size - hi] = 1.0
        return w
    if blend == "hann":
        margin = overlap // 4
        ramp = overlap - 2 * margin  # >= 1 because overlap >= 1
        i = np.arange(size, dtype="float64")
        left = np.clip((i - margin + 0.5) / ramp, 0.0, 1.0)
        left[i < margin] = 0.0
        left = np.sin(0.5 * np.pi * left) ** 2
        return left * left[::-1]
    raise InputError(f"blend must be one of 'hann', 'center-crop', 'none'; got {blend!r}")


def axis_weights(
    offsets: Sequence[int], size: int, stride: int, start: int, stop: int, blend: BlendMode = "hann"
) -> list[np.ndarray]:
    """Normalized 1-D weights of every window along one axis.

    Args:
        offsets: window start offsets (global pixel coordinates) on a regular lattice.
        size: window length; ``stride``: the lattice step (overlap is ``size - stride``).
        start, stop: the extent covered along this axis (pixels outside get weight 0).
        blend: weight profile (see the module docstring).

    Returns:
        One array of ``size`` weights per window. For every pixel in ``[start, stop)`` the weights of all
        windows covering it sum to exactly 1 (up to float rounding); 2-D weights are outer products.

    Raises:
        InputError: a pixel of the extent would get no weight (cannot happen for a valid plan).
    """
    overlap = max(0, size - stride)
    base = _profile(size, overlap, blend)
    half = size // 2
    raw = []
    for k, _off in enumerate(offsets):
        w = base.copy()
        if k == 0:
            w[:half] = 1.0  # border correction: the extent's first pixels get full weight
        if k == len(offsets) - 1:
            w[half:] = 1.0
        raw.append(w)
    total = np.zeros(stop - start, dtype="float64")
    for off, w in zip(offsets, raw, strict=True):
        a, b = max(off, start), min(off + size, stop)
        if b > a:
            total[a - start : b - start] += w[a - off : b - off]
    if (total <= 0).any():
        bad = int(np.flatnonzero(total <= 0)[0]) + start
        raise InputError(
            f"Pixel {bad} is covered by no window weight; the tiling plan does not cover the extent"
        )
    out = []
    for off, w in zip(offsets, raw, strict=True):
        nw = np.zeros(size, dtype="float64")
        a, b = max(off, start), min(off + size, stop)
        if b > a:
            nw[a - off : b - off] = w[a - off : b - off] / total[a - start : b - start]
        out.append(nw.astype("float32"))
    return out


def parse_tta(tta: str | Sequence[str] | None) -> tuple[str, ...]:
    """Normalize a TTA selection: names from :data:`TTA_CHOICES` or the groups ``flips``, ``rotations``,
    ``all``, ``none``; a comma-separated string is accepted. The identity is always included."""
    if tta is None:
        return ()
    items = [t.strip() for t in tta.split(",")] if isinstance(tta, str) else [str(t).strip() for t in tta]
    out: list[str] = []
    for item in items:
        if not item:
            continue
        names = _TTA_GROUPS.get(item.lower(), (item.lower(),))
        for n in names:
            if n not in TTA_CHOICES:
                raise InputError(
                    f"Unknown test-time augmentation {item!r}; choose from "
                    f"{', '.join(TTA_CHOICES)} or {', '.join(_TTA_GROUPS)}"
                )
            if n not in out:
                out.append(n)
    return tuple(out)


def resolve_bands(
    reader: RasterReader,
    model_bands: Sequence[str],
    band_indexes: Sequence[int] | None,
    override: Sequence[int | str] | None = None,
) -> list[int]:
    """Choose the raster's 1-based bands that feed the model, in the model's order.

    Order of preference: an explicit ``override``; the model's band names matched to the raster's band
    descriptions (case-insensitive); the model's training band indexes; position (when the raster has
    exactly as many bands as the model). Anything else is an :class:`InputError` naming both band lists.
    """
    ds = reader.dataset
    count = ds.count
    described = [d or "" for d in ds.descriptions]
    have = ", ".join(f"{i + 1}={d!r}" if d else str(i + 1) for i, d in enumerate(described))
    need = len(model_bands)
    if override:
        if len(override) != need:
            raise InputError(
                f"--bands selects {len(override)} band(s) but the model expects {need} "
                f"({', '.join(model_bands)})"
            )
        return RasterReader(reader.path, list(override)).band_indexes
    lower = [d.lower() for d in described]
    idx_by_name = [lower.index(b.lower()) + 1 if b.lower() in lower else None for b in model_bands]
    if all(i is not None for i in idx_by_name):
        chosen = [int(i) for i in idx_by_name if i is not None]
        log.info("Model bands matched by description: %s -> raster bands %s", list(model_bands), chosen)
        return chosen
    found = [b for b, i in zip(model_bands, idx_by_name, strict=True) if i is not None]
    if found:
        missing = [b for b, i in zip(model_bands, idx_by_name, strict=True) if i is None]
        raise InputError(
            f"{reader.path} lacks the model's band(s) {missing} (it has {have}); the model expects "
            f"{list(model_bands)} in that order. Use a raster with these bands or pass --bands."
        )
    if count != need and band_indexes and list(band_indexes) == list(range(1, need + 1)):
        raise InputError(
            f"{reader.path} has {count} band(s) ({have}) but the model was trained on {need} "
            f"({', '.join(model_bands)}), and no band description names them. Pass --bands with the {need} "
            f"bands to use (e.g. --bands {','.join(str(i) for i in band_indexes)}) if the raster really "
            f"holds the training bands"
        )
    if band_indexes and len(band_indexes) == need and max(band_indexes) <= count:
        log.warning(
            "Raster band descriptions do not name the model's bands %s; using the training band "
            "indexes %s (raster bands: %s)",
            list(model_bands),
            list(band_indexes),
            have,
        )
        return [int(i) for i in band_indexes]
    if count == need:
        log.warning(
            "Raster band descriptions do not name the model's bands %s; feeding raster bands 1..%d in order",
            list(model_bands),
            count,
        )
        return list(range(1, count + 1))
    data_bands = [i for i in range(1, count + 1) if i not in reader.alpha_bands]
    if len(data_bands) == need and len(data_bands) < count:
        log.warning(
            "Raster band descriptions do not name the model's bands %s; feeding raster bands %s in order "
            "(band(s) %s are alpha: the validity mask)",
            list(model_bands),
            data_bands,
            reader.alpha_bands,
        )
        return data_bands
    raise InputError(
        f"{reader.path} has {count} band(s) ({have}) but the model expects {need}: "
        f"{list(model_bands)}. Pass --bands with {need} band indexes or descriptions."
    )


# -- results --------------------------------------------------------------------------------------


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


# -- helpers ----------------------------------------------------------------------------------------


def _model_digest(model: Any) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _blocks(start: int, stop: int, bs: int) -> Iterator[tuple[int, int, int]]:
    """(block index, first, stop) of grid-aligned blocks of ``bs`` intersecting ``[start, stop)``."""
    for b in range(start // bs, (stop - 1) // bs + 1):
        yield b, max(start, b * bs), min(stop, (b + 1) * bs)


def _stripes(c0: int, c1: int, width: int, bs: int) -> list[tuple[int, int]]:
    """Column stripes of ``width`` (a multiple of ``bs``) aligned to the output blocks, covering [c0, c1)."""
    return [(c0, c1)] if width >= c1 - c0 else column_stripes(c0, c1, width, bs)


def _plan_windows(
    runner: ModelRunner,
    meta: Any,
    extent: Window,
    *,
    overlap: float,
    n_out: int,
    memory_mb: float,
    blocksize: int,
    window: int | Sequence[int] | None,
    batch_size: int | None,
    io_threads: int,
) -> InferencePlan:
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
        overlap=overlap,
        bands=meta.norm.bands,
        n_out=n_out,
        act_bytes_per_px=bpp,
        out_stride=s,
        memory_mb=memory_mb,
        blocksize=blocksize,
        window=window,
        batch_size=batch_size,
        device_type=runner.dev.type,
        device_memory_mb=device_mb,
        io_threads=io_threads,
    )


def _probe_batch(reader: ImageReader, norm: Any, row: int, col: int, wh: int, ww: int) -> Any:
    """The first window of the job (at most 512 px square), normalized: the bf16 check's input."""
    import torch

    win = Window(row, col, min(wh, 512), min(ww, 512))
    block = reader.read(win)
    return torch.from_numpy(norm.apply(block.data, block.valid)[np.newaxis])


@dataclass(frozen=True)
class _StripePlan:
    """The work of one column stripe: its blocks, where a resumed run starts, and its batches of windows."""

    cs: int
    ce: int
    col_blocks: list[tuple[int, int, int]]
    row_blocks: list[tuple[int, int, int]]
    first_todo: int
    jcols: list[int]
    irows: list[int]
    chunks: list[list[tuple[int, int]]]


def _plan_stripe(
    cs: int,
    ce: int,
    bs: int,
    rows: tuple[int, int],
    row_offs: Sequence[int],
    col_offs: Sequence[int],
    window: tuple[int, int],
    batch_size: int,
    done: Callable[[str], bool],
) -> _StripePlan:
    """Plan stripe ``[cs, ce)``: its batches run through the stripe's windows in row-major order and may span
    window rows; they are cut from the stripe's first window row, so a resumed run feeds the model identical
    batches (and any executor gets the same ones)."""
    e_r0, e_r1 = rows
    wh, ww = window
    col_blocks = list(_blocks(cs, ce, bs))
    row_blocks = list(_blocks(e_r0, e_r1, bs))
    todo = [rb for rb in row_blocks if not all(done(f"{rb[0]}:{cb[0]}") for cb in col_blocks)]
    first_todo = todo[0][1] if todo else e_r1
    if not todo:
        return _StripePlan(cs, ce, col_blocks, row_blocks, first_todo, [], [], [])
    jcols = [j for j, c in enumerate(col_offs) if c < ce and c + ww > cs]
    irows = [i for i, r in enumerate(row_offs) if r + wh > first_todo]
    order = [(i, j) for i in range(len(row_offs)) for j in jcols]
    chunks = [order[k : k + batch_size] for k in range(0, len(order), batch_size)]
    chunks = [c for c in chunks if c[-1][0] >= irows[0]]
    return _StripePlan(cs, ce, col_blocks, row_blocks, first_todo, jcols, irows, chunks)


def _executor_provenance(executor: BlockExecutor | None) -> dict[str, Any]:
    """The executor's entries of the ``inference`` tag (output-neutral, not in the fingerprint); none for
    the local executor, so local outputs keep their metadata."""
    if is_local(executor):
        return {}
    client = getattr(executor, "client", None)
    workers = len(client.nthreads()) if client is not None else None
    return {"executor": getattr(executor, "name", type(executor).__name__), "executor_workers": workers}


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

    Args:
        model: a segmentation ``nn.Module`` mapping (B, bands, n, n) to (B, classes, n, n) logits (binary
            models: one logit channel).
        meta: its :class:`rasterlearn.models.ModelMetadata` (bands, normalization, class schema, chip size,
            task, threshold).
        raster: input raster (any GDAL format); outputs use its grid, CRS and transform. A multi-date model
            (see :mod:`rasterlearn.models_temporal`) takes one raster per date, in training order: they are
            read as one stack on the first date's grid (:mod:`rasterlearn.predict_inputs`).
        output: class map path (COG, uint8, or uint16 when a class code exceeds 254; nodata 255/65535).
        probabilities: optional probability raster path, one band per class (binary: the foreground
            probability only).
        overlap: fraction of the model's *chip size* that neighbouring windows share (0 <= overlap < 1):
            the seam zone keeps the context the model was trained with, whatever the window size.
        window: inference window side in pixels (or (rows, cols)), a multiple of the network's output
            stride (32 for smp encoders). Default: chosen from ``memory_mb`` -- the largest window that
            tiles the extent evenly within the budget, at least the chip size (see
            :func:`rasterlearn.predict_plan.plan_inference`). Recorded in the outputs' ``parameters`` tag
            and part of the resume fingerprint.
        blend: ``hann`` (default), ``center-crop`` or ``none``; probabilities (not logits) are blended.
        tta: test-time augmentations averaged with the identity (``hflip``, ``vflip``, ``rot90``,
            ``rot180``, ``rot270`` or ``flips``/``rotations``/``all``).
        batch_size: windows per model call (may span window rows); default: derived from ``memory_mb``
            (on CPU one large window per call).
        aoi: a vector file, shapely geometry (raster CRS) or bounds; pixels outside are nodata.
        threshold: binary models: foreground when probability >= threshold (default: the package's).
        prob_dtype: ``uint8`` (probability x 254, nodata 255) or ``float32`` (nodata NaN).
        bands: raster bands (1-based indexes or descriptions) feeding the model, overriding the matching
            of the model's band names.
        nodata: input nodata value to use when the raster declares none.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:1``, ``mps``.
        amp: mixed precision (autocast) on CUDA.
        precision: ``auto`` (fp16 autocast on CUDA with ``amp``, fp32 on CPU), ``fp32``, or ``bf16`` (CPU:
            used only when the CPU has native bf16 and a check on the first window agrees with fp32; else
            fp32 with a logged reason). See :mod:`rasterlearn.predict_runtime`.
        runtime: ``torch`` (default) or ``onnx``: the network exported to ONNX and run by ONNX Runtime on
            the CPU (needs ``rasterlearn[onnx]``; probabilities within 1e-4 of torch).
        threads: torch CPU threads (default: torch's choice).
        io_threads: reader threads, each with its own dataset handle.
        blocksize: output block size (COG tiles; flush and resume granularity).
        memory_mb: working-memory budget (MB on top of the imports) for the model's activations, the
            batches read ahead and the score accumulator: it sets the default window and batch size, and
            rasters too wide for it are processed in column stripes.
        cache_mb: GDAL block cache bound (MB) during the job, the COG conversion of the outputs included
            (16: a window row reads a few MB of tiles; more cache only holds blocks that are not read again).
        overwrite: replace existing outputs.
        resume: continue an interrupted run of the same job (same fingerprint) instead of starting afresh.
        commit_every_s: minimum seconds between progress commits (0: after every finished block row).
        model_id: identifies the model in provenance/fingerprint (default: a digest of its weights).
        allow_resolution_mismatch: predict although the pixel size is more than 25 % off the training
            ``gsd`` (else an :class:`InputError`); allow_dtype_mismatch: likewise for a raster whose dtype
            and values are far from the training data's (see :func:`rasterlearn.compat.check_imagery`).
        progress: called with the number of extent pixels finished: after every window row (their scores
            are final; the block rows holding them are committed as they fill), so small runs move early.
        nodata_policy: multi-date input: ``all-valid`` (nodata in any date is nodata) or ``any-valid``.
        source: what the outputs record about where the raster came from beyond its path, e.g. a STAC item's
            id and asset hrefs (:meth:`rasterlearn.io.stac.StacStack.provenance`); stored as tags of the
            outputs and part of the resume fingerprint.
        executor: where the windows are read and run through the model (see
            :mod:`rasterlearn.predict_chunks`): None or a
            :class:`~rasterlearn.engine.executor.LocalExecutor` run them in this process (reader threads,
            the model in this thread); a :class:`~rasterlearn.engine.executor.DaskExecutor` on its workers
            (the raster must be readable from them; the model is sent to each worker once and runs with
            ``threads`` torch threads, default 1). Blending, writing and the journal stay in this process,
            so the outputs are byte-identical and a job resumes on either executor; the executor is
            recorded in the ``inference`` tag, not in the fingerprint.

    Returns:
        A :class:`PredictResult` with paths, window counts and throughput.

    Raises:
        InputError: bad options, missing bands, rasters the model cannot read.
        ModelError: the model's output does not match its metadata.
        OutputError: an output exists and ``overwrite`` is False.
    """
    import torch

    from rasterlearn import __version__
    from rasterlearn.io.writer import BlockWriter

    t0 = time.perf_counter()
    rasters = as_raster_list(raster)
    raster = rasters[0]
    output = Path(output)
    prob_path = Path(probabilities) if probabilities is not None else None
    check_outputs([*rasters, aoi], [output, prob_path])
    if not 0.0 <= overlap < 1.0:
        raise InputError(f"overlap must be a fraction in [0, 1), got {overlap}")
    if blend not in ("hann", "center-crop", "none"):
        raise InputError(f"blend must be one of 'hann', 'center-crop', 'none'; got {blend!r}")
    if prob_dtype not in ("uint8", "float32"):
        raise InputError(f"prob_dtype must be 'uint8' or 'float32'; got {prob_dtype!r}")
    if batch_size is not None and batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    if blocksize % 16 or blocksize <= 0:
        raise InputError(f"blocksize must be a positive multiple of 16, got {blocksize}")
    if prob_path is not None and prob_path.resolve() == output.resolve():
        raise InputError("The probability raster and the class map must be different files")
    for p in (output, prob_path):
        if p is not None and p.exists() and not overwrite:
            raise OutputError(f"{p} exists; pass overwrite=True (CLI: --overwrite) or choose another name")
    tta_names = ("identity", *parse_tta(tta))
    schema = meta.class_schema
    norm = meta.norm
    task = meta.task
    if task not in ("multiclass", "binary"):
        raise ModelError(f"Unknown task {task!r} in the model package; expected 'multiclass' or 'binary'")
    n_out = 1 if task == "binary" else schema.num_classes
    if task == "binary" and schema.num_classes != 2:
        raise ModelError(
            f"A binary model needs a 2-class schema (background, foreground); got {schema.describe()}"
        )
    thr = float(meta.threshold if threshold is None else threshold)
    if not 0.0 <= thr <= 1.0:
        raise InputError(f"threshold must be within [0, 1], got {thr}")
    codes = np.asarray(schema.codes)
    map_dtype = "uint8" if codes.max() <= 254 else "uint16"
    map_nodata = 255 if map_dtype == "uint8" else 65535
    if map_nodata in codes:
        raise InputError(
            f"Class code {map_nodata} collides with the map's nodata value; renumber the classes"
        )

    if threads:
        torch.set_num_threads(int(threads))
    dev = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)
    cuda = dev.type == "cuda"
    runner_settings: dict[str, Any] = {
        "n_out": n_out,
        "task": task,
        "tta": tta_names,
        "device": str(dev),
        "precision": precision,
        "amp": amp,
        "runtime": runtime,
    }
    runner = ModelRunner(model, **runner_settings)
    runner_settings["channels_last"] = runner.channels_last
    model = runner.model

    reader: ImageReader
    if len(rasters) > 1 or model_timesteps_of(meta) > 1:
        reader, band_idx = open_stack_input(rasters, meta, bands, nodata_policy)
    else:
        with RasterReader(raster) as probe:
            band_idx = resolve_bands(probe, meta.bands, meta.band_indexes, bands)
        reader = RasterReader(raster, band_idx)
    grid = reader.grid
    if reader.count != norm.bands:
        reader.close()
        raise ModelError(
            f"The model's normalization covers {norm.bands} bands but {reader.count} are selected"
        )
    in_nodata = None
    if reader.nodata is None and not any(b.nodata is not None for b in reader.bands):
        in_nodata = nodata if nodata is not None else meta.input_nodata
        if in_nodata is not None:
            log.info(
                "%s declares no nodata; treating %s as nodata (%s)",
                raster,
                in_nodata,
                "--nodata" if nodata is not None else "model package input_nodata",
            )
    try:
        compat_notes = check_imagery(
            meta,
            reader,
            allow_resolution_mismatch=allow_resolution_mismatch,
            allow_dtype_mismatch=allow_dtype_mismatch,
        )
        if executor is not None:
            for r in rasters:  # workers read their own windows: one line when they cannot
                executor.check_readable(str(r))
    except InputError:
        reader.close()
        raise

    area = None if aoi is None else resolve_aoi(aoi, grid)
    extent, aoi_geom = (grid.window, None) if area is None else (area.window, area.geometry)
    report_total(progress, extent.height * extent.width)
    bs = blocksize
    iplan = _plan_windows(
        runner,
        meta,
        extent,
        overlap=overlap,
        n_out=n_out,
        memory_mb=memory_mb,
        blocksize=bs,
        window=window,
        batch_size=batch_size,
        io_threads=io_threads,
    )
    (wh, ww), (sh, sw_), ov_px = iplan.window, iplan.stride, iplan.overlap_px
    n = int(meta.chip_size)
    batch_size = iplan.batch_size
    plan = plan_tiles(grid, (wh, ww), (sh, sw_), edge="pad", extent=extent)
    row_offs, col_offs = plan.row_offsets, plan.col_offsets
    e_r0, e_c0, e_r1, e_c1 = extent.row_off, extent.col_off, extent.row_stop, extent.col_stop
    wrows = axis_weights(row_offs, wh, sh, e_r0, e_r1, blend)
    wcols = axis_weights(col_offs, ww, sw_, e_c0, e_c1, blend)
    col_index = {c: j for j, c in enumerate(col_offs)}
    row_index = {r: i for i, r in enumerate(row_offs)}
    stripes = _stripes(e_c0, e_c1, iplan.stripe_width, bs)
    log.info(
        "Windows %dx%d px (%s; chip %d, output stride %d), overlap %d px, batch %d, %d window(s), "
        "%d column stripe(s); planned working memory %.0f MB of memory_mb=%g",
        wh,
        ww,
        "--window" if iplan.window_source == "option" else "from the memory budget",
        n,
        iplan.output_stride,
        ov_px,
        batch_size,
        len(row_offs) * len(col_offs),
        len(stripes),
        iplan.estimated_mb,
        memory_mb,
    )
    if not (cuda or runner.requested != "bf16"):
        runner.choose_precision(_probe_batch(reader, norm, row_offs[0], col_offs[0], wh, ww))

    parameters = {
        "overlap": overlap,
        "overlap_px": ov_px,
        "chip_size": n,
        "window": [wh, ww],
        "stride": [sh, sw_],
        "blend": blend,
        "blend_note": "class probabilities (softmax/sigmoid) are blended, not logits",
        "tta": list(tta_names[1:]),
        "threshold": thr if task == "binary" else None,
        "bands": band_idx,
        "prob_dtype": prob_dtype if prob_path else None,
        "blocksize": bs,
        "aoi": None if aoi is None else (str(aoi) if isinstance(aoi, str | Path) else "geometry/extent"),
        "extent": extent.to_tuple(),
        "input_nodata": in_nodata,
        "precision": runner.precision,
        "runtime": runner.runtime,
        **({"accepted_mismatches": compat_notes} if compat_notes else {}),
    }
    # output-neutral settings: provenance only, not in the resume fingerprint
    inference = {
        "window_source": iplan.window_source,
        "output_stride": iplan.output_stride,
        "batch_size": batch_size,
        "memory_mb": memory_mb,
        "stripe_width": iplan.stripe_width,
        "device": str(dev),
        "channels_last": runner.channels_last,
        **({"conv_bn": runner.fuse_note} if runner.fuse_note else {}),
        **({"precision_note": runner.precision_note} if runner.precision_note else {}),
        **_executor_provenance(executor),
    }
    model_ident = model_id or f"sha256:{_model_digest(model)}"
    fp_src = {
        "raster": file_identity(raster),  # path, size, mtime (URL, size, ETag for HTTP inputs)
        "model": model_ident,
        "params": parameters,
        "prob": str(prob_path),
        "aoi_wkt": None if aoi_geom is None else aoi_geom.wkt,
        "version": __version__,
        **stack_provenance(rasters, reader, identity=True),
        **({"source": dict(source)} if source else {}),
    }
    fingerprint = journal.fingerprint(fp_src, length=64)  # the output-neutral settings are in `inference`
    tags = {
        "rasterlearn_version": __version__,
        "source": str(raster),
        "model": model_ident,
        "model_arch": f"{meta.arch}/{meta.encoder}",
        "task": task,
        "parameters": parameters,
        "inference": inference,
        "classes": schema.to_dict(),
        **stack_provenance(rasters, reader),
        **(dict(source) if source else {}),
    }
    map_writer = BlockWriter(
        output,
        grid,
        1,
        map_dtype,
        nodata=map_nodata,
        band_descriptions=["class"],
        tags={**tags, "product": "class map"},
        **class_map_style(schema),
        blocksize=bs,
        resume=resume,
        fingerprint=fingerprint + ":map",
        overwrite=True,
    )
    prob_writer = None
    if prob_path is not None:
        names = [f"p({schema.names[1]})"] if task == "binary" else [f"p({nm})" for nm in schema.names]
        scale = 1.0 / PROB_UINT8_MAX if prob_dtype == "uint8" else 1.0
        prob_writer = BlockWriter(
            prob_path,
            grid,
            n_out,
            prob_dtype,
            nodata=255 if prob_dtype == "uint8" else float("nan"),
            band_descriptions=names,
            tags={**tags, "product": "class probabilities", "probability_scale": scale},
            band_tags=[{"class_code": int(c)} for c in (codes[1:] if task == "binary" else codes)],
            scales=[scale] * n_out,
            offsets=[0.0] * n_out,
            blocksize=bs,
            resume=resume,
            fingerprint=fingerprint + ":prob",
            overwrite=True,
        )
    writers = [w for w in (map_writer, prob_writer) if w is not None]

    def done(key: str) -> bool:
        return all(w.is_done(key) for w in writers)

    def emit(scores: np.ndarray, valid: np.ndarray, win: Window, keys: list[str]) -> None:
        """Writer thread: scores (C, h, w) + validity -> class map / probability blocks."""
        if task == "binary":
            cls = np.where(binary_foreground(scores[0], thr), codes[1], codes[0]).astype(map_dtype)
        else:
            cls = codes[np.argmax(scores, axis=0)].astype(map_dtype)
        cls[~valid] = map_nodata
        map_writer.write(cls[np.newaxis], win)
        if prob_writer is not None:
            if prob_dtype == "uint8":
                pr = np.rint(np.clip(scores, 0.0, 1.0) * PROB_UINT8_MAX).astype("uint8")
                pr[:, ~valid] = 255
            else:
                pr = scores.astype("float32", copy=True)
                pr[:, ~valid] = np.nan
            prob_writer.write(pr, win)
        for w in writers:
            for k in keys:
                w.mark_done(k, commit_every_s=math.inf)
        now = time.monotonic()
        if now - last_commit[0] >= commit_every_s:
            for w in reversed(writers):
                w.commit()
            last_commit[0] = now

    last_commit = [time.monotonic()]
    counts = {"total": len(plan), "predicted": 0, "skipped": 0, "resumed": 0}
    pixels_done = 0
    stripe_plans = [
        _plan_stripe(cs, ce, bs, (e_r0, e_r1), row_offs, col_offs, (wh, ww), batch_size, done)
        for cs, ce in stripes
    ]
    items = [
        [Window(row_offs[a], col_offs[b], wh, ww) for a, b in chunk]
        for sp in stripe_plans
        for chunk in sp.chunks
    ]
    masking = ChunkMasking(norm, grid, in_nodata, aoi_geom)
    job = None
    if not is_local(executor):
        job = ChunkJob(
            fingerprint,
            ReaderSpec(tuple(str(r) for r in rasters), tuple(reader.band_indexes), nodata_policy),
            masking,
            model,
            runner_settings,
            runner.precision,
            threads,
            cache_mb,
        )
    results = chunk_results(
        items,
        reader=reader,
        runner=runner,
        masking=masking,
        io_threads=io_threads,
        executor=executor,
        job=job,
    )
    wpool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rasterlearn-write")
    pending_write: Future[None] | None = None
    ok = False
    try:
        for sp in stripe_plans:
            cs, ce, col_blocks, row_blocks = sp.cs, sp.ce, sp.col_blocks, sp.row_blocks
            sw = ce - cs
            for _rbi, r0b, r1b in row_blocks:
                if r1b <= sp.first_todo:  # committed by an earlier run
                    counts["resumed"] += len(col_blocks)
                    pixels_done += (r1b - r0b) * sw
                    if progress:
                        progress((r1b - r0b) * sw)
            if not sp.chunks:
                continue
            band_start = sp.first_todo
            reported_to = sp.first_todo  # progress runs per finished window row, not per written block row
            row_flushed = -1
            jcols, irows = sp.jcols, sp.irows
            acc = np.zeros((n_out, bs + wh, sw), dtype="float32")
            vband = np.zeros((bs + wh, sw), dtype=bool)
            for chunk in sp.chunks:
                allwins = [Window(row_offs[a], col_offs[b], wh, ww) for a, b in chunk]
                kept, valids, probs = next(results)
                need = max(w.row_stop for w in allwins) - band_start
                if need > acc.shape[1]:  # a batch spanning window rows reaches further down
                    grow = need - acc.shape[1]
                    acc = np.concatenate([acc, np.zeros((n_out, grow, sw), dtype="float32")], axis=1)
                    vband = np.concatenate([vband, np.zeros((grow, sw), dtype=bool)], axis=0)
                # validity band (assignment: deterministic per pixel)
                for win, valid in zip(allwins, valids, strict=True):
                    r0, r1 = max(win.row_off, band_start), win.row_stop
                    c0, c1 = max(win.col_off, cs), min(win.col_stop, ce)
                    if r1 > r0 and c1 > c0:
                        vband[r0 - band_start : r1 - band_start, c0 - cs : c1 - cs] = valid[
                            r0 - win.row_off : r1 - win.row_off, c0 - win.col_off : c1 - win.col_off
                        ]
                counts["skipped"] += len(allwins) - len(kept)
                if kept:
                    assert probs is not None
                    counts["predicted"] += len(kept)
                    for b, win in enumerate(kept):
                        j = col_index[win.col_off]
                        w2 = wrows[row_index[win.row_off]][:, None] * wcols[j][None, :]
                        r0, r1 = max(win.row_off, band_start), win.row_stop
                        c0, c1 = max(win.col_off, cs), min(win.col_stop, ce)
                        if r1 <= r0 or c1 <= c0:
                            continue
                        sr = slice(r0 - win.row_off, r1 - win.row_off)
                        sc = slice(c0 - win.col_off, c1 - win.col_off)
                        acc[:, r0 - band_start : r1 - band_start, c0 - cs : c1 - cs] += (
                            probs[b][:, sr, sc] * w2[sr, sc]
                        )
                    del probs
                # the last window row whose windows have all been run
                li, lj = chunk[-1]
                i = li if lj == jcols[-1] else li - 1
                if i < irows[0] or i <= row_flushed:
                    continue
                row_flushed = i
                # window row i finished: rows before the next window row are final
                final = min(row_offs[i + 1] if i + 1 < len(row_offs) else e_r1, e_r1)
                flush_to = band_start
                for rbi, r0b, r1b in row_blocks:
                    if r0b >= band_start and r1b <= final:
                        flush_to = r1b
                        if pending_write is not None:
                            pending_write.result()
                        k0, k1 = r0b - band_start, r1b - band_start
                        keys = [f"{rbi}:{cb[0]}" for cb in col_blocks]
                        pending_write = wpool.submit(
                            emit,
                            acc[:, k0:k1].copy(),
                            vband[k0:k1].copy(),
                            Window(r0b, cs, r1b - r0b, sw),
                            keys,
                        )
                        pixels_done += (r1b - r0b) * sw
                if progress and final > reported_to:  # after the finished blocks went to the writer:
                    progress((final - reported_to) * sw)  # a cancel here keeps them (resumable)
                    reported_to = final
                if flush_to > band_start:
                    shift = flush_to - band_start
                    keep = acc.shape[1] - shift
                    acc[:, :keep] = acc[:, shift:].copy()
                    acc[:, keep:] = 0.0
                    vband[:keep] = vband[shift:].copy()
                    vband[keep:] = False
                    band_start = flush_to
            if pending_write is not None:
                pending_write.result()
                pending_write = None
        if pending_write is not None:
            pending_write.result()
        ok = True
    finally:
        results.close()  # stops reading ahead / cancels the tasks still in flight on the workers
        wpool.shutdown(wait=True)
        reader.close()
        if not ok:
            for w in writers:
                w.abort(keep_partial=True)
    for w in writers:
        w.commit()
    for w in writers:
        w.close()
    seconds = time.perf_counter() - t0
    extent_px = extent.height * extent.width
    log.info(
        "Predicted %s: %d windows run, %d skipped (nodata/outside AOI), %d blocks resumed; %.0f px/s",
        output,
        counts["predicted"],
        counts["skipped"],
        counts["resumed"],
        extent_px / max(seconds, 1e-9),
    )
    return PredictResult(
        output,
        prob_path,
        counts["total"],
        counts["predicted"],
        counts["skipped"],
        counts["resumed"],
        extent_px,
        seconds,
        parameters,
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
