"""Class schemas and window-by-window rasterization of vector labels."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
from affine import Affine
from pyproj import CRS
from shapely.geometry import LineString, Polygon, box

from rasterlearn.errors import AttributeNotFoundError, InputError
from rasterlearn.grid import Grid, Window, plan_tiles
from rasterlearn.labels import (
    ClassInfo,
    ClassSchema,
    VectorLabels,
    apply_validity,
    infer_schema,
    is_raster_path,
    rasterize_window,
    same_place,
    values_to_codes,
)

# 40 x 48 px grid, 10 m pixels, UTM 33N; pixel (r, c) covers x in [X0+10c, X0+10c+10), y in (Y0-10r-10, Y0-10r]
X0, Y0 = 500_000.0, 4_000_000.0
GRID = Grid(40, 48, Affine(10.0, 0.0, X0, 0.0, -10.0, Y0), CRS.from_epsg(32633))


def px_box(r0: int, c0: int, r1: int, c1: int) -> Polygon:
    """A polygon covering pixel rows r0..r1-1 and columns c0..c1-1 exactly."""
    return box(X0 + 10 * c0, Y0 - 10 * r1, X0 + 10 * c1, Y0 - 10 * r0)


def frame(geoms: list, **cols: list) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(cols, geometry=geoms, crs="EPSG:32633")


def test_schema_api_unchanged() -> None:
    s = ClassSchema.infer(["water", "forest", "forest"])
    assert s.codes == [0, 1, 2] and s.names == ["background", "forest", "water"]
    assert s.code_of("water") == 2 and s.mask_dtype == "uint8" and s.ignore_index == 255
    assert ClassSchema.from_dict(s.to_dict()) == s


def test_constant_burn_exact_pixels() -> None:
    vl = VectorLabels(frame([px_box(2, 3, 6, 9)]), GRID).bind(ClassSchema.binary())
    m = vl.mask(GRID.window)
    assert m.dtype == np.uint8 and m.shape == (40, 48)
    expected = np.zeros((40, 48), np.uint8)
    expected[2:6, 3:9] = 1
    np.testing.assert_array_equal(m, expected)


def test_windows_equal_whole_grid_including_boundless_edges() -> None:
    geoms = [
        px_box(0, 0, 5, 5),
        px_box(10, 30, 39, 47),
        Polygon([(X0 + 5, Y0 - 5), (X0 + 300, Y0 - 100), (X0 + 100, Y0 - 390)]),
    ]
    vl = VectorLabels(frame(geoms, cls=[1, 2, 3]), GRID, attribute="cls")
    vl.bind(infer_schema(vl.values()))
    whole = vl.mask(GRID.window)
    for win in plan_tiles(GRID, 16, 12, edge="pad"):
        part = vl.mask(win)
        inner = win.intersection(GRID.window)
        sub = inner.relative_to(win)
        np.testing.assert_array_equal(part[sub.slices()], whole[inner.slices()])
        outside = np.ones(part.shape, bool)
        outside[sub.slices()] = False
        assert (part[outside] == 0).all()  # nothing burned past the raster edge (no feature there)


def test_text_attribute_mapped_through_schema() -> None:
    schema = ClassSchema(
        (ClassInfo(0, "bg", "#000000"), ClassInfo(5, "water", "#0000ff"), ClassInfo(7, "forest", "#00ff00"))
    )
    vl = VectorLabels(
        frame([px_box(0, 0, 4, 4), px_box(10, 10, 12, 12)], kind=["forest", "water"]), GRID, attribute="kind"
    ).bind(schema)
    m = vl.mask(GRID.window)
    assert (m[0:4, 0:4] == 7).all() and (m[10:12, 10:12] == 5).all()
    assert int((m == 0).sum()) == 40 * 48 - 16 - 4


def test_overlap_last_and_priority() -> None:
    geoms = [px_box(0, 0, 10, 10), px_box(5, 5, 15, 15)]
    gdf = frame(geoms, cls=[2, 1])
    schema = ClassSchema.infer([1, 2])
    last = VectorLabels(gdf, GRID, attribute="cls").bind(schema).mask(GRID.window)
    assert last[7, 7] == 1  # the later feature wins
    prio = VectorLabels(gdf, GRID, attribute="cls", overlap="priority").bind(schema).mask(GRID.window)
    assert prio[7, 7] == 2  # default priority: higher code wins
    listed = VectorLabels(gdf, GRID, attribute="cls", overlap="priority", priority=[1, 2]).bind(schema)
    assert listed.mask(GRID.window)[7, 7] == 1
    with pytest.raises(InputError, match="not in the schema"):
        VectorLabels(gdf, GRID, attribute="cls", overlap="priority", priority=[9]).bind(schema)


def test_all_touched_burns_more_pixels() -> None:
    line = LineString([(X0 + 1, Y0 - 1), (X0 + 300, Y0 - 250)])
    tri = Polygon([(X0 + 12, Y0 - 12), (X0 + 200, Y0 - 18), (X0 + 30, Y0 - 220)])
    schema = ClassSchema.binary()
    for geom in (line, tri):
        a = VectorLabels(frame([geom]), GRID).bind(schema).mask(GRID.window)
        b = VectorLabels(frame([geom]), GRID, all_touched=True).bind(schema).mask(GRID.window)
        assert b.sum() > a.sum()
        if geom is tri:  # for polygons ALL_TOUCHED is a superset (GDAL's line rule differs per pixel)
            assert (b >= a).all()


def test_label_areas_features_extent_and_layer() -> None:
    gdf = frame([px_box(2, 2, 4, 4), px_box(10, 10, 12, 13)], cls=[1, 2])
    sparse = infer_schema([1, 2], sparse=True)
    assert sparse.codes == [1, 2] and sparse.background is None
    m = VectorLabels(gdf, GRID, attribute="cls", label_areas="features").bind(sparse).mask(GRID.window)
    assert int((m != sparse.ignore_index).sum()) == 4 + 6
    dense = infer_schema([1, 2])
    m = VectorLabels(gdf, GRID, attribute="cls", label_areas="extent").bind(dense).mask(GRID.window)
    inside = np.zeros(m.shape, bool)
    inside[2:12, 2:13] = True
    assert (m[~inside] == 255).all() and (m[inside] != 255).all() and int((m == 0).sum()) == 110 - 10
    areas = frame([px_box(0, 0, 20, 20)])
    m = VectorLabels(gdf, GRID, attribute="cls", label_areas=areas).bind(dense).mask(GRID.window)
    assert (m[:20, :20] != 255).all() and (m[20:, :] == 255).all() and (m[:, 20:] == 255).all()


def test_unknown_values_error_or_ignore_and_nulls() -> None:
    gdf = frame([px_box(0, 0, 2, 2), px_box(4, 4, 6, 6), px_box(8, 8, 9, 9)], cls=["a", "zzz", None])
    schema = ClassSchema.infer(["a"])
    with pytest.raises(InputError, match="'zzz'"):
        VectorLabels(gdf, GRID, attribute="cls").bind(schema)
    vl = VectorLabels(gdf, GRID, attribute="cls", unknown="ignore").bind(schema)
    assert vl.n_unknown == 1 and vl.n_null == 1
    m = vl.mask(GRID.window)
    assert (m[0:2, 0:2] == 1).all() and (m[4:6, 4:6] == 0).all()
    with pytest.raises(AttributeNotFoundError, match="Available attributes: cls"):
        VectorLabels(gdf, GRID, attribute="class")


def test_uint16_masks_for_more_than_255_classes() -> None:
    codes = list(range(1, 301))
    gdf = frame([px_box(i // 48, i % 48, i // 48 + 1, i % 48 + 1) for i in range(300)], cls=codes)
    schema = infer_schema(codes)
    assert schema.mask_dtype == "uint16" and schema.ignore_index == 65535
    m = VectorLabels(gdf, GRID, attribute="cls").bind(schema).mask(GRID.window)
    assert m.dtype == np.uint16 and m[6, 11] == 300 and m[0, 0] == 1


def test_rasterize_window_empty_and_validity() -> None:
    out = rasterize_window([], [], GRID, Window(-5, -5, 8, 8), fill=3, dtype="uint8")
    assert out.shape == (8, 8) and (out == 3).all()
    valid = np.ones((8, 8), bool)
    valid[0] = False
    assert (apply_validity(out, valid, 255)[0] == 255).all() and (out[1:] == 3).all()


def test_values_to_codes() -> None:
    schema = ClassSchema.infer([1, 2, 7])
    raw = np.array([[1.0, 2.0], [7.0, -99999.0]], dtype="float32")
    valid = raw != -99999.0
    np.testing.assert_array_equal(values_to_codes(raw, valid, schema), [[1, 2], [7, 255]])
    with pytest.raises(InputError, match="label value 9"):
        values_to_codes(np.array([[9.0]]), np.ones((1, 1), bool), schema)
    assert values_to_codes(np.array([[9]]), np.ones((1, 1), bool), schema, unknown="ignore")[0, 0] == 255
    with pytest.raises(InputError, match="non-integer"):
        values_to_codes(np.array([[1.5]]), np.ones((1, 1), bool), schema)


def test_same_place_and_raster_paths() -> None:
    wkt = CRS.from_epsg(32633).to_wkt().replace('"WGS 84 / UTM zone 33N"', '"unnamed"')
    unnamed = CRS.from_wkt(wkt.split(',ID["EPSG",32633]]')[0] + "]" if ',ID["EPSG",32633]]' in wkt else wkt)
    other = Grid(GRID.height, GRID.width, GRID.transform, unnamed)
    assert same_place(GRID, other)
    assert not same_place(GRID, Grid(GRID.height, GRID.width, GRID.transform, CRS.from_epsg(32634)))
    assert is_raster_path("a/b.TIF") and not is_raster_path("a/b.gpkg")
