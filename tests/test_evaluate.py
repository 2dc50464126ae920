"""Full-scene evaluation against vector and raster truth."""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pytest
from affine import Affine
from shapely.geometry import box

from rasterlearn.errors import InputError
from rasterlearn.evaluate import evaluate_map, map_schema, parse_class_names, raster_class_names
from rasterlearn.grid import Grid
from rasterlearn.io.writer import write_array
from rasterlearn.labels import ClassInfo, ClassSchema

T = Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 4_000_000.0)
GRID = Grid(30, 40, T, "EPSG:32633")


def _pix_box(r0, c0, r1, c1):
    return box(500_000 + 10 * c0, 4_000_000 - 10 * r1, 500_000 + 10 * c1, 4_000_000 - 10 * r0)


@pytest.fixture
def class_map(tmp_path):
    m = np.zeros((30, 40), dtype="uint8")
    m[5:15, 5:20] = 1  # predicted building A (150 px)
    m[20:25, 30:38] = 1  # a false positive (40 px)
    m[0:2, :] = 255  # nodata rows
    return write_array(
        tmp_path / "map.tif",
        m[None],
        GRID,
        nodata=255,
        category_names={0: "background", 1: "building"},
        colormap={0: "#000000", 1: "#ff0000"},
    )


def test_vector_truth_counts(class_map, tmp_path):
    truth = gpd.GeoDataFrame(
        {"kind": ["building", "Building"]},
        geometry=[_pix_box(5, 10, 15, 20), _pix_box(0, 0, 4, 4)],
        crs="EPSG:32633",
    )
    truth.to_file(tmp_path / "t.gpkg")
    m = evaluate_map(class_map, tmp_path / "t.gpkg", attribute="kind", output=tmp_path / "out" / "m.json")
    # truth building A: rows 5-15 x cols 10-20 = 100 px, all predicted; second truth box rows 2-4 visible
    # (rows 0-1 are map nodata): 2 x 4 = 8 px, predicted background.
    cm = np.array(m["confusion_matrix"])
    total = 28 * 40
    assert cm[1, 1] == 100 and cm[1, 0] == 8
    assert cm[0, 1] == 50 + 40 and cm[0, 0] == total - 100 - 8 - 90
    assert m["per_class"]["building"]["iou"] == pytest.approx(100 / (100 + 8 + 90))
    assert m["per_class"]["building"]["precision"] == pytest.approx(100 / 190)
    assert m["per_class"]["building"]["recall"] == pytest.approx(100 / 108)
    for key in ("overall_accuracy", "kappa", "mean_iou", "confusion_matrix", "per_class"):
        assert key in m
    saved = json.loads((tmp_path / "out" / "m.json").read_text())
    assert (
        saved["confusion_matrix"] == m["confusion_matrix"]
        and saved["evaluation"]["unlabelled"] == "background"
    )
    assert (tmp_path / "out" / "m.csv").read_text().startswith("class,")
    assert (tmp_path / "out" / "m.png").stat().st_size > 1000


def test_vector_truth_other_crs_and_ignore_unlabelled(class_map, tmp_path):
    truth = gpd.GeoDataFrame(
        {"code": [1, 0]}, geometry=[_pix_box(5, 10, 15, 20), _pix_box(20, 0, 30, 10)], crs="EPSG:32633"
    ).to_crs("EPSG:4326")
    truth.to_file(tmp_path / "t.geojson")
    m = evaluate_map(class_map, tmp_path / "t.geojson", attribute="code", unlabelled="ignore")
    cm = np.array(m["confusion_matrix"])
    assert cm.tolist() == [[100, 0], [0, 100]]
    assert m["evaluation"]["truth_reprojected"] is True and m["overall_accuracy"] == 1.0


def test_unknown_truth_values_are_an_error(class_map, tmp_path):
    truth = gpd.GeoDataFrame({"kind": ["roof"]}, geometry=[_pix_box(5, 10, 15, 20)], crs="EPSG:32633")
    truth.to_file(tmp_path / "t.gpkg")
    with pytest.raises(InputError, match="roof"):
        evaluate_map(class_map, tmp_path / "t.gpkg", attribute="kind")


def test_raster_truth_same_grid_and_resampled(class_map, tmp_path):
    t = np.zeros((30, 40), dtype="uint8")
    t[5:15, 5:20] = 1
    t[20:30, :] = 7  # not a class of the map -> not assessed
    t[10:12, :] = 9  # an ignore value
    same = write_array(tmp_path / "t.tif", t[None], GRID, nodata=None)
    m = evaluate_map(class_map, same, ignore_values=[9])
    cm = np.array(m["confusion_matrix"])
    assert cm[1, 1] == 150 - 2 * 15 and cm[0, 1] == 0 and cm[1, 0] == 0
    assert m["evaluation"]["truth_pixels_unknown_class"] == 10 * 40
    # the same truth at half the resolution (20 m), float with nodata: resampled nearest onto the map grid
    coarse = t[::2, ::2].astype("float32")
    coarse[0, 0] = -9999
    cgrid = Grid(15, 20, Affine(20.0, 0.0, 500_000.0, 0.0, -20.0, 4_000_000.0), "EPSG:32633")
    path = write_array(tmp_path / "tc.tif", coarse[None], cgrid, nodata=-9999)
    m2 = evaluate_map(class_map, path, ignore_values=[9])
    assert m2["evaluation"]["truth_reprojected"] is True
    cm2 = np.array(m2["confusion_matrix"])
    assert cm2[1, 1] > 0 and cm2.sum() < cm.sum() + 1


def test_map_schema_and_cli(class_map, tmp_path):
    from rasterlearn.cli import main

    assert map_schema(class_map).names == ["background", "building"]
    truth = gpd.GeoDataFrame({"class": [1]}, geometry=[_pix_box(5, 5, 15, 20)], crs="EPSG:32633")
    truth.to_file(tmp_path / "b.gpkg")
    rc = main(
        [
            "-q",
            "evaluate",
            str(class_map),
            "--truth",
            str(tmp_path / "b.gpkg"),
            "--attribute",
            "class",
            "-o",
            str(tmp_path / "metrics.json"),
        ]
    )
    assert rc == 0
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["per_class"]["building"]["recall"] == 1.0 and m["per_class"]["building"]["f1"] < 1.0


# -- truth rasters whose codes differ from the map's ------------------------------------------------------

NAMES_MAP = {1: "agriculture", 2: "developed", 3: "water"}  # sorted names, as features.classify writes them
NAMES_TRUTH = {1: "developed", 2: "agriculture", 3: "water"}  # the truth's own coding


@pytest.fixture
def named_map(tmp_path):
    """A 30x40 map (classify style: nodata 0): cols 0-9 agriculture, 10-24 developed, 25-39 water."""
    m = np.zeros((30, 40), dtype="uint8")
    m[:, 0:10], m[:, 10:25], m[:, 25:40] = 1, 2, 3
    m[0, :] = 0  # nodata row
    return write_array(
        tmp_path / "named_map.tif",
        m[None],
        GRID,
        nodata=0,
        category_names={0: "nodata", **NAMES_MAP},
        colormap={0: "#000000", 1: "#ffff00", 2: "#ff0000", 3: "#0000ff"},
    )


def _truth_array():
    """The same scene in the truth's coding (1 developed, 2 agriculture, 3 water), with 5 px of errors."""
    t = np.zeros((30, 40), dtype="float32")
    t[:, 0:10], t[:, 10:25], t[:, 25:40] = 2, 1, 3
    t[10, 0:5] = 3  # 5 agriculture pixels that truly are water
    return t


def test_map_schema_leaves_out_the_nodata_category(named_map):
    schema = map_schema(named_map)
    assert schema.codes == [1, 2, 3] and schema.names == ["agriculture", "developed", "water"]
    assert raster_class_names(named_map) == NAMES_MAP


def test_truth_codes_matched_by_given_names(named_map, tmp_path):
    truth = write_array(tmp_path / "t.tif", _truth_array()[None].astype("uint8"), GRID, nodata=None)
    # compared by code, the truth's 1 (developed) would meet the map's 1 (agriculture)
    by_code = evaluate_map(named_map, truth, class_match="code")
    assert by_code["evaluation"]["class_match"] == "code" and by_code["overall_accuracy"] < 0.5
    m = evaluate_map(named_map, truth, truth_classes="1=developed, 2=Agriculture,3=WATER")
    cm = np.array(m["confusion_matrix"])  # rows truth, columns map, both in the map's class order
    assert cm.tolist() == [[29 * 10 - 5, 0, 0], [0, 29 * 15, 0], [5, 0, 29 * 15]]
    assert m["overall_accuracy"] == pytest.approx(1 - 5 / (29 * 40))
    ev = m["evaluation"]
    assert ev["class_match"] == "name" and ev["truth_class_names"] == "argument"
    assert ev["truth_classes"]["1"] == {"name": "developed", "map_code": 2, "map_name": "developed"}
    # the same names as a mapping, a ClassSchema and a schema file give the same matrix
    schema = ClassSchema(tuple(ClassInfo(c, n, "#808080") for c, n in NAMES_TRUTH.items()), 255, None)
    csv = tmp_path / "truth_classes.csv"
    csv.write_text("value,name,color\n1,developed,#ff0000\n2,agriculture,#ffff00\n3,water,#0000ff\n")
    for names in (NAMES_TRUTH, schema, csv):
        assert evaluate_map(named_map, truth, truth_classes=names)["confusion_matrix"] == cm.tolist()


def test_float_truth_with_nodata_and_fractions_on_a_differently_described_crs(named_map, tmp_path):
    t = _truth_array()
    t[20:22, :] = -99999.0  # nodata: 80 px not assessed
    t[25, 0:3] = 1.5  # not a class code: counted, not assessed
    # the map's UTM 33N written as a bare transverse Mercator definition: same grid, another description
    tm = "+proj=tmerc +lat_0=0 +lon_0=15 +k=0.9996 +x_0=500000 +y_0=0 +ellps=WGS84 +units=m +no_defs"
    truth = write_array(tmp_path / "tf.tif", t[None], Grid(30, 40, T, tm), nodata=-99999.0)
    m = evaluate_map(named_map, truth, truth_classes=NAMES_TRUTH)
    ev = m["evaluation"]
    assert ev["truth_reprojected"] is False and ev["truth_crs_differs"] is True
    assert any("described differently" in note for note in ev["notes"])
    assert ev["truth_pixels_non_integer"] == 3
    assert m["pixels"] == 29 * 40 - 80 - 3
    cm = np.array(m["confusion_matrix"])
    assert cm[2, 0] == 5 and cm.trace() == m["pixels"] - 5


def test_grid_relation_tells_a_crs_description_from_another_crs():
    from rasterlearn.evaluate.truth import _grid_relation

    tm = "+proj=tmerc +lat_0=0 +lon_0=15 +k=0.9996 +x_0=500000 +y_0=0 +ellps=WGS84 +units=m +no_defs"
    assert _grid_relation(GRID, GRID) == (True, None)
    same, note = _grid_relation(Grid(30, 40, T, tm), GRID)
    assert same and "within 0.000 px" in note
    assert _grid_relation(Grid(30, 40, T, "EPSG:32634"), GRID) == (False, None)  # another UTM zone
    assert _grid_relation(Grid(30, 41, T, "EPSG:32633"), GRID) == (False, None)
    same, note = _grid_relation(Grid(30, 40, T, None), GRID)
    assert same and "has no CRS" in note


def test_truth_names_from_aux_xml_category_names_and_attribute_table(named_map, tmp_path):
    t = _truth_array().astype("uint8")
    # written by rasterlearn/GDAL: category names + attribute table in the .aux.xml sidecar
    a = write_array(tmp_path / "a.tif", t[None], GRID, nodata=255, category_names=NAMES_TRUTH)
    m = evaluate_map(named_map, a)
    assert m["evaluation"]["class_match"] == "name"
    assert m["evaluation"]["truth_class_names"] == "class names of a.tif"
    assert np.array(m["confusion_matrix"])[0, 0] == 29 * 10 - 5
    # a third-party sidecar holding only an attribute table (value and name columns, GDAL usages 0 / 2)
    b = write_array(tmp_path / "b.tif", t[None], GRID, nodata=255)
    rows = "".join(
        f'<Row index="{i}"><F>{code}</F><F>{name}</F></Row>'
        for i, (code, name) in enumerate(NAMES_TRUTH.items())
    )
    (tmp_path / "b.tif.aux.xml").write_text(
        '<PAMDataset><PAMRasterBand band="1"><GDALRasterAttributeTable tableType="thematic">'
        '<FieldDefn index="0"><Name>VALUE</Name><Type>0</Type><Usage>0</Usage></FieldDefn>'
        '<FieldDefn index="1"><Name>LandClass</Name><Type>2</Type><Usage>2</Usage></FieldDefn>'
        f"{rows}</GDALRasterAttributeTable></PAMRasterBand></PAMDataset>"
    )
    assert raster_class_names(b) == NAMES_TRUTH
    assert evaluate_map(named_map, b)["confusion_matrix"] == m["confusion_matrix"]
    # a QGIS paletted style beside the file
    c = write_array(tmp_path / "c.tif", t[None], GRID, nodata=255)
    entries = "".join(
        f'<paletteEntry value="{k}" color="#000000" label="{v}"/>' for k, v in NAMES_TRUTH.items()
    )
    (tmp_path / "c.qml").write_text(
        f"<qgis><pipe><rasterrenderer><colorPalette>{entries}</colorPalette></rasterrenderer></pipe></qgis>"
    )
    assert raster_class_names(c) == NAMES_TRUTH


def test_unmatched_truth_names_are_an_error_listing_them(named_map, tmp_path):
    truth = write_array(tmp_path / "t.tif", _truth_array()[None].astype("uint8"), GRID, nodata=None)
    with pytest.raises(InputError, match=r"3='wetland'.*agriculture, developed, water") as err:
        evaluate_map(named_map, truth, truth_classes="1=developed,2=agriculture,3=wetland")
    assert "--ignore 3" in str(err.value)
    # names found in the truth file that only partly match are an error too; ignoring the code resolves it
    named = write_array(
        tmp_path / "n.tif",
        _truth_array()[None].astype("uint8"),
        GRID,
        nodata=255,
        category_names={1: "developed", 2: "agriculture", 3: "wetland"},
    )
    with pytest.raises(InputError, match="wetland"):
        evaluate_map(named_map, named)
    m = evaluate_map(named_map, named, ignore_values=[3])
    assert np.array(m["confusion_matrix"]).sum() == 29 * 25 - 5  # the 5 px of truth code 3 in agriculture
    # names in the truth file that agree with the map's codes (one unknown to the map): codes are compared
    same_codes = write_array(
        tmp_path / "s.tif",
        np.where(_truth_array() == 3, 3, 3 - _truth_array())[None].astype("uint8"),  # the map's coding
        GRID,
        nodata=255,
        category_names={1: "agriculture", 2: "developed", 3: "wetland"},
    )
    m = evaluate_map(named_map, same_codes)
    assert m["evaluation"]["class_match"] == "code" and "wetland" in m["evaluation"]["notes"][0]
    assert np.array(m["confusion_matrix"]).trace() == 29 * 40 - 5
    # truth names sharing none with the map's: codes are compared (noted)
    other = write_array(
        tmp_path / "o.tif",
        _truth_array()[None].astype("uint8"),
        GRID,
        nodata=255,
        category_names={1: "u1", 2: "u2", 3: "u3"},
    )
    m = evaluate_map(named_map, other)
    assert m["evaluation"]["class_match"] == "code" and "share none" in m["evaluation"]["notes"][0]
    with pytest.raises(InputError, match="u1"):
        evaluate_map(named_map, other, class_match="name")
    with pytest.raises(InputError, match="class_match='code'"):
        evaluate_map(named_map, truth, truth_classes=NAMES_TRUTH, class_match="code")


def test_parse_class_names():
    assert parse_class_names("1=developed, 2 = agriculture;7:sediment") == {
        1: "developed",
        2: "agriculture",
        7: "sediment",
    }
    for bad in ("developed", "1=", "x=forest", "1=a,1=b", " , "):
        with pytest.raises(InputError):
            parse_class_names(bad)


def test_vector_truth_codes_matched_by_names(named_map, tmp_path):
    truth = gpd.GeoDataFrame(
        {"id": [1, 2, 3]},  # the truth's coding: developed, agriculture, water
        geometry=[_pix_box(2, 10, 6, 20), _pix_box(2, 0, 6, 10), _pix_box(2, 25, 6, 40)],
        crs="EPSG:32633",
    )
    truth.to_file(tmp_path / "v.gpkg")
    m = evaluate_map(named_map, tmp_path / "v.gpkg", attribute="id", truth_classes=NAMES_TRUTH)
    assert m["overall_accuracy"] == 1.0 and np.array(m["confusion_matrix"]).trace() == 4 * (10 + 10 + 15)
    with pytest.raises(InputError, match="wetland"):
        evaluate_map(named_map, tmp_path / "v.gpkg", attribute="id", truth_classes="1=developed,3=wetland")


def test_cli_truth_names(named_map, tmp_path):
    from rasterlearn.cli import main

    truth = write_array(tmp_path / "t.tif", _truth_array()[None], GRID, nodata=-99999.0)
    out = tmp_path / "m.json"
    args = ["-q", "evaluate", str(named_map), "--truth", str(truth), "-o", str(out)]
    assert main([*args, "--truth-names", "1=developed,2=agriculture,3=water"]) == 0
    m = json.loads(out.read_text())
    assert m["evaluation"]["class_match"] == "name" and m["kappa"] > 0.99
    (tmp_path / "tc.yaml").write_text(
        "classes:\n"
        + "".join(f"  - {{code: {c}, name: {n}, color: '#808080'}}\n" for c, n in NAMES_TRUTH.items())
    )
    assert main([*args, "--truth-classes", str(tmp_path / "tc.yaml")]) == 0
    assert json.loads(out.read_text())["confusion_matrix"] == m["confusion_matrix"]
    assert main([*args, "--truth-classes", str(tmp_path / "tc.yaml"), "--truth-names", "1=a"]) == 2
