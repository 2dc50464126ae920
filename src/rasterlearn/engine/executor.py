"""Executors: where a stage's blocks are computed — in this process, or on a dask.distributed cluster.

A streaming stage plans its blocks, skips those its job journal has committed, and hands the rest to an
executor as ``kernel(shared, item)`` calls. The executor yields ``(item, result)`` **in submission
order**, so the single writer in the client process receives blocks exactly as the local loop would and
the output is byte-identical whichever executor ran it; resuming works across executors because the
journal lives with the output, not with the executor.

* :class:`LocalExecutor` calls the kernel in this process.
* :class:`DaskExecutor` submits each call to a dask.distributed cluster — an existing scheduler
  (``--scheduler tcp://host:8786``) or a ``LocalCluster`` started for the job (``--workers N``). ``shared``
  (a fitted estimator, a model spec) is broadcast to every worker once; at most ``max_in_flight`` blocks are
  submitted ahead of the writer, so client and worker memory stay flat for any raster size. Tasks are
  retried when a worker dies (``retries``); kernels are pure functions of their inputs, so a retried block is
  identical. Workers read their own windows: the raster must be reachable from them (shared storage or a
  URL) — :meth:`DaskExecutor.check_readable` says so in one line when it is not.

Kernels must be importable module-level functions (dask pickles them by reference).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol, TypeVar

from rasterlearn.errors import ConfigError, InputError

__all__ = ["BlockExecutor", "DaskExecutor", "LocalExecutor", "open_executor", "worker_cache"]

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


class BlockExecutor(Protocol):
    """Maps a kernel over block items; results come back in submission order."""

    name: str

    def map(
        self, kernel: Callable[[Any, T], R], items: Iterable[T], shared: Any = None
    ) -> Iterator[tuple[T, R]]:
        """Yield ``(item, kernel(shared, item))`` for every item, in the order of ``items``."""
        ...

    def check_readable(self, path: str) -> None:
        """Raise a one-line error when the executor's workers cannot open ``path``."""
        ...


class LocalExecutor:
    """Runs every block in this process, one after the other (the default)."""

    name = "local"

    def map(
        self, kernel: Callable[[Any, T], R], items: Iterable[T], shared: Any = None
    ) -> Iterator[tuple[T, R]]:
        for item in items:
            yield item, kernel(shared, item)

    def check_readable(self, path: str) -> None:
        return None


def _probe(path: str) -> str | None:
    """Runs on a worker: open ``path``; the reader's error message when it cannot (None when it can).

    The message travels back as text: exceptions that also derive from ``OSError`` do not survive
    dask's serialization with their message intact.
    """
    from rasterlearn.errors import RasterlearnError
    from rasterlearn.io.raster import RasterReader

    try:
        with RasterReader(path, south_up_ok=True):
            return None
    except (RasterlearnError, OSError) as exc:
        return str(exc)


class DaskExecutor:
    """Runs blocks on a dask.distributed cluster (see the module docs).

    Args:
        client: a connected ``distributed.Client``.
        max_in_flight: blocks submitted ahead of the writer (default: 2 per worker thread, at least 2).
        retries: how often a block is resubmitted after its worker died.
    """

    name = "dask"

    def __init__(self, client: Any, max_in_flight: int | None = None, retries: int = 2) -> None:
        self.client = client
        threads = sum(self.client.nthreads().values()) or 1
        self.max_in_flight = max(2, max_in_flight or 2 * threads)
        self.retries = retries

    def map(
        self, kernel: Callable[[Any, T], R], items: Iterable[T], shared: Any = None
    ) -> Iterator[tuple[T, R]]:
        shared_f = self.client.scatter(shared, broadcast=True, hash=False) if shared is not None else None
        pending: collections.deque[tuple[T, Any]] = collections.deque()
        it = iter(items)
        try:
            for item in it:
                pending.append(
                    (item, self.client.submit(kernel, shared_f, item, pure=False, retries=self.retries))
                )
                if len(pending) >= self.max_in_flight:
                    done_item, fut = pending.popleft()
                    yield done_item, fut.result()
            while pending:
                done_item, fut = pending.popleft()
                yield done_item, fut.result()
        finally:  # cancelled, failed or finished: nothing keeps running for this job
            if pending:
                self.client.cancel([f for _, f in pending])
            if shared_f is not None:
                self.client.cancel(shared_f)

    def check_readable(self, path: str) -> None:
        problem = self.client.submit(_probe, path, pure=False).result()
        if problem is not None:
            raise InputError(
                f"The dask workers cannot read {path}: {problem} Put the raster on storage every worker "
                f"mounts at the same path, or give a URL (https://, s3://, ...)"
            )


_CACHE: dict[tuple[Any, ...], Any] = {}
_CACHE_LOCK = threading.Lock()


def worker_cache(key: tuple[Any, ...], make: Callable[[], Any]) -> Any:
    """An object made once per process and thread (a reader handle, a loaded model) and then reused.

    Kernels call it so a worker opens the raster and loads the model once, not once per block; the thread
    is part of the key because GDAL handles and torch modules in eval must not be shared between threads.
    """
    full = (*key, threading.get_ident(), os.getpid())
    with _CACHE_LOCK:
        obj = _CACHE.get(full)
    if obj is None:
        obj = make()
        with _CACHE_LOCK:
            _CACHE[full] = obj
    return obj


@contextlib.contextmanager
def open_executor(
    scheduler: str | None = None, workers: int | None = None, *, threads_per_worker: int = 1
) -> Iterator[BlockExecutor]:
    """The executor a stage runs on: local, an existing scheduler (``scheduler``) or a new LocalCluster.

    Raises:
        ConfigError: both or an invalid count given, or the ``dask`` extra is not installed.
        InputError: the scheduler cannot be reached.
    """
    if scheduler is None and workers is None:
        yield LocalExecutor()
        return
    if scheduler is not None and workers is not None:
        raise ConfigError(f"Give --scheduler ({scheduler}) or --workers ({workers}), not both")
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:
        raise ConfigError(
            "--scheduler/--workers need dask.distributed: install the extra, e.g. "
            "'uv pip install \"rasterlearn[dask]\"'"
        ) from exc
    with contextlib.ExitStack() as stack:
        if scheduler is not None:
            try:
                client = stack.enter_context(Client(scheduler, timeout="10s"))
            except (OSError, TimeoutError) as exc:
                raise InputError(
                    f"Cannot reach the dask scheduler at {scheduler}: {exc}. Check the address "
                    f"(tcp://HOST:8786) and that 'dask scheduler' is running, or use --workers N for a "
                    f"cluster on this machine"
                ) from exc
            log.info("Running on the dask scheduler at %s (%d workers)", scheduler, len(client.nthreads()))
        else:
            import dask

            # dask's nannies start workers with MALLOC_TRIM_THRESHOLD_=65536, which pins glibc's mmap threshold
            # at 128 KiB: every activation tensor of a model is then mmapped and page-faulted afresh (a torch
            # U-Net ran 2x slower, measured); the workers we start keep glibc's dynamic threshold
            stack.enter_context(
                dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None})
            )
            cluster = stack.enter_context(
                LocalCluster(
                    n_workers=workers,
                    threads_per_worker=threads_per_worker,
                    processes=True,
                    dashboard_address=None,
                    silence_logs=logging.ERROR,
                )
            )
            client = stack.enter_context(Client(cluster))
            log.info("Started a local dask cluster: %d worker process(es)", workers)
        yield DaskExecutor(client)
