"""Full-scene evaluation against vector and raster truth."""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pytest
from affine import Affine
from shapely.geometry import box

from rasterlearn.errors import InputError
from rasterlearn.evaluate import evaluate_map, map_schema
from rasterlearn.grid import Grid
from rasterlearn.io.writer import write_array

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
