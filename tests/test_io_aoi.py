"""Areas of interest placed on a grid: vector file, GeoDataFrame, geometry, bounds."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
from affine import Affine
from shapely.geometry import Polygon, box

from rasterlearn.errors import InputError, InputNotFoundError, NoOverlapError
from rasterlearn.grid import Grid, Window
from rasterlearn.io.aoi import AOI, aoi_mask, resolve_aoi

# 40 x 30 pixels of 10 m, top-left (500000, 4000000)
GRID = Grid(30, 40, Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 4_000_000.0), "EPSG:32633")


def _pix_box(r0, c0, r1, c1):
    """The box covering pixel rows r0..r1-1 and columns c0..c1-1."""
    return box(500_000 + 10 * c0, 4_000_000 - 10 * r1, 500_000 + 10 * c1, 4_000_000 - 10 * r0)


def test_bounds_snap_outwards_and_clip():
    # bounds cutting pixels in half: the window covers every touched pixel, clipped to the grid
    area = resolve_aoi((500_015.0, 4_000_000 - 95.0, 500_105.0, 4_000_050.0), GRID)
    assert area == AOI(Window(0, 1, 10, 10), None)
    assert area.mask(GRID, Window(0, 0, 2, 12)).tolist() == [[False] + [True] * 10 + [False]] * 2


def test_rectangle_on_pixel_edges_needs_no_mask():
    area = resolve_aoi(_pix_box(3, 4, 10, 20), GRID)
    assert area.window == Window(3, 4, 7, 16) and area.geometry is None


def test_polygon_window_and_mask_by_pixel_centres():
    # a right triangle over rows 0-9, cols 0-9 (hypotenuse from top-left to bottom-right)
    tri = Polygon([(500_000, 4_000_000), (500_100, 4_000_000), (500_100, 3_999_900)])
    area = resolve_aoi(tri, GRID)
    assert area.window == Window(0, 0, 10, 10) and area.geometry is not None
    m = area.mask(GRID, area.window)
    assert m.dtype == bool and m.shape == (10, 10)
    rows, cols = np.indices((10, 10))
    assert np.array_equal(m, cols > rows)  # pixel centres strictly above the diagonal
    # a window extending past the grid (padded edge window): pixels outside the geometry are False
    m2 = aoi_mask(area.geometry, GRID, Window(-2, -2, 4, 4))
    assert m2.shape == (4, 4) and not m2[:2].any() and not m2[:, :2].any() and m2[2, 3]


def test_vector_file_in_another_crs_is_reprojected(tmp_path):
    polys = [_pix_box(2, 2, 6, 8), _pix_box(20, 30, 25, 35)]
    gpd.GeoDataFrame({"id": [1, 2]}, geometry=polys, crs="EPSG:32633").to_crs("EPSG:4326").to_file(
        tmp_path / "aoi.gpkg"
    )
    area = resolve_aoi(tmp_path / "aoi.gpkg", GRID)
    assert area.window == Window(2, 2, 23, 33)  # the union of both parts
    m = area.mask(GRID, area.window)
    # round-tripping through degrees moves edges by far less than half a pixel
    assert m.sum() == 4 * 6 + 5 * 5
    assert m[0, 0] and m[-1, -1] and not m[10, 10]
    # str paths work too
    assert resolve_aoi(str(tmp_path / "aoi.gpkg"), GRID).window == area.window


def test_geodataframe_is_reprojected():
    gdf = gpd.GeoDataFrame(geometry=[_pix_box(5, 5, 7, 9)], crs="EPSG:32633").to_crs("EPSG:3857")
    area = resolve_aoi(gdf, GRID)
    assert area.window == Window(5, 5, 2, 4)


def test_mask_without_geometry_is_the_window():
    area = AOI(Window(2, 3, 4, 5))
    m = area.mask(GRID, Window(0, 0, 8, 10))
    assert m.sum() == 20 and m[2:6, 3:8].all()
    assert not area.mask(GRID, Window(20, 20, 3, 3)).any()


def test_errors():
    with pytest.raises(NoOverlapError, match="does not overlap"):
        resolve_aoi(box(0, 0, 10, 10), GRID)
    with pytest.raises(NoOverlapError, match="does not overlap"):
        resolve_aoi((0.0, 0.0, 10.0, 10.0), GRID)
    with pytest.raises(InputError, match="left, bottom, right, top"):
        resolve_aoi((1.0, 2.0, 3.0), GRID)
    with pytest.raises(InputError, match="left, bottom, right, top"):
        resolve_aoi(42, GRID)
    with pytest.raises(InputNotFoundError):
        resolve_aoi("/nonexistent/aoi.gpkg", GRID)
    with pytest.raises(NoOverlapError):
        resolve_aoi(Polygon(), GRID)


def test_parse_aoi_reads_bounds_wkt_and_paths() -> None:
    from pathlib import Path

    from rasterlearn.io.aoi import parse_aoi

    assert parse_aoi(None) is None
    assert parse_aoi("1,2,3,4.5") == (1.0, 2.0, 3.0, 4.5)
    assert parse_aoi("area.gpkg") == Path("area.gpkg")
    region = box(500_000.25, 4_000_000.0, 500_320.0, 4_000_640.0).union(box(500_400, 4e6, 500_410, 4_000_010))
    parsed = parse_aoi(str(region))
    assert parsed.equals_exact(region, 0) and str(parsed) == str(region)  # round trip: same record text
    assert parse_aoi(" polygon ((0 0, 1 0, 1 1, 0 0))").area == 0.5
    with pytest.raises(InputError, match="not valid WKT"):
        parse_aoi("POLYGON ((0 0, 1")
