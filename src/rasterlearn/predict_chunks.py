"""Where a prediction's windows are read and run through the model: in this process, or on dask workers.

:func:`rasterlearn.predict.predict_raster` cuts its windows into batches ("chunks") in a fixed order. Every
chunk goes through the same two steps, whichever executor runs it:

1. :func:`read_chunk`: read the windows, apply the validity policy (the reader's masks, the input nodata
   value, the AOI polygon), drop windows without a valid output pixel and normalize the rest into a batch;
2. :class:`rasterlearn.predict_runtime.ModelRunner`: the batch's class probabilities.

:func:`chunk_results` yields ``(kept windows, validity masks of every window, probabilities of the kept
windows)`` for each chunk, **in submission order**:

* **local** (no executor, or :class:`~rasterlearn.engine.executor.LocalExecutor`): reader threads (one
  handle each) run step 1 ahead of the model; step 2 runs in the calling thread -- the overlapped I/O of
  a single-process job.
* **dask** (:class:`~rasterlearn.engine.executor.DaskExecutor`): each worker runs both steps
  (:func:`_predict_chunk`) with its own reader and model, built once per worker thread
  (:func:`~rasterlearn.engine.executor.worker_cache`, keyed by the job's fingerprint) from a
  :class:`ChunkJob` broadcast once. Workers send back only what the client needs: the probabilities of
  the windows that were run, and the validity masks.

The client accumulates, blends, writes and commits the journal exactly as in a local run, so the outputs
are byte-identical, there is one writer, and a job interrupted on one executor resumes on the other.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rasterlearn.engine.executor import BlockExecutor, LocalExecutor, worker_cache
from rasterlearn.engine.readahead import ReaderPool
from rasterlearn.grid import Grid, Window
from rasterlearn.io.aoi import aoi_mask
from rasterlearn.io.raster import ImageReader, RasterReader, apply_assumed_nodata, gdal_cache
from rasterlearn.predict_plan import PREDICT_CACHE_MB

__all__ = ["ChunkJob", "ChunkMasking", "ReaderSpec", "chunk_results", "is_local", "read_chunk"]

ChunkResult = tuple[list[Window], list[np.ndarray], np.ndarray | None]
"""Kept windows, the output validity mask of every window of the chunk, probabilities of the kept ones."""


def is_local(executor: BlockExecutor | None) -> bool:
    """Whether ``executor`` runs blocks in this process (None is the local executor)."""
    return executor is None or isinstance(executor, LocalExecutor)


@dataclass(frozen=True)
class ChunkMasking:
    """What turns raw windows into a model batch: normalization and the validity policy."""

    norm: Any
    grid: Grid
    in_nodata: float | None = None
    aoi_geom: Any = None  # shapely geometry in the raster's CRS (pickled exactly, as WKB)


def read_chunk(
    reader: ImageReader, wins: Sequence[Window], masking: ChunkMasking, *, pin: bool = False
) -> tuple[list[Window], list[np.ndarray], Any]:
    """Read and normalize a chunk of windows: ``(kept windows, output validity of every window, batch)``.

    A window is kept when at least one of its output pixels is valid (read validity, the input nodata
    value, inside the AOI); the batch (a torch tensor, pinned for CUDA when ``pin``) holds the kept
    windows only, or is None when none is kept. The model sees real context outside the AOI; only the
    output is masked.
    """
    import torch

    kept, valids, arrays = [], [], []
    for win in wins:
        block = reader.read(win)
        valid = apply_assumed_nodata(block.valid, block.data, masking.in_nodata)
        out_valid = (
            valid if masking.aoi_geom is None else valid & aoi_mask(masking.aoi_geom, masking.grid, win)
        )
        valids.append(out_valid)
        if not out_valid.any():
            continue
        kept.append(win)
        arrays.append(masking.norm.apply(block.data, valid))
    batch = None
    if arrays:
        batch = torch.from_numpy(np.stack(arrays))
        if pin:
            batch = batch.pin_memory()
    return kept, valids, batch


@dataclass(frozen=True)
class ReaderSpec:
    """How a worker opens the job's input: one raster, or a multi-date stack, with the client's bands."""

    paths: tuple[str, ...]
    band_indexes: tuple[int, ...]
    nodata_policy: str = "all-valid"

    def open(self) -> ImageReader:
        if len(self.paths) == 1:
            return RasterReader(self.paths[0], list(self.band_indexes))
        from rasterlearn.io.stack import StackReader

        return StackReader(list(self.paths), list(self.band_indexes), nodata_policy=self.nodata_policy)  # type: ignore[arg-type]


@dataclass(frozen=True)
class ChunkJob:
    """What a worker needs to run chunks of one prediction job (sent to every worker once).

    ``runner`` holds the :class:`~rasterlearn.predict_runtime.ModelRunner` settings; ``precision`` is the
    precision the client settled (a worker does not repeat the bf16 check, so every worker runs alike);
    ``threads`` the torch threads of a worker process (default 1: one per worker thread).
    """

    key: str
    reader: ReaderSpec
    masking: ChunkMasking
    model: Any
    runner: dict[str, Any]
    precision: str
    threads: int | None = None
    cache_mb: int = PREDICT_CACHE_MB


def _worker_state(job: ChunkJob) -> tuple[ImageReader, Any]:
    """The worker's reader and model runner for ``job`` (made once per worker thread)."""

    def make() -> tuple[ImageReader, Any]:
        import copy

        import torch

        from rasterlearn.predict_runtime import ModelRunner

        torch.set_num_threads(int(job.threads or 1))
        # each worker thread gets its own copy: the broadcast object is shared by the worker's threads
        runner = ModelRunner(copy.deepcopy(job.model), **job.runner)
        runner.precision = job.precision
        return job.reader.open(), runner

    state: tuple[ImageReader, Any] = worker_cache(("predict", job.key), make)
    return state


def _predict_chunk(job: ChunkJob, wins: list[Window]) -> ChunkResult:
    """Kernel run on a worker: read, mask, normalize and predict one chunk (see the module docs)."""
    reader, runner = _worker_state(job)
    with gdal_cache(job.cache_mb):
        kept, valids, batch = read_chunk(reader, wins, job.masking, pin=runner.cuda)
    return kept, valids, (runner(batch) if kept else None)


def chunk_results(
    items: Sequence[list[Window]],
    *,
    reader: ImageReader,
    runner: Any,
    masking: ChunkMasking,
    io_threads: int,
    executor: BlockExecutor | None = None,
    job: ChunkJob | None = None,
) -> Generator[ChunkResult, None, None]:
    """Results of every chunk of ``items``, in order (see the module docs).

    Local: ``reader`` is reopened once per reader thread and ``runner`` predicts in the calling thread; at
    most ``max(2, io_threads)`` chunks are read ahead. Otherwise ``job`` goes to ``executor``'s workers.
    Close the generator to stop early: pending reads and tasks are cancelled.
    """
    if not is_local(executor):
        assert executor is not None and job is not None
        for _wins, result in executor.map(_predict_chunk, items, job):
            yield result
        return
    with ReaderPool(reader, io_threads) as pool:  # at most max(2, io_threads) batches read ahead
        batches = pool.read_ahead(
            lambda rd, wins: read_chunk(rd, wins, masking, pin=runner.cuda), items, max(2, io_threads) - 1
        )
        for kept, valids, batch in batches:
            yield kept, valids, (runner(batch) if kept else None)
