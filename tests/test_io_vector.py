"""Vector reading: CRS checks, reprojection, repair, extent filters and clear errors."""

from __future__ import annotations

import logging

import geopandas as gpd
import pytest
from affine import Affine
from shapely.geometry import Polygon, box

from rasterlearn.errors import (
    AttributeNotFoundError,
    CRSError,
    EmptyInputError,
    InputNotFoundError,
    NoOverlapError,
)
from rasterlearn.grid import Grid
from rasterlearn.io.vector import check_overlap, list_layers, read_vector, transform_bounds, write_vector

GRID = Grid(100, 100, Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 4_000_000.0), "EPSG:32633")


@pytest.fixture
def polygons(tmp_path):
    bowtie = Polygon([(500_100, 3_999_900), (500_200, 3_999_800), (500_200, 3_999_900), (500_100, 3_999_800)])
    gdf = gpd.GeoDataFrame(
        {"cls": ["water", "forest", "water"], "code": [1, 2, 1]},
        geometry=[
            box(500_000, 3_999_500, 500_300, 3_999_800),
            bowtie,
            box(500_500, 3_999_100, 500_900, 3_999_400),
        ],
        crs="EPSG:32633",
    )
    return gdf


@pytest.mark.parametrize("ext", [".gpkg", ".geojson", ".fgb", ".shp"])
def test_write_and_read_every_format(tmp_path, polygons, ext) -> None:
    path = write_vector(polygons, tmp_path / f"labels{ext}")
    assert path.exists()
    assert not list(tmp_path.glob(".*tmp*"))  # temporary names are gone
    gdf = read_vector(path, attribute="cls")
    assert len(gdf) == 3
    assert gdf.crs.to_epsg() == 32633
    assert set(gdf["cls"]) == {"water", "forest"}


def test_reprojection_is_logged(tmp_path, polygons, caplog) -> None:
    path = write_vector(polygons.to_crs("EPSG:4326"), tmp_path / "wgs.gpkg")
    with caplog.at_level(logging.INFO, logger="rasterlearn"):
        gdf = read_vector(path, crs=GRID.crs)
    assert gdf.crs.to_epsg() == 32633
    assert any("Reprojecting" in r.message for r in caplog.records)
    assert abs(gdf.total_bounds[0] - 500_000) < 0.01


def test_invalid_geometries_are_repaired_and_counted(tmp_path, polygons, caplog) -> None:
    path = write_vector(polygons, tmp_path / "bad.gpkg")
    with caplog.at_level(logging.WARNING, logger="rasterlearn"):
        gdf = read_vector(path)
    assert gdf.geometry.is_valid.all()
    assert gdf.attrs["n_repaired"] == 1
    assert any("repaired 1 invalid" in r.message for r in caplog.records)


def test_bounds_filter(tmp_path, polygons) -> None:
    path = write_vector(polygons, tmp_path / "l.gpkg")
    gdf = read_vector(path, bounds=(500_450, 3_999_000, 500_950, 3_999_450))
    assert list(gdf["code"]) == [1] and len(gdf) == 1
    # bounds given in another CRS are transformed
    b = transform_bounds((500_450, 3_999_000, 500_950, 3_999_450), "EPSG:32633", "EPSG:4326")
    assert len(read_vector(path, bounds=b, bounds_crs="EPSG:4326")) == 1


def test_errors_name_the_input_and_fix(tmp_path, polygons) -> None:
    with pytest.raises(InputNotFoundError, match=r"missing\.gpkg"):
        read_vector(tmp_path / "missing.gpkg")
    path = write_vector(polygons, tmp_path / "l.gpkg")
    with pytest.raises(AttributeNotFoundError, match="Available attributes: cls, code"):
        read_vector(path, attribute="class")
    empty = write_vector(polygons.iloc[:0], tmp_path / "empty.gpkg")
    with pytest.raises(EmptyInputError, match="no features"):
        read_vector(empty)
    nocrs = polygons.set_crs(None, allow_override=True)
    p2 = tmp_path / "nocrs.geojson"
    nocrs.to_file(p2, driver="GeoJSON")
    # GeoJSON without CRS means WGS84 by spec; a Shapefile without .prj has none
    shp = tmp_path / "nocrs.shp"
    nocrs.to_file(shp)
    with pytest.raises(CRSError, match="no coordinate reference system"):
        read_vector(shp)


def test_no_overlap_reports_both_extents(tmp_path, polygons) -> None:
    far = polygons.translate(xoff=1e6)
    with pytest.raises(NoOverlapError) as err:
        check_overlap(far, GRID)
    msg = str(err.value)
    assert "labels extent" in msg and "raster extent" in msg and "EPSG:32633" in msg
    check_overlap(polygons, GRID)  # overlapping: no error
    check_overlap(polygons.to_crs("EPSG:4326"), GRID)  # any CRS


def test_list_layers(tmp_path, polygons) -> None:
    path = tmp_path / "multi.gpkg"
    polygons.to_file(path, layer="a")
    polygons.to_file(path, layer="b", mode="a")
    assert list_layers(path) == ["a", "b"]
    assert len(read_vector(path, layer="b")) == 3


@pytest.mark.realdata
def test_shared_vectors_in_other_crs(shared_data) -> None:
    gdf = read_vector(
        shared_data / "cameroon_s2" / "labelled_polygons.shp", attribute="Type", crs="EPSG:32633"
    )
    assert gdf.crs.to_epsg() == 32633 and len(gdf) == 3
    grid = Grid(379, 968, Affine(10, 0, 0, 0, -10, 0), "EPSG:32633")
    from rasterlearn.io.raster import RasterReader

    with RasterReader(shared_data / "cameroon_s2" / "s2_11band.tif") as r:
        grid = r.grid
    check_overlap(gdf, grid)
    with pytest.raises(AttributeNotFoundError, match="Type"):
        read_vector(shared_data / "cameroon_s2" / "labelled_polygons.shp", attribute="type")
