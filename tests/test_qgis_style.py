"""GeoPackage class styles (io.qgis_style) and the CLI writing them for vectorize / predict --vectorize."""

from __future__ import annotations

import sqlite3
import xml.etree.ElementTree as ET
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
from shapely.geometry import box

from rasterlearn.cli import main
from rasterlearn.errors import OutputError
from rasterlearn.io.qgis_style import categorized_qml, write_class_style
from rasterlearn.vectorize import class_styles_of_map


def test_categorized_qml_is_valid_xml() -> None:
    root = ET.fromstring(
        categorized_qml({2: ("forest & trees", "#00a000"), 1: ("water", "#1e64ff")}).split("\n", 1)[1]
    )
    r = root.find("renderer-v2")
    assert r is not None and r.get("type") == "categorizedSymbol" and r.get("attr") == "class_code"
    cats = [(c.get("value"), c.get("label"), c.get("symbol")) for c in r.iter("category")]
    assert cats == [("1", "water", "0"), ("2", "forest & trees", "1")]
    colors = [o.get("value") for o in r.iter("Option") if o.get("name") == "color"]
    assert colors == ["30,100,255,255", "0,160,0,255"]


def test_vectorize_cli_stores_style_in_gpkg(make_raster, tmp_path: Path) -> None:
    data = np.zeros((1, 32, 32), dtype="uint8")
    data[0, :, 16:] = 2
    data[0, :16, :16] = 1
    src = make_raster(data, "map.tif")
    import rasterio

    with rasterio.open(src, "r+") as ds:
        ds.write_colormap(1, {0: (0, 0, 0, 255), 1: (30, 100, 255, 255), 2: (0, 160, 0, 255)})
    out = tmp_path / "map.gpkg"
    assert main(["vectorize", str(src), "-o", str(out), "--exclude", "0"]) == 0
    styles = class_styles_of_map(src)
    with sqlite3.connect(out) as con:
        rows = con.execute(
            "SELECT f_table_name, f_geometry_column, useAsDefault, styleQML FROM layer_styles"
        ).fetchall()
        contents = con.execute(
            "SELECT data_type FROM gpkg_contents WHERE table_name='layer_styles'"
        ).fetchall()
    assert contents == [("attributes",)]
    (table, geom, default, qml), *_ = rows
    assert (table, geom, default) == ("map", "geom", 1)
    assert styles[1] == ("class_1", "#1e64ff") and styles[2] == ("class_2", "#00a000")
    assert "30,100,255,255" in qml and "0,160,0,255" in qml
    assert 'value="0"' not in qml  # only the classes present (0 was excluded)
    gdf = gpd.read_file(out)
    assert sorted(gdf["class_code"].unique().tolist()) == [1, 2]


def test_write_class_style_errors(tmp_path: Path) -> None:
    p = tmp_path / "p.gpkg"
    gpd.GeoDataFrame({"class_code": [1]}, geometry=[box(0, 0, 1, 1)], crs="EPSG:3857").to_file(p, layer="p")
    with pytest.raises(OutputError, match="no layer 'other'"):
        write_class_style(p, {1: ("a", "#ff0000")}, layer="other")
    write_class_style(p, {1: ("a", "#ff0000")})
    write_class_style(p, {1: ("a", "#00ff00")})  # a second style becomes the default
    with sqlite3.connect(p) as con:
        rows = con.execute(
            "SELECT useAsDefault, styleQML LIKE '%0,255,0,255%' FROM layer_styles ORDER BY id"
        ).fetchall()
    assert rows == [(0, 0), (1, 1)]
    write_class_style(tmp_path / "x.geojson", {1: ("a", "#ff0000")})  # not a GeoPackage: nothing to do
