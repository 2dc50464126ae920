"""One writer style and one reader of the classes a class map declares."""

from __future__ import annotations

import numpy as np
from affine import Affine

from rasterlearn.class_maps import class_map_style, class_styles, map_schema, raster_class_names
from rasterlearn.grid import Grid
from rasterlearn.io.writer import write_array
from rasterlearn.labels import ClassInfo, ClassSchema

GRID = Grid(16, 24, Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 4_000_000.0), "EPSG:32633")
SCHEMA = ClassSchema(
    (ClassInfo(1, "forest", "#228b22"), ClassInfo(2, "water", "#1e90ff"), ClassInfo(5, "urban", "#ff0000")),
    ignore_index=255,
    background=None,
)


def test_style_round_trips_through_the_one_reader(tmp_path):
    style = class_map_style(SCHEMA, nodata=0)
    assert style["category_names"] == {0: "nodata", 1: "forest", 2: "water", 5: "urban"}
    assert style["colormap"][0] == "#000000" and style["colormap"][5] == "#ff0000"
    data = np.ones((1, 16, 24), "uint8")
    data[0, :, 12:] = 5
    path = write_array(tmp_path / "m.tif", data, GRID, nodata=0, **style)
    # names from the .aux.xml sidecar BlockWriter wrote; the nodata code's name is left out
    assert raster_class_names(path) == {1: "forest", 2: "water", 5: "urban"}
    schema = map_schema(path)
    assert schema is not None and schema.codes == [1, 2, 5] and schema.names == ["forest", "water", "urban"]
    assert class_styles(path)[5] == ("urban", "#ff0000") and class_styles(path)[2] == ("water", "#1e90ff")
    # a schema tag (predict's ``classes``) wins over the category names
    tagged = write_array(
        tmp_path / "t.tif",
        data,
        GRID,
        nodata=0,
        tags={"classes": SCHEMA.to_dict()},
        **class_map_style(SCHEMA),
    )
    assert map_schema(tagged) == SCHEMA


def test_cluster_map_is_read_back_with_its_cluster_names(tmp_path, make_raster):
    from rasterlearn.features.cluster import cluster_raster
    from rasterlearn.vectorize import class_styles_of_map, read_class_names

    rng = np.random.default_rng(0)
    feats = rng.normal(0, 1, (3, 16, 24)).astype("float32")
    feats[:, :, 12:] += 4.0
    res = cluster_raster(make_raster(feats, name="f.tif"), tmp_path / "km.tif", clusters=2, blocksize=16)
    assert raster_class_names(res.path) == {1: "cluster 1", 2: "cluster 2"} == read_class_names(res.path)
    from rasterlearn.labels import default_color

    styles = class_styles_of_map(res.path)
    assert styles[1] == ("cluster 1", default_color(1)) and styles[2] == ("cluster 2", default_color(2))
