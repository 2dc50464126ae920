"""engine/readahead.ReaderPool: one handle per reader thread, results in item order, bounded read-ahead."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from rasterlearn.engine.readahead import ReaderPool
from rasterlearn.grid import Window
from rasterlearn.io.raster import RasterReader


class _Handle:
    """A stand-in reader: records the thread that reopened it and whether it was closed."""

    def __init__(self, log: list[_Handle] | None = None) -> None:
        self.thread = threading.get_ident()
        self.closed = False
        self.log = log if log is not None else []

    def reopen(self) -> _Handle:
        h = _Handle(self.log)
        self.log.append(h)
        return h

    def close(self) -> None:
        self.closed = True


def test_results_come_in_item_order_with_one_handle_per_thread() -> None:
    base = _Handle()
    seen: list[tuple[int, int]] = []

    def read(h: _Handle, i: int) -> int:
        assert h.thread == threading.get_ident()  # a thread only ever uses its own handle
        time.sleep(0.002 * ((7 * i) % 5))  # reads finish out of order
        seen.append((i, id(h)))
        return i * i

    with ReaderPool(base, threads=3) as pool:
        assert list(pool.read_ahead(read, range(20), ahead=4)) == [i * i for i in range(20)]
    assert 1 <= len(base.log) <= 3 and all(h.closed for h in base.log)
    assert len({hid for _, hid in seen}) == len(base.log)


def test_read_ahead_is_bounded() -> None:
    started: list[int] = []

    def read(h: _Handle, i: int) -> int:
        started.append(i)
        return i

    with ReaderPool(_Handle(), threads=4) as pool:
        it = pool.read_ahead(read, range(100), ahead=3)
        assert next(it) == 0
        time.sleep(0.05)
        assert max(started) <= 3  # the current item and three ahead, never the whole job
        assert next(it) == 1
        time.sleep(0.05)
        assert max(started) <= 4
        it.close()


def test_a_failed_read_raises_in_the_caller_and_closes_the_handles() -> None:
    base = _Handle()

    def read(h: _Handle, i: int) -> int:
        if i == 2:
            raise ValueError("bad block 2")
        return i

    with pytest.raises(ValueError, match="bad block 2"), ReaderPool(base, threads=2) as pool:
        list(pool.read_ahead(read, range(6), ahead=2))
    assert base.log and all(h.closed for h in base.log)


def test_reads_a_real_raster_like_a_single_reader(make_raster) -> None:
    data = np.arange(3 * 40 * 24, dtype="uint16").reshape(3, 40, 24)
    path = make_raster(data, nodata=0)
    wins = [Window(r, 0, 8, 24) for r in range(0, 40, 8)]
    with RasterReader(path) as reader, ReaderPool(reader, threads=2) as pool:
        blocks = list(pool.read_ahead(lambda rd, w: rd.read(w), wins, ahead=2))
        for w, b in zip(wins, blocks, strict=True):
            ref = reader.read(w)
            np.testing.assert_array_equal(b.data, ref.data)
            np.testing.assert_array_equal(b.valid, ref.valid)
    assert not blocks[0].valid[0, 0] and blocks[0].valid[0, 1]  # pixel value 0 is the declared nodata
