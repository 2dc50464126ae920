"""Tests of rasterlearn.engine.accumulate: the one weighted accumulator of predict and embed."""

from __future__ import annotations

import numpy as np
import pytest

from rasterlearn.engine.accumulate import WeightedAccumulator
from rasterlearn.predict import axis_weights


def _tile(value: float, shape: tuple[int, int] = (4, 4), channels: int = 1) -> np.ndarray:
    return np.full((channels, *shape), value, dtype="float32")


def test_overlapping_weighted_tiles_give_the_weighted_mean():
    acc = WeightedAccumulator(1, 6, 4, merge="blend")
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 1, (1, 4, 4)).astype("float32")
    b = rng.uniform(0, 1, (1, 4, 4)).astype("float32")
    # two tiles overlapping in columns 2..3: weights 0.25/0.75 there, a partition of unity everywhere
    wa = np.ones((4, 4), dtype="float32")
    wa[:, 2:] = 0.25
    wb = np.ones((4, 4), dtype="float32")
    wb[:, :2] = 0.75
    valid = np.ones((4, 4), dtype=bool)
    acc.add(a, valid, 0, 0, weights=wa)
    acc.add(b, valid, 0, 2, weights=wb)
    out, ok = acc.take(4)
    assert out.shape == (1, 4, 6) and out.dtype == np.float32 and ok.all()
    np.testing.assert_allclose(out[0, :, :2], a[0, :, :2], rtol=1e-6)
    np.testing.assert_allclose(out[0, :, 2:4], 0.25 * a[0, :, 2:] + 0.75 * b[0, :, :2], rtol=1e-6)
    np.testing.assert_allclose(out[0, :, 4:], b[0, :, 2:], rtol=1e-6)


def test_blend_with_axis_weights_reproduces_a_constant():
    """Hann weights of a regular lattice form a partition of unity: a constant stays that constant."""
    size, stride, width = 8, 6, 20
    offs = list(range(0, width - size + stride, stride))
    w1 = axis_weights(offs, size, stride, 0, width)
    acc = WeightedAccumulator(2, width, width + size, merge="blend")
    valid = np.ones((size, size), dtype=bool)
    for i, r in enumerate(offs):
        for j, c in enumerate(offs):
            acc.add(_tile(0.3, (size, size), 2), valid, r, c, weights=(w1[i], w1[j]))
    out, ok = acc.take(width)
    np.testing.assert_allclose(out, 0.3, rtol=1e-6)
    assert ok.all()


def test_separable_weights_equal_their_outer_product_bitwise():
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 1, (3, 8, 8)).astype("float32")
    wr, wc = rng.uniform(0, 1, 8).astype("float32"), rng.uniform(0, 1, 8).astype("float32")
    a = WeightedAccumulator(3, 10, 6, merge="blend", base=2)
    b = WeightedAccumulator(3, 10, 6, merge="blend", base=2)
    a.add(x, None, 0, 5, weights=(wr, wc))  # cropped: rows above base, columns past the width
    b.add(x, None, 0, 5, weights=wr[:, None] * wc[None, :])
    assert a.take(6)[0].tobytes() == b.take(6)[0].tobytes()


def test_average_first_and_center_merges():
    valid = np.ones((4, 4), dtype=bool)
    results = {}
    for merge in ("average", "first", "center"):
        acc = WeightedAccumulator(1, 6, 4, merge=merge)
        acc.add(_tile(1.0), valid, 0, 0)
        acc.add(_tile(4.0), valid, 0, 2)
        results[merge] = acc.take(4)[0][0, 0]
    np.testing.assert_array_equal(results["average"], [1, 1, 2.5, 2.5, 4, 4])
    np.testing.assert_array_equal(results["first"], [1, 1, 1, 1, 4, 4])
    np.testing.assert_array_equal(results["center"], [1, 1, 4, 4, 4, 4])


def test_crop_at_the_grid_edge_and_a_crop_window():
    acc = WeightedAccumulator(1, 5, 3, merge="average", base=10, col0=100)
    x = np.arange(16, dtype="float32").reshape(1, 4, 4)
    valid = np.ones((4, 4), dtype=bool)
    # a pad tile reaching above the buffer (row 9) and past its right edge (columns 102..105)
    acc.add(x, valid, 9, 102)
    out, ok = acc.take(3)
    expected = np.full((3, 5), np.nan, dtype="float32")
    expected[:, 2:] = x[0, 1:4, 0:3]
    np.testing.assert_array_equal(out[0], expected)
    np.testing.assert_array_equal(ok, ~np.isnan(expected))
    # a crop keeps only the tile's centre; its position is still the tile's origin plus the crop's start
    acc = WeightedAccumulator(1, 4, 4, merge="center")
    acc.add(x, valid, 0, 0, crop=(slice(1, 3), slice(1, 3)))
    out, _ = acc.take(4)
    np.testing.assert_array_equal(out[0, 1:3, 1:3], x[0, 1:3, 1:3])
    assert np.isnan(out[0, 0]).all() and np.isnan(out[0, :, 3]).all()
    # a tile wholly outside the buffer changes nothing
    acc.add(x, valid, 0, 40)
    assert np.isnan(acc.take(4)[0]).all()


def test_take_shifts_rows_up():
    acc = WeightedAccumulator(1, 2, 4, merge="average", base=0)
    valid = np.ones((4, 2), dtype=bool)
    acc.add(np.arange(8, dtype="float32").reshape(1, 4, 2), valid, 0, 0)
    top, _ = acc.take(1)
    np.testing.assert_array_equal(top[0], [[0, 1]])
    assert acc.base == 1
    acc.add(_tile(10.0, (1, 2)), valid[:1], 4, 0)  # absolute row 4: the buffer's last row now
    out, ok = acc.take(4)
    np.testing.assert_array_equal(out[0], [[2, 3], [4, 5], [6, 7], [10, 10]])
    assert ok.all() and acc.base == 5
    # the rows shifted in are empty: nodata and invalid
    out, ok = acc.take(4)
    assert np.isnan(out).all() and not ok.any()


def test_peek_leaves_the_buffer_and_drop_shifts_it():
    acc = WeightedAccumulator(1, 2, 4, merge="blend", base=8)
    x = np.arange(8, dtype="float32").reshape(1, 4, 2)
    acc.add(x, np.ones((4, 2), dtype=bool), 8, 0, weights=np.ones((4, 2), dtype="float32"))
    block, ok = acc.peek(2, skip=1)  # rows 9 and 10
    np.testing.assert_array_equal(block[0], [[2, 3], [4, 5]])
    assert ok.all() and acc.base == 8
    block[:] = -1  # a copy: the buffer keeps its values
    acc.drop(3)
    assert acc.base == 11
    out, ok = acc.take(2)
    np.testing.assert_array_equal(out[0], [[6, 7], [0, 0]])
    np.testing.assert_array_equal(ok, [[True, True], [False, False]])


def test_validity_and_nodata():
    acc = WeightedAccumulator(1, 4, 2, merge="average", nodata=-9.0)
    v1 = np.array([[True, True, False, False]] * 2)
    v2 = np.array([[False, True, True, False]] * 2)
    acc.add(_tile(2.0, (2, 4)), v1, 0, 0)
    acc.add(_tile(4.0, (2, 4)), v2, 0, 0)
    out, ok = acc.take(2)
    # "or": valid where any tile is valid; the mean covers every tile's value (validity does not weight)
    np.testing.assert_array_equal(ok[0], [True, True, True, False])
    np.testing.assert_array_equal(out[0, 0], [3.0, 3.0, 3.0, -9.0])
    # "replace": the latest tile's mask; values may be merged without validity and validity without values
    acc = WeightedAccumulator(1, 4, 2, merge="blend", valid_merge="replace")
    acc.add(None, v1, 0, 0)
    acc.add(None, v2, 0, 0)
    acc.add(_tile(0.5, (2, 4)), None, 0, 0, weights=np.ones((2, 4), dtype="float32"))
    out, ok = acc.take(2)
    np.testing.assert_array_equal(ok, v2)
    np.testing.assert_array_equal(out, 0.5)  # blend returns Σw·x as summed, also where invalid


def test_reserve_grows_below_and_nbytes_counts_the_buffers():
    acc = WeightedAccumulator(2, 3, 2, merge="blend", base=5)
    assert acc.nbytes == 2 * 2 * 3 * 4 + 2 * 3  # no Σw in blend mode
    acc.add(_tile(1.0, (2, 3), 2), None, 5, 0, weights=np.ones((2, 3), dtype="float32"))
    acc.reserve(10)
    assert acc.cap == 5 and acc.sum.shape == (2, 5, 3)
    acc.add(_tile(2.0, (3, 3), 2), None, 7, 0, weights=np.ones((3, 3), dtype="float32"))
    out, _ = acc.take(5)
    np.testing.assert_array_equal(out[0, :, 0], [1, 1, 2, 2, 2])
    acc.reserve(4)  # already there: nothing changes
    assert acc.cap == 5
    assert WeightedAccumulator(2, 3, 2, merge="average").nbytes == 2 * 2 * 3 * 4 + 2 * 3 * 4 + 2 * 3


def test_blend_needs_weights_and_modes_are_checked():
    acc = WeightedAccumulator(1, 2, 2, merge="blend")
    with pytest.raises(ValueError, match="weights"):
        acc.add(_tile(1.0, (2, 2)), None, 0, 0)
    with pytest.raises(ValueError, match="merge"):
        WeightedAccumulator(1, 2, 2, merge="median")  # type: ignore[arg-type]
