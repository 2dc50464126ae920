"""Class map -> polygons: seams merged exactly, holes kept, areas, filters, names, formats."""

from __future__ import annotations

import numpy as np
import pyogrio
import pytest
import shapely
from affine import Affine

from rasterlearn.errors import InputError
from rasterlearn.grid import Grid
from rasterlearn.io.writer import write_array
from rasterlearn.vectorize import read_class_names, vectorize_raster

T = Affine(2.0, 0.0, 1000.0, 0.0, -2.0, 5000.0)  # 2 m pixels


def _map(rng_seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(rng_seed)
    m = np.zeros((45, 37), dtype="uint8")
    m[5:40, 3:30] = 1  # a big block crossing every seam of 8/16-px windows
    m[15:25, 10:20] = 2  # hole in class 1
    m[0:3, 30:37] = 3
    blobs = rng.random((45, 37)) < 0.05
    m[blobs & (m == 0)] = 4
    return m


def _canon(gdf):
    return sorted(
        (int(c), round(float(a), 6), shapely.normalize(g).wkb)
        for c, a, g in zip(gdf.class_code, gdf.area, gdf.geometry, strict=True)
    )


@pytest.mark.parametrize("window", [8, 13, 16])
def test_windowed_equals_whole(make_raster, window):
    src = make_raster(_map(), transform=T, nodata=255)
    whole = vectorize_raster(src, window_size=4096)
    tiled = vectorize_raster(src, window_size=window)
    assert _canon(tiled) == _canon(whole)
    assert whole.crs.to_epsg() == 32633


def test_holes_areas_and_coordinates(make_raster):
    src = make_raster(_map(), transform=T, nodata=255)
    gdf = vectorize_raster(src, window_size=16, exclude=[0, 4])
    ring = gdf[gdf.class_code == 1].geometry.iloc[0]
    assert len(ring.interiors) == 1
    assert gdf[gdf.class_code == 1].pixels.iloc[0] == 35 * 27 - 100
    assert gdf[gdf.class_code == 1].area.iloc[0] == pytest.approx((35 * 27 - 100) * 4.0)
    inner = gdf[gdf.class_code == 2].geometry.iloc[0]
    assert inner.bounds == pytest.approx((1000 + 20, 5000 - 50, 1000 + 40, 5000 - 30))
    assert set(gdf.class_code) == {1, 2, 3}


def test_min_area_nodata_and_names(make_raster, tmp_path):
    m = _map()
    m[40:, :] = 255
    src = make_raster(m, transform=T, nodata=255)
    gdf = vectorize_raster(
        src, window_size=16, min_area=3, area_unit="pixels", class_names={1: "field", 2: "pond"}
    )
    everything = vectorize_raster(src, window_size=16)
    assert (gdf.pixels >= 3).all() and (everything.pixels < 3).sum() > 10  # 5 % random single pixels
    assert len(gdf) == (everything.pixels >= 3).sum()
    assert 255 not in set(gdf.class_code)
    assert gdf.loc[gdf.class_code == 2, "class_name"].iloc[0] == "pond"
    assert gdf.loc[gdf.class_code == 3, "class_name"].iloc[0] == "class_3"
    by_map = vectorize_raster(src, min_area=12.0, area_unit="map")  # 3 pixels of 4 m²
    assert _canon(by_map) == _canon(gdf)
    with pytest.raises(InputError):
        vectorize_raster(src, area_unit="acres")


def test_names_from_map_and_formats(tmp_path):
    grid = Grid(45, 37, T, "EPSG:32633")
    path = write_array(
        tmp_path / "map.tif",
        _map()[None],
        grid,
        nodata=255,
        category_names={0: "bg", 1: "field", 2: "pond", 3: "road", 4: "tree"},
        colormap={0: "#000000", 1: "#00ff00", 2: "#0000ff", 3: "#888888", 4: "#005500"},
    )
    assert read_class_names(path)[2] == "pond"
    for ext in ("gpkg", "geojson", "fgb"):
        out = tmp_path / f"poly.{ext}"
        gdf = vectorize_raster(path, out, simplify=1.0, exclude=[0])
        back = pyogrio.read_dataframe(out)
        assert len(back) == len(gdf) > 0
        assert {"class_code", "class_name", "area", "pixels"} <= set(back.columns)
        assert set(back.class_name) == {"field", "pond", "road", "tree"}
        assert back.crs.to_epsg() == 32633


def test_cli_vectorize(tmp_path):
    from rasterlearn.cli import main

    grid = Grid(45, 37, T, "EPSG:32633")
    path = write_array(tmp_path / "map.tif", _map()[None], grid, nodata=255, category_names={1: "field"})
    out = tmp_path / "p.gpkg"
    assert (
        main(
            [
                "-q",
                "vectorize",
                str(path),
                "-o",
                str(out),
                "--exclude",
                "0",
                "--min-area",
                "2",
                "--area-unit",
                "pixels",
                "--window-size",
                "16",
            ]
        )
        == 0
    )
    back = pyogrio.read_dataframe(out)
    assert 0 not in set(back.class_code) and (back.pixels >= 2).all()
    assert main(["-q", "vectorize", str(path), "-o", str(out)]) == 2  # exists, no --overwrite
