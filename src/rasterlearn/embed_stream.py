"""The streaming core of :func:`rasterlearn.embed.embed`: tiles in, finished feature strips out.

Memory depends on neither the height nor the width of the raster. Rows: only the feature rows touched by
the tile rows in flight are held (:class:`rasterlearn.engine.accumulate.WeightedAccumulator`); finished strips of ``blocksize`` feature rows go to
the :class:`~rasterlearn.io.writer.BlockWriter` and are committed at once. Columns: a raster too wide for
the memory budget is processed in column stripes planned by :func:`rasterlearn.grid.plan_column_stripes`
(the same planner ``predict`` uses); tiles straddling a stripe seam are encoded for both stripes and each
stripe keeps only its own feature columns, so the result does not depend on the stripes.

Tiles without any valid pixel never reach the model. ``progress`` is called after every tile row of a
stripe (also when all its tiles were empty), so a cancellation raised from it, Ctrl-C or SIGTERM stop the
job within one tile row; the strips committed so far are the resumable state (keys ``strip:K`` or, with
several stripes, ``strip:K:COL``).

The batches are planned from which tiles hold valid pixels (:meth:`_Stripe._plan`) and encoded by one
function, :func:`encode_tiles`, whether the tiles come from this process's read-ahead pool or are read by an
executor's workers (:mod:`rasterlearn.embed_remote`): the same batches, merged in the same order, give the
same bytes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np
import torch

from rasterlearn.engine.accumulate import WeightedAccumulator
from rasterlearn.engine.readahead import ReaderPool
from rasterlearn.grid import Window

if TYPE_CHECKING:
    from rasterlearn.io.raster import RasterReader
    from rasterlearn.io.writer import BlockWriter
    from rasterlearn.normalize import Normalization

__all__ = [
    "Batch",
    "RemoteTiles",
    "StreamJob",
    "StreamStats",
    "encode_tiles",
    "feature_bytes_per_column",
    "run_stripes",
]

MergeMode = Literal["average", "first", "center"]


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


def run_stripes(
    job: StreamJob, progress: Callable[[int], None] | None = None, remote: RemoteTiles | None = None
) -> StreamStats:
    """Encode every stripe of ``job`` into its writer; ``progress`` receives tiles finished (each tile once).

    ``remote`` reads and encodes the tiles on an executor's workers (:mod:`rasterlearn.embed_remote`): the
    batches, the merge order, the writer and the journal are the same, so the output is too.
    """
    stats = StreamStats()
    if remote is not None:
        for cs, ce in job.stripes:
            _Stripe(job, cs, ce, stats, progress).run_remote(remote)
        return stats
    with ReaderPool(job.reader, job.workers, name="embed-read") as pool:
        for cs, ce in job.stripes:
            _Stripe(job, cs, ce, stats, progress).run_local(pool)
    return stats


def encode_tiles(
    norm: Normalization,
    encode: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]],
    tiles: Sequence[tuple[np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray, float]:
    """Normalize a batch of tiles ``(data, valid)`` and encode it: ``(features, valid fraction, seconds)``.

    The one kernel of both executors: the local loop passes tiles cut from its prefetched rows, a worker
    the tiles it read itself.
    """
    x = np.stack([norm.apply(data, valid) for data, valid in tiles])
    vm = np.stack([valid for _, valid in tiles]).astype("float32")
    t0 = time.perf_counter()
    feats, vfrac = encode(x, vm)
    return feats, vfrac, time.perf_counter() - t0


@dataclass
class Batch:
    """Tiles encoded in one forward pass, in the order the local loop forms them.

    ``tiles`` holds ``(tile row, tile col, (data, valid))`` locally and ``(tile row, tile col, None)`` for a
    worker (which reads the tiles itself). After merging, tile rows before ``report_to`` are done;
    ``report_before`` rows (empty rows folded in from before the batch) are reported before it is merged.
    """

    tiles: list[tuple[int, int, Any]]
    report_to: int
    report_before: int = 0


class RemoteTiles(Protocol):
    """Where :func:`run_stripes` sends tile rows to scan and batches to encode (an executor's workers)."""

    def scan(self, rows: Iterator[tuple[int, int, int, tuple[int, ...]]]) -> Iterator[list[bool]]:
        """For each ``(tile row, first col, width, tile cols)``: whether each tile holds a valid pixel."""
        ...

    def encode(
        self, batches: Iterator[Batch]
    ) -> Iterator[tuple[Batch, tuple[np.ndarray, np.ndarray, float]]]:
        """``(batch, (features, valid fraction, seconds))`` for every batch, in order."""
        ...


class _Stripe:
    """One column stripe ``[cs, ce)`` of the feature grid, top to bottom.

    :meth:`_plan` forms the batches from each tile row's non-empty tiles; :meth:`_merge` adds a batch's
    features to the accumulator, writes finished strips and reports progress. Locally the tile rows are read
    ahead by a thread pool and each batch is encoded as soon as it is formed; remotely a first pass on the
    workers says which tiles are empty, and the workers read and encode the batches.
    """

    def __init__(
        self,
        job: StreamJob,
        cs: int,
        ce: int,
        stats: StreamStats,
        progress: Callable[[int], None] | None,
    ) -> None:
        self.job, self.cs, self.ce, self.stats, self.progress = job, cs, ce, stats, progress
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
        self.acc = WeightedAccumulator(
            job.dim,
            ce - cs,
            job.blocksize + fz + self.span * fs,
            merge=job.merge,
            base=self.base,
            col0=cs,
            nodata=job.nodata,
        )
        first = 0
        while first < len(job.row_offsets) and first * fs + fz <= self.base:
            first += 1
        # batches never span two groups of tile rows and a resumed run starts at a group's first row: every
        # tile is encoded in the same batch as in an uninterrupted run (same numbers, byte-identical output)
        self.group = max(1, job.batch_size // max(1, len(self.jcols)))
        first -= first % self.group
        self.first_row, self.rows_reported = first, 0
        c0 = job.col_offsets[self.jcols[0]] if self.jcols else 0
        c1 = job.col_offsets[self.jcols[-1]] + job.size if self.jcols else 0
        self.read_cols = (c0, c1 - c0)
        self.rel_cols = tuple(job.col_offsets[j] - c0 for j in self.jcols)
        self.strip_bytes = job.dim * 4 * job.blocksize * (ce - cs)  # a finished strip on its way out

    def _write(self, k: int) -> None:
        job = self.job
        rows = min(job.blocksize, job.height - self.acc.base)
        data = self.acc.take(job.blocksize)[0][:, :rows]
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

    def _plan(self, rows: Iterator[tuple[int, list[Any]]]) -> Iterator[Batch]:
        """Batches of the non-empty tiles of ``rows`` (``(tile row, [tile or None per tile column])``).

        A batch is cut when it is full, and before a tile that lies more than ``span`` tile rows below the
        first queued one (the rows in flight must fit the accumulator). A row that leaves nothing queued
        yields an empty batch: its rows are done.
        """
        job = self.job
        queue: list[tuple[int, int, Any]] = []

        def take(count: int) -> Batch:
            chunk = queue[:count]
            del queue[:count]
            return Batch(chunk, queue[0][0] if queue else chunk[-1][0] + 1)

        for i, tiles in rows:
            for j, tile in zip(self.jcols, tiles, strict=True):
                if tile is None:
                    self.stats.tiles_skipped += j in self.home
                    continue
                if queue and (i - queue[0][0] > self.span or i // self.group != queue[0][0] // self.group):
                    yield take(len(queue))  # keep the rows in flight within the accumulator
                queue.append((i, j, tile))
                if len(queue) >= job.batch_size:
                    yield take(job.batch_size)
            if not queue:
                yield Batch([], i + 1)
        while queue:
            yield take(min(job.batch_size, len(queue)))

    def _merge(self, batch: Batch, feats: np.ndarray, vfrac: np.ndarray, seconds: float) -> None:
        """Merge an encoded batch; strips above it are final (every tile not merged yet lies at or below)."""
        job = self.job
        self._report(batch.report_before)
        self._flush(batch.tiles[0][0] * job.feat_stride)
        self.stats.model_seconds += seconds
        self.stats.tiles_encoded += len(batch.tiles)
        thr = max(job.min_valid_fraction, 1e-6)
        for (i, j, _), f, vf in zip(batch.tiles, feats, vfrac, strict=True):
            self.acc.add(f, vf >= thr, i * job.feat_stride, j * job.feat_stride, crop=job.keep(i, j))
        self._report(batch.report_to)
        if job.pause_s > 0:
            time.sleep(job.pause_s)

    def _finish(self) -> None:
        self._report(len(self.job.row_offsets))
        self._flush(self.job.height)

    def run_local(self, pool: ReaderPool[RasterReader]) -> None:
        job = self.job
        self._report(self.first_row)  # rows committed by an earlier run
        for batch in self._plan(self._read_rows(pool)):
            if batch.tiles:
                self._merge(batch, *encode_tiles(job.norm, job.encode, [t[2] for t in batch.tiles]))
            else:
                self._report(batch.report_to)
        self._finish()

    def _read_rows(self, pool: ReaderPool[RasterReader]) -> Iterator[tuple[int, list[Any]]]:
        """Tile rows read ahead by ``pool``, cut into tiles ``(data, valid)`` (``None``: no valid pixel)."""
        job = self.job
        depth = max(1, job.workers) + 1

        def read_row(reader: RasterReader, i: int) -> Any:
            block = reader.read(Window(job.row_offsets[i], self.read_cols[0], job.size, self.read_cols[1]))
            return block.data, block.valid

        rows = range(self.first_row, len(job.row_offsets))
        for i, (data, valid) in zip(rows, pool.read_ahead(read_row, rows, depth), strict=True):
            held = (data.nbytes + valid.nbytes) * (depth + 1)  # in hand + prefetched
            self._peak(held)
            tiles = []
            for c in self.rel_cols:
                v = valid[:, c : c + job.size]
                tiles.append((data[:, :, c : c + job.size], v) if v.any() else None)
            yield i, tiles

    def _peak(self, held: int) -> None:
        self.stats.peak_buffer_bytes = max(
            self.stats.peak_buffer_bytes, self.acc.nbytes + self.strip_bytes + held
        )

    def run_remote(self, remote: RemoteTiles) -> None:
        """Scan, plan and merge as :meth:`run_local` does, with the reads and forward passes on workers."""
        job = self.job
        self._report(self.first_row)
        self._peak(0)
        rows = range(self.first_row, len(job.row_offsets))
        scans = remote.scan((i, *self.read_cols, self.rel_cols) for i in rows)
        try:
            flags = (
                (i, [True if ok else None for ok in found]) for i, found in zip(rows, scans, strict=True)
            )
            for batch, result in remote.encode(_fold_empty(self._plan(flags))):
                self._merge(batch, *result)
        finally:  # a cancelled job leaves no scan running on the workers
            close = getattr(scans, "close", None)
            if close is not None:
                close()
        self._finish()


def _fold_empty(batches: Iterator[Batch]) -> Iterator[Batch]:
    """Batches with tiles only: the rows an empty batch reports are reported before the next batch (the
    final report of the stripe covers those at the end), so no worker round trip is spent on them."""
    before = 0
    for batch in batches:
        if batch.tiles:
            batch.report_before = before
            yield batch
        else:
            before = max(before, batch.report_to)


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
