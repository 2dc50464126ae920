"""Window arithmetic, grids and tiling plans (property-based where it pays)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from affine import Affine
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rasterlearn.errors import CRSError, InputError
from rasterlearn.grid import Grid, Window, plan_tiles, tile_offsets

GRID = Grid(37, 53, Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 4_000_000.0), "EPSG:32633")

windows = st.builds(
    Window,
    st.integers(-50, 50),
    st.integers(-50, 50),
    st.integers(0, 60),
    st.integers(0, 60),
)


# -- Window ---------------------------------------------------------------------------------------


def test_window_basic_properties() -> None:
    w = Window(2, 3, 4, 5)
    assert (w.row_stop, w.col_stop, w.shape, w.size) == (6, 8, (4, 5), 20)
    assert w.slices() == (slice(2, 6), slice(3, 8))
    with pytest.raises(InputError):
        Window(0, 0, -1, 3)
    with pytest.raises(InputError):
        Window(0, 0, 1.5, 3)  # type: ignore[arg-type]


def test_window_is_immutable() -> None:
    w = Window(0, 0, 1, 1)
    with pytest.raises(AttributeError):
        w.row_off = 3  # type: ignore[misc]


@given(windows, windows)
def test_intersection_matches_pixel_sets(a: Window, b: Window) -> None:
    inter = a.intersection(b)
    canvas = np.zeros((300, 300), dtype=np.uint8)
    off = 100
    for w in (a, b):
        if not w.is_empty:
            canvas[w.row_off + off : w.row_stop + off, w.col_off + off : w.col_stop + off] += 1
    both = int((canvas == 2).sum())
    if inter is None:
        assert both == 0
    else:
        assert inter.size == both
        assert a.contains(inter) and b.contains(inter)
        assert inter == b.intersection(a)


@given(windows, windows)
def test_union_contains_both(a: Window, b: Window) -> None:
    u = a.union(b)
    assert u.contains(a) and u.contains(b)


@given(windows, st.integers(0, 10), st.integers(0, 10), st.integers(0, 10), st.integers(0, 10))
def test_pad_grows_each_side(w: Window, t: int, left: int, b: int, r: int) -> None:
    p = w.pad(t, left, b, r)
    assert (p.row_off, p.col_off) == (w.row_off - t, w.col_off - left)
    assert (p.row_stop, p.col_stop) == (w.row_stop + b, w.col_stop + r)
    assert p.pad(-t, -left, -b, -r) == w


@given(windows, st.integers(1, 80), st.integers(1, 80))
def test_clip_is_inside_array(w: Window, h: int, wd: int) -> None:
    c = w.clip(h, wd)
    assert c.row_off >= 0 and c.col_off >= 0 and c.row_stop <= h and c.col_stop <= wd
    inter = w.intersection(Window(0, 0, h, wd))
    assert (c if not c.is_empty else None) == inter


def test_relative_to_and_shift() -> None:
    w = Window(10, 20, 5, 5)
    origin = Window(8, 15, 30, 30)
    rel = w.relative_to(origin)
    assert rel == Window(2, 5, 5, 5)
    assert rel.shift(origin.row_off, origin.col_off) == w


def test_scale() -> None:
    assert Window(16, 32, 64, 48).scale(16) == Window(1, 2, 4, 3)
    with pytest.raises(InputError):
        Window(1, 0, 16, 16).scale(16)


# -- Grid -----------------------------------------------------------------------------------------


def test_grid_derived_values() -> None:
    assert GRID.res == (10.0, 10.0)
    assert GRID.bounds == (500_000.0, 4_000_000.0 - 370.0, 500_000.0 + 530.0, 4_000_000.0)
    assert GRID.epsg == 32633
    assert not GRID.is_geographic
    assert GRID.is_rectilinear


def test_grid_rejects_bad_input() -> None:
    with pytest.raises(InputError):
        Grid(0, 5, Affine.identity())
    with pytest.raises(CRSError):
        Grid(5, 5, Affine.identity(), "EPSG:99999999")
    with pytest.raises(InputError):
        Grid(5, 5, Affine(0, 0, 0, 0, 0, 0))


@given(windows.filter(lambda w: not w.is_empty))
def test_window_bounds_roundtrip(w: Window) -> None:
    b = GRID.window_bounds(w)
    assert GRID.window_for_bounds(b, snap="out") == w
    assert GRID.window_for_bounds(b, snap="in") == w
    assert GRID.window_for_bounds(b, snap="nearest") == w


def test_window_for_bounds_snapping() -> None:
    left, top = 500_000.0, 4_000_000.0
    b = (left + 5, top - 25, left + 25, top - 5)  # half pixels on each side
    assert GRID.window_for_bounds(b, "out") == Window(0, 0, 3, 3)
    assert GRID.window_for_bounds(b, "in") == Window(1, 1, 1, 1)
    with pytest.raises(InputError):
        GRID.window_for_bounds((1, 1, 0, 0))


def test_window_transform_and_subgrid() -> None:
    w = Window(3, 4, 10, 11)
    sub = GRID.subgrid(w)
    assert sub.transform == Affine(10.0, 0.0, 500_040.0, 0.0, -10.0, 3_999_970.0)
    assert sub.shape == (10, 11)
    assert GRID.is_aligned_with(sub)
    assert GRID.window_of(sub) == w
    off = Grid(10, 10, Affine(10.0, 0.0, 500_003.0, 0.0, -10.0, 4_000_000.0), "EPSG:32633")
    assert not GRID.is_aligned_with(off)
    other_crs = Grid(10, 10, GRID.transform, "EPSG:32634")
    assert not GRID.is_aligned_with(other_crs)


def test_xy_and_rowcol_are_inverse() -> None:
    x, y = GRID.xy(5, 7)
    assert (x, y) == (500_075.0, 3_999_945.0)
    r, c = GRID.rowcol(np.array([x]), np.array([y]))
    assert (int(r[0]), int(c[0])) == (5, 7)


def test_scaled_feature_grid() -> None:
    f = GRID.scaled(16)
    assert f.shape == (3, 4)  # ceil(37/16), ceil(53/16)
    assert f.res == (160.0, 160.0)
    assert f.transform.c == GRID.transform.c and f.transform.f == GRID.transform.f


def test_rotated_grid_bounds() -> None:
    g = Grid(10, 10, Affine.rotation(30) @ Affine.scale(1, -1), None)
    assert not g.is_rectilinear
    left, bottom, right, top = g.bounds
    assert right - left > 10 and top - bottom > 10  # envelope of a rotated square


def test_grid_dict_roundtrip_and_equality() -> None:
    assert Grid.from_dict(GRID.to_dict()) == GRID
    assert hash(Grid.from_dict(GRID.to_dict())) == hash(GRID)
    g = Grid.from_bounds((0, 0, 95, 45), 10, "EPSG:3857")
    assert g.shape == (5, 10)


# -- tiling ---------------------------------------------------------------------------------------


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.integers(1, 160), st.integers(1, 160), st.integers(1, 48), st.data(), st.sampled_from(["pad", "shift"])
)
def test_tiles_cover_every_pixel_and_align(h: int, w: int, size: int, data: st.DataObject, edge: str) -> None:
    stride = data.draw(st.integers(1, size))
    grid = Grid(h, w, Affine(1, 0, 0, 0, -1, 0))
    plan = plan_tiles(grid, size, stride, edge=edge)  # type: ignore[arg-type]
    cover = np.zeros((h, w), dtype=bool)
    for win in plan:
        assert win.shape == (size, size)
        assert win.row_off >= 0 and win.col_off >= 0
        if edge == "shift" and h >= size:
            assert win.row_stop <= h
        if edge == "pad":
            assert win.row_off % stride == 0 and win.col_off % stride == 0
        c = win.clip(h, w)
        cover[c.slices()] = True
    assert cover.all()
    n_pad = (1 + math.ceil(max(0, h - size) / stride)) * (1 + math.ceil(max(0, w - size) / stride))
    if edge == "pad":
        assert len(plan) == n_pad
    else:
        assert len(plan) <= n_pad
    assert len(plan.windows) == len(plan) == plan.shape[0] * plan.shape[1]


def test_small_raster_gets_one_padded_tile() -> None:
    grid = Grid(5, 7, Affine(1, 0, 0, 0, -1, 0))
    plan = plan_tiles(grid, 16, 8)
    assert plan.windows == [Window(0, 0, 16, 16)]
    assert plan_tiles(grid, 16, 8, edge="shift").windows == [Window(0, 0, 16, 16)]


def test_shift_edge_moves_last_tile_inward() -> None:
    assert tile_offsets(100, 32, 32, "pad") == [0, 32, 64, 96]
    assert tile_offsets(100, 32, 32, "shift") == [0, 32, 64, 68]
    assert tile_offsets(96, 32, 32, "shift") == [0, 32, 64]


def test_stride_larger_than_size_is_an_error() -> None:
    with pytest.raises(InputError, match="stride"):
        plan_tiles(GRID, 16, 32)
    with pytest.raises(InputError):
        plan_tiles(GRID, 0)
    with pytest.raises(InputError):
        plan_tiles(GRID, 16, edge="wrap")  # type: ignore[arg-type]


def test_plan_over_extent_window_and_bounds() -> None:
    ext = Window(10, 20, 12, 12)
    plan = plan_tiles(GRID, 8, 4, extent=ext)
    assert plan.row_offsets == [10, 14]
    assert plan.col_offsets == [20, 24]
    by_bounds = plan_tiles(GRID, 8, 4, extent=GRID.window_bounds(ext))
    assert by_bounds.windows == plan.windows
    with pytest.raises(InputError, match="does not overlap"):
        plan_tiles(GRID, 8, extent=Window(500, 500, 4, 4))


def test_rectangular_tiles() -> None:
    plan = plan_tiles(GRID, (16, 32), (8, 32))
    assert all(w.shape == (16, 32) for w in plan)
    assert plan.shape == (1 + math.ceil((37 - 16) / 8), 1 + math.ceil((53 - 32) / 32))
