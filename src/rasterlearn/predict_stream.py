"""Running a prediction: windows through the model, blended, written and committed block row by block row.

:func:`run_job` runs a :class:`rasterlearn.predict_job.PredictJob` stripe by stripe
(:func:`plan_stripe`: the stripe's output blocks, where a resumed run starts, its batches of windows). The
batches are read and run through the model by :func:`rasterlearn.predict_chunks.chunk_results` (reader
threads here, or an executor's workers); their probabilities are blended into a
:class:`~rasterlearn.engine.accumulate.WeightedAccumulator` (``blend`` mode: the window weights form a
partition of unity) holding only the rows the batches in flight touch. When a window row is finished, the
output block rows above the next window row are final: they are taken from the accumulator and handed to
:class:`_BlockSink`, a writer thread that decodes them into the class map and probabilities
(:class:`rasterlearn.predict_blend.Decoder`), marks their keys done and commits the journal.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from rasterlearn.engine.accumulate import WeightedAccumulator
from rasterlearn.grid import Window
from rasterlearn.predict_chunks import ChunkJob, ReaderSpec, chunk_results, is_local
from rasterlearn.predict_job import PredictJob

__all__ = ["StripePlan", "plan_stripe", "run_job"]


def _blocks(start: int, stop: int, bs: int) -> Iterator[tuple[int, int, int]]:
    """(block index, first, stop) of grid-aligned blocks of ``bs`` intersecting ``[start, stop)``."""
    for b in range(start // bs, (stop - 1) // bs + 1):
        yield b, max(start, b * bs), min(stop, (b + 1) * bs)


@dataclass(frozen=True)
class StripePlan:
    """The work of one column stripe: its blocks, where a resumed run starts, and its batches of windows."""

    cs: int
    ce: int
    col_blocks: list[tuple[int, int, int]]
    row_blocks: list[tuple[int, int, int]]
    first_todo: int
    jcols: list[int]
    irows: list[int]
    chunks: list[list[tuple[int, int]]]


def plan_stripe(
    cs: int,
    ce: int,
    bs: int,
    rows: tuple[int, int],
    row_offs: Sequence[int],
    col_offs: Sequence[int],
    window: tuple[int, int],
    batch_size: int,
    done: Callable[[str], bool],
) -> StripePlan:
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
        return StripePlan(cs, ce, col_blocks, row_blocks, first_todo, [], [], [])
    jcols = [j for j, c in enumerate(col_offs) if c < ce and c + ww > cs]
    irows = [i for i, r in enumerate(row_offs) if r + wh > first_todo]
    order = [(i, j) for i in range(len(row_offs)) for j in jcols]
    chunks = [order[k : k + batch_size] for k in range(0, len(order), batch_size)]
    chunks = [c for c in chunks if c[-1][0] >= irows[0]]
    return StripePlan(cs, ce, col_blocks, row_blocks, first_todo, jcols, irows, chunks)


class _BlockSink:
    """The writer thread: finished block rows -> class map / probability blocks, their keys marked done,
    the journal committed at most every ``commit_every_s`` seconds. One block row is written at a time."""

    def __init__(self, job: PredictJob) -> None:
        self.job = job
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rasterlearn-write")
        self.pending: Future[None] | None = None
        self.last_commit = time.monotonic()

    def wait(self) -> None:
        """Wait for the block row being written (its errors are raised here)."""
        if self.pending is not None:
            self.pending.result()
            self.pending = None

    def submit(self, scores: np.ndarray, valid: np.ndarray, win: Window, keys: list[str]) -> None:
        """Write a finished block row (after the previous one) in the writer thread."""
        self.wait()
        self.pending = self.pool.submit(self._emit, scores, valid, win, keys)

    def shutdown(self) -> None:
        self.pool.shutdown(wait=True)

    def _emit(self, scores: np.ndarray, valid: np.ndarray, win: Window, keys: list[str]) -> None:
        """Writer thread: scores (C, h, w) + validity -> class map / probability blocks."""
        job = self.job
        job.map_writer.write(job.decoder.class_map(scores, valid), win)
        if job.prob_writer is not None:
            job.prob_writer.write(job.decoder.probabilities(scores, valid), win)
        writers = job.writers
        for w in writers:
            for k in keys:
                w.mark_done(k, commit_every_s=math.inf)
        now = time.monotonic()
        if now - self.last_commit >= job.opts.commit_every_s:
            for w in reversed(writers):
                w.commit()
            self.last_commit = now


def run_job(job: PredictJob, progress: Callable[[int], None] | None = None) -> dict[str, int]:
    """Predict every stripe of ``job`` into its writers, then commit and close them (on failure the writers
    keep their partial state for a resume). Returns the window counts: ``total``, ``predicted``,
    ``skipped`` (no valid pixel) and ``resumed`` (blocks committed by an earlier run)."""
    writers = job.writers

    def done(key: str) -> bool:
        return all(w.is_done(key) for w in writers)

    plan, iplan, extent = job.plan, job.iplan, job.extent
    counts = {"total": len(plan), "predicted": 0, "skipped": 0, "resumed": 0}
    stripe_plans = [
        plan_stripe(
            cs,
            ce,
            job.opts.blocksize,
            (extent.row_off, extent.row_stop),
            plan.row_offsets,
            plan.col_offsets,
            iplan.window,
            iplan.batch_size,
            done,
        )
        for cs, ce in job.stripes
    ]
    results = _results(job, stripe_plans)
    sink = _BlockSink(job)
    ok = False
    try:
        for sp in stripe_plans:
            _run_stripe(job, sp, results, sink, counts, progress)
        sink.wait()
        ok = True
    finally:
        results.close()  # stops reading ahead / cancels the tasks still in flight on the workers
        sink.shutdown()
        job.reader.close()
        if not ok:
            for w in writers:
                w.abort(keep_partial=True)
    for w in writers:
        w.commit()
    for w in writers:
        w.close()
    return counts


def _results(job: PredictJob, stripe_plans: list[StripePlan]) -> Generator[Any, None, None]:
    """The chunk results of every stripe's batches, in order (:func:`rasterlearn.predict_chunks.chunk_results`:
    local reader threads, or the executor's workers from a :class:`~rasterlearn.predict_chunks.ChunkJob`)."""
    (wh, ww), opts = job.iplan.window, job.opts
    row_offs, col_offs = job.plan.row_offsets, job.plan.col_offsets
    items = [
        [Window(row_offs[a], col_offs[b], wh, ww) for a, b in chunk]
        for sp in stripe_plans
        for chunk in sp.chunks
    ]
    chunk_job = None
    if not is_local(opts.executor):
        chunk_job = ChunkJob(
            job.fingerprint,
            ReaderSpec(
                tuple(str(r) for r in job.rasters), tuple(job.reader.band_indexes), opts.nodata_policy
            ),
            job.masking,
            job.runner.model,
            job.runner_settings,
            job.runner.precision,
            opts.threads,
            opts.cache_mb,
        )
    return chunk_results(
        items,
        reader=job.reader,
        runner=job.runner,
        masking=job.masking,
        io_threads=opts.io_threads,
        executor=opts.executor,
        job=chunk_job,
    )


def _run_stripe(
    job: PredictJob,
    sp: StripePlan,
    results: Iterator[Any],
    sink: _BlockSink,
    counts: dict[str, int],
    progress: Callable[[int], None] | None,
) -> None:
    """Blend stripe ``sp``'s batches into an accumulator of the rows in flight and hand every block row to
    ``sink`` once the window rows covering it have all run; ``progress`` gets pixels per finished window
    row (block rows committed by an earlier run are reported first)."""
    cs, ce, col_blocks, row_blocks = sp.cs, sp.ce, sp.col_blocks, sp.row_blocks
    sw = ce - cs
    for _rbi, r0b, r1b in row_blocks:
        if r1b <= sp.first_todo:  # committed by an earlier run
            counts["resumed"] += len(col_blocks)
            if progress:
                progress((r1b - r0b) * sw)
    if not sp.chunks:
        return
    (wh, ww), bs = job.iplan.window, job.opts.blocksize
    row_offs, col_offs, e_r1 = job.plan.row_offsets, job.plan.col_offsets, job.extent.row_stop
    reported_to = sp.first_todo  # progress runs per finished window row, not per written block row
    row_flushed = -1
    acc = WeightedAccumulator(
        job.n_out, sw, bs + wh, merge="blend", base=sp.first_todo, col0=cs, valid_merge="replace"
    )
    for chunk in sp.chunks:
        allwins = [Window(row_offs[a], col_offs[b], wh, ww) for a, b in chunk]
        kept, valids, probs = next(results)
        acc.reserve(max(w.row_stop for w in allwins))  # a batch spanning window rows reaches further down
        for win, valid in zip(allwins, valids, strict=True):  # validity first: deterministic per pixel
            acc.add(None, valid, win.row_off, win.col_off)
        counts["skipped"] += len(allwins) - len(kept)
        if kept:
            assert probs is not None
            counts["predicted"] += len(kept)
            for b, win in enumerate(kept):
                acc.add(probs[b], None, win.row_off, win.col_off, weights=job.weights.of(win))
            del probs
        # the last window row whose windows have all been run
        li, lj = chunk[-1]
        i = li if lj == sp.jcols[-1] else li - 1
        if i < sp.irows[0] or i <= row_flushed:
            continue
        row_flushed = i
        # window row i finished: rows before the next window row are final
        final = min(row_offs[i + 1] if i + 1 < len(row_offs) else e_r1, e_r1)
        flush_to = acc.base
        for rbi, r0b, r1b in row_blocks:
            if r0b >= acc.base and r1b <= final:
                flush_to = r1b
                sink.wait()  # one block row in hand at a time
                keys = [f"{rbi}:{cb[0]}" for cb in col_blocks]
                sink.submit(*acc.peek(r1b - r0b, r0b - acc.base), Window(r0b, cs, r1b - r0b, sw), keys)
        if progress and final > reported_to:  # after the finished blocks went to the writer:
            progress((final - reported_to) * sw)  # a cancel here keeps them (resumable)
            reported_to = final
        acc.drop(flush_to - acc.base)
    sink.wait()
