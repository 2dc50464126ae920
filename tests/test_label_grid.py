"""Labels on a grid: one placement of label/truth rasters for chips and evaluate."""

from __future__ import annotations

import numpy as np
import pytest
from affine import Affine

from rasterlearn.errors import CRSError
from rasterlearn.evaluate import evaluate_map
from rasterlearn.grid import Grid, Window
from rasterlearn.io.writer import write_array
from rasterlearn.label_grid import LabelRaster, RasterOnGrid, relate_grids
from rasterlearn.labels import ClassSchema

T = Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 4_000_000.0)
GRID = Grid(30, 40, T, "EPSG:32633")
TM = "+proj=tmerc +lat_0=0 +lon_0=15 +k=0.9996 +x_0=500000 +y_0=0 +ellps=WGS84 +units=m +no_defs"


def test_relate_grids_kinds():
    assert relate_grids(GRID, GRID).kind == "aligned"
    off = relate_grids(Grid(10, 10, T @ Affine.translation(5, 3), "EPSG:32633"), GRID)
    assert off.kind == "aligned_offset" and off.offset == (3, 5) and not off.resampled
    tm = relate_grids(Grid(30, 40, T, TM), GRID, "label raster", "image")
    assert tm.kind == "same_grid_crs_described_differently" and "label raster CRS" in (tm.note or "")
    assert relate_grids(Grid(30, 40, T, None), GRID).kind == "same_grid_no_crs"
    assert relate_grids(Grid(30, 40, T, "EPSG:32634"), GRID).resampled  # another UTM zone
    assert relate_grids(Grid(15, 20, T @ Affine.scale(2), "EPSG:32633"), GRID).resampled


@pytest.fixture
def coarse_truth(tmp_path):
    """Codes 1/2 at 20 m covering only the map's columns 10..39, without a nodata value."""
    t = np.ones((15, 15), dtype="uint8")
    t[:, 8:] = 2
    g = Grid(15, 15, Affine(20.0, 0.0, 500_100.0, 0.0, -20.0, 4_000_000.0), "EPSG:32633")
    return write_array(tmp_path / "coarse.tif", t[None], g, nodata=None)


def test_chips_and_evaluate_place_a_raster_alike(coarse_truth, tmp_path):
    src = RasterOnGrid(coarse_truth, GRID)
    assert src.relation.resampled
    data, valid = src.read(GRID.window)
    # outside the truth raster nothing is valid (a warp without nodata used to read 0 there as valid)
    assert not valid[:, :10].any() and valid[:, 10:].all()
    assert set(np.unique(data[valid])) == {1, 2}

    schema = ClassSchema.infer([1, 2])
    labels = LabelRaster(coarse_truth, GRID).bind(schema)
    mask = labels.mask(GRID.window)
    assert labels.alignment == "warped_nearest"
    np.testing.assert_array_equal(mask == schema.ignore_index, ~valid)
    np.testing.assert_array_equal(mask[valid], data[valid])

    # evaluate compares exactly those pixels: a map equal to the truth where it is valid
    m = np.where(valid, data, 0).astype("uint8")
    mp = write_array(
        tmp_path / "map.tif", m[None], GRID, nodata=255, category_names={0: "bg", 1: "a", 2: "b"}
    )
    res = evaluate_map(mp, coarse_truth)
    assert res["pixels"] == int(valid.sum()) and res["overall_accuracy"] == 1.0
    assert res["evaluation"]["truth_alignment"] == "warped_nearest"
    labels.close()
    src.close()


def test_offset_truth_is_read_without_resampling(tmp_path):
    t = np.arange(100, dtype="uint8").reshape(10, 10) % 3
    g = Grid(10, 10, T @ Affine.translation(5, 3), "EPSG:32633")
    path = write_array(tmp_path / "t.tif", t[None], g, nodata=None)
    src = RasterOnGrid(path, GRID)
    data, valid = src.read(Window(0, 0, 30, 40))
    assert src.relation.kind == "aligned_offset"
    np.testing.assert_array_equal(data[3:13, 5:15], t)
    assert valid.sum() == 100 and valid[3:13, 5:15].all()
    src.close()


def test_other_grid_without_crs_is_an_error(tmp_path):
    path = write_array(
        tmp_path / "t.tif", np.ones((1, 5, 5), "uint8"), Grid(5, 5, T @ Affine.scale(3), None), nodata=None
    )
    with pytest.raises(CRSError, match="no CRS"):
        RasterOnGrid(path, GRID)
