"""The reader pool: per-thread dataset handles on one raster and ordered read-ahead of the next blocks.

A GDAL dataset handle must not be shared between threads, so every reader thread reopens the raster once
(``reader.reopen()``: same bands, validity policy and reprojection) and keeps its handle for the job.
:meth:`ReaderPool.read_ahead` runs a read function over the job's items on those threads and yields the
results *in item order*, keeping ``ahead`` items read or being read while the caller computes on the
current one: the memory held is the current item plus ``ahead`` more, whatever the raster's size.

Used by the local executors of predict (:func:`rasterlearn.predict_chunks.chunk_results`: batches of
windows) and embed (:mod:`rasterlearn.embed_stream`: rows of tiles). Closing the pool (or leaving its
``with`` block, or closing a ``read_ahead`` generator early) cancels the reads not yet started, waits for
the running ones and closes every handle.
"""

from __future__ import annotations

import collections
import contextlib
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Generic, Protocol, TypeVar

__all__ = ["ReaderPool"]

T = TypeVar("T")
U = TypeVar("U")


class _Reopenable(Protocol):
    def reopen(self) -> Any: ...


R = TypeVar("R", bound=_Reopenable)


class ReaderPool(Generic[R]):
    """``threads`` reader threads over ``reader`` (a :class:`~rasterlearn.io.raster.RasterReader`, an
    ``ImageReader`` or a stack: anything with ``reopen()`` and ``close()``)."""

    def __init__(self, reader: R, threads: int, name: str = "rasterlearn-read") -> None:
        self._reader = reader
        self._local = threading.local()
        self._opened: list[Any] = []
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix=name)

    def thread_reader(self) -> R:
        """This thread's own handle on the raster (opened on first use, closed with the pool)."""
        rd = getattr(self._local, "reader", None)
        if rd is None:
            rd = self._local.reader = self._reader.reopen()
            with self._lock:
                self._opened.append(rd)
        return rd

    def submit(self, read: Callable[[R, T], U], item: T) -> Future[U]:
        """Read ``item`` on a reader thread with that thread's handle."""
        return self._pool.submit(lambda: read(self.thread_reader(), item))

    def read_ahead(self, read: Callable[[R, T], U], items: Iterable[T], ahead: int) -> Iterator[U]:
        """``read(handle, item)`` of every item, yielded in order; the next ``ahead`` items (at least one)
        are read while the caller works on the current one."""
        ahead = max(1, ahead)
        pending: collections.deque[Future[U]] = collections.deque()
        it = iter(items)
        try:
            while True:
                for item in it:
                    pending.append(self.submit(read, item))
                    if len(pending) > ahead:
                        break
                if not pending:
                    return
                yield pending.popleft().result()
        finally:
            for fut in pending:
                fut.cancel()

    def close(self) -> None:
        """Cancel reads not started, wait for the running ones, close every thread's handle."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            opened, self._opened = self._opened, []
        for rd in opened:
            with contextlib.suppress(Exception):
                rd.close()

    def __enter__(self) -> ReaderPool[R]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
