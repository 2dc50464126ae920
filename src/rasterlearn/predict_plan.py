"""Planning of sliding-window inference: window size, batch size and column stripes from a memory budget.

A fully convolutional network does not need to predict with windows as small as its training chips:
larger windows mean fewer overlapping pixels to recompute *and* more context at every pixel. So the
inference window is decoupled from the chip size and chosen here, in one function,
:func:`plan_inference`, from

* the **memory budget** (``memory_mb``, the working memory of the job on top of the imports): the model's
  activations for one batch, the input batches read ahead, the probabilities, and the score accumulator;
* the model's **activation memory per pixel**, *measured* once per model by :func:`activation_bytes_per_px`
  (a forward pass over a small probe that records the peak of live tensor storage), times
  :data:`ACTIVATION_SAFETY` for the allocator's fragmentation and oneDNN's scratch buffers (calibrated
  against the RSS of U-Net/ResNet-18 forwards at 512² and 1024², channels-last), plus
  :data:`FORWARD_OVERHEAD_MB`;
* the network's **output stride** (:func:`output_stride`: 32 for smp encoders), of which every window side is
  a multiple;
* the extent: windows tile it *evenly* (the smallest number of windows per axis whose equal size fits the
  budget), so a 2000-px raster gets two 1056-px windows per axis rather than three 1024-px ones.

The overlap stays a fraction of the **chip size** (the context the model was trained with), and at least two
output strides, so larger windows keep the seam zone while the share of recomputed pixels falls.
"""

from __future__ import annotations

import contextlib
import logging
import math
import weakref
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from rasterlearn.errors import InputError

__all__ = [
    "ACTIVATION_SAFETY",
    "DEFAULT_MEMORY_MB",
    "PREDICT_CACHE_MB",
    "InferencePlan",
    "activation_bytes_per_px",
    "output_stride",
    "plan_inference",
]

log = logging.getLogger(__name__)

DEFAULT_MEMORY_MB = 560.0
"""Default working-memory budget of ``predict`` (MB above the imports; the imports of torch, smp and GDAL
take about 0.85 GB with a CUDA build of torch), sized for a peak RSS of about 1.5 GB."""
PREDICT_CACHE_MB = 16
"""Default GDAL block-cache bound of ``predict`` (MB): a window row reads a few MB of tiles, and a larger
cache only keeps blocks that are not read again (bench/predict_memory.py, U-Net, 6000² px: peak RSS 1559 MB
with 64 MB, 1491 MB with 16 MB; 2000² px: 1469 and 1486 MB)."""
ACTIVATION_SAFETY = 1.1
"""Measured peak of live tensors x this (+ :data:`FORWARD_OVERHEAD_MB`) = the memory planned for a forward
pass. Calibration (U-Net/ResNet-18, channels-last, CPU): the live peak is 382 B/px; the RSS growth of a
forward was 125 MB at 512² (planned 169) and 412 MB at 1024² (planned 484)."""
FORWARD_OVERHEAD_MB = 64.0
"""Fixed memory of one forward pass (oneDNN primitive caches, scratch pads) beyond its activations."""
CPU_BATCH_PIXELS = 512 * 512
"""On CPU a batch carries at most this many pixels (one window if larger): bigger batches bring no speed on
CPU (batch 1 of 512² windows was faster than batch 8) and cost memory."""
GPU_BATCH_PIXELS = 16 * 1024 * 1024
"""On a GPU a batch is filled up to this many pixels, within the device budget."""
MAX_BATCH = 64
MIN_OVERLAP_STRIDES = 2
"""A non-zero overlap is at least this many output strides (64 px for smp encoders): a window's edge
disturbs the deepest feature cell it touches, so the blended seam zone must span more than one cell on each
side. Measured with a trained U-Net (chip 128): 32 px of overlap matched the whole-image map on 99.886 % of
pixels, 64 px on 99.983 %."""

_ACT_CACHE: weakref.WeakKeyDictionary[Any, dict[tuple[Any, ...], float]] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class InferencePlan:
    """Where and how the windows of a prediction run; see :func:`plan_inference`.

    Attributes:
        window: window (rows, cols), multiples of ``output_stride``.
        overlap_px: pixels shared by neighbouring windows (from the overlap fraction of the chip size).
        stride: lattice step (rows, cols) = window - overlap.
        batch_size: windows per model call (a batch may span window rows).
        stripe_width: width of the column stripes the accumulator is processed in (the extent's width when
            no stripes are needed).
        output_stride: the network's output stride.
        act_bytes_per_px: planned activation memory per window pixel (measured x safety).
        estimated_mb: the planned peak working memory.
        memory_mb: the budget.
        window_source: ``"option"`` (set explicitly) or ``"budget"``.
    """

    window: tuple[int, int]
    overlap_px: int
    stride: tuple[int, int]
    batch_size: int
    stripe_width: int
    output_stride: int
    act_bytes_per_px: float
    estimated_mb: float
    memory_mb: float
    window_source: str

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["window"] = list(self.window)
        d["stride"] = list(self.stride)
        return d


def output_stride(model: Any, chip_size: int | None = None, default: int = 32) -> int:
    """The network's output stride: ``model.encoder.output_stride`` for smp models (32 for the usual
    5-stage encoders), else ``model.output_stride`` when present; for a network that declares none, the
    largest power of two (at most ``default``) dividing its training ``chip_size`` -- an input size known to
    work -- or ``default`` without a chip size.
    """
    for obj in (getattr(model, "encoder", None), model):
        value = getattr(obj, "output_stride", None) if obj is not None else None
        if isinstance(value, int) and value > 0:
            return value
    if chip_size:
        s = 1
        while s < default and chip_size % (2 * s) == 0:
            s *= 2
        return s
    return default


def activation_bytes_per_px(
    model: Any,
    bands: int,
    *,
    stride: int = 32,
    device: Any = "cpu",
    channels_last: bool = False,
    autocast: Any = None,
) -> float:
    """Measured peak activation memory of one forward pass, in bytes per input pixel (batch of one).

    Runs the model once on a zero probe of ``4 * stride`` pixels square (at least 64) under
    ``torch.inference_mode`` and records the peak of live tensor storage: on CUDA with the allocator's
    statistics, on CPU with a dispatch mode that counts every storage an operator returns until it is
    freed (views and in-place results count once). The result is cached per model and settings.
    """
    import torch

    dev = torch.device(device)
    key = (bands, stride, str(dev), channels_last, autocast is not None)
    with_cache = _ACT_CACHE.get(model)
    if with_cache is not None and key in with_cache:
        return with_cache[key]
    side = max(64, 4 * stride)
    x = torch.zeros((1, bands, side, side), device=dev)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    ctx = autocast if autocast is not None else _null()
    with torch.inference_mode():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
            torch.cuda.reset_peak_memory_stats(dev)
            base = torch.cuda.memory_allocated(dev)
            with ctx:
                y = model(x)
            del y
            peak = float(torch.cuda.max_memory_allocated(dev) - base)
        else:
            peak = _cpu_peak_live_bytes(model, x, ctx)
    value = peak / (side * side)
    with contextlib.suppress(TypeError):  # a model that cannot be weakly referenced is not cached
        _ACT_CACHE.setdefault(model, {})[key] = value
    log.debug("Measured %.0f bytes of activations per pixel (probe %d px)", value, side)
    return value


def _null() -> Any:
    return contextlib.nullcontext()


def _cpu_peak_live_bytes(model: Any, x: Any, ctx: Any) -> float:
    """Peak bytes of live tensor storage while ``model(x)`` runs (CPU), via a torch dispatch mode."""
    import torch

    try:
        from torch.utils._python_dispatch import TorchDispatchMode
    except ImportError:  # pragma: no cover - very old torch
        return 512.0 * x.shape[-1] * x.shape[-2]

    live: dict[int, list[int]] = {}
    state = {"cur": 0, "peak": 0}

    def drop(key: int) -> None:
        entry = live.get(key)
        if entry is None:
            return
        entry[0] -= 1
        if entry[0] == 0:
            del live[key]
            state["cur"] -= entry[1]

    class _Live(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, list | tuple) else (out,):
                if not isinstance(t, torch.Tensor):
                    continue
                try:
                    storage = t.untyped_storage()
                    key, nbytes = storage.data_ptr(), storage.nbytes()
                except (RuntimeError, NotImplementedError):
                    continue
                if key in live:
                    live[key][0] += 1
                else:
                    live[key] = [1, nbytes]
                    state["cur"] += nbytes
                    state["peak"] = max(state["peak"], state["cur"])
                weakref.finalize(t, drop, key)
            return out

    with _Live(), ctx:
        y = model(x)
    del y
    return float(state["peak"])


def _round_up(v: float, m: int) -> int:
    return int(math.ceil(v / m) * m)


def _even_side(length: int, overlap: int, floor: int, cap: int, s: int) -> int:
    """The smallest window side (multiple of ``s``, >= ``floor``) that tiles ``length`` with the fewest
    windows whose side is <= ``cap``; ``floor`` when even one window per ``floor`` pixels exceeds ``cap``."""
    if cap < floor:
        return floor
    for k in range(1, length + 1):
        side = max(floor, _round_up((length + (k - 1) * overlap) / k, s))
        if side <= cap:
            return side
        if side == floor:
            break
    return floor


def plan_inference(
    *,
    extent_shape: tuple[int, int],
    chip_size: int,
    overlap: float,
    bands: int,
    n_out: int,
    act_bytes_per_px: float,
    out_stride: int = 32,
    memory_mb: float = DEFAULT_MEMORY_MB,
    blocksize: int = 512,
    window: int | Sequence[int] | None = None,
    batch_size: int | None = None,
    device_type: str = "cpu",
    device_memory_mb: float | None = None,
    io_threads: int = 2,
) -> InferencePlan:
    """Choose the window, batch size and column stripes of a prediction (pure arithmetic, no I/O).

    Args:
        extent_shape: (rows, cols) of the extent to predict.
        chip_size: the model's training chip size; ``overlap`` is a fraction of it (0 <= overlap < 1),
            rounded to a multiple of ``out_stride`` once it reaches one, so that window origins stay on the
            network's pooling lattice (a stride-32 U-Net is then exactly translation-equivariant across
            windows), and, when not 0, at least :data:`MIN_OVERLAP_STRIDES` output strides (an explicit
            ``window`` caps that floor below its own side).
        bands, n_out: input bands and output channels.
        act_bytes_per_px: measured activation bytes per pixel (see :func:`activation_bytes_per_px`).
        out_stride: window sides are multiples of it.
        memory_mb: the job's working-memory budget (host RAM).
        blocksize: output block size; stripes are multiples of it.
        window: an explicit window side (or (rows, cols)); a multiple of ``out_stride`` larger than the
            overlap. ``None``: the largest evenly tiling window the budget allows (at least the chip size).
        batch_size: explicit windows per model call; ``None``: derived from the budget (CPU: up to
            :data:`CPU_BATCH_PIXELS`; GPU: up to :data:`GPU_BATCH_PIXELS` within ``device_memory_mb``).
        device_type: ``cpu``, ``cuda``, ``mps``. On a GPU the activations are budgeted against
            ``device_memory_mb`` (e.g. 60 % of the free device memory) instead of ``memory_mb``.
        io_threads: reader threads (input batches read ahead: ``max(2, io_threads)``).

    Raises:
        InputError: an explicit window that is not a multiple of the output stride or not larger than the
            overlap, or a non-positive budget.
    """
    if memory_mb <= 0:
        raise InputError(f"memory_mb must be positive, got {memory_mb}")
    if not 0.0 <= overlap < 1.0:
        raise InputError(f"overlap must be a fraction in [0, 1), got {overlap}")
    s = max(1, int(out_stride))
    rows, cols = (max(1, int(v)) for v in extent_shape)
    ov = _overlap_px(chip_size, overlap, s, window)
    gpu = device_type not in ("cpu",)
    mem = _Memory.of(
        memory_mb * 2**20,
        act_bytes_per_px * ACTIVATION_SAFETY,
        bands=bands,
        n_out=n_out,
        io_threads=io_threads,
        gpu=gpu,
        device_memory_mb=device_memory_mb,
        overlap_px=ov,
        blocksize=blocksize,
    )
    floor = _round_up(max(chip_size, ov + s), s)
    if window is not None:
        source = "option"
        window_t = _explicit_window(window, s, ov, overlap, chip_size)
    else:
        source = "budget"
        window_t = _budget_window(rows, cols, ov, floor, s, mem)
    batch = _batch_size(batch_size, window_t, (rows, cols), ov, gpu, mem)
    px = window_t[0] * window_t[1]
    fwd = mem.fixed + batch * px * mem.fwd_px
    stripe = _stripe_width(window_t, cols, batch, fwd, mem)
    est = fwd + mem.acc_bytes(window_t, stripe, batch)
    if est > mem.budget:
        log.warning(
            "The plan needs about %.0f MB, more than memory_mb=%g (window %dx%d, batch %d); raise --memory-mb "
            "or choose a smaller --window",
            est / 2**20,
            memory_mb,
            window_t[0],
            window_t[1],
            batch,
        )
    return InferencePlan(
        window=window_t,
        overlap_px=ov,
        stride=(window_t[0] - ov, window_t[1] - ov),
        batch_size=batch,
        stripe_width=stripe,
        output_stride=s,
        act_bytes_per_px=mem.act_px,
        estimated_mb=est / 2**20,
        memory_mb=memory_mb,
        window_source=source,
    )


def _overlap_px(chip_size: int, overlap: float, s: int, window: int | Sequence[int] | None) -> int:
    """The overlap in pixels: ``overlap`` x ``chip_size``, on the network's pooling lattice (a multiple of
    the output stride ``s`` once it reaches one) and, when not 0, at least :data:`MIN_OVERLAP_STRIDES`
    strides (capped below an explicit ``window``'s side)."""
    ov = min(chip_size - 1, round(overlap * chip_size)) if chip_size > 1 else 0
    if ov >= s:  # keep every window origin on the network's pooling lattice (offsets multiples of s)
        ov = max(s, round(ov / s) * s)
    if overlap > 0:  # the seam zone holds at least MIN_OVERLAP_STRIDES cells of the deepest feature map
        least = MIN_OVERLAP_STRIDES * s
        if window is not None:  # an explicit window keeps room for its stride
            sides = (int(window),) if isinstance(window, int) else tuple(int(v) for v in window)
            least = min(least, max(ov, (min(sides) - 1) // s * s))
        ov = max(ov, least)
    return int(ov)


@dataclass(frozen=True)
class _Memory:
    """The memory model of a plan (bytes): ``budget`` for the job; per window pixel ``act_px`` of
    activations and ``fwd_px`` for a forward pass (the activations on CPU, the batches read ahead and the
    probabilities); ``fixed`` bytes per forward pass; ``dev_budget`` on a GPU. The accumulator's share is
    :meth:`acc_bytes`."""

    budget: float
    act_px: float
    fwd_px: float
    fixed: float
    dev_budget: float | None
    n_out: int
    overlap_px: int
    blocksize: int

    @classmethod
    def of(
        cls,
        budget: float,
        act_px: float,
        *,
        bands: int,
        n_out: int,
        io_threads: int,
        gpu: bool,
        device_memory_mb: float | None,
        overlap_px: int,
        blocksize: int,
    ) -> _Memory:
        ahead = max(2, io_threads) + 1
        host_px = bands * 4 * ahead + n_out * 4 * 2  # input batches read ahead + probabilities (+ numpy copy)
        fwd_px = host_px + (0.0 if gpu else act_px)
        fixed = 0.0 if gpu else FORWARD_OVERHEAD_MB * 2**20
        dev_budget = None if not gpu or device_memory_mb is None else device_memory_mb * 2**20
        return cls(budget, act_px, fwd_px, fixed, dev_budget, n_out, overlap_px, blocksize)

    def acc_bytes(self, win: tuple[int, int], width: int, batch: int) -> float:
        """The score accumulator of ``width`` columns for windows ``win`` in batches of ``batch``."""
        ov, blocksize = self.overlap_px, self.blocksize
        per_row = max(1, math.ceil(width / max(1, win[1] - ov)))
        h = blocksize + win[0] + (win[0] - ov) * math.ceil((batch - 1) / per_row)
        return (
            (self.n_out * 4 + 1) * width * (h + 2 * blocksize)
        )  # accumulator + validity + 2 block-row copies


def _explicit_window(
    window: int | Sequence[int], s: int, ov: int, overlap: float, chip_size: int
) -> tuple[int, int]:
    """A ``window`` option as (rows, cols), checked: multiples of the output stride, larger than the overlap."""
    win = (int(window), int(window)) if isinstance(window, int) else tuple(int(v) for v in window)
    if len(win) != 2:
        raise InputError(f"window must be one side or (rows, cols), got {window!r}")
    for side in win:
        if side <= 0 or side % s:
            raise InputError(
                f"window {side} is not a positive multiple of the network's output stride {s}; use "
                f"{_round_up(max(side, s), s)}"
            )
        if side <= ov:
            raise InputError(
                f"window {side} must be larger than the overlap ({ov} px = {overlap} x chip {chip_size}); "
                f"use --window {_round_up(ov + s, s)} or more, or a smaller --overlap"
            )
    return (win[0], win[1])


def _batch_size(
    batch_size: int | None, window: tuple[int, int], extent: tuple[int, int], ov: int, gpu: bool, mem: _Memory
) -> int:
    """Windows per model call: ``batch_size``, or up to the CPU/GPU batch pixels within the budget (and the
    device budget), at most the number of windows."""
    px = window[0] * window[1]
    rows, cols = extent
    if batch_size is not None:
        if batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size}")
        return int(batch_size)
    target = GPU_BATCH_PIXELS if gpu else CPU_BATCH_PIXELS
    batch = max(1, min(MAX_BATCH, target // px))
    room = mem.budget - mem.fixed - mem.acc_bytes(window, min(cols, mem.blocksize), 1)
    batch = max(1, min(batch, int(room // (px * mem.fwd_px)) if room > 0 else 1))
    if mem.dev_budget is not None:
        batch = max(1, min(batch, int(mem.dev_budget // (px * mem.act_px))))
    n_windows = math.ceil(max(1, rows - ov) / (window[0] - ov)) * math.ceil(
        max(1, cols - ov) / (window[1] - ov)
    )
    return min(batch, max(1, n_windows))


def _stripe_width(window: tuple[int, int], cols: int, batch: int, fwd: float, mem: _Memory) -> int:
    """The width of the column stripes: the extent's when the whole-width accumulator fits beside the forward
    pass, else the widest multiple of the block size that fits (at least one block)."""
    if mem.acc_bytes(window, cols, batch) + fwd <= mem.budget:
        return cols
    room = max(0.0, mem.budget - fwd)
    per_col = mem.acc_bytes(window, mem.blocksize, batch) / mem.blocksize
    stripe = max(mem.blocksize, int(room // per_col) // mem.blocksize * mem.blocksize)
    return min(stripe, cols)


def _budget_window(rows: int, cols: int, ov: int, floor: int, s: int, mem: _Memory) -> tuple[int, int]:
    """The largest evenly tiling window whose forward pass (and, preferably, whole-width accumulator)
    fits the budget: first without column stripes, else with the forward pass in 2/3 of the budget."""
    budget, fixed, fwd_px, act_px, dev_budget = mem.budget, mem.fixed, mem.fwd_px, mem.act_px, mem.dev_budget

    def shaped(max_px: float) -> tuple[int, int]:
        cap = max(floor, int(math.sqrt(max(max_px, 0.0))) // s * s)
        short, long_ = (rows, cols) if rows <= cols else (cols, rows)
        a = _even_side(short, ov, floor, cap, s)
        b = _even_side(long_, ov, floor, max(floor, int(max_px // a) // s * s), s)
        return (a, b) if rows <= cols else (b, a)

    def fits_device(win: tuple[int, int]) -> bool:
        return dev_budget is None or win[0] * win[1] * act_px <= dev_budget

    # the forward pass alone bounds the window; shrink until the whole-width accumulator fits beside it
    max_px = (budget - fixed) / fwd_px
    if dev_budget is not None:
        max_px = min(max_px, dev_budget / act_px)
    for _ in range(64):
        win = shaped(max_px)
        if win == (floor, floor) or not fits_device(win):
            break
        if fixed + win[0] * win[1] * fwd_px + mem.acc_bytes(win, cols, 1) <= budget:
            return win
        max_px = win[0] * win[1] * 0.85
    # column stripes are needed: the forward pass gets two thirds of the budget
    max_px = (budget * 2 / 3 - fixed) / fwd_px
    if dev_budget is not None:
        max_px = min(max_px, dev_budget / act_px)
    return shaped(max_px)
