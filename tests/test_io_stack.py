"""Multi-date stacks: T rasters read as one T x C band stack (io/stack.py)."""

from __future__ import annotations

import numpy as np
import pytest
from affine import Affine

from rasterlearn.errors import InputError
from rasterlearn.grid import Window, plan_tiles
from rasterlearn.io.raster import RasterReader, band_statistics
from rasterlearn.io.stack import StackReader, date_band_name, open_image, split_date_band

T0 = Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 4_000_000.0)


def date_image(height: int, width: int, date: int, row0: int = 0, col0: int = 0) -> np.ndarray:
    """3 bands encoding (row, col, date + 1) of the reference grid; float32."""
    rows, cols = np.mgrid[row0 : row0 + height, col0 : col0 + width]
    return np.stack([rows, cols, np.full_like(rows, date + 1)]).astype("float32")


@pytest.fixture
def two_dates(make_raster):
    a = make_raster(date_image(37, 53, 0), name="a.tif", nodata=-1, descriptions=["r", "c", "d"])
    b = make_raster(date_image(37, 53, 1), name="b.tif", nodata=-1, descriptions=["r", "c", "d"])
    return a, b


def test_names_round_trip() -> None:
    assert date_band_name("red", 1) == "red@t1"
    assert split_date_band("red@t1") == ("red", 1)
    assert split_date_band("red") == ("red", None)


def test_stack_keeps_dates_aligned_through_windows(two_dates) -> None:
    with StackReader(two_dates) as s:
        assert s.timesteps == 2 and s.count == 6 and s.dtype == "float32"
        assert s.band_names == ["r@t0", "c@t0", "d@t0", "r@t1", "c@t1", "d@t1"]
        assert s.band_dates == [0, 0, 0, 1, 1, 1]
        assert [b.index for b in s.bands] == [1, 2, 3, 4, 5, 6]
        assert s.grid.shape == (37, 53) and s.resampled == []
        for win in plan_tiles(s.grid, 16, 12, edge="pad"):
            block = s.read(win)
            rows, cols = np.mgrid[win.row_off : win.row_stop, win.col_off : win.col_stop]
            inside = (rows < 37) & (cols < 53)
            np.testing.assert_array_equal(block.valid, inside)
            for t in range(2):
                np.testing.assert_array_equal(block.data[3 * t][inside], rows[inside])
                np.testing.assert_array_equal(block.data[3 * t + 1][inside], cols[inside])
                assert (block.data[3 * t + 2][inside] == t + 1).all()
        d = s.describe()
        assert d["timesteps"] == 2 and d["band_dates"] == [0, 0, 0, 1, 1, 1]
        assert d["nodata_policy"] == "all-valid"


def test_offset_date_is_resampled_nearest_onto_first_grid(make_raster, caplog) -> None:
    a = make_raster(date_image(30, 40, 0), name="a.tif", nodata=-1)
    # date 1 covers rows 5.. and cols 8.. of the reference grid (pixel-aligned, smaller extent)
    tb = T0 @ Affine.translation(8, 5)
    b = make_raster(date_image(20, 20, 1, row0=5, col0=8), name="b.tif", nodata=-1, transform=tb)
    with caplog.at_level("WARNING"), StackReader([a, b]) as s:
        assert s.grid == RasterReader(a).grid
        assert len(s.resampled) == 1 and s.resampled[0]["resampling"] == "nearest"
        assert s.resampled[0]["date"] == 1 and s.resampled[0]["shape"] == [20, 20]
        block = s.read(Window(0, 0, 30, 40), band_masks=True)
        rows, cols = np.mgrid[0:30, 0:40]
        inside_b = (rows >= 5) & (rows < 25) & (cols >= 8) & (cols < 28)
        np.testing.assert_array_equal(block.valid, inside_b)  # all-valid: date 1's footprint only
        np.testing.assert_array_equal(block.data[3][inside_b], rows[inside_b])
        np.testing.assert_array_equal(block.data[4][inside_b], cols[inside_b])
        assert block.band_valid is not None
        assert block.band_valid[:3].all() and (block.band_valid[3] == inside_b).all()
    assert "resampled onto it" in caplog.text and "b.tif" in caplog.text


def test_coarser_date_is_resampled_bilinear(make_raster) -> None:
    a = make_raster(date_image(32, 32, 0), name="a.tif", nodata=-1)
    coarse = T0 @ Affine.scale(2)  # 20 m pixels over the same area
    rows, cols = np.mgrid[0:16, 0:16]
    # values encode the reference-grid coordinate of each coarse pixel's centre
    data = np.stack([2 * rows + 0.5, 2 * cols + 0.5, np.full(rows.shape, 2.0)]).astype("float32")
    b = make_raster(data, name="b.tif", nodata=-1, transform=coarse)
    with StackReader([a, b]) as s:
        assert s.resampled[0]["resampling"] == "bilinear" and s.resampled[0]["res"] == [20.0, 20.0]
        block = s.read(Window(4, 4, 24, 24))
        rr, cc = np.mgrid[4:28, 4:28]
        assert block.valid.all()
        # bilinear interpolation of a linear ramp gives the fine pixel's own coordinate
        np.testing.assert_allclose(block.data[3], rr, atol=0.51)
        np.testing.assert_allclose(block.data[4], cc, atol=0.51)
        assert np.allclose(block.data[5], 2.0)


def test_nodata_policy_all_valid_and_any_valid(make_raster) -> None:
    da, db = date_image(10, 12, 0), date_image(10, 12, 1)
    da[:, 0, 0] = -1  # nodata in date 0
    db[:, 2, 3] = -1  # nodata in date 1
    a = make_raster(da, name="a.tif", nodata=-1)
    b = make_raster(db, name="b.tif", nodata=-1)
    with StackReader([a, b]) as s:
        blk = s.read()
        v = blk.valid
        assert not v[0, 0] and not v[2, 3] and v.sum() == 120 - 2
        assert (blk.data[:, 2, 3] == -1).all() and (blk.data[:, 0, 0] == -1).all()  # nodata in every band
    with StackReader([a, b], nodata_policy="any-valid") as s:
        blk = s.read(band_masks=True)
        assert blk.valid.all()
        # date 0's missing pixel takes date 1's values, and vice versa; band_valid tells the truth
        np.testing.assert_array_equal(blk.data[:3, 0, 0], db[:, 0, 0])
        np.testing.assert_array_equal(blk.data[3:, 2, 3], da[:, 2, 3])
        assert blk.band_valid is not None
        assert not blk.band_valid[0, 0, 0] and not blk.band_valid[3, 2, 3] and blk.band_valid[3, 0, 0]
        r2 = s.reopen()
        try:
            np.testing.assert_array_equal(r2.read().data, blk.data)
        finally:
            r2.close()


def test_statistics_per_date_band(two_dates) -> None:
    with StackReader(two_dates) as s:
        stats = band_statistics(s, window_size=16)
    assert [st.band for st in stats] == ["r@t0", "c@t0", "d@t0", "r@t1", "c@t1", "d@t1"]
    assert stats[2].mean == 1.0 and stats[5].mean == 2.0


def test_refusals(make_raster, two_dates) -> None:
    with pytest.raises(InputError, match="at least two rasters"):
        StackReader([two_dates[0]])
    with pytest.raises(InputError, match="nodata_policy"):
        StackReader(two_dates, nodata_policy="some")  # type: ignore[arg-type]
    two_band = make_raster(date_image(37, 53, 1)[:2], name="c.tif")
    with pytest.raises(InputError, match=r"c\.tif \(date 1\) has 2 selected band\(s\)"):
        StackReader([two_dates[0], two_band])
    assert isinstance(open_image(two_dates[0]), RasterReader)
    assert isinstance(open_image(list(two_dates)), StackReader)
    with StackReader(two_dates, bands=[1, 3]) as s:
        assert s.band_names == ["r@t0", "d@t0", "r@t1", "d@t1"] and s.band_indexes == [1, 3]
