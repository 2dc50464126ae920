"""``embed`` on an executor's workers (dask.distributed): the kernels and what a worker needs to run them.

The client plans and merges exactly as the local loop does (:mod:`rasterlearn.embed_stream`); only the
reads and the forward passes move to the workers:

1. **scan**: for every tile row, a worker reads the row (the same window the local loop reads) and says
   which tiles hold a valid pixel. The client then forms the very batches the local loop forms, so every
   tile goes through the network in the same company and the features are byte-identical.
2. **encode**: for every batch, a worker reads its tiles, normalizes and encodes them with
   :func:`rasterlearn.embed_stream.encode_tiles` (the local loop's own function) and returns the features.

Each worker opens the raster and builds the backbone once (:func:`rasterlearn.engine.executor.worker_cache`,
keyed by the session hash and the weights' digest): from the checkpoint path when the client built the
backbone from one (the checkpoint must be readable on the workers, like the raster), else from the
backbone itself, shipped once per worker. A worker whose rebuilt backbone has other weights than the
client's stops the job with a :class:`~rasterlearn.errors.ModelError`.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rasterlearn.embed_stream import Batch, StreamJob, encode_tiles, encoder
from rasterlearn.engine.executor import BlockExecutor, worker_cache
from rasterlearn.errors import InputError, ModelError, RasterlearnError
from rasterlearn.grid import Window
from rasterlearn.io.raster import RasterReader, gdal_cache

if TYPE_CHECKING:
    from rasterlearn.embed import Backbone, FeatureLayout
    from rasterlearn.normalize import Normalization

__all__ = ["ExecutorTiles", "ModelSpec", "ReadSpec", "encode_batch", "executor_tiles", "scan_row"]


@dataclass(frozen=True)
class ReadSpec:
    """What a worker needs to read tiles: the raster (a path the workers see), bands, tile origins.

    ``session`` (the job's hash, which covers the input's size and time) keys the worker's handle, so a
    rewritten raster is opened afresh."""

    session: str
    path: str
    bands: tuple[int, ...]
    size: int
    row_offsets: tuple[int, ...]
    col_offsets: tuple[int, ...]

    def reader(self) -> RasterReader:
        return worker_cache(
            ("embed-reader", self.session, self.path, self.bands), lambda: RasterReader(self.path, self.bands)
        )


@dataclass(frozen=True)
class ModelSpec:
    """What a worker needs to encode: how to rebuild the backbone, its digest, normalization and layout.

    ``build`` holds :func:`rasterlearn.embed.load_backbone`'s keywords (with the checkpoint path) when the
    client built the backbone from a checkpoint; otherwise ``backbone`` is the backbone itself.
    """

    read: ReadSpec
    session: str
    model: str
    digest: str
    norm: Normalization
    layout: FeatureLayout
    device: str
    build: dict[str, Any] | None = None
    backbone: Backbone | None = None

    def encode(self) -> Any:
        return worker_cache(("embed-encoder", self.session, self.digest, self.device), self._make_encoder)

    def _make_encoder(self) -> Any:
        from rasterlearn.embed.backbones import _pick_device, load_backbone
        from rasterlearn.weights import state_digest

        ckpt = (self.build or {}).get("checkpoint")
        if self.backbone is not None:
            bb = self.backbone
        else:
            if ckpt is not None and not Path(ckpt).exists():
                raise ModelError(
                    f"The dask workers cannot read the checkpoint {ckpt}. Put it on storage every worker "
                    f"mounts at the same path"
                )
            bb = load_backbone(self.model, pretrained=False, **(self.build or {}))
            got = state_digest(bb)
            if got != self.digest:
                raise ModelError(
                    f"The checkpoint {ckpt} gives other weights on the "
                    f"dask workers ({got}) than on the client ({self.digest}): the workers see another file "
                    f"at that path. Put the same checkpoint on storage every worker mounts"
                )
        dev = _pick_device(self.device)
        return encoder(bb.to(dev).eval(), self.layout, dev)


@contextlib.contextmanager
def _one_line_errors() -> Iterator[None]:
    """Our errors that also derive from ``OSError`` (a read failing on a worker) lose their message in dask's
    serialization: they travel as an :class:`InputError` with the same text."""
    try:
        yield
    except RasterlearnError as exc:
        if isinstance(exc, OSError):
            raise InputError(str(exc)) from None
        raise


def scan_row(spec: ReadSpec, item: tuple[int, int, int, tuple[int, ...]]) -> list[bool]:
    """Worker kernel: read tile row ``i`` over columns ``[c0, c0 + width)``; which tiles hold valid pixels."""
    i, c0, width, rel_cols = item
    with _one_line_errors(), gdal_cache(64):
        valid = spec.reader().read_valid(Window(spec.row_offsets[i], c0, spec.size, width))
    return [bool(valid[:, c : c + spec.size].any()) for c in rel_cols]


def encode_batch(spec: ModelSpec, batch: Batch) -> tuple[np.ndarray, np.ndarray, float]:
    """Worker kernel: read the batch's tiles, normalize and encode them (features, valid fraction, seconds)."""
    size = spec.read.size
    tiles = []
    with _one_line_errors():
        with gdal_cache(64):
            rd = spec.read.reader()
            for i, j, _ in batch.tiles:
                block = rd.read(Window(spec.read.row_offsets[i], spec.read.col_offsets[j], size, size))
                tiles.append((block.data, block.valid))
        return encode_tiles(spec.norm, spec.encode(), tiles)


class ExecutorTiles:
    """:class:`rasterlearn.embed_stream.RemoteTiles` on a :class:`~rasterlearn.engine.executor.BlockExecutor`."""

    def __init__(self, executor: BlockExecutor, spec: ModelSpec) -> None:
        self.executor, self.spec = executor, spec

    def scan(self, rows: Iterator[tuple[int, int, int, tuple[int, ...]]]) -> Iterator[list[bool]]:
        for _, found in self.executor.map(scan_row, rows, self.spec.read):
            yield found

    def encode(
        self, batches: Iterator[Batch]
    ) -> Iterator[tuple[Batch, tuple[np.ndarray, np.ndarray, float]]]:
        return self.executor.map(encode_batch, batches, self.spec)


def executor_tiles(
    executor: BlockExecutor,
    job: StreamJob,
    session: str,
    model: str,
    digest: str,
    layout: FeatureLayout,
    device: str,
    source: str,
    build: dict[str, Any] | None,
    backbone: Backbone,
) -> ExecutorTiles:
    """The workers' side of :func:`rasterlearn.embed.embed`'s ``job``: rebuilt from ``build`` when it names a
    checkpoint (``load_backbone`` keywords), else ``backbone`` itself (on the CPU) is shipped to them."""
    read = ReadSpec(
        session,
        source,
        tuple(job.reader.band_indexes),
        job.size,
        tuple(job.row_offsets),
        tuple(job.col_offsets),
    )
    by_path = build is not None and build.get("checkpoint") is not None
    spec = ModelSpec(
        read,
        session,
        model,
        digest,
        job.norm,
        layout,
        device,
        build=build if by_path else None,
        backbone=None if by_path else copy.deepcopy(backbone).cpu(),
    )
    return ExecutorTiles(executor, spec)
