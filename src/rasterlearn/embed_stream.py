"""The streaming core of :func:`rasterlearn.embed.embed`: tiles in, finished feature strips out.

Memory depends on neither the height nor the width of the raster. Rows: only the feature rows touched by
the tile rows in flight are held (:class:`Accumulator`); finished strips of ``blocksize`` feature rows go to
the :class:`~rasterlearn.io.writer.BlockWriter` and are committed at once. Columns: a raster too wide for
the memory budget is processed in column stripes planned by :func:`rasterlearn.grid.plan_column_stripes`
(the same planner ``predict`` uses); tiles straddling a stripe seam are encoded for both stripes and each
stripe keeps only its own feature columns, so the result does not depend on the stripes.

Tiles without any valid pixel never reach the model. ``progress`` is called after every tile row of a
stripe (also when all its tiles were empty), so a cancellation raised from it, Ctrl-C or SIGTERM stop the
job within one tile row; the strips committed so far are the resumable state (keys ``strip:K`` or, with
several stripes, ``strip:K:COL``).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from rasterlearn.grid import Window

if TYPE_CHECKING:
    from rasterlearn.io.raster import RasterReader
    from rasterlearn.io.writer import BlockWriter
    from rasterlearn.normalize import Normalization

__all__ = ["Accumulator", "StreamJob", "StreamStats", "feature_bytes_per_column", "run_stripes"]

MergeMode = Literal["average", "first", "center"]


class Accumulator:
    """Feature rows in flight: sums, weights and validity for ``cap`` rows starting at ``base``."""

    def __init__(self, dim: int, width: int, cap: int, base: int, merge: MergeMode) -> None:
        self.dim, self.width, self.cap, self.base, self.merge = dim, width, cap, base, merge
        self.sum = np.zeros((dim, cap, width), dtype="float32")
        self.weight = np.zeros((cap, width), dtype="float32")
        self.valid = np.zeros((cap, width), dtype=bool)

    @property
    def nbytes(self) -> int:
        return int(self.sum.nbytes + self.weight.nbytes + self.valid.nbytes)

    def add(
        self, feats: np.ndarray, valid: np.ndarray, row: int, col: int, keep: tuple[slice, slice]
    ) -> None:
        """Add a tile's features (dim, n, n) whose top-left feature pixel is (row, col) in the buffer's
        columns (negative or past the width: the tile is cropped to the buffer)."""
        rs, cs = keep
        f = feats[:, rs, cs]
        v = valid[rs, cs]
        r0 = row + (rs.start or 0) - self.base
        c0 = col + (cs.start or 0)
        h, w = f.shape[1:]
        # crop to the buffer (pad tiles extend past the grid, seam tiles past the stripe) and to unflushed rows
        top = max(0, -r0)
        left = max(0, -c0)
        bottom = min(h, self.cap - r0)
        right = min(w, self.width - c0)
        if bottom <= top or right <= left:
            return
        f = f[:, top:bottom, left:right]
        v = v[top:bottom, left:right]
        sl = (slice(r0 + top, r0 + bottom), slice(c0 + left, c0 + right))
        if self.merge == "average":
            self.sum[:, sl[0], sl[1]] += f
            self.weight[sl] += 1.0
        elif self.merge == "first":
            empty = self.weight[sl] == 0
            self.sum[:, sl[0], sl[1]] = np.where(empty[None], f, self.sum[:, sl[0], sl[1]])
            self.weight[sl] = np.where(empty, 1.0, self.weight[sl])
        else:  # center: kept regions partition the grid
            self.sum[:, sl[0], sl[1]] = f
            self.weight[sl] = 1.0
        self.valid[sl] |= v

    def take(self, rows: int, nodata: float) -> np.ndarray:
        """Finished values of the first ``rows`` rows; the buffer then shifts up by ``rows``."""
        w = self.weight[:rows]
        ok = (w > 0) & self.valid[:rows]
        out = np.full((self.dim, rows, self.width), nodata, dtype="float32")
        np.divide(self.sum[:, :rows], w[None], out=out, where=ok[None])
        keep = self.cap - rows
        self.sum[:, :keep] = self.sum[:, rows:]
        self.sum[:, keep:] = 0
        self.weight[:keep] = self.weight[rows:]
        self.weight[keep:] = 0
        self.valid[:keep] = self.valid[rows:]
        self.valid[keep:] = False
        self.base += rows
        return out


def feature_bytes_per_column(
    dim: int, cap: int, blocksize: int, factor: float, size: int, bands: int, itemsize: int, depth: int
) -> float:
    """Bytes held per feature column: the accumulator (``cap`` rows of ``dim`` float32 sums, a weight and a
    validity flag), the finished strip handed to the writer (``blocksize`` rows) and ``depth`` prefetched
    tile rows of ``size`` raster rows (values and validity)."""
    return (dim * 4 + 4 + 1) * cap + dim * 4 * blocksize + depth * size * factor * bands * (itemsize + 1)


@dataclass
class StreamJob:
    """Everything the loop needs; built by :func:`rasterlearn.embed.embed`.

    ``row_offsets``/``col_offsets`` are the tile origins in raster pixels, ``feat_stride``/``feat_size`` the
    tile step and side in feature pixels, ``stripes`` the feature-column ranges of :func:`plan_column_stripes`.
    """

    reader: RasterReader
    encode: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
    norm: Normalization
    keep: Callable[[int, int], tuple[slice, slice]]
    writer: BlockWriter
    row_offsets: list[int]
    col_offsets: list[int]
    size: int
    feat_size: int
    feat_stride: int
    width: int
    height: int
    dim: int
    blocksize: int
    stripes: list[tuple[int, int]]
    merge: MergeMode
    min_valid_fraction: float
    batch_size: int
    workers: int
    pause_s: float = 0.0
    nodata: float = float("nan")

    def key(self, strip: int, col: int) -> str:
        """Resume key of feature strip ``strip`` in the stripe starting at feature column ``col``."""
        return f"strip:{strip}" if len(self.stripes) == 1 else f"strip:{strip}:{col}"

    @property
    def n_strips(self) -> int:
        return math.ceil(self.height / self.blocksize)


@dataclass
class StreamStats:
    """What the loop did: tiles skipped as empty (counted once, in their home stripe), tile encodings
    (seam tiles count once per stripe), model time, resumed strips and the largest buffer held."""

    tiles_skipped: int = 0
    tiles_encoded: int = 0
    model_seconds: float = 0.0
    strips_resumed: int = 0
    peak_buffer_bytes: int = 0


def run_stripes(job: StreamJob, progress: Callable[[int], None] | None = None) -> StreamStats:
    """Encode every stripe of ``job`` into its writer; ``progress`` receives tiles finished (each tile once)."""
    stats = StreamStats()
    local = threading.local()
    opened: list[RasterReader] = []
    lock = threading.Lock()

    def thread_reader() -> RasterReader:
        rd = getattr(local, "reader", None)
        if rd is None:
            rd = local.reader = job.reader.reopen()
            with lock:
                opened.append(rd)
        return rd

    pool = ThreadPoolExecutor(max_workers=max(1, job.workers), thread_name_prefix="embed-read")
    try:
        for cs, ce in job.stripes:
            _Stripe(job, cs, ce, pool, thread_reader, stats, progress).run()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        for rd in opened:
            rd.close()
    return stats


class _Stripe:
    """One column stripe ``[cs, ce)`` of the feature grid, top to bottom."""

    def __init__(
        self,
        job: StreamJob,
        cs: int,
        ce: int,
        pool: ThreadPoolExecutor,
        thread_reader: Callable[[], RasterReader],
        stats: StreamStats,
        progress: Callable[[int], None] | None,
    ) -> None:
        self.job, self.cs, self.ce, self.pool, self.stats, self.progress = job, cs, ce, pool, stats, progress
        self.thread_reader = thread_reader
        fs, fz = job.feat_stride, job.feat_size
        self.jcols = [j for j in range(len(job.col_offsets)) if j * fs < ce and j * fs + fz > cs]
        # each tile is counted (progress, skipped) in the stripe holding its first feature column
        self.home = {j for j in self.jcols if cs <= min(j * fs, job.width - 1) < ce}
        done = 0
        while done < job.n_strips and job.writer.is_done(job.key(done, cs)):
            done += 1
        stats.strips_resumed += done
        self.base = done * job.blocksize
        self.span = max(1, math.ceil(job.batch_size / max(1, len(self.jcols))))
        self.acc = Accumulator(job.dim, ce - cs, job.blocksize + fz + self.span * fs, self.base, job.merge)
        first = 0
        while first < len(job.row_offsets) and first * fs + fz <= self.base:
            first += 1
        self.first_row, self.rows_reported = first, 0
        c0 = job.col_offsets[self.jcols[0]] if self.jcols else 0
        c1 = job.col_offsets[self.jcols[-1]] + job.size if self.jcols else 0
        self.read_cols = (c0, c1 - c0)
        self.queue: list[tuple[int, int, np.ndarray, np.ndarray]] = []  # (tile row, tile col, data, valid)
        self.pending: dict[int, Future[tuple[np.ndarray, np.ndarray]]] = {}

    def _read_row(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        block = self.thread_reader().read(
            Window(self.job.row_offsets[i], self.read_cols[0], self.job.size, self.read_cols[1])
        )
        return block.data, block.valid

    def _schedule(self, upto: int) -> None:
        depth = max(1, self.job.workers) + 1
        for k in range(upto, min(len(self.job.row_offsets), upto + depth)):
            if k not in self.pending:
                self.pending[k] = self.pool.submit(self._read_row, k)

    def _write(self, k: int) -> None:
        job = self.job
        rows = min(job.blocksize, job.height - self.acc.base)
        data = self.acc.take(job.blocksize, job.nodata)[:, :rows]
        job.writer.write(data, Window(k * job.blocksize, self.cs, rows, self.ce - self.cs))
        job.writer.mark_done(job.key(k, self.cs), commit_every_s=0.0)

    def _flush(self, upto_row: int) -> None:
        """Write every finished strip whose rows all lie before feature row ``upto_row``."""
        job, acc = self.job, self.acc
        while acc.base < job.height and acc.base + job.blocksize <= upto_row:
            self._write(acc.base // job.blocksize)
        if upto_row >= job.height and acc.base < job.height:
            self._write(acc.base // job.blocksize)

    def _report(self, upto_row: int) -> None:
        """Tile rows before ``upto_row`` are fully merged: their home tiles are done."""
        while self.rows_reported < upto_row:
            self.rows_reported += 1
            if self.progress is not None:
                self.progress(len(self.home))

    def _encode_queue(self, count: int) -> None:
        """Encode the first ``count`` queued tiles as one batch and merge them into the accumulator."""
        job = self.job
        chunk = self.queue[:count]
        del self.queue[:count]
        # every tile not merged yet lies at or below this one: strips above it are final
        self._flush(chunk[0][0] * job.feat_stride)
        x = np.stack([job.norm.apply(t[2], t[3]) for t in chunk])
        vm = np.stack([t[3] for t in chunk]).astype("float32")
        t0 = time.perf_counter()
        feats, vfrac = job.encode(x, vm)
        self.stats.model_seconds += time.perf_counter() - t0
        self.stats.tiles_encoded += len(chunk)
        thr = max(job.min_valid_fraction, 1e-6)
        for (i, j, _, _), f, vf in zip(chunk, feats, vfrac, strict=True):
            self.acc.add(f, vf >= thr, i * job.feat_stride, j * job.feat_stride - self.cs, job.keep(i, j))
        self._report(self.queue[0][0] if self.queue else chunk[-1][0] + 1)
        if job.pause_s > 0:
            time.sleep(job.pause_s)

    def run(self) -> None:
        job = self.job
        nrows = len(job.row_offsets)
        self._report(self.first_row)  # rows committed by an earlier run
        if self.first_row < nrows:
            self._schedule(self.first_row)
        for i in range(self.first_row, nrows):
            data, valid = self.pending.pop(i).result()
            self._schedule(i + 1)
            held = (data.nbytes + valid.nbytes) * (max(1, job.workers) + 2)  # in hand + prefetched
            strip = job.dim * 4 * job.blocksize * (self.ce - self.cs)  # a finished strip on its way out
            self.stats.peak_buffer_bytes = max(self.stats.peak_buffer_bytes, self.acc.nbytes + strip + held)
            for j in self.jcols:
                c = job.col_offsets[j] - self.read_cols[0]
                v = valid[:, c : c + job.size]
                if not v.any():
                    self.stats.tiles_skipped += j in self.home
                    continue
                if self.queue and i - self.queue[0][0] > self.span:
                    self._encode_queue(len(self.queue))  # keep the rows in flight within the accumulator
                self.queue.append((i, j, data[:, :, c : c + job.size], v))
                if len(self.queue) >= job.batch_size:
                    self._encode_queue(job.batch_size)
            if not self.queue:
                self._report(i + 1)
        while self.queue:
            self._encode_queue(min(job.batch_size, len(self.queue)))
        self._report(nrows)
        self._flush(job.height)


def encoder(backbone: Any, lay: Any, dev: torch.device) -> Callable[[np.ndarray, np.ndarray], Any]:
    """``(tiles, validity) -> (features, valid fraction)`` for a backbone and feature layout."""
    import torch.nn.functional as F

    @torch.inference_mode()
    def encode(x: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        xt = torch.from_numpy(x).to(dev, non_blocking=True)
        if lay.input_size != lay.size:
            xt = F.interpolate(
                xt,
                size=(lay.input_size, lay.input_size),
                mode="bilinear",
                align_corners=False,
                antialias=lay.input_size < lay.size,
            )
        feats = backbone(xt).float()
        vt = torch.from_numpy(valid)[:, None]
        vfrac = F.adaptive_avg_pool2d(vt, (lay.feat_size, lay.feat_size))[:, 0]
        return feats.cpu().numpy(), vfrac.numpy()

    return encode
