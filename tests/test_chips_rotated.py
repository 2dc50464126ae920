"""Chips from a rotated (non north-up) raster: the block split is planned in pixel space."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from affine import Affine
from shapely.geometry import Polygon

from rasterlearn.chip_blocks import pixel_space_bounds
from rasterlearn.chips import Scene, make_chips
from rasterlearn.grid import Grid
from tests.conftest import write_tif
from tests.logcapture import rasterlearn_logs  # noqa: F401

X0, Y0 = 500_000.0, 4_000_000.0
ROT = Affine.translation(X0, Y0) @ Affine.rotation(-30) @ Affine.scale(10, -10)


def _px_poly(t: Affine, r0: float, c0: float, r1: float, c1: float) -> Polygon:
    return Polygon([t @ (c, r) for c, r in ((c0, r0), (c1, r0), (c1, r1), (c0, r1))])


@pytest.fixture
def rotated_scene(tmp_path):
    rng = np.random.default_rng(0)
    img = rng.integers(1, 200, (2, 128, 128)).astype("uint8")
    raster = write_tif(tmp_path / "rot.tif", img, transform=ROT, nodata=0)
    # a labelled polygon in every 64 px block: whatever block a split gets, its chips carry labels
    geoms = [_px_poly(ROT, r + 8, c + 8, r + 56, c + 56) for r in (0, 64) for c in (0, 64)]
    gpd.GeoDataFrame({"cls": ["a", "b", "a", "b"]}, geometry=geoms, crs="EPSG:32633").to_file(
        tmp_path / "rot.gpkg"
    )
    return raster, tmp_path / "rot.gpkg"


def test_rotated_raster_block_split_keeps_every_chip(rotated_scene, tmp_path):
    raster, vec = rotated_scene
    with rasterio.open(raster) as ds:
        assert abs(ds.transform.b) > 1  # rotated 30 degrees
    res = make_chips(
        [Scene(raster, vec)],
        tmp_path / "c",
        size=32,
        stride=32,
        attribute="cls",
        block_size=64,
        val=0.25,
        test=0.25,
        seed=1,
    )
    man = res.manifest
    assert len(man) == 16 and res.dataset["dropped"].get("straddle", 0) == 0
    assert res.dataset["blocks"]["block_space"] == "pixels (rotated grid)"
    assert set(man["split"]) == {"trn", "val", "tst"}
    # every split's chips lie in whole 64 px blocks of their own, and each carries labels
    for split, rows in man.groupby("split"):
        blocks = {(r // 64, c // 64) for r, c in zip(rows["row_off"], rows["col_off"], strict=True)}
        others = man[man["split"] != split]
        assert not blocks & {
            (r // 64, c // 64) for r, c in zip(others["row_off"], others["col_off"], strict=True)
        }
        assert (rows[[c for c in man.columns if c.startswith("px_") and c != "px_0"]].sum(axis=1) > 0).any()
    with rasterio.open(res.out / man["image"].iloc[0]) as ds:
        assert abs(ds.transform.b) > 1 and ds.crs.to_epsg() == 32633  # chips keep the rotated transform


def test_pixel_space_bounds_of_reference_and_other_grid():
    ref = Grid(64, 64, ROT, "EPSG:32633")
    shifted = Grid(64, 64, ROT @ Affine.translation(16, 32), "EPSG:32633")
    b = pixel_space_bounds(["a", "b"], np.array([0, 0]), np.array([32, 0]), 16, {"a": ref, "b": shifted}, ref)
    np.testing.assert_allclose(b, [[32, 0, 48, 16], [16, 32, 32, 48]], atol=1e-6)
